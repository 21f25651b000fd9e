"""The prefix-loss choices (`soup_trl.soup.prefix_loss`, `soup_prefix_loss`) on hand-made tensors with exact expected
values, GRPOTrainer's loss fed with what each choice hands it, and short tiny-model runs. The loss of whole runs against
an independent recomputation: tests/integration/test_contract.py (fresh prefixes) and tests/integration/test_vllm.py."""

import math
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from trl import GRPOTrainer

from soup_trl import SOUPTrainer
from soup_trl.soup.prefix_loss import (
    PREFIX_LOSSES,
    WEIGHT_KEY,
    get_prefix_loss,
    min_prefix_ratio,
    weight_metrics,
    weight_sums,
    weighted_advantages,
    without_prefix,
)
from soup_trl.testing.rewards import shaped_reward

LOG = math.log


def test_without_prefix_zeroes_the_prefix_only():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    prefix = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]])
    assert without_prefix(mask, prefix).tolist() == [[0, 0, 1, 0], [1, 1, 1, 1]]


def test_min_prefix_ratio_is_the_smallest_ratio_before_each_token():
    # ratios 0.5, 2, 0.25, 1 then padding: each weight is the minimum over the tokens before it, 1 for the first
    logps = torch.tensor([[LOG(0.5), LOG(2.0), LOG(0.25), 0.0, -9.0]])
    weight = min_prefix_ratio(logps, torch.zeros(1, 5), torch.tensor([[1, 1, 1, 1, 0]]))
    torch.testing.assert_close(weight, torch.tensor([[1.0, 0.5, 0.5, 0.25, 0.25]]))


def test_min_prefix_ratio_leaves_out_the_tokens_own_ratio_and_can_exceed_one():
    # a single preceding ratio of 3 weighs the next token by 3 (no cap); the token's own 0.1 only reaches later tokens
    logps = torch.tensor([[LOG(3.0), LOG(0.1), 0.0]])
    weight = min_prefix_ratio(logps, torch.zeros(1, 3), torch.ones(1, 3))
    torch.testing.assert_close(weight, torch.tensor([[1.0, 3.0, 0.1]]))


def test_min_prefix_ratio_skips_tokens_outside_the_mask():
    # a token out of the loss (a tool result, 0 in the mask) is not part of any minimum; nothing before: weight 1
    logps = torch.tensor([[LOG(0.1), LOG(0.5), 0.0], [LOG(0.2), LOG(0.1), 0.0]])
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    weight = min_prefix_ratio(logps, torch.zeros(2, 3), mask)
    torch.testing.assert_close(weight, torch.tensor([[1.0, 1.0, 0.5], [1.0, 0.2, 0.1]]))


def test_min_prefix_ratio_under_soup_weighs_the_continuation_by_its_prefix():
    # SOUP: prefix denominators are the behavior's, continuation denominators the current policy's (ratio exactly 1)
    current = torch.tensor([[-1.0, -2.0, -0.5, -0.7, -0.3]])
    behavior = torch.tensor([[-1.5, -1.0, 0.0, 0.0, 0.0]])  # the first two tokens are the prefix
    old = torch.cat([behavior[:, :2], current[:, 2:]], dim=1)
    weight = min_prefix_ratio(current, old, torch.ones(1, 5))
    expected = [1.0, math.exp(0.5), math.exp(-1.0), math.exp(-1.0), math.exp(-1.0)]
    torch.testing.assert_close(weight, torch.tensor([expected]))


def test_min_prefix_ratio_of_an_on_policy_row_is_one():
    logps = torch.randn(3, 6)
    assert torch.equal(min_prefix_ratio(logps, logps, torch.ones(3, 6)), torch.ones(3, 6))


def test_weighted_advantages():
    weight = torch.tensor([[1.0, 0.5], [2.0, 0.0]])
    assert weighted_advantages(torch.tensor([2.0, -1.0]), weight).tolist() == [[2.0, 1.0], [-2.0, -0.0]]
    assert weighted_advantages(torch.tensor([[2.0, 4.0], [1.0, 1.0]]), weight).tolist() == [[2.0, 2.0], [2.0, 0.0]]


