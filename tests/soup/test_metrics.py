"""SOUP's metrics (`soup_trl.soup.metrics`): per-segment and per-position statistics, and the engine mismatch of each
segment, on hand-made tensors with exact expected values."""

from types import SimpleNamespace

import pytest
import torch

from soup_trl.soup.metrics import (
    SAMPLING_METRICS,
    high_entropy_mask,
    mismatch_metrics,
    sampling_metrics,
    segment_mismatch,
    stats_to_metrics,
    token_stats,
)


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
    assert totals.shape == (5, 4)
    # prefix: 2 tokens, ratios 2 + 1, clipped: ratio 2 > 1.28 with A > 0 -> 1, entropy 1 + 2
    assert torch.allclose(totals[0], torch.tensor([2.0, 3.0, 1.0, 3.0]))
    # continuation: row0 tokens 2,3 (ratio 1) + row1 tokens 0,1 (ratio 0.7 < 0.8 with A < 0 -> clipped)
    assert torch.allclose(totals[1], torch.tensor([4.0, 3.7, 1.0, 3.0 + 4.0 + 5.0 + 6.0]))
    # relative position bins (2 bins): row0 positions 0,1 -> bin 0, 2,3 -> bin 1; row1 position 0 -> 0, 1 -> 1
    assert torch.allclose(totals[2], torch.tensor([3.0, 3.7, 2.0, 1.0 + 2.0 + 5.0]))
    assert torch.allclose(totals[3], torch.tensor([3.0, 3.0, 0.0, 3.0 + 4.0 + 6.0]))
    # high-entropy tokens: ceil(0.2 x 6 loss tokens) = 2, entropies 6 and 5 (row 1; its padding's 7 and 8 never count),
    # ratios 1 and 0.7, the second clipped
    assert torch.allclose(totals[4], torch.tensor([2.0, 1.7, 1.0, 11.0]))

    metrics = stats_to_metrics(totals, num_bins=2)
    assert metrics["soup/prefix_token_frac"] == pytest.approx(2 / 6)
    assert metrics["soup/prefix/clip_ratio"] == pytest.approx(0.5)
    assert metrics["soup/continuation/ratio_mean"] == pytest.approx(3.7 / 4)
    assert metrics["soup/position_bin_1/entropy"] == pytest.approx(13 / 3)
    assert metrics["soup/high_entropy/clip_ratio"] == pytest.approx(0.5)
    assert metrics["soup/high_entropy/ratio_mean"] == pytest.approx(0.85)
    assert metrics["soup/high_entropy/entropy"] == pytest.approx(5.5)


def test_token_stats_places_loss_tokens_in_the_whole_completion():
    """A loss that leaves the prefix out (`position_mask`: the completion tokens) counts only its loss tokens, each
    binned by its place in the whole completion, and picks the high-entropy tokens among the loss tokens only."""
    logps, old = torch.zeros(1, 4), torch.zeros(1, 4)
    entropies = torch.tensor([[9.0, 8.0, 1.0, 2.0]])  # the prefix has the highest entropies
    completion = torch.ones(1, 4)
    prefix = torch.tensor([[1, 1, 0, 0]])
    loss = completion * (1 - prefix)  # the prefix out of the loss
    totals = token_stats(logps, old, torch.tensor([1.0]), entropies, loss, prefix, 0.2, 0.28, num_bins=2,
                         position_mask=completion)
    assert totals[0].tolist() == [0.0, 0.0, 0.0, 0.0]  # no prefix token is a loss token
    assert totals[1].tolist() == [2.0, 2.0, 0.0, 3.0]
    # positions 2 and 3 of 4: both in the second half (without `position_mask` they would be split 1 + 1)
    assert totals[2].tolist() == [0.0, 0.0, 0.0, 0.0] and totals[3].tolist() == [2.0, 2.0, 0.0, 3.0]
    assert totals[4].tolist() == [1.0, 1.0, 0.0, 2.0]  # ceil(0.2 x 2) = 1 token: entropy 2, not the prefix's 9
    unplaced = token_stats(logps, old, torch.tensor([1.0]), entropies, loss, prefix, 0.2, 0.28, num_bins=2)
    assert unplaced[2, 0].item() == 1.0 and unplaced[3, 0].item() == 1.0
    assert stats_to_metrics(totals, num_bins=2)["soup/prefix_token_frac"] == 0.0


def test_stats_to_metrics_leaves_out_empty_segments():
    totals = torch.zeros(13, 4)
    totals[1] = torch.tensor([4.0, 4.0, 0.0, 8.0])
    metrics = stats_to_metrics(totals)
    assert "soup/prefix/ratio_mean" not in metrics and "soup/high_entropy/clip_ratio" not in metrics
    assert metrics["soup/prefix_token_frac"] == 0.0
    assert metrics["soup/continuation/entropy"] == 2.0


