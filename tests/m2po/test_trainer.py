"""M2POTrainer: what it refuses, the training script's M2PO run, its contract on real tiny-model runs, and resume.

The contract tests record, through thin wrappers around the trainer's own hooks, the policy parameters when each
batch is sampled and when each loss is computed, then rebuild fresh models from those snapshots (never
`copy.deepcopy` of the trainer's model, whose forward TRL patches) and recompute log-probs, the threshold and the
loss from the tokens alone.
"""

import json
import math
from collections import defaultdict
from functools import partial

import pytest
import torch
from datasets import Dataset, IterableDataset

from soup_trl import M2POTrainer
from soup_trl.testing.rewards import shaped_reward
from soup_trl.testing.snapshots import SnapshotPolicy, clone_batch, snapshot

from .test_config import make_config
from .test_ops import E, reference_cap

# ---------------------------------------------------------------------------------------------------- config


def test_trainer_refuses_other_configs_and_streams(tiny_model_dir, tmp_path):
    from trl import GRPOConfig

    with pytest.raises(TypeError, match="M2POConfig"):
        M2POTrainer(tiny_model_dir, shaped_reward, args=GRPOConfig(str(tmp_path), use_cpu=True, report_to="none"))
    stream = IterableDataset.from_generator(lambda: iter([{"prompt": "1+1="}] * 8))
    with pytest.raises(ValueError, match="train_dataset"):
        M2POTrainer(tiny_model_dir, shaped_reward, args=make_config(tmp_path, max_steps=2), train_dataset=stream)


# ------------------------------------------------------------------------------------------------- the training script


def test_training_script_runs_m2po(tiny_model_dir, tmp_path):
    from soup_trl.scripts import train

    args = train.parse_args(
        [
            "--config", "tiny_arithmetic_m2po",
            "--model_name_or_path", tiny_model_dir,
            "--output_dir", str(tmp_path),
            "--max_steps", "3",
            "--logging_steps", "1",
            "--per_device_train_batch_size", "16",
            "--num_generations", "4",
            "--m2po_staleness", "1",
            "--max_train_samples", "256",
            "--num_threads", "1",
        ]
    )  # fmt: skip
    train.main(*args)
    history = json.loads((tmp_path / "trainer_state.json").read_text())["log_history"]
    assert [h["m2po/staleness"] for h in history if "loss" in h] == [0.0, 1.0, 1.0]
    assert (tmp_path / "model.safetensors").exists()


# ---------------------------------------------------------------------------------------------------- contract

TEMPERATURE = 0.8
G = 4  # num_generations
B = 4  # per_device_train_batch_size
GA = 2  # gradient_accumulation_steps
S = 2  # m2po_staleness
STEPS = 5

Policy = partial(SnapshotPolicy, temperature=TEMPERATURE)


def tiny_prompts(n=10):
    return Dataset.from_dict({"prompt": [f"{a}+{b}=" for a in range(n) for b in range(n)]})


def unpadded(batch, i):
    prompt = batch["prompt_ids"][i][batch["prompt_mask"][i].bool()].tolist()
    completion = batch["completion_ids"][i][batch["completion_mask"][i].bool()].tolist()
    return prompt, completion