def test_weight_sums_and_metrics_by_segment():
    weight = torch.tensor([[1.0, 0.5, 0.25, 9.0], [1.0, 1.0, 1.0, 1.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    prefix = torch.tensor([[1, 0, 0, 0], [0, 0, 0, 0]])
    sums = weight_sums(weight, mask, prefix)
    assert sums.tolist() == [1.0, 1.0, 4.0, 2.75]
    assert weight_metrics(sums) == {"soup/minpro/prefix/weight_mean": 1.0, "soup/minpro/continuation/weight_mean": 0.6875}
    assert weight_metrics(torch.tensor([0.0, 0.0, 2.0, 1.0])) == {"soup/minpro/continuation/weight_mean": 0.5}


# ------------------------------------------------------------------ the choices' hooks


def batch(**extra):
    inputs = {
        "completion_mask": torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]),
        "soup_prefix_mask": torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]]),
        "advantages": torch.tensor([1.0, -1.0]),
        "old_per_token_logps": torch.tensor([[LOG(0.5), LOG(4.0), 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]),
    }
    return {**inputs, **extra}


def test_token_ratio_hands_the_batch_on_untouched():
    choice, inputs = get_prefix_loss("token_ratio"), batch()
    loss_inputs = choice.loss_inputs(inputs)
    assert loss_inputs is inputs
    choice.on_policy_forward(loss_inputs, torch.zeros(2, 4))
    assert set(loss_inputs) == set(batch()) and torch.equal(loss_inputs["advantages"], batch()["advantages"])
    mask = torch.ones(2, 4)
    assert choice.loss_mask(mask, inputs["soup_prefix_mask"]) is mask and choice.trains_prefix
    assert choice.weight_sums(loss_inputs) is None


@pytest.mark.parametrize("tool_mask", [None, torch.tensor([[1, 1, 1, 0], [0, 1, 1, 1]])])
def test_mask_zeroes_the_prefix_in_the_loss_mask_and_leaves_the_batch(tool_mask):
    inputs = batch() if tool_mask is None else batch(tool_mask=tool_mask)
    choice = get_prefix_loss("mask")
    loss_inputs = choice.loss_inputs(inputs)
    expected = [[0, 0, 1, 1], [1, 1, 1, 1]] if tool_mask is None else [[0, 0, 1, 0], [0, 1, 1, 1]]
    assert loss_inputs["tool_mask"].tolist() == expected
    assert torch.equal(loss_inputs["completion_mask"], inputs["completion_mask"])  # the prefix stays in the context
    assert ("tool_mask" in inputs) == (tool_mask is not None)  # the scored batch is not changed
    assert not choice.trains_prefix
    assert choice.loss_mask(inputs["completion_mask"], inputs["soup_prefix_mask"]).tolist() == [[0, 0, 1, 1], [1, 1, 1, 0]]


def test_minpro_weighs_a_copy_of_the_advantages():
    inputs = batch()
    choice = get_prefix_loss("minpro")
    loss_inputs = choice.loss_inputs(inputs)
    assert loss_inputs is not inputs
    choice.on_policy_forward(loss_inputs, torch.zeros(2, 4))  # current log-probs 0: ratios 2, 0.25, 1, 1 and all 1
    weight = torch.tensor([[1.0, 2.0, 0.25, 0.25], [1.0, 1.0, 1.0, 1.0]])
    torch.testing.assert_close(loss_inputs[WEIGHT_KEY], weight)
    torch.testing.assert_close(loss_inputs["advantages"], torch.tensor([[1.0], [-1.0]]) * weight)
    assert torch.equal(inputs["advantages"], batch()["advantages"])  # the scored batch keeps its row advantages
    sums = choice.weight_sums(loss_inputs)
    assert sums.tolist() == [2.0, 3.0, 5.0, 3.5]


def test_minpro_leaves_an_on_policy_batch_alone():
    inputs = batch()
    del inputs["old_per_token_logps"]  # GRPOTrainer's on-policy batch: its denominators are the loss forward's
    choice = get_prefix_loss("minpro")
    loss_inputs = choice.loss_inputs(inputs)
    choice.on_policy_forward(loss_inputs, torch.randn(2, 4))
    assert loss_inputs["advantages"] is inputs["advantages"] and WEIGHT_KEY not in loss_inputs
    assert choice.weight_sums(loss_inputs).tolist() == [2.0, 2.0, 5.0, 5.0]  # weight 1 everywhere


