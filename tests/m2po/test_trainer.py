"""M2PO: the trust-region math on hand-made tensors, and M2POTrainer's contract on real tiny-model runs.

The contract tests record, through thin wrappers around the trainer's own hooks, the policy parameters when each
batch is sampled and when each loss is computed, then rebuild fresh models from those snapshots (never
`copy.deepcopy` of the trainer's model, whose forward TRL patches) and recompute log-probs, the threshold and the
loss from the tokens alone.
"""

import json
import math
import os
import subprocess
import sys
from collections import defaultdict
from functools import partial
from pathlib import Path

import pytest
import torch
from datasets import Dataset, IterableDataset

from soup_trl import M2POConfig, M2POTrainer
from soup_trl.m2po.ops import (
    harmful_token_mask,
    m2po_per_token_loss,
    m2po_trust_region,
    second_moment_cap,
    trust_region_metrics,
    trust_region_stats,
)
from soup_trl.testing.rewards import shaped_reward
from soup_trl.testing.snapshots import SnapshotPolicy, clone_batch, snapshot

E = math.exp


def reference_cap(values: list[float], tau: float) -> float:
    """The released threshold rule written as a plain loop over the sorted values (independent of the tensor code)."""
    v = sorted(values)
    n = len(v)
    if n == 0 or sum(v) / n <= tau:
        return math.inf
    for k in range(n):
        if v[k] * (n - k - 1) + sum(v[: k + 1]) >= tau * n:
            return 0.0 if k == 0 else v[k - 1]
    raise AssertionError("unreachable: at k = n - 1 the capped sum is the sum")


# ---------------------------------------------------------------------------------------------------- pure functions


@pytest.mark.parametrize(
    ("values", "tau", "expected"),
    [
        ([], 0.04, math.inf),  # n = 0: no harmful token, no clipping
        ([0.01, 0.02, 0.03], 0.04, math.inf),  # mean below tau
        ([0.25, 0.25], 0.25, math.inf),  # mean exactly tau: still no clipping
        # sorted [1/16, 1/4, 1, 4], tau * n = 1: capped sums 0.25, 0.8125, 2.3125 -> k = 2, cap v[1]
        ([4.0, 0.0625, 1.0, 0.25], 0.25, 0.25),
        ([0.25, 4.0], 0.1, 0.0),  # k = 0: capping at the smallest value already reaches tau, everything is clipped
        # the paper's greedy rule would drop one 0.25 (mean of the rest 0.09 <= 0.1); the released rule caps both
        ([0.01, 0.25, 0.01, 0.25], 0.1, 0.01),
    ],
)
def test_second_moment_cap(values, tau, expected):
    assert second_moment_cap(torch.tensor(values, dtype=torch.float64), tau) == expected
    assert reference_cap(values, tau) == expected


def test_second_moment_cap_matches_the_reference_on_random_values():
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        n = int(torch.randint(1, 40, (1,), generator=generator))
        values = (torch.randn(n, generator=generator, dtype=torch.float64) * 0.4).square()
        tau = float(torch.rand(1, generator=generator)) * 0.1 + 1e-3
        cap = second_moment_cap(values, tau)
        assert cap == reference_cap(values.tolist(), tau)
        if not math.isinf(cap):  # capping at the cap keeps the mean below tau
            assert values.clamp(max=cap).mean().item() < tau


