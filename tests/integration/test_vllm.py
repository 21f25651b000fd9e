"""SOUP with vLLM generation (TRL's colocate mode), checked on a real run where vLLM is installed.

Skipped unless `vllm` imports. CI runs it in a second environment with the CPU build of vLLM (`.ci/run`), where a skip
fails the run; on a GPU machine it runs as is with `pip install -e ".[vllm]"`. The CPU-only adaptations (float32
engine, weight sync through vLLM's reload) are in soup_trl/testing/vllm_colocate.py.

What it checks, against fresh models rebuilt from parameter snapshots (as tests/integration/test_contract.py does):
continuation steps send token-id prompts = prompt + behavior prefix, one call per step, within the step's largest
budget, and every row keeps to its own budget; vLLM's weights are synced before every continuation step (the
sampler's log-probs of the continuation equal the current policy's, while the behavior policy's differ); the
batch reaching `compute_loss` has the behavior policy's log-probs on prefix tokens and the current policy's on
continuation tokens; the sampler log-probs used by TRL's vLLM/trainer mismatch correction are the behavior engine's
on prefix tokens and the continuation engine's after, and the correction equals an independent recomputation; with
`soup_prefix_loss` "mask" and "minpro" the loss, correction included, equals the choice's objective recomputed.
"""

from functools import partial

import pytest
import torch

pytest.importorskip("vllm")

from soup_trl import SOUPTrainer  # noqa: E402
from soup_trl.testing.contract import (  # noqa: E402
    ContractRecorder,
    broken_groups,
    continuation_sampler,
    sampled_at_denominators,
    spliced_steps,
    with_global_steps,
)
from soup_trl.testing.rewards import shaped_reward  # noqa: E402
from soup_trl.testing.snapshots import SnapshotPolicy, rows  # noqa: E402
from soup_trl.testing.vllm_colocate import COLOCATE, colocated_trainer, train_and_release  # noqa: E402

TEMPERATURE = 0.8
MAX_LEN = 10
G = 4
B = 8
T = 3


Policy = partial(SnapshotPolicy, temperature=TEMPERATURE)


@pytest.fixture(scope="module")
def vllm_run(tiny_model_dir, make_config, make_dataset):
    args = make_config(
        soup_behavior_steps=T, soup_prefix_ratio=0.5, per_device_train_batch_size=B, num_generations=G,
        max_completion_length=MAX_LEN, temperature=TEMPERATURE, max_steps=2 * T, **COLOCATE,
    )
    trainer = colocated_trainer(SOUPTrainer, tiny_model_dir, shaped_reward, args=args, train_dataset=make_dataset(100))
    recorder = ContractRecorder(trainer)  # records the engine's calls and syncs (the CPU sync installed above)
    yield from train_and_release(trainer, tiny_model_dir, recorder.records)


def test_one_behavior_call_per_cycle_and_one_continuation_call_per_spliced_step(vllm_run):
    _, _, records = vllm_run
    assert [s["step"] for s in records["steps"]] == [0, 1, 2, 0, 1, 2]
    for step in records["steps"]:
        # step 1 trains on the cycle's behavior samples; every later step makes exactly one continuation call
        assert len(step["calls"]) == (1 if step["step"] > 0 else 0)
    for cycle in records["cycles"]:
        call = records["calls"][cycle["call"]]  # colocate: every row of the cycle's T steps in one call
        assert call["num_generations"] == G and len(call["prompts"]) == T * B == len(call["completions"])


def test_continuation_prompts_are_prompt_plus_prefix_within_budget(vllm_run):
    _, trainer, records = vllm_run
    eos = set(trainer.eos_token_ids)
    for step in spliced_steps(records):
        cycle = step["cycle"]["cycle"]
        (call,) = step["calls"]
        lo = step["step"] * cycle.rows_per_step
        expected = sorted(
            list(cycle.prompt_ids[r]) + list(cycle.completion_ids[r][: int(cycle.prefix_lengths[r])])
            for r in range(lo, lo + cycle.rows_per_step)
        )
        assert call["num_generations"] == 1 and sorted(call["prompts"]) == expected  # token ids, one row each
        budgets = [MAX_LEN - int(cycle.prefix_lengths[r]) for r in range(lo, lo + cycle.rows_per_step)]
        assert call["max_tokens"] == max(budgets)
        for batch in step["batches"]:
            for _, completion, k, _ in rows(batch):
                assert k < len(completion) <= MAX_LEN  # at least one continuation token, within the budget
                assert not eos & set(completion[:k])


