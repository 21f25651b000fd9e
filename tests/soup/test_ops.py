"""SOUP's tensor math (`soup_trl.soup.ops`) on hand-made tensors with exact expected values. The splice and the
budgets: tests/soup/test_continuation.py; the token metrics: tests/soup/test_metrics.py."""

import math

import pytest
import torch

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