def test_harmful_tokens_are_the_two_clipped_quadrants():
    log_ratio = torch.tensor([[0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [0.5, -0.5, 0.0], [0.5, -0.5, 0.0]])
    advantages = torch.tensor([1.0, -1.0, 0.0, 1.0])
    mask = torch.tensor([[1, 1, 1], [1, 1, 1], [1, 1, 1], [0, 1, 1]])
    expected = torch.tensor(
        [[True, False, False], [False, True, False], [False, False, False], [False, False, False]]
    )
    assert torch.equal(harmful_token_mask(log_ratio, advantages, mask), expected)


# Row 0 (A = +1): harmful 0.25, 0.5, 1.0 (r > 1); -2.0 is not. Row 1 (A = -1): harmful -2.0, -0.25 (r < 1); 0.5 is not;
# 9.0 is padding. Harmful v = [1/16, 1/4, 1, 4, 1/16], tau = 0.25, tau * n = 1.25: sorted capped sums
# 0.3125, 0.3125, 0.875, 2.375 -> k = 3, cap v[2] = 1/4, t = 0.5: clipped are row 0's 1.0 and row 1's -2.0.
LOG_RATIO = [[0.25, 0.5, 1.0, -2.0], [-2.0, 0.5, -0.25, 9.0]]
ADVANTAGES = [1.0, -1.0]
MASK = [[1, 1, 1, 1], [1, 1, 1, 0]]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_loss_and_gradient_on_hand_made_tokens(dtype):
    log_ratio = torch.tensor(LOG_RATIO, dtype=dtype, requires_grad=True)
    mask = torch.tensor(MASK)
    loss, region = m2po_per_token_loss(log_ratio, torch.tensor(ADVANTAGES, dtype=dtype), mask, 0.25)
    assert region.threshold == 0.5
    assert region.clipped.tolist() == [[False, False, True, False], [True, False, False, False]]
    assert region.harmful.tolist() == [[True, True, True, False], [True, False, True, False]]
    expected = [
        [-E(0.25), -E(0.5), -E(0.5), -E(-2.0)],  # the clipped token sits at the bound e^t
        [E(-0.5), E(0.5), E(-0.25), E(9.0)],  # A < 0: the clipped token sits at e^-t; padding is the caller's
    ]
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=dtype))
    (loss * mask).sum().backward()
    # d/dx of -A e^x is -A e^x on unclipped tokens; 0 on clipped ones (including the padding, masked out)
    gradient = [[-E(0.25), -E(0.5), 0.0, -E(-2.0)], [0.0, E(0.5), E(-0.25), 0.0]]
    torch.testing.assert_close(log_ratio.grad, torch.tensor(gradient, dtype=dtype))
    assert log_ratio.grad[0, 1] != 0  # the boundary token (|log r| = t) is inside the trust region in either dtype


def test_no_clipping_when_the_second_moment_is_within_tau():
    log_ratio = torch.tensor([[0.1, -0.1], [0.1, -0.1]], requires_grad=True)
    loss, region = m2po_per_token_loss(log_ratio, torch.tensor([1.0, -1.0]), torch.ones(2, 2), 0.04)
    assert math.isinf(region.threshold) and not region.clipped.any() and region.harmful.sum() == 2
    torch.testing.assert_close(loss, torch.tensor([[-E(0.1), -E(-0.1)], [E(0.1), E(-0.1)]]))
    loss.sum().backward()
    torch.testing.assert_close(log_ratio.grad, loss.detach())  # d(-A e^x)/dx = -A e^x: every token has a gradient


def test_threshold_zero_clips_every_harmful_token():
    log_ratio = torch.tensor([[0.5, 2.0, -1.0]], dtype=torch.float64, requires_grad=True)
    loss, region = m2po_per_token_loss(log_ratio, torch.tensor([1.0], dtype=torch.float64), torch.ones(1, 3), 0.1)
    assert region.threshold == 0.0 and region.clipped.tolist() == [[True, True, False]]
    torch.testing.assert_close(loss, torch.tensor([[-1.0, -1.0, -E(-1.0)]], dtype=torch.float64))
    loss.sum().backward()
    torch.testing.assert_close(log_ratio.grad, torch.tensor([[0.0, 0.0, -E(-1.0)]], dtype=torch.float64))


def test_no_harmful_tokens_means_no_clipping():
    region = m2po_trust_region(torch.tensor([[-3.0, 3.0]]), torch.tensor([1.0]), torch.tensor([[1, 0]]), 0.04)
    assert math.isinf(region.threshold) and (region.ratio_low, region.ratio_high) == (0.0, math.inf)