def test_weights_synced_before_every_continuation_step(vllm_run):
    model_dir, _, records = vllm_run
    assert records["syncs"] == sorted(set(records["syncs"]))
    for step in spliced_steps(records):
        (call,) = step["calls"]
        assert call["step"] in records["syncs"]  # a sync at this optimizer step, before its generation
    measured = continuation_sampler(records, partial(Policy, model_dir))
    assert measured.rows == 2 * (T - 1) * B
    assert measured.error < 1e-4  # vLLM sampled the continuations from the current weights
    assert measured.other > 1e-2  # ... which really differ from the behavior policy's


def test_old_logps_are_behavior_on_prefix_and_current_on_continuation(vllm_run):
    model_dir, _, records = vllm_run
    checked = 0
    for step in spliced_steps(records):
        behavior = Policy(model_dir, step["cycle"]["params"])
        current = Policy(model_dir, step["params"])
        for batch in step["batches"]:
            for prompt, completion, k, i in rows(batch):
                got = batch["old_per_token_logps"][i, : len(completion)]
                torch.testing.assert_close(got[:k], behavior.logps(prompt, completion)[:k], atol=1e-4, rtol=1e-4)
                torch.testing.assert_close(got[k:], current.logps(prompt, completion)[k:], atol=1e-4, rtol=1e-4)
                checked += 1
    assert checked == 2 * (T - 1) * B


def test_groups_stay_whole(vllm_run):
    _, _, records = vllm_run
    assert broken_groups(records, G) == 0


def test_mismatch_correction_uses_each_segments_own_sampler(vllm_run):
    _, trainer, records = vllm_run
    checked = 0
    for step in spliced_steps(records):
        behavior_call = records["calls"][step["cycle"]["call"]]
        sampled = {}  # (prompt, behavior completion) -> the engine's log-probs when the behavior policy sampled it
        for prompt, completion, logprobs in zip(
            behavior_call["prompts"], behavior_call["completions"], behavior_call["logprobs"]
        ):
            sampled[(tuple(prompt), tuple(completion))] = logprobs
        (call,) = step["calls"]
        continued = {tuple(p): lp for p, lp in zip(call["prompts"], call["logprobs"])}
        for batch in step["batches"]:
            mask = batch["completion_mask"].bool()
            for prompt, completion, k, i in rows(batch):
                got = batch["sampling_per_token_logps"][i, : len(completion)]
                prefix_logprobs = [
                    lp[:k] for (pp, c), lp in sampled.items() if pp == tuple(prompt) and c[:k] == tuple(completion[:k])
                ]
                assert prefix_logprobs  # the prefix is one of this prompt's behavior samples
                torch.testing.assert_close(got[:k], torch.tensor(prefix_logprobs[0]), atol=1e-6, rtol=0)
                continuation = continued[tuple(prompt + completion[:k])][: len(completion) - k]
                torch.testing.assert_close(got[k:], torch.tensor(continuation), atol=1e-6, rtol=0)
                checked += 1
            # TRL's correction (default sequence_mask, C_max 3), recomputed from the batch's own log-probs
            assert trainer.vllm_importance_sampling_mode == "sequence_mask"
            diff = ((batch["old_per_token_logps"] - batch["sampling_per_token_logps"]) * mask).sum(1, keepdim=True)
            expected = torch.exp(diff)
            expected = expected.masked_fill(expected > trainer.vllm_importance_sampling_clip_max, 0.0)
            torch.testing.assert_close(batch["importance_sampling_ratio"], expected)
            assert (expected - 1).abs().max() < 1e-3  # engine and trainer agree: the correction is near 1
    assert checked == 2 * (T - 1) * B


def test_trains_to_the_end_with_finite_losses(vllm_run):
    _, trainer, _ = vllm_run
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 2 * T and all(torch.isfinite(torch.tensor(losses)))


