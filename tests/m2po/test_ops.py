"""M2PO's trust-region math (`soup_trl.m2po.ops`) on hand-made tensors, against a plain-loop reference of the
released threshold rule, and as hypothesis properties."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from soup_trl.m2po.ops import (
    harmful_token_mask,
    m2po_per_token_loss,
    m2po_trust_region,
    second_moment_cap,
    trust_region_metrics,
    trust_region_stats,
)
from soup_trl.testing.properties import examples

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


@st.composite
def token_batches(draw):
    rows, width = draw(st.integers(1, 5)), draw(st.integers(1, 8))
    log_ratio = torch.tensor(draw(st.lists(st.floats(-3, 3, width=32), min_size=rows * width, max_size=rows * width)))
    advantages = torch.tensor(draw(st.lists(st.floats(-2, 2, width=32), min_size=rows, max_size=rows)))
    mask = torch.tensor(draw(st.lists(st.integers(0, 1), min_size=rows * width, max_size=rows * width)))
    tau = draw(st.floats(0, 4))
    return log_ratio.view(rows, width), advantages, mask.view(rows, width), tau


@settings(max_examples=examples("m2po"))
@given(batch=token_batches())
def test_m2po_masks_only_harmful_tokens_and_keeps_their_second_moment_within_tau(batch):
    log_ratio, advantages, mask, tau = batch
    region = m2po_trust_region(log_ratio, advantages, mask, tau)
    harmful = harmful_token_mask(log_ratio, advantages, mask)
    assert torch.equal(region.harmful, harmful)
    assert not (region.clipped & ~harmful).any()  # a non-harmful token is never masked
    squared = log_ratio.double().square()
    if region.clipped.any():
        kept = harmful & ~region.clipped
        if kept.any():
            assert squared[kept].mean().item() <= tau
    else:
        assert not harmful.any() or squared[harmful].mean().item() <= tau + 1e-12
    # the loss of every loss token the threshold keeps is the plain -A r (no other clip acts); clipped ones get no
    # gradient (tokens outside the mask never reach the loss)
    log_ratio = log_ratio.clone().requires_grad_(True)
    loss, _ = m2po_per_token_loss(log_ratio, advantages, mask, tau)
    plain = -advantages.unsqueeze(1) * torch.exp(log_ratio)
    kept = mask.bool() & ~region.clipped
    assert torch.equal(loss[kept], plain[kept])
    loss.sum().backward()
    assert (log_ratio.grad[region.clipped] == 0).all()