@pytest.mark.parametrize("name", ["ratio", "", None, ["mask"]])
def test_unknown_choice_names_the_field_and_the_choices(name):
    with pytest.raises(ValueError, match="soup_prefix_loss must be one of 'token_ratio', 'mask', 'minpro'"):
        get_prefix_loss(name)


def test_config_rejects_a_bad_value_by_name(make_config):
    with pytest.raises(ValueError, match=r"soup_prefix_loss must be one of 'token_ratio', 'mask', 'minpro', got 'min'"):
        make_config(soup_behavior_steps=2, soup_prefix_loss="min")


def test_config_warns_that_the_choice_does_nothing_without_prefixes(make_config):
    with pytest.warns(UserWarning, match="soup_prefix_loss is set but does nothing with soup_behavior_steps=1"):
        make_config(soup_behavior_steps=1, soup_prefix_loss="mask")


# ------------------------------------------------------------------ GRPOTrainer's loss, fed by each choice


class LossOnly:
    """The attributes GRPOTrainer's `_compute_loss` reads, around a fixed policy forward (no model), one process, one
    micro-step per optimizer step."""

    def __init__(self, logps, importance_sampling=False):
        self.logps = logps
        self.loss_type, self.epsilon_low, self.epsilon_high, self.beta = "dapo", 0.2, 0.28, 0.0
        self.importance_sampling_level, self.top_entropy_quantile, self.off_policy_mask_threshold = "token", 1.0, None
        self.use_vllm = self.vllm_importance_sampling_correction = importance_sampling
        self.aux_loss_enabled, self._entropy_bonus_enabled, self.current_gradient_accumulation_steps = False, False, 1
        self.args = SimpleNamespace(delta=None, steps_per_generation=1)
        self.accelerator = SimpleNamespace(
            num_processes=1, reduce=lambda x, reduction: x, gather=lambda x: x, gather_for_metrics=lambda x: x
        )
        self.model = SimpleNamespace(training=True)
        self._metrics = {"train": defaultdict(list)}

    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        return self.logps, torch.zeros_like(self.logps), None

    loss = GRPOTrainer._compute_loss


def loss_batch():
    completion_mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    return {
        "prompt_ids": torch.zeros(2, 1, dtype=torch.long), "prompt_mask": torch.ones(2, 1, dtype=torch.long),
        "completion_ids": torch.zeros(2, 4, dtype=torch.long), "completion_mask": completion_mask,
        "soup_prefix_mask": torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]]), "advantages": torch.tensor([1.0, -2.0]),
        "old_per_token_logps": torch.tensor([[-1.2, -0.4, -1.0, -0.5], [-0.1, -0.3, -0.2, 0.0]]),
        "num_items_in_batch": completion_mask.sum(),
    }  # fmt: skip


def by_hand(logps, inputs, weight, mask, normaliser, correction=1.0):
    ratio = torch.exp(logps - inputs["old_per_token_logps"])
    advantage = inputs["advantages"].unsqueeze(1)
    per_token = -torch.min(ratio * advantage, ratio.clamp(0.8, 1.28) * advantage) * weight * correction
    return (per_token * mask).sum() / normaliser


@pytest.mark.parametrize("name", PREFIX_LOSSES)
def test_grpo_trainers_dapo_loss_with_each_choice_equals_the_loss_by_hand(name):
    """What each choice hands GRPOTrainer's own `_compute_loss` gives its objective: "mask" drops the prefix terms (and
    the step's count, set at scoring time, leaves them out), "minpro" weighs every term by the minimum ratio before it."""
    logps = torch.tensor([[-1.0, -1.0, -1.0, -0.9], [-0.6, -0.3, -0.25, 0.0]])
    inputs, choice = loss_batch(), get_prefix_loss(name)
    completion_mask, prefix = inputs["completion_mask"], inputs["soup_prefix_mask"]
    loss_mask = choice.loss_mask(completion_mask, prefix)
    inputs["num_items_in_batch"] = loss_mask.sum()  # as `soup_trl.soup.step.apply_prefixes` counts a step
    loss_inputs = choice.loss_inputs(inputs)
    choice.on_policy_forward(loss_inputs, logps)
    got = LossOnly(logps).loss(None, loss_inputs)
    weight = torch.ones(2, 4)
    if name == "minpro":  # ratios exp(0.2), exp(-0.6), 1, exp(-0.4) and exp(-0.5), 1, exp(-0.05)
        weight = torch.exp(torch.tensor([[0.0, 0.2, -0.6, -0.6], [0.0, -0.5, -0.5, -0.5]]))
    expected = by_hand(logps, inputs, weight, loss_mask, float(loss_mask.sum()))
    torch.testing.assert_close(got, expected)
    assert int(loss_mask.sum()) == (4 if name == "mask" else 7)