# ------------------------------------------------------------------ prefix-loss choices (soup_prefix_loss)


@pytest.fixture(scope="module", params=["mask", "minpro"])
def vllm_prefix_loss_run(request, tiny_model_dir, make_config, make_dataset):
    """One cycle with each prefix-loss choice other than the paper's."""
    args = make_config(
        soup_behavior_steps=T, soup_prefix_ratio=0.5, per_device_train_batch_size=B, num_generations=G,
        max_completion_length=MAX_LEN, temperature=TEMPERATURE, max_steps=T, soup_prefix_loss=request.param, **COLOCATE,
    )  # fmt: skip
    trainer = colocated_trainer(SOUPTrainer, tiny_model_dir, shaped_reward, args=args, train_dataset=make_dataset(100))
    recorder = ContractRecorder(trainer)
    yield from train_and_release(trainer, tiny_model_dir, recorder.records)


def test_prefix_loss_composes_with_the_mismatch_correction(vllm_prefix_loss_run):
    """With vLLM's sampler-mismatch correction on: "mask" computes the correction over the continuation only (the
    prefix is context, as the prompt is), "minpro" over every token; and GRPOTrainer's loss equals the choice's
    objective times the correction, recomputed from the recorded denominators and a fresh model's log-probs."""
    model_dir, trainer, records = vllm_prefix_loss_run
    prefix_loss, clip_max = trainer.args.soup_prefix_loss, trainer.vllm_importance_sampling_clip_max
    eps_low, eps_high = trainer.args.epsilon, trainer.args.epsilon_high
    assert trainer.vllm_importance_sampling_mode == "sequence_mask"
    checked = 0
    for record in records["losses"]:
        policy, batch, inputs = Policy(model_dir, record["params"]), record["batch"], record["inputs"]
        first_trained = (lambda k: k) if prefix_loss == "mask" else (lambda k: 0)
        step_tokens = sum(len(c) - first_trained(k) for b in record["step"]["batches"] for _, c, k, _ in rows(b))
        total = 0.0
        for prompt, completion, k, i in rows(batch):
            n, start = len(completion), first_trained(k)
            old, sampled = inputs["old_per_token_logps"][i, :n], batch["sampling_per_token_logps"][i, :n]
            correction = torch.exp((old - sampled)[start:].sum())
            correction = 0.0 if correction > clip_max else correction
            torch.testing.assert_close(batch["importance_sampling_ratio"][i, 0], torch.as_tensor(correction))
            ratio = torch.exp(policy.logps(prompt, completion) - old)
            advantage = batch["advantages"][i]
            per_token = -torch.min(ratio * advantage, ratio.clamp(1 - eps_low, 1 + eps_high) * advantage)
            if prefix_loss == "minpro":
                per_token = per_token * torch.tensor([1.0] + [ratio[:t].min().item() for t in range(1, n)])
            total += (per_token[start:] * correction).sum().item()
            checked += k > 0
        assert record["loss"] == pytest.approx(total / step_tokens, abs=1e-5)
    assert checked > 0


# ------------------------------------------------------------------ prefixes from past rollouts (history)


def test_each_segment_is_measured_against_the_engine_that_sampled_it(vllm_run):
    """`soup/mismatch/*`: prefix tokens' behavior trainer log-probs against the behavior engine's, continuation
    tokens' loss-forward log-probs against the current engine's; and TRL's own `sampling/*` of a spliced step, whose
    scoring compared the current trainer with the behavior engine on prefix tokens (policy drift), measured again
    against each segment's engine. On this float32 CPU engine both are engine noise, far below the drift."""
    _, trainer, _ = vllm_run
    history = trainer.state.log_history
    for segment in ("prefix", "continuation"):
        means = [h[key] for h in history if (key := f"soup/mismatch/{segment}/logp_diff_mean") in h]
        maxes = [h[key] for h in history if (key := f"soup/mismatch/{segment}/logp_diff_max") in h]
        assert means and maxes and max(maxes) < 1e-3, (segment, means, maxes)
    # steps 2..T of each cycle: the policy moved since the behavior sampling (prefix ratios away from 1), and TRL's
    # values, measured again, do not show it
    spliced = [h for h in history if h.get("soup/cycle_step", 1) > 1]
    assert spliced and all(h["sampling/sampling_logp_difference/max"] < 1e-3 for h in spliced), spliced
    assert all(h["sampling/importance_sampling_ratio/min"] > 0.99 for h in spliced)
    assert max(abs(h["soup/prefix/ratio_mean"] - 1) for h in spliced) > 1e-2