@pytest.mark.parametrize(
    ("entropies", "mask", "fraction", "expected"),
    [
        # 10 loss tokens: the top 20% are the 2 highest, wherever they are
        ([[0.1, 0.9, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8, 0.05]], [[1] * 5, [1] * 5], 0.2,
         [[0, 1, 0, 0, 0], [0, 0, 0, 1, 0]]),
        # padding never counts, whatever its entropy: 6 loss tokens -> ceil(1.2) = 2
        ([[9.0, 0.1, 0.2, 0.3], [0.4, 0.5, 0.6, 9.0]], [[0, 1, 1, 1], [1, 1, 1, 0]], 0.2,
         [[0, 0, 0, 0], [0, 1, 1, 0]]),
        # ties: the earlier token (row-major) first
        ([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]], [[1, 1, 1], [1, 1, 1]], 0.5, [[1, 1, 1], [0, 0, 0]]),
        # no loss tokens: none chosen
        ([[1.0, 2.0]], [[0, 0]], 0.2, [[0, 0]]),
    ],
    ids=["top-2-of-10", "padding", "ties", "empty"],
)
def test_high_entropy_mask_exact(entropies, mask, fraction, expected):
    chosen = high_entropy_mask(torch.tensor(entropies), torch.tensor(mask), fraction)
    assert chosen.dtype == torch.bool and chosen.tolist() == torch.tensor(expected).bool().tolist()


def test_the_high_entropy_share_counts_the_clipped_among_the_top_tokens_only():
    """Two batches with the same clipped token: at the highest entropy it is half of the top 20%; at the lowest, none."""
    mask = torch.ones(1, 10)
    ratio = torch.ones(1, 10)
    ratio[0, 3] = 2.0  # one token clipped (ratio 2 > 1.28 with a positive advantage)
    logps, advantages = torch.log(ratio), torch.tensor([1.0])
    for entropy_of_clipped, share in ((5.0, 0.5), (0.0, 0.0)):
        entropies = torch.arange(10, dtype=torch.float).unsqueeze(0) / 10  # 0.0 ... 0.9: the top 2 are 0.9 and 0.8
        entropies[0, 3] = entropy_of_clipped
        totals = token_stats(logps, torch.zeros(1, 10), advantages, entropies, mask, torch.zeros(1, 10), 0.2, 0.28)
        metrics = stats_to_metrics(totals)
        assert metrics["soup/high_entropy/clip_ratio"] == pytest.approx(share)
        assert metrics["soup/continuation/clip_ratio"] == pytest.approx(0.1)  # the share of all tokens is unchanged


# ---------------------------------------------------------------------------------------------- engine mismatch


def test_each_segment_is_measured_against_its_own_sampler():
    nan = float("nan")
    trainer = torch.tensor([[-1.0, -2.0, -3.0, -4.0, -5.0]])  # the loss forward: the policy that wrote the continuation
    old = torch.tensor([[-1.5, -2.5, 0.0, 0.0, 0.0]])  # SOUP's denominators: behavior trainer log-probs on the prefix
    sampler = torch.tensor([[-1.0, -2.2, -3.1, nan, -9.0]])  # behavior engine on the prefix, current engine after it
    prefix = torch.tensor([[1, 1, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])  # the last token is padding; the NaN token has no sampler log-prob
    sums, maxes = segment_mismatch(trainer, old, sampler, prefix, mask)
    assert sums.tolist() == pytest.approx([2, 0.5 + 0.3, 1, 0.1])
    assert maxes.tolist() == pytest.approx([0.5, 0.1])
    metrics = mismatch_metrics(sums, maxes)
    assert metrics == pytest.approx({
        "soup/mismatch/prefix/logp_diff_mean": 0.4, "soup/mismatch/prefix/logp_diff_max": 0.5,
        "soup/mismatch/continuation/logp_diff_mean": 0.1, "soup/mismatch/continuation/logp_diff_max": 0.1,
    })  # fmt: skip


def test_a_segment_without_tokens_is_left_out():
    logps = torch.tensor([[-1.0, -2.0]])
    sums, maxes = segment_mismatch(logps, logps, logps - 0.25, torch.zeros(1, 2), torch.ones(1, 2))
    assert mismatch_metrics(sums, maxes) == pytest.approx({
        "soup/mismatch/continuation/logp_diff_mean": 0.25, "soup/mismatch/continuation/logp_diff_max": 0.25,
    })  # fmt: skip


def test_trls_sampling_metrics_of_a_batch_with_soups_denominators():
    """The statistics GRPOTrainer logs as `sampling/*`, recomputed on a batch whose prefix denominators are the behavior
    policy's (one process: its means and extremes are the batch's)."""
    from accelerate import Accelerator

    trainer = SimpleNamespace(accelerator=Accelerator(cpu=True))
    old = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, 0.0]])
    sampling = torch.tensor([[-1.5, -2.0, -2.0], [-1.0, -1.2, 0.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    ratio = torch.tensor([[0.5], [2.0]])  # sequence-level correction
    metrics = sampling_metrics(trainer, old, sampling, ratio, mask, sequence_level=True)
    assert list(metrics) == list(SAMPLING_METRICS)
    assert metrics == pytest.approx({
        "sampling/sampling_logp_difference/mean": (0.5 + 0 + 1 + 0 + 0.2) / 5,
        "sampling/sampling_logp_difference/max": 1.0,
        "sampling/importance_sampling_ratio/min": 0.5,
        "sampling/importance_sampling_ratio/mean": 1.25,
        "sampling/importance_sampling_ratio/max": 2.0,
    })  # fmt: skip
