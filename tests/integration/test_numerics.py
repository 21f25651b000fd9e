"""Numerics: SOUP's contract under bf16 autocast on CPU, and steps whose groups all have equal rewards.

`bf16=True` with `use_cpu=True` makes Accelerate run every forward of the trainer (sampling, behavior log-probs,
scoring, loss) under `torch.autocast("cpu", dtype=torch.bfloat16)`; parameters, gradients and the optimizer stay
float32. Under bf16 the trainer's log-probs match an independent float32 recomputation to about 5e-3 (8 mantissa
bits), so the contract is checked at 2e-2 there, and at 1e-4 in float32. Each precision's check can fail:
the behavior and current policies differ by more than 4 tolerances.
"""

from __future__ import annotations

import math

import pytest
import torch
from transformers import TrainerCallback

from soup_trl import LUFFYConfig, LUFFYTrainer, M2POConfig, M2POTrainer, SOUPConfig, SOUPTrainer
from soup_trl.testing.rewards import shaped_reward
from soup_trl.testing.snapshots import SnapshotPolicy, rows

from .test_contract import run_soup

TEMPERATURE = 0.8
G, B, GA, T = 4, 4, 2, 3  # num_generations, per-device batch, accumulation, behavior steps
TOLERANCE = {"fp32": 1e-4, "bf16": 2e-2}  # trainer log-probs vs a float32 recomputation


@pytest.fixture(scope="module", params=["fp32", "bf16"])
def precision_run(request, tiny_model_dir, make_config, make_dataset):
    args = make_config(
        bf16=request.param == "bf16", soup_behavior_steps=T, soup_prefix_ratio=0.5, per_device_train_batch_size=B,
        gradient_accumulation_steps=GA, num_generations=G, temperature=TEMPERATURE, max_steps=T,
    )
    linear_outputs = set()  # dtypes of every linear layer's output during the run

    def record(module, inputs, output):
        if isinstance(module, torch.nn.Linear):
            linear_outputs.add(output.dtype)

    hook = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        trainer, records = run_soup(tiny_model_dir, args, make_dataset(100))
    finally:
        hook.remove()
    trainer.linear_outputs = linear_outputs
    return request.param, tiny_model_dir, trainer, records


def test_bf16_autocast_reaches_every_forward(precision_run):
    precision, _, trainer, _ = precision_run
    assert trainer.accelerator.mixed_precision == ("bf16" if precision == "bf16" else "no")
    assert trainer.linear_outputs == {torch.bfloat16 if precision == "bf16" else torch.float32}
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # master weights stay float32


def test_prefix_denominators_are_behavior_continuations_current(precision_run):
    precision, model_dir, _, records = precision_run
    tolerance, policy = TOLERANCE[precision], lambda params: SnapshotPolicy(model_dir, params, TEMPERATURE)
    drift, worst, checked = 0.0, 0.0, 0
    for record in records["losses"]:
        step = record["step"]
        if step["step"] == 0:
            continue
        behavior, current = policy(step["cycle"]["params"]), policy(record["params"])
        inputs = record["inputs"]  # as the loss left them: continuation NaNs filled by its own forward
        for prompt, completion, k, i in rows(inputs):
            old = inputs["old_per_token_logps"][i, : len(completion)]
            expected = torch.cat([behavior.logps(prompt, completion)[:k], current.logps(prompt, completion)[k:]])
            worst = max(worst, (old - expected).abs().max().item())
            if k:
                drift = max(drift, (current.logps(prompt, completion)[:k] - expected[:k]).abs().max().item())
            checked += 1
    assert checked == (T - 1) * B * GA
    print(f"{precision}: largest deviation {worst:.2g}, behavior-current drift {drift:.2g}")
    assert worst <= tolerance, worst
    assert drift > 4 * tolerance, drift  # behavior and current policies are told apart at this tolerance


def test_groups_stay_whole(precision_run):
    _, _, _, records = precision_run
    for step in records["steps"]:
        prompts = [tuple(p) for batch in step["batches"] for p, _, _, _ in rows(batch)]
        advantages = torch.cat([batch["advantages"] for batch in step["batches"]])
        assert len(prompts) == len(set(prompts)) * G
        for g in range(0, len(prompts), G):
            assert len(set(prompts[g : g + G])) == 1
            assert abs(advantages[g : g + G].sum().item()) < 1e-4


