"""SOUP's tensor math on hand-made tensors with exact expected values."""

import math

import pytest
import torch

from soup_trl.core.samplers import step_major_order
from soup_trl.soup.continuation import continuation_budgets, splice
from soup_trl.soup.metrics import stats_to_metrics, token_stats
from soup_trl.soup.ops import (
    dapo_num_items,
    fill_current_logps,
    group_permutation,
    importance_sampling_ratio,
    mix_old_logps,
    prefix_mask_from_lengths,
)


def test_prefix_mask_from_lengths():
    mask = prefix_mask_from_lengths(torch.tensor([0, 2, 4]), 4)
    assert mask.tolist() == [[0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]]


def test_splice_respects_each_budget():
    prefixes = [[1, 2], [], [3]]
    continuations = [[7, 8, 9], [4, 5], [6, 6, 6, 6]]
    budgets = continuation_budgets([2, 0, 1], 4)
    assert budgets == [2, 4, 3]
    assert splice(prefixes, continuations, budgets) == [[1, 2, 7, 8], [4, 5], [3, 6, 6, 6]]


def test_budget_must_leave_a_token():
    with pytest.raises(ValueError, match="budget"):
        continuation_budgets([4], 4)


def test_mix_old_logps_takes_behavior_on_prefix_only():
    current = torch.tensor([[-1.0, -1.0, -1.0], [-2.0, -2.0, -2.0]])
    behavior = torch.tensor([[-0.5, -0.6], [-0.7, -0.8]])  # narrower: right-padded behavior batch
    mask = prefix_mask_from_lengths(torch.tensor([2, 0]), 3)
    mixed = mix_old_logps(current, behavior, mask)
    assert torch.equal(mixed, torch.tensor([[-0.5, -0.6, -1.0], [-2.0, -2.0, -2.0]]))


def test_dapo_num_items_undoes_grpo_rescaling():
    # GRPOTrainer divides by num_items / num_processes * GA / steps_per_generation
    step_tokens, spg, ga, procs = torch.tensor(120.0), 8, 2, 1
    handed = dapo_num_items(step_tokens, spg, ga)
    assert handed.item() == 480.0
    assert (handed / procs * ga / spg).item() == 120.0


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("token_truncate", [[math.exp(0.5), 2.0, 1.0]]),
        ("token_mask", [[math.exp(0.5), 0.0, 1.0]]),
        ("sequence_truncate", [[2.0]]),
        ("sequence_mask", [[0.0]]),
    ],
)
def test_importance_sampling_ratio_modes(mode, expected):
    trainer = torch.tensor([[-1.0, -0.0, -3.0]])
    sampler = torch.tensor([[-1.5, -1.0, float("nan")]])  # NaN: no correction for that token
    mask = torch.tensor([[1.0, 1.0, 1.0]])
    got = importance_sampling_ratio(trainer, sampler, mask, mode, clip_min=None, clip_max=2.0)
    assert torch.allclose(got, torch.tensor(expected), atol=1e-6)


def test_group_permutation_moves_whole_groups():
    perm = group_permutation(12, 3, torch.Generator().manual_seed(0))
    assert sorted(perm.tolist()) == list(range(12))
    groups = perm.view(4, 3)
    for g in groups:
        assert g[0] % 3 == 0 and g.tolist() == [g[0].item(), g[0].item() + 1, g[0].item() + 2]


def test_group_permutation_rejects_partial_groups():
    with pytest.raises(ValueError, match="groups of 4"):
        group_permutation(10, 4)


def test_token_stats_exact():
    # two rows: row 0 has 4 tokens, 2 of them prefix; row 1 has 2 tokens, no prefix, then padding
    logps = torch.log(torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]))
    old = torch.log(torch.tensor([[0.5, 1.0, 1.0, 1.0], [1.0 / 0.7, 1.0, 5.0, 5.0]]))
    # ratios: row0 [2, 1, 1, 1]; row1 [0.7, 1, 0.2, 0.2] (last two are padding)
    advantages = torch.tensor([1.0, -1.0])
    entropies = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    prefix = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]])
    totals = token_stats(logps, old, advantages, entropies, mask, prefix, 0.2, 0.28, num_bins=2)
    assert totals.shape == (4, 4)
    # prefix: 2 tokens, ratios 2 + 1, clipped: ratio 2 > 1.28 with A > 0 -> 1, entropy 1 + 2
    assert torch.allclose(totals[0], torch.tensor([2.0, 3.0, 1.0, 3.0]))
    # continuation: row0 tokens 2,3 (ratio 1) + row1 tokens 0,1 (ratio 0.7 < 0.8 with A < 0 -> clipped)
    assert torch.allclose(totals[1], torch.tensor([4.0, 3.7, 1.0, 3.0 + 4.0 + 5.0 + 6.0]))
    # relative position bins (2 bins): row0 positions 0,1 -> bin 0, 2,3 -> bin 1; row1 position 0 -> 0, 1 -> 1
    assert torch.allclose(totals[2], torch.tensor([3.0, 3.7, 2.0, 1.0 + 2.0 + 5.0]))
    assert torch.allclose(totals[3], torch.tensor([3.0, 3.0, 0.0, 3.0 + 4.0 + 6.0]))

    metrics = stats_to_metrics(totals, num_bins=2)
    assert metrics["soup/prefix_token_frac"] == pytest.approx(2 / 6)
    assert metrics["soup/prefix/clip_ratio"] == pytest.approx(0.5)
    assert metrics["soup/continuation/ratio_mean"] == pytest.approx(3.7 / 4)
    assert metrics["soup/position_bin_1/entropy"] == pytest.approx(13 / 3)


def test_stats_to_metrics_leaves_out_empty_segments():
    totals = torch.zeros(12, 4)
    totals[1] = torch.tensor([4.0, 4.0, 0.0, 8.0])
    metrics = stats_to_metrics(totals)
    assert "soup/prefix/ratio_mean" not in metrics
    assert metrics["soup/prefix_token_frac"] == 0.0
    assert metrics["soup/continuation/entropy"] == 2.0


def test_step_major_order():
    # 2 steps, 2 processes, 2 rows per process per step: global step s = rows [4s, 4s + 4)
    order = step_major_order(num_steps=2, num_processes=2, rows_per_step=2)
    assert order == [0, 1, 4, 5, 2, 3, 6, 7]  # process 0 holds [step 0, step 1] shares, then process 1
    assert step_major_order(3, 1, 4) == list(range(12))  # one process: unchanged


def test_fill_current_logps_fills_continuations_and_refuses_a_nan_prefix():
    nan = float("nan")
    old = torch.tensor([[-1.0, -2.0, nan, nan], [-0.5, nan, nan, nan]])
    current = torch.tensor([[-9.0, -9.0, -3.0, -4.0], [-9.0, -6.0, -7.0, -8.0]], requires_grad=True)
    prefix = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]])
    filled = fill_current_logps(old, current, prefix)
    assert torch.equal(filled, torch.tensor([[-1.0, -2.0, -3.0, -4.0], [-0.5, -6.0, -7.0, -8.0]]))
    assert not filled.requires_grad  # denominators are constants of the loss
    broken = old.clone()
    broken[1, 0] = nan  # a prefix token whose behavior log-prob is NaN
    with pytest.raises(FloatingPointError, match=r"SOUP: 1 prefix token\(s\) in row\(s\) \[1\] .* NaN behavior log-probs"):
        fill_current_logps(broken, current, prefix)
    assert torch.isnan(fill_current_logps(broken, current)).sum() == 0  # without a prefix mask: every NaN is filled
