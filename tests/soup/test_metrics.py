"""SOUP's token metrics (`soup_trl.soup.metrics`): per-segment and per-position statistics on hand-made tensors
with exact expected values."""

import pytest
import torch

from soup_trl.soup.metrics import stats_to_metrics, token_stats


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