def test_losses_and_gradients_finite(precision_run):
    precision, _, trainer, records = precision_run
    assert all(math.isfinite(r["loss"]) for r in records["losses"])
    assert any(abs(r["loss"]) > 1e-3 for r in records["losses"])
    assert all(math.isfinite(h["grad_norm"]) for h in trainer.state.log_history if "grad_norm" in h)


# ------------------------------------------------------------------------- all groups with equal rewards

ZERO_STEPS = 2  # steps whose rewards are all equal (every group has zero variance)


def equal_until_step_2(completions, trainer_state, **kwargs):
    """1.0 for every completion sampled before global step 2, then rewards that vary within groups."""
    if trainer_state.global_step < ZERO_STEPS:
        return [1.0] * len(completions)
    return shaped_reward(completions)


class ParameterSnapshots(TrainerCallback):
    def __init__(self, model):
        self.model, self.snapshots = model, [self.copy(model)]

    @staticmethod
    def copy(model):
        return {k: v.detach().clone() for k, v in model.named_parameters()}

    def on_step_end(self, args, state, control, **kwargs):
        self.snapshots.append(self.copy(self.model))


def trainer_for(method, model_dir, make_config, make_dataset, precision):
    common = dict(bf16=precision == "bf16", max_steps=4, learning_rate=1e-2, adam_epsilon=1e-8)
    if method == "soup":
        return SOUPTrainer(model_dir, equal_until_step_2, train_dataset=make_dataset(64),
                           args=make_config(SOUPConfig, soup_behavior_steps=2, **common))  # fmt: skip
    if method == "soup_dynamic_sampling":  # refill rounds find no group with varied rewards: all rows masked
        return SOUPTrainer(model_dir, equal_until_step_2, train_dataset=make_dataset(64),
                           args=make_config(SOUPConfig, soup_behavior_steps=2, dynamic_sampling=True,
                                            dynamic_sampling_max_rounds=1, **common))  # fmt: skip
    if method == "m2po":
        return M2POTrainer(model_dir, equal_until_step_2, train_dataset=make_dataset(64),
                           args=make_config(M2POConfig, m2po_staleness=1, **common))  # fmt: skip
    traces = make_dataset(64).add_column("trace", ["7"] * 64)
    return LUFFYTrainer(model_dir, equal_until_step_2, train_dataset=traces,
                        args=make_config(LUFFYConfig, luffy_trace_field="trace", remove_unused_columns=False, **common))  # fmt: skip


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("method", ["soup", "soup_dynamic_sampling", "m2po", "luffy"])
def test_zero_variance_steps_train_without_nan(tiny_model_dir, make_config, make_dataset, method, precision):
    """Steps whose every group has equal rewards: loss 0, gradient 0, parameters unchanged, every logged number finite;
    and the first step with varied rewards after them moves each parameter by at most ~lr (no Adam blow-up from the
    all-zero second moments)."""
    trainer = trainer_for(method, tiny_model_dir, make_config, make_dataset, precision)
    params = ParameterSnapshots(trainer.model)
    trainer.add_callback(params)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    for h in logs:
        bad = {k: v for k, v in h.items() if isinstance(v, float) and not math.isfinite(v)}
        assert not bad, (h["step"], bad)
    assert [h["loss"] for h in logs[:ZERO_STEPS]] == [0.0] * ZERO_STEPS
    assert [h["grad_norm"] for h in logs[:ZERO_STEPS]] == [0.0] * ZERO_STEPS
    for snapshot in params.snapshots[1 : ZERO_STEPS + 1]:
        for name, value in params.snapshots[0].items():
            assert torch.equal(snapshot[name], value), name
    moved = [k for k, v in params.snapshots[-1].items() if not torch.equal(v, params.snapshots[0][k])]
    assert moved  # later steps with varied rewards did train
    lr = trainer.args.learning_rate
    for before, after in zip(params.snapshots[ZERO_STEPS:], params.snapshots[ZERO_STEPS + 1 :]):
        step_size = max((after[k] - before[k]).abs().max().item() for k in before)
        assert math.isfinite(step_size) and step_size <= 2 * lr, step_size
