"""The baselines' trainers with vLLM generation (TRL's colocate mode), checked on real runs where vLLM is installed.

Skipped unless `vllm` imports; CI runs it next to tests/integration/test_vllm.py in its vLLM environment, where a
skip fails.

M2PO samples every batch (the up-front ones and the queued ones) through the engine: the engine holds the sampling
policy's weights (synced after every optimizer step), the queued batch keeps the sampling policy's log-probs and
the engine's, and a stale batch is trained with the log-probs of the policy that sampled it. LUFFY sends only the
G - n on-policy rows of each group to the engine; the trace rows carry the trace tokens, no sampler log-probs (NaN),
and a vLLM/trainer mismatch correction of exactly 1.
"""

from functools import partial

import pytest
import torch

pytest.importorskip("vllm")

from transformers import AutoTokenizer  # noqa: E402

from soup_trl import LUFFYTrainer, M2POConfig, M2POTrainer  # noqa: E402
from soup_trl.testing.contract import record_engine  # noqa: E402
from soup_trl.testing.rewards import shaped_reward  # noqa: E402
from soup_trl.testing.snapshots import SnapshotPolicy, clone_batch, snapshot  # noqa: E402
from soup_trl.testing.vllm_colocate import COLOCATE, colocated_trainer, train_and_release  # noqa: E402

from ..luffy.test_trainer import B, G, expected_trace_ids, trace_dataset, unpadded  # noqa: E402
from ..luffy.test_trainer import make_config as luffy_config  # noqa: E402

TEMPERATURE = 0.8  # luffy/test_trainer.py's
MAX_LEN = 10
STALENESS = 1
STEPS = 3
Policy = partial(SnapshotPolicy, temperature=TEMPERATURE)


def row_views(batch):
    return [unpadded(batch, i) for i in range(batch["prompt_ids"].size(0))]


def assert_engine_matches(call, policy, rows, atol=1e-4):
    """The call's prompts and completions are `rows` in order, and its log-probs are `policy`'s; returns the
    largest difference between the engine's log-probs and `policy`'s."""
    assert [(p, c) for p, c in zip(call["prompts"], call["completions"])] == rows
    drift = 0.0
    for (prompt, completion), logprobs in zip(rows, call["logprobs"]):
        drift = max(drift, (torch.tensor(logprobs) - policy.logps(prompt, completion)).abs().max().item())
    assert drift < atol
    return drift


# ---------------------------------------------------------------------------------------------- M2PO


@pytest.fixture(scope="module")
def m2po_run(tiny_model_dir, make_config, make_dataset):
    args = make_config(
        M2POConfig, m2po_staleness=STALENESS, per_device_train_batch_size=B, num_generations=G,
        max_completion_length=MAX_LEN, temperature=TEMPERATURE, max_steps=STEPS, **COLOCATE,
    )
    trainer = colocated_trainer(M2POTrainer, tiny_model_dir, shaped_reward, args=args, train_dataset=make_dataset(64))
    records = {"sampled": [], "losses": []}
    record_engine(trainer, records)
    sample, compute_loss = trainer._sample_batch, trainer.compute_loss

    def recording_sample(inputs, train_step):
        before = snapshot(trainer.model)
        calls = len(records["calls"])
        queued = sample(inputs, train_step)
        records["sampled"].append(
            {"params": before, "queued": queued, "batch": clone_batch(queued.batch), "calls": records["calls"][calls:]}
        )
        return queued

    def recording_loss(model, inputs, *a, **k):
        records["losses"].append({"step": trainer.state.global_step, "inputs": clone_batch(inputs)})
        return compute_loss(model, inputs, *a, **k)

    trainer._sample_batch = recording_sample
    trainer.compute_loss = recording_loss
    yield from train_and_release(trainer, tiny_model_dir, records)


