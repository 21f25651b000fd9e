"""The paper's control (Section 5.2, Figure 5): on-policy DAPO with mini-batch updates, SOUPTrainer at T = 1 with TRL's
`steps_per_generation` = k x `gradient_accumulation_steps`, checked on a real tiny-model run against independent
recomputations.

One rollout batch (k steps' prompts) is sampled in one generation call and serves k optimizer steps, each sample
trained on once; every step's ratios are against the policy that sampled the batch (TRL's no-grad forward at sampling
time), so the first step of a rollout batch is on-policy and never clips, and later steps are off-policy on whole
sequences. The mechanism metrics (entropy and clip ratio by relative position, the clipped share of high-entropy tokens)
come from the same function as SOUP's and on-policy DAPO's.
"""

from collections import Counter
from functools import partial

import pytest
import torch

from soup_trl import SOUPTrainer
from soup_trl.testing.contract import largest
from soup_trl.testing.rewards import shaped_reward
from soup_trl.testing.snapshots import SnapshotPolicy, clone_batch, rows, snapshot

TEMPERATURE = 0.8
G = 4  # num_generations
B = 4  # per_device_train_batch_size
GA = 2  # gradient_accumulation_steps
K = 3  # optimizer steps per rollout batch

Policy = partial(SnapshotPolicy, temperature=TEMPERATURE)


@pytest.fixture(scope="module")
def control_run(tiny_model_dir, make_config, make_dataset):
    """2K optimizer steps of the control, with the policy's parameters recorded at every generation call and every loss."""
    args = make_config(
        soup_behavior_steps=1, steps_per_generation=K * GA, gradient_accumulation_steps=GA,
        per_device_train_batch_size=B, num_generations=G, temperature=TEMPERATURE, max_steps=2 * K,
    )  # fmt: skip
    trainer = SOUPTrainer(tiny_model_dir, shaped_reward, args=args, train_dataset=make_dataset(100))
    generations, losses = [], []
    generate, compute_loss = trainer._generate_single_turn, trainer.compute_loss

    def recording_generate(prompt_ids, *rest, **kwargs):
        params, step = snapshot(trainer.model), trainer.state.global_step
        completion_ids, logprobs = generate(prompt_ids, *rest, **kwargs)
        rows_ = Counter((tuple(p), tuple(c)) for p, c in zip(prompt_ids, completion_ids, strict=True))
        generations.append({"step": step, "params": params, "rows": rows_})
        return completion_ids, logprobs

    def recording_loss(model, inputs, *rest, **kwargs):
        params, step = snapshot(trainer.model), trainer.state.global_step
        loss = compute_loss(model, inputs, *rest, **kwargs)
        losses.append({"step": step, "params": params, "inputs": clone_batch(inputs), "generation": generations[-1]})
        return loss

    trainer._generate_single_turn, trainer.compute_loss = recording_generate, recording_loss
    trainer.train()
    return tiny_model_dir, trainer, generations, losses


def test_one_generation_call_serves_k_optimizer_steps(control_run):
    _, trainer, generations, losses = control_run
    assert trainer.args.generation_batch_size == K * GA * B
    assert [g["step"] for g in generations] == [0, K]  # sampled at optimizer steps 0 and K, nowhere else
    assert [sum(g["rows"].values()) for g in generations] == [K * GA * B] * 2  # each time K steps' rows
    assert [r["step"] for r in losses] == [s for s in range(2 * K) for _ in range(GA)]


def test_every_sample_of_a_rollout_batch_is_trained_on_once(control_run):
    _, _, generations, losses = control_run
    for generation in generations:
        trained = Counter(
            (tuple(p), tuple(c)) for r in losses if r["generation"] is generation for p, c, _, _ in rows(r["inputs"])
        )
        assert trained == generation["rows"]


def test_old_logps_are_the_sampling_policy_on_every_step_of_its_batch(control_run):
    """Recomputed by a fresh model from the parameters at the generation call; on later steps of a rollout batch the
    policy has moved (the current parameters' log-probs differ), so the equality is not the trivial on-policy one."""
    model_dir, _, _, losses = control_run
    policies = {}
    error, moved, checked = 0.0, 0.0, 0
    for record in losses:
        sampling = policies.setdefault(id(record["generation"]), Policy(model_dir, record["generation"]["params"]))
        current = Policy(model_dir, record["params"])
        inputs = record["inputs"]
        assert "old_per_token_logps" in inputs  # TRL's forward at sampling time: steps_per_generation > GA
        for prompt, completion, prefix, i in rows(inputs):
            assert prefix == 0  # no SOUP prefix: the whole sequence is the sampling policy's
            expected = sampling.logps(prompt, completion)
            error = max(error, largest(inputs["old_per_token_logps"][i, : len(completion)] - expected))
            if record["step"] % K > 0:
                moved = max(moved, largest(current.logps(prompt, completion) - expected))
            checked += 1
    assert checked == 2 * K * GA * B and error < 1e-4
    assert moved > 100 * max(error, 1e-6)


def test_the_first_step_of_a_rollout_batch_never_clips_and_later_steps_do(control_run):
    _, trainer, _, losses = control_run
    for record in losses:
        first = record["step"] % K == 0
        same = all(torch.equal(v, record["generation"]["params"][k]) for k, v in record["params"].items())
        assert same == first  # the sampling policy is the current one on the first step only
    logged = {h["step"]: h for h in trainer.state.log_history if "clip_ratio/region_mean" in h}
    assert sorted(logged) == list(range(1, 2 * K + 1))
    for step in (1, K + 1):  # the log's steps count from 1
        assert logged[step]["clip_ratio/region_mean"] == 0.0
        assert logged[step]["soup/continuation/clip_ratio"] == 0.0
        assert logged[step]["soup/high_entropy/clip_ratio"] == 0.0
        assert logged[step]["soup/continuation/ratio_mean"] == pytest.approx(1.0, abs=1e-5)
    # later steps are off-policy on whole sequences: at this learning rate (1e-2) they clip
    assert all(logged[step]["clip_ratio/region_mean"] > 0 for step in logged if (step - 1) % K > 0)


def test_the_control_logs_the_mechanism_metrics_of_every_setting(control_run):
    """Entropy and clip ratio by relative position and the high-entropy tokens' share, at every logged step, from
    SOUP's `token_stats` (the function on-policy DAPO and SOUP log them with)."""
    _, trainer, _, _ = control_run
    steps = [h for h in trainer.state.log_history if "loss" in h]
    assert len(steps) == 2 * K
    for entry in steps:
        assert entry["soup/prefix_token_frac"] == 0.0
        assert {"soup/high_entropy/clip_ratio", "soup/high_entropy/entropy", "soup/position_bin_0/entropy",
                "soup/position_bin_0/clip_ratio"} <= set(entry)  # fmt: skip