def recorded_trainer(model_dir, output_dir, **overrides):
    reward_steps = defaultdict(set)  # completion ids -> global steps at which the reward function scored them

    def recording_reward(completions, completion_ids, trainer_state, **kwargs):
        for ids in completion_ids:
            reward_steps[tuple(ids)].add(trainer_state.global_step)
        return shaped_reward(completions)

    fields = dict(
        temperature=TEMPERATURE, learning_rate=1e-2, max_steps=STEPS, logging_steps=1, save_strategy="no", seed=0
    )
    args = make_config(output_dir, **{**fields, **overrides})
    trainer = M2POTrainer(model_dir, recording_reward, args=args, train_dataset=tiny_prompts())
    records = {"samples": [], "steps": [], "losses": [], "reward_steps": reward_steps}
    sample_batch, next_batch, compute_loss = trainer._sample_batch, trainer._next_batch, trainer.compute_loss

    def recording_sample(inputs, train_step):
        before = snapshot(trainer.model)
        queued = sample_batch(inputs, train_step)
        records["samples"].append({"params": before, "queued": queued, "step": trainer.state.global_step})
        return queued

    def recording_next(generation_batch):
        queued = next_batch(generation_batch)
        records["steps"].append({"step": trainer.state.global_step, "queued": queued})
        return queued

    def recording_loss(model, inputs, *args, **kwargs):
        before = snapshot(trainer.model)
        loss = compute_loss(model, inputs, *args, **kwargs)
        record = {"inputs": clone_batch(inputs), "params": before, "loss": loss.item(), "step": records["steps"][-1]}
        records["losses"].append(record)
        return loss

    trainer._sample_batch, trainer._next_batch, trainer.compute_loss = recording_sample, recording_next, recording_loss
    return trainer, records


@pytest.fixture(scope="module")
def m2po_run(tiny_model_dir, tmp_path_factory):
    trainer, records = recorded_trainer(tiny_model_dir, tmp_path_factory.mktemp("m2po"))
    trainer.train()
    return tiny_model_dir, trainer, records


def sampling_record(records, queued):
    (record,) = [r for r in records["samples"] if r["queued"] is queued]
    return record


def test_schedule_up_front_then_exactly_staleness_steps(m2po_run):
    _, _, records = m2po_run
    # S batches sampled up front at step 0, then one per step while a later step will train on it
    assert [(r["step"], r["queued"].train_step) for r in records["samples"]] == [(0, 0), (0, 1), (0, 2), (1, 3), (2, 4)]
    assert [s["step"] for s in records["steps"]] == list(range(STEPS))
    for step in records["steps"]:
        assert step["queued"].train_step == step["step"]
        assert step["queued"].sampled_at == max(0, step["step"] - S)
    assert len(records["losses"]) == STEPS * GA


def test_every_batch_is_trained_once_whole(m2po_run):
    _, _, records = m2po_run
    trained = [step["queued"] for step in records["steps"]]
    assert sorted(map(id, trained)) == sorted(id(r["queued"]) for r in records["samples"])  # each sampled batch once
    for step in records["steps"]:
        micro_batches = [r["inputs"] for r in records["losses"] if r["step"] is step]
        assert len(micro_batches) == GA
        for key in ("prompt_ids", "completion_ids", "completion_mask", "advantages", "old_per_token_logps"):
            torch.testing.assert_close(torch.cat([b[key] for b in micro_batches]), step["queued"].batch[key])


def test_groups_stay_whole(m2po_run):
    _, _, records = m2po_run
    for record in records["losses"]:
        inputs = record["inputs"]
        prompts = [tuple(unpadded(inputs, i)[0]) for i in range(len(inputs["advantages"]))]
        assert len(prompts) == B and len(prompts) % G == 0
        for g in range(0, len(prompts), G):
            assert len(set(prompts[g : g + G])) == 1
            assert abs(inputs["advantages"][g : g + G].sum().item()) < 1e-4


def test_old_logps_are_the_sampling_policy(m2po_run):
    model_dir, _, records = m2po_run
    drift = 0.0
    for step in records["steps"]:
        queued = step["queued"]
        behavior = Policy(model_dir, sampling_record(records, queued)["params"])
        batch = queued.batch
        if queued.train_step >= S:
            current = Policy(model_dir, [r for r in records["losses"] if r["step"] is step][0]["params"])
        for i in range(len(batch["advantages"])):
            prompt, completion = unpadded(batch, i)
            expected = behavior.logps(prompt, completion)
            torch.testing.assert_close(batch["old_per_token_logps"][i, : len(completion)], expected, atol=1e-4, rtol=1e-4)
            if queued.train_step >= S:
                drift = max(drift, (current.logps(prompt, completion) - expected).abs().max().item())
    assert drift > 1e-3  # the sampling and training policies really differ, so the check above can fail