def test_metrics_from_stats():
    log_ratio, mask = torch.tensor(LOG_RATIO, dtype=torch.float64), torch.tensor(MASK)
    region = m2po_trust_region(log_ratio, torch.tensor(ADVANTAGES, dtype=torch.float64), mask, 0.25)
    stats = trust_region_stats(log_ratio, mask, region)
    squared = 0.0625 + 0.25 + 1 + 4 + 4 + 0.25 + 0.0625  # the padding's 81 is left out
    assert stats.tolist() == [7, 5, 2, squared, 1, 0.5]
    empty = trust_region_stats(torch.zeros(1, 2), torch.ones(1, 2), m2po_trust_region(torch.zeros(1, 2), torch.ones(1), torch.ones(1, 2), 0.04))
    assert trust_region_metrics(stats + empty) == {  # two micro-batches, only the first clipped
        "m2po/masked_token_frac": 2 / 9,
        "m2po/harmful_token_frac": 5 / 9,
        "m2po/second_moment": squared / 9,
        "m2po/threshold": 0.5,
    }


# ---------------------------------------------------------------------------------------------------- config


def make_config(tmp_path, **overrides):
    fields = dict(
        output_dir=str(tmp_path),
        m2po_staleness=2,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        num_generations=4,
        max_completion_length=10,
        report_to="none",
        use_cpu=True,
        bf16=False,
    )
    return M2POConfig(**{**fields, **overrides})


@pytest.mark.parametrize(
    ("overrides", "field_name"),
    [
        ({"m2po_staleness": -1}, "m2po_staleness"),
        ({"m2po_staleness": 1.5}, "m2po_staleness"),
        ({"m2po_tau": 0.0}, "m2po_tau"),
        ({"m2po_tau": -0.04}, "m2po_tau"),
        ({"m2po_tau": math.inf}, "m2po_tau"),
        ({"steps_per_generation": 4}, "steps_per_generation"),
        ({"generation_batch_size": 16}, "steps_per_generation"),
        ({"num_iterations": 2}, "num_iterations"),
        ({"loss_type": "grpo"}, "loss_type"),
        ({"importance_sampling_level": "sequence"}, "importance_sampling_level"),
        ({"delta": 2.0}, "delta"),
        ({"off_policy_mask_threshold": 0.5}, "off_policy_mask_threshold"),
        ({"per_device_train_batch_size": 2, "gradient_accumulation_steps": 3}, "num_generations"),
    ],
)
def test_config_errors_name_the_field(tmp_path, overrides, field_name):
    with pytest.raises(ValueError, match=field_name):
        make_config(tmp_path, **overrides)


def test_staleness_zero_is_allowed(tmp_path):
    assert make_config(tmp_path, m2po_staleness=0).steps_per_generation == 2


def test_trainer_refuses_other_configs_and_streams(tiny_model_dir, tmp_path):
    from trl import GRPOConfig

    with pytest.raises(TypeError, match="M2POConfig"):
        M2POTrainer(tiny_model_dir, shaped_reward, args=GRPOConfig(str(tmp_path), use_cpu=True, report_to="none"))
    stream = IterableDataset.from_generator(lambda: iter([{"prompt": "1+1="}] * 8))
    with pytest.raises(ValueError, match="train_dataset"):
        M2POTrainer(tiny_model_dir, shaped_reward, args=make_config(tmp_path, max_steps=2), train_dataset=stream)


# ---------------------------------------------------------------------------------------------------- recipes

RECIPES = Path(__file__).resolve().parent.parent / "soup_trl" / "recipes"
SAME_AS_DAPO = (
    "model_name_or_path", "dataset_name", "per_device_train_batch_size", "gradient_accumulation_steps",
    "num_generations", "learning_rate", "max_completion_length", "temperature", "loss_type", "beta", "seed",
)  # fmt: skip


