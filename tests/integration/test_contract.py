"""The SOUPTrainer contract, checked on a real tiny-model run against independent recomputations.

Each run records, through thin wrappers around the trainer's own hooks, the policy parameters when a behavior
cycle is sampled, when each optimizer step is scored, and when each loss is computed. The checks then rebuild
fresh models from those snapshots (never `copy.deepcopy` of the trainer's model, whose forward TRL patches) and
recompute log-probs and the DAPO loss from the tokens alone.
"""

import json
from functools import partial
from pathlib import Path

import pytest
import torch

from soup_trl import SOUPTrainer
from soup_trl.soup.metrics import CUT_TOKENS_FILE
from soup_trl.testing.contract import (
    ContractRecorder,
    broken_groups,
    continuation_denominators,
    prefix_denominators,
    spliced_prefixes,
)
from soup_trl.testing.rewards import shaped_reward
from soup_trl.testing.snapshots import SnapshotPolicy, rows

TEMPERATURE = 0.8
MAX_LEN = 10
G = 4  # num_generations
B = 4  # per_device_train_batch_size
GA = 2  # gradient_accumulation_steps
T = 3  # soup_behavior_steps


def run_soup(model_dir, args, prompts):
    trainer = SOUPTrainer(model_dir, shaped_reward, args=args, train_dataset=prompts)
    recorder = ContractRecorder(trainer)
    trainer.train()
    return trainer, recorder.records


Policy = partial(SnapshotPolicy, temperature=TEMPERATURE)


@pytest.fixture(scope="module", params=["ratio", "entropy", "prefix_budget", "drift"])
def soup_run(request, tiny_model_dir, make_config, make_dataset):
    args = make_config(
        soup_behavior_steps=T, soup_truncation=request.param, soup_prefix_ratio=0.5, soup_entropy_top_k=3,
        soup_prefix_budget=4, per_device_train_batch_size=B, gradient_accumulation_steps=GA, num_generations=G,
        max_completion_length=MAX_LEN, temperature=TEMPERATURE, max_steps=2 * T,
    )
    trainer, records = run_soup(tiny_model_dir, args, make_dataset(100))
    return tiny_model_dir, trainer, records


def test_schedule_samples_once_per_cycle_and_scores_every_step(soup_run):
    _, _, records = soup_run
    assert len(records["cycles"]) == 2
    assert [s["step"] for s in records["steps"]] == [0, 1, 2, 0, 1, 2]
    assert len(records["losses"]) == 2 * T * GA


def test_every_batch_carries_prefix_mask(soup_run):
    _, _, records = soup_run
    spliced_tokens = 0
    for record in records["losses"]:
        inputs, step = record["inputs"], record["step"]["step"]
        prefix, completion = inputs["soup_prefix_mask"], inputs["completion_mask"]
        assert prefix.shape == completion.shape
        assert torch.all(prefix <= completion)  # never on padding
        # the prefix is a contiguous run at the start of the completion
        assert torch.equal(prefix, (torch.cumsum(prefix, dim=1) == torch.arange(1, prefix.size(1) + 1)).long() * prefix)
        if step == 0:
            assert prefix.sum() == 0
        spliced_tokens += int(prefix.sum()) if step > 0 else 0
    assert spliced_tokens > 0


def test_prefix_leaves_continuation_and_respects_budget(soup_run):
    _, _, records = soup_run
    for record in records["losses"]:
        inputs = record["inputs"]
        lengths = inputs["completion_mask"].sum(1)
        assert torch.all(lengths <= MAX_LEN)
        assert torch.all(lengths > inputs["soup_prefix_mask"].sum(1))  # at least one continuation token


def test_prefixes_are_the_behavior_completions(soup_run):
    _, trainer, records = soup_run
    eos = set(trainer.eos_token_ids)
    for step in records["steps"]:
        if step["step"] == 0:
            continue
        expected, got = spliced_prefixes(step)
        assert got == expected
        assert not any(t in eos for _, prefix in got for t in prefix)


# drift: tests/soup/test_truncation_drift.py
@pytest.mark.parametrize("soup_run", ["ratio", "entropy", "prefix_budget"], indirect=True)
def test_the_cut_tokens_file_holds_each_cycles_resampled_tokens(soup_run):
    """One line per cycle: the behavior token at every spliced row's cut (what the continuation writes anew), read
    here from the cycle's own completions and prefix lengths; rows whose completion ends at the cut are counted."""
    _, trainer, records = soup_run
    lines = (Path(trainer.args.output_dir) / CUT_TOKENS_FILE).read_text().splitlines()
    logged = [json.loads(line) for line in lines]
    assert [line["step"] for line in logged] == [1, T + 1]
    for line, record in zip(logged, records["cycles"]):
        cycle = record["cycle"]
        tail = range(cycle.rows_per_step, len(cycle.completion_ids))
        cuts = [(cycle.completion_ids[r], int(cycle.prefix_lengths[r])) for r in tail]
        expected = [completion[k] for completion, k in cuts if k < len(completion)]
        assert expected and line["token_ids"] == expected
        assert line["uncut_rows"] == len(cuts) - len(expected)
        assert line["tokens"] == [trainer.processing_class.decode([t]) for t in expected]
        assert line["truncation"] == trainer.args.soup_truncation