@pytest.mark.parametrize("name", PREFIX_LOSSES)
def test_a_per_token_vllm_correction_multiplies_each_choices_terms(name):
    logps = torch.tensor([[-1.0, -1.0, -1.0, -0.9], [-0.6, -0.3, -0.25, 0.0]])
    correction = torch.tensor([[1.0, 0.9, 1.1, 1.0], [0.95, 1.0, 1.05, 1.0]])
    inputs, choice = loss_batch(), get_prefix_loss(name)
    loss_mask = choice.loss_mask(inputs["completion_mask"], inputs["soup_prefix_mask"])
    inputs["num_items_in_batch"] = loss_mask.sum()
    loss_inputs = {**choice.loss_inputs(inputs), "importance_sampling_ratio": correction}
    choice.on_policy_forward(loss_inputs, logps)
    got = LossOnly(logps, importance_sampling=True).loss(None, loss_inputs)
    weight = loss_inputs.get(WEIGHT_KEY, torch.ones(2, 4))
    torch.testing.assert_close(got, by_hand(logps, inputs, weight, loss_mask, float(loss_mask.sum()), correction))


# ------------------------------------------------------------------ short runs


def train(model_dir, args, prompts):
    trainer = SOUPTrainer(model_dir, shaped_reward, args=args, train_dataset=prompts)
    initial = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    final = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    return trainer, initial, final


RUN = dict(soup_behavior_steps=2, per_device_train_batch_size=4, gradient_accumulation_steps=2, max_steps=4,
           temperature=0.8)  # fmt: skip


def without_timings(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in h.items() if "time" not in k and "per_second" not in k} for h in history]


def test_the_default_is_token_ratio_bit_for_bit(tiny_model_dir, make_config, make_dataset):
    """Unset and "token_ratio" are the same run: same logs (losses, metrics), same parameters."""
    settings = ({}, {"soup_prefix_loss": "token_ratio"})
    (default, _, default_final), (token_ratio, _, token_ratio_final) = [
        train(tiny_model_dir, make_config(**RUN, **extra), make_dataset(32)) for extra in settings
    ]
    assert default.args.soup_prefix_loss == "token_ratio"
    assert without_timings(default.state.log_history) == without_timings(token_ratio.state.log_history)
    for name, value in default_final.items():
        assert torch.equal(token_ratio_final[name], value), name


@pytest.mark.parametrize("name", ["mask", "minpro"])
def test_each_choice_trains_every_parameter_with_history_prefixes(tiny_model_dir, make_config, make_dataset, name):
    """History-seeded prefixes (T = 1): the prefix-loss choice applies to them, the run trains every parameter, and
    "minpro" logs its weights of prefix and continuation tokens."""
    args = make_config(soup_behavior_steps=1, soup_behavior_source="history", soup_prefix_ratio=0.5, max_steps=4,
                       per_device_train_batch_size=4, soup_history_max_epochs=None, soup_prefix_loss=name)  # fmt: skip
    trainer, initial, final = train(tiny_model_dir, args, make_dataset(2))
    history = trainer.state.log_history
    assert [h["soup/history_row_frac"] for h in history if "soup/history_row_frac" in h] == [0.0, 0.0, 1.0, 1.0]
    assert all(math.isfinite(h["loss"]) for h in history if "loss" in h)
    assert all(not torch.equal(initial[n], final[n]) for n in final), "a parameter did not train"
    weights = [h for h in history if "soup/minpro/continuation/weight_mean" in h]
    if name == "minpro":
        assert len(weights) == 4 and all(h["soup/minpro/continuation/weight_mean"] > 0 for h in weights)
        spliced = weights[2:]  # prefixes from the store: the policy moved since, so the weights move away from 1
        assert any(abs(h["soup/minpro/continuation/weight_mean"] - 1) > 1e-3 for h in spliced)
    else:
        assert not weights