def test_rewards_are_scored_when_the_batch_is_sampled(m2po_run):
    _, _, records = m2po_run
    for step in records["steps"]:
        batch = step["queued"].batch
        for i in range(len(batch["advantages"])):
            assert step["queued"].sampled_at in records["reward_steps"][tuple(unpadded(batch, i)[1])]
    assert any(s["step"] - s["queued"].sampled_at == S for s in records["steps"])


def test_loss_equals_independent_recomputation(m2po_run):
    model_dir, trainer, records = m2po_run
    tau = trainer.args.m2po_tau
    clipped_micro_batches, unclipped_micro_batches = 0, 0
    for record in records["losses"]:
        queued, inputs = record["step"]["queued"], record["inputs"]
        behavior = Policy(model_dir, sampling_record(records, queued)["params"])
        policy = Policy(model_dir, record["params"])
        step_tokens = int(queued.batch["completion_mask"].sum())  # DAPO: the step's own completion-token count
        rows = []
        for i in range(len(inputs["advantages"])):
            prompt, completion = unpadded(inputs, i)
            log_ratio = policy.logps(prompt, completion) - behavior.logps(prompt, completion)
            rows.append((log_ratio.tolist(), inputs["advantages"][i].item()))
        harmful = [x * x for lr, a in rows for x in lr if (a > 0 and math.exp(x) > 1) or (a < 0 and math.exp(x) < 1)]
        cap = reference_cap(harmful, tau)
        t = math.sqrt(cap)
        total = sum(max(-a * math.exp(x), -a * min(max(math.exp(x), E(-t)), E(t))) for lr, a in rows for x in lr)
        assert record["loss"] == pytest.approx(total / step_tokens, abs=1e-5)
        if math.isinf(cap):
            unclipped_micro_batches += 1
        elif any(x > cap for x in harmful):
            clipped_micro_batches += 1
    assert clipped_micro_batches > 0 and unclipped_micro_batches > 0  # both branches of the rule were exercised


def test_metrics_are_logged(m2po_run):
    _, trainer, records = m2po_run
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["m2po/staleness"] for h in logs] == [0.0, 1.0, 2.0, 2.0, 2.0]
    for h in logs:
        assert 0 <= h["m2po/masked_token_frac"] <= h["m2po/harmful_token_frac"] <= 1
        assert h["m2po/masked_token_frac"] == pytest.approx(h["clip_ratio/region_mean"])  # GRPOTrainer's clip = ours
    assert logs[0]["m2po/masked_token_frac"] == 0  # step 0 trains on the policy that sampled it
    assert any(h["m2po/masked_token_frac"] > 0 and h["m2po/threshold"] >= 0 for h in logs[S:])
    assert sum("reward" in h for h in logs) == STEPS - S  # the last S steps sample nothing


# ---------------------------------------------------------------------------------------------------- resume


def test_resume_mid_run_is_exact(tiny_model_dir, tmp_path):
    common = dict(max_steps=6, save_strategy="steps", save_steps=3)
    full, _ = recorded_trainer(tiny_model_dir, tmp_path / "full", **common)
    full.train()
    checkpoint = tmp_path / "full" / "checkpoint-3"
    saved = torch.load(checkpoint / "m2po_queue_rank0.pt", weights_only=False)
    assert [(q["sampled_at"], q["train_step"]) for q in saved] == [(1, 3), (2, 4)]  # for 0-based steps 3 and 4

    resumed, records = recorded_trainer(tiny_model_dir, tmp_path / "resumed", **common)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    # steps 3-4 train on the saved queue; the only sampling is at step 3, for step 5 (nothing up front)
    assert [(r["step"], r["queued"].train_step) for r in records["samples"]] == [(3, 5)]
    assert [(s["queued"].sampled_at, s["queued"].train_step) for s in records["steps"]] == [(1, 3), (2, 4), (3, 5)]
    expected = dict(full.model.named_parameters())
    for name, param in resumed.model.named_parameters():
        assert torch.equal(param, expected[name]), name


# ---------------------------------------------------------------------------------------------------- two processes