def parse_recipe(name, *extra):
    from soup_trl.scripts import train

    script_args, args, model_args = train.parse_args(["--config", str(RECIPES / name), "--bf16", "false", *extra])
    return {**vars(script_args), **vars(model_args), **vars(args), "config": args}


@pytest.mark.parametrize(
    ("recipe", "twin", "staleness"),
    [
        ("qwen2.5_math_7b_m2po.yaml", "qwen2.5_math_7b_dapo.yaml", 256),  # the M2PO paper's headline staleness
        ("r1_distill_qwen_1.5b_m2po.yaml", "r1_distill_qwen_1.5b_dapo.yaml", 256),
        ("tiny_arithmetic_m2po.yaml", "tiny_arithmetic_dapo.yaml", 8),
    ],
)
def test_recipes_are_the_dapo_twins_with_m2po(recipe, twin, staleness):
    m2po, dapo = parse_recipe(recipe, "--use_cpu", "true"), parse_recipe(twin, "--use_cpu", "true")
    assert m2po["method"] == "m2po" and isinstance(m2po["config"], M2POConfig)
    assert (m2po["m2po_staleness"], m2po["m2po_tau"]) == (staleness, 0.04)
    assert {k: m2po[k] for k in SAME_AS_DAPO} == {k: dapo[k] for k in SAME_AS_DAPO}


def test_method_flag_picks_the_config(tmp_path):
    recipe = tmp_path / "no_method.yaml"
    recipe.write_text((RECIPES / "tiny_arithmetic_m2po.yaml").read_text().replace("method: m2po\n", ""))
    with pytest.raises(ValueError, match="m2po_staleness"):  # without a method, the recipe is read as SOUP's
        parse_recipe(recipe)
    parsed = parse_recipe(recipe, "--method", "m2po", "--m2po_staleness", "3")
    assert isinstance(parsed["config"], M2POConfig) and parsed["m2po_staleness"] == 3
    with pytest.raises(ValueError, match="method='ppo' is unknown. Methods: soup, m2po, luffy"):
        parse_recipe(recipe, "--method", "ppo")


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

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_two_processes(tiny_model_dir, tmp_path):
    """Two gloo processes: no hang, the same schedule on both, each with its own queue of whole groups."""
    command = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(ROOT / "soup_trl" / "accelerate_configs" / "cpu_2proc.yaml"),
        str(Path(__file__).with_name("m2po_distributed_worker.py")),
        "--model", tiny_model_dir, "--out", str(tmp_path), "--steps", "5", "--staleness", "2", "--save-steps", "3",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]

    for rank in ranks:
        assert rank["samplings"] == [[0, 0], [0, 1], [0, 2], [1, 3], [2, 4]]
        assert [r["step"] for r in rank["records"]] == [s for s in range(5) for _ in range(GA)]
        assert [r["staleness"] for r in rank["records"]] == [0, 0, 1, 1, 2, 2, 2, 2, 2, 2]
        for record in rank["records"]:
            for g in range(0, len(record["prompts"]), G):
                assert len({tuple(p) for p in record["prompts"][g : g + G]}) == 1
                assert abs(sum(record["advantages"][g : g + G])) < 1e-4
    for r0, r1 in zip(ranks[0]["records"], ranks[1]["records"]):  # each process trains on its own rows
        assert not {tuple(p) for p in r0["prompts"]} & {tuple(p) for p in r1["prompts"]}

    # each process saved its own queue (the batches of steps 3 and 4) with the checkpoint
    queues = [torch.load(tmp_path / "checkpoint-3" / f"m2po_queue_rank{r}.pt", weights_only=False) for r in range(2)]
    assert [[(q["sampled_at"], q["train_step"]) for q in queue] for queue in queues] == [[(1, 3), (2, 4)]] * 2
    assert not torch.equal(queues[0][0]["batch"]["prompt_ids"], queues[1][0]["batch"]["prompt_ids"])
    history = json.loads((tmp_path / "log_history.json").read_text())
    assert sum("loss" in h for h in history) == 5