def test_groups_stay_whole(soup_run):
    _, _, records = soup_run
    assert broken_groups(records, G) == 0  # contiguous blocks of G rows of one prompt, advantages centred
    for step in records["steps"]:
        prompts = [tuple(p) for batch in step["batches"] for p, _, _, _ in rows(batch)]
        assert len(prompts) == len(set(prompts)) * G  # every prompt of the step appears exactly G times


def test_prefix_old_logps_are_behavior_policy(soup_run):
    model_dir, _, records = soup_run
    measured = prefix_denominators(records, partial(Policy, model_dir))
    assert measured.rows > 0 and measured.error < 1e-4
    assert measured.other > 1e-3  # the behavior and current policies really differ, so the check above can fail


def test_continuation_old_logps_are_current_policy(soup_run):
    """Scoring a spliced step makes no extra forward: only prefix tokens carry stored (behavior) log-probs, continuation
    tokens are NaN ("the current policy at loss time"), and the loss forward fills them with its own log-probs."""
    model_dir, _, records = soup_run
    for step in records["steps"]:
        if step["step"] == 0:  # on-policy step: no stored old log-probs, the loss uses its own (as GRPO does)
            assert all("old_per_token_logps" not in batch for batch in step["batches"])
            continue
        for batch in step["batches"]:
            for _, completion, k, i in rows(batch):
                stored = batch["old_per_token_logps"][i, : len(completion)]
                assert not stored[:k].isnan().any() and stored[k:].isnan().all()
    measured = continuation_denominators(records, partial(Policy, model_dir))  # the loss forward's own log-probs
    assert measured.rows == 2 * (T - 1) * B * GA and measured.error < 1e-4


def independent_loss(record, model_dir, eps_low, eps_high, prefix_loss="token_ratio"):
    """The DAPO loss of a recorded micro-batch from its tokens alone: log-probs of fresh models rebuilt from the
    snapshots of the behavior policy (prefix denominators), the policy when the step was scored (continuation
    denominators) and when the loss ran; the row advantages as scored; normalised by the step's own count of loss tokens.
    "mask": a row's terms from its first continuation token on (the prefix only conditions them) and a count without
    prefix tokens. "minpro": each term times the smallest ratio of the row's tokens before it (1 for the first)."""
    step = record["step"]
    behavior = Policy(model_dir, step["cycle"]["params"])
    old_policy = Policy(model_dir, step["params"])
    policy = Policy(model_dir, record["params"])
    first_trained = (lambda k: k) if prefix_loss == "mask" else (lambda k: 0)
    step_tokens = sum(len(c) - first_trained(k) for b in step["batches"] for _, c, k, _ in rows(b))
    batch, total = record["batch"], 0.0
    for prompt, completion, k, i in rows(batch):
        logp = policy.logps(prompt, completion)
        old = torch.cat([behavior.logps(prompt, completion)[:k], old_policy.logps(prompt, completion)[k:]])
        ratio = torch.exp(logp - old)
        advantage = batch["advantages"][i]
        per_token = -torch.min(ratio * advantage, ratio.clamp(1 - eps_low, 1 + eps_high) * advantage)
        if prefix_loss == "minpro":
            per_token = per_token * torch.tensor([1.0] + [ratio[:t].min().item() for t in range(1, len(ratio))])
        total += per_token[first_trained(k) :].sum().item()
    return total / step_tokens


def test_loss_equals_independent_dapo(soup_run):
    model_dir, trainer, records = soup_run
    eps_low, eps_high = trainer.args.epsilon, trainer.args.epsilon_high
    for record in records["losses"]:
        assert record["loss"] == pytest.approx(independent_loss(record, model_dir, eps_low, eps_high), abs=1e-5)
    assert any(abs(r["loss"]) > 1e-4 for r in records["losses"])