@pytest.fixture(scope="module")
def vllm_history_run(tiny_model_dir, make_config, make_dataset):
    """T=1 with history-seeded prefixes: 4 prompts, 2 a step, so steps 3 and 4 cut every row from stored rollouts (no
    age limit: the default of one epoch, 2 steps here, would refuse step 4's prompts, last trained 3 steps before)."""
    args = make_config(
        soup_behavior_source="history", soup_behavior_steps=1, soup_prefix_ratio=0.5, per_device_train_batch_size=B,
        num_generations=G, max_completion_length=MAX_LEN, temperature=TEMPERATURE, max_steps=4,
        soup_history_max_epochs=None, **COLOCATE,
    )  # fmt: skip
    trainer = colocated_trainer(SOUPTrainer, tiny_model_dir, shaped_reward, args=args, train_dataset=make_dataset(4))
    recorder = ContractRecorder(trainer)
    yield from train_and_release(trainer, tiny_model_dir, recorder.records)


def test_history_steps_make_one_continuation_call_with_per_row_budgets(vllm_history_run):
    _, trainer, records = vllm_history_run
    with_global_steps(records)
    frac = [h["soup/history_row_frac"] for h in trainer.state.log_history if "soup/history_row_frac" in h]
    assert frac == [0.0, 0.0, 1.0, 1.0]
    eos = set(trainer.eos_token_ids)
    for step in records["steps"][2:]:
        (call,) = step["calls"]  # no behavior sampling: the continuations only
        prefixes = sorted(tuple(p) + tuple(c[:k]) for b in step["batches"] for p, c, k, _ in rows(b))
        assert call["num_generations"] == 1 and sorted(map(tuple, call["prompts"])) == prefixes
        prefix_length = {}
        for batch in step["batches"]:
            for prompt, completion, k, _ in rows(batch):
                assert k < len(completion) <= MAX_LEN and not eos & set(completion[:k])
                prefix_length[tuple(prompt) + tuple(completion[:k])] = k
        # vLLM itself stopped each row at its own budget (prefix + continuation <= MAX_LEN), below the call's largest
        budgets = [MAX_LEN - prefix_length[tuple(p)] for p in call["prompts"]]
        assert call["max_tokens"] == max(budgets) and min(budgets) < max(budgets)
        assert all(len(c) <= b for c, b in zip(call["completions"], budgets))


def test_history_denominators_and_continuation_sampler(vllm_history_run):
    model_dir, _, records = vllm_history_run
    measured, _ = sampled_at_denominators(with_global_steps(records), partial(Policy, model_dir))
    assert measured.rows >= B and measured.error < 1e-4 and measured.other > 1e-3
    sampler = continuation_sampler(records, partial(Policy, model_dir), steps=records["steps"][2:])
    assert sampler.rows == 2 * B and sampler.error < 1e-4  # vLLM continued from the current weights
    assert broken_groups(records, G) == 0


def test_eval_cli_vllm_backend(tiny_model_dir, tmp_path, monkeypatch):
    """`soup-trl eval --backend vllm` end to end (progress bars off, which vLLM 0.31 cannot take with use_tqdm)."""
    import json

    from soup_trl.scripts.cli import main

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    out = tmp_path / "eval"
    args = ["eval", "--model", str(tiny_model_dir), "--backend", "vllm", "--benchmarks", "arithmetic"]
    code = main([*args, "--limit", "20", "--num-samples", "4", "--output-dir", str(out), "--no-progress"])
    assert code == 0
    result = json.loads((out / "results.json").read_text())
    assert result["backend"] == "vllm"
    samples = [json.loads(line) for line in (out / "arithmetic.jsonl").read_text().splitlines()]
    assert len(samples) == 20 * 4 and len({s["problem_id"] for s in samples}) == 20
    assert all(1 <= s["num_tokens"] <= 16 for s in samples)