def test_m2po_samples_every_batch_through_the_synced_engine(m2po_run):
    model_dir, _, records = m2po_run
    sampled = records["sampled"]
    # step 0 samples the up-front batch (trained at step 0) and the batch of step 1; step 1 the batch of step 2
    assert [(s["queued"].sampled_at, s["queued"].train_step) for s in sampled] == [(0, 0), (0, 1), (1, 2)]
    initial = Policy(model_dir, sampled[0]["params"])
    stale_drift = 0.0
    for record in sampled:
        (call,) = record["calls"]
        assert call["num_generations"] == G and len(call["prompts"]) == B
        rows = row_views(record["batch"])
        assert_engine_matches(call, Policy(model_dir, record["params"]), rows)
        if record["queued"].sampled_at > 0:
            for (prompt, completion), logprobs in zip(rows, call["logprobs"]):
                stale_drift = max(stale_drift, (torch.tensor(logprobs) - initial.logps(prompt, completion)).abs().max().item())
    assert stale_drift > 1e-2  # the synced weights really differ from the initial ones
    assert records["syncs"] == [0, 1]  # once before the first sampling, then after the optimizer step


def test_m2po_queued_batches_keep_the_sampling_policys_logps(m2po_run):
    model_dir, trainer, records = m2po_run
    for record in records["sampled"]:
        batch, (call,) = record["batch"], record["calls"]
        policy = Policy(model_dir, record["params"])
        mask = batch["completion_mask"].bool()
        for i, ((prompt, completion), logprobs) in enumerate(zip(row_views(batch), call["logprobs"])):
            n = len(completion)
            torch.testing.assert_close(batch["old_per_token_logps"][i, :n], policy.logps(prompt, completion), atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(batch["sampling_per_token_logps"][i, :n], torch.tensor(logprobs), atol=1e-6, rtol=0)
        # TRL's correction (sequence_mask), recomputed: engine and trainer agree, so it is near 1
        diff = ((batch["old_per_token_logps"] - batch["sampling_per_token_logps"]) * mask).sum(1, keepdim=True)
        torch.testing.assert_close(batch["importance_sampling_ratio"], torch.exp(diff))
        assert (batch["importance_sampling_ratio"] - 1).abs().max() < 1e-3
    # each step trains on the batch queued for it: step 2 on the one the step-1 policy sampled
    by_step = {s["queued"].train_step: s["batch"] for s in records["sampled"]}
    assert sorted({loss["step"] for loss in records["losses"]}) == list(range(STEPS))
    for loss in records["losses"]:
        torch.testing.assert_close(loss["inputs"]["old_per_token_logps"].cpu(), by_step[loss["step"]]["old_per_token_logps"])
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == STEPS and all(torch.isfinite(torch.tensor(losses)))


# ---------------------------------------------------------------------------------------------- LUFFY


@pytest.fixture(scope="module")
def luffy_run(tiny_model_dir, tmp_path_factory):
    args = luffy_config(tmp_path_factory.mktemp("luffy_vllm"), luffy_num_traces=1, **COLOCATE)
    trainer = colocated_trainer(LUFFYTrainer, tiny_model_dir, shaped_reward, args=args, train_dataset=trace_dataset())
    records = {"scored": []}
    record_engine(trainer, records)
    score = trainer._generate_and_score_completions

    def recording_score(inputs):
        before = snapshot(trainer.model)
        calls = len(records["calls"])
        output = score(inputs)
        records["scored"].append({"params": before, "output": clone_batch(output), "calls": records["calls"][calls:]})
        return output

    trainer._generate_and_score_completions = recording_score
    yield from train_and_release(trainer, tiny_model_dir, records)


def test_luffy_decodes_only_the_on_policy_rows_with_the_synced_engine(luffy_run):
    model_dir, trainer, records = luffy_run
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert len(records["scored"]) == 2
    for record in records["scored"]:
        output, (call,) = record["output"], record["calls"]
        rows = row_views(output)
        sampled = [i for i in range(len(rows)) if i % G < G - 1]
        assert call["num_generations"] == G - 1
        assert_engine_matches(call, Policy(model_dir, record["params"]), [rows[i] for i in sampled])
        for i, (prompt, completion) in enumerate(rows):
            ratio = output["importance_sampling_ratio"][i]
            if i in sampled:
                assert not torch.isnan(output["sampling_per_token_logps"][i, : len(completion)]).any()
                assert (ratio - 1).abs().max() < 1e-3
            else:  # the trace row: the trace's tokens, no sampler log-probs, no correction
                assert completion == expected_trace_ids(tokenizer, prompt)
                assert torch.isnan(output["sampling_per_token_logps"][i, : len(completion)]).all()
                assert torch.equal(ratio, torch.ones_like(ratio))
    assert records["syncs"] == [0, 2]  # the second generation batch is sampled after two optimizer steps
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