@pytest.fixture(scope="module", params=["mask", "minpro"])
def prefix_loss_run(request, tiny_model_dir, make_config, make_dataset):
    args = make_config(
        soup_behavior_steps=T, soup_prefix_ratio=0.5, per_device_train_batch_size=B, gradient_accumulation_steps=GA,
        num_generations=G, max_completion_length=MAX_LEN, temperature=TEMPERATURE, max_steps=2 * T,
        soup_prefix_loss=request.param,
    )
    trainer, records = run_soup(tiny_model_dir, args, make_dataset(100))
    return tiny_model_dir, trainer, records


def test_loss_equals_independent_recomputation_with_each_prefix_loss(prefix_loss_run):
    """`soup_prefix_loss` "mask" and "minpro": GRPOTrainer's loss of every micro-batch equals the choice's objective
    recomputed from the tokens, with the denominators and groups of the default (checked again here)."""
    model_dir, trainer, records = prefix_loss_run
    prefix_loss, eps_low, eps_high = trainer.args.soup_prefix_loss, trainer.args.epsilon, trainer.args.epsilon_high
    departure = 0.0  # from the paper's loss of the same batch: how wrong ignoring the choice would have been
    for record in records["losses"]:
        expected = independent_loss(record, model_dir, eps_low, eps_high, prefix_loss)
        assert record["loss"] == pytest.approx(expected, abs=1e-5)
        if record["step"]["step"] > 0:
            departure = max(departure, abs(record["loss"] - independent_loss(record, model_dir, eps_low, eps_high)))
    assert any(abs(r["loss"]) > 1e-4 for r in records["losses"]) and departure > 1e-3
    assert prefix_denominators(records, partial(Policy, model_dir)).error < 1e-4
    assert continuation_denominators(records, partial(Policy, model_dir)).error < 1e-4
    assert broken_groups(records, G) == 0


@pytest.mark.parametrize("prefix_loss_run", ["mask"], indirect=True)
def test_mask_keeps_the_prefix_in_the_context_and_out_of_the_loss(prefix_loss_run):
    """With "mask" the scored batch is left as it is (the prefix attends and is attended to: `completion_mask`), the loss
    skips the prefix through its `tool_mask`, and the step's DAPO count leaves the prefix out."""
    _, trainer, records = prefix_loss_run
    for record in records["losses"]:
        batch, inputs = record["batch"], record["inputs"]
        assert "tool_mask" not in batch and torch.equal(inputs["completion_mask"], batch["completion_mask"])
        assert torch.equal(inputs["tool_mask"], 1 - batch["soup_prefix_mask"])
        steps = trainer.args.steps_per_generation // trainer.args.gradient_accumulation_steps
        step_tokens = sum(int((b["completion_mask"] - b["soup_prefix_mask"]).sum()) for b in record["step"]["batches"])
        assert inputs["num_items_in_batch"].item() == step_tokens * steps
    # SOUP's token statistics count the loss tokens: no prefix token on a spliced step, whose rows do have a prefix
    spliced = [h for h in trainer.state.log_history if h.get("soup/cycle_step", 1) > 1 and "loss" in h]
    assert spliced and all(h["soup/prefix_token_frac"] == 0.0 and "soup/prefix/clip_ratio" not in h for h in spliced)
    assert all(h["soup/cut_position_mean"] > 0 for h in spliced)


def test_soup_metrics_are_logged(soup_run):
    history = soup_run[1].state.log_history
    spliced = [h for h in history if h.get("soup/cycle_step", 1) > 1 and "loss" in h]
    assert spliced and all(0 < h["soup/prefix_token_frac"] < 1 for h in spliced)
    for key in [
        "soup/prefix/clip_ratio", "soup/prefix/ratio_mean", "soup/prefix/entropy", "soup/continuation/clip_ratio",
        "soup/continuation/ratio_mean", "soup/continuation/entropy", "soup/cut_position_mean",
        "soup/position_bin_0/entropy", "soup/position_bin_5/clip_ratio",
    ]:
        assert all(key in h for h in spliced), key
    assert all(0 <= h["soup/cut_position_mean"] <= 1 for h in spliced)


@pytest.mark.parametrize("soup_run", ["prefix_budget"], indirect=True)
def test_prefix_budget_samples_only_the_budget(soup_run):
    _, trainer, records = soup_run
    for record in records["cycles"]:
        cycle = record["cycle"]
        head, tail = cycle.completion_ids[: cycle.rows_per_step], cycle.completion_ids[cycle.rows_per_step :]
        assert max(len(c) for c in tail) <= 4  # steps 2..T: the behavior policy decodes the budget only
        assert max(len(c) for c in head) > 4  # step 1: whole completions
        eos = set(trainer.eos_token_ids)
        for completion, k in zip(tail, cycle.prefix_lengths[cycle.rows_per_step :].tolist()):
            assert k == len(completion) - (completion[-1] in eos)  # all of it is kept, but the EOS
