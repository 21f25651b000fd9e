"""Pure tensor functions behind M2PO's second-moment trust region (no model, no process group).

Notation, per token of a micro-batch: `log_ratio = log pi_new - log pi_old`, the importance ratio r = exp(log_ratio),
d = -log_ratio = log pi_old - log pi_new and v = d^2 (the token's contribution to the second moment M2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def harmful_token_mask(log_ratio: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, C) bool: loss tokens in the two quadrants a PPO clip acts on, A > 0 with r > 1 or A < 0 with r < 1."""
    advantages = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages  # (B, 1)
    ratio = torch.exp(log_ratio)  # (B, C)
    harmful = ((advantages > 0) & (ratio > 1)) | ((advantages < 0) & (ratio < 1))
    return harmful & mask.bool()


def second_moment_cap(values: torch.Tensor, tau: float) -> float:
    """The largest squared log-ratio M2PO leaves unclipped among `values` (the v of the harmful tokens).

    No clipping (returns inf) when there are no values or their mean is <= tau. Otherwise, with v sorted ascending and
    n values, k is the first index where capping every value at v[k] gives a mean >= tau, i.e.
    v[k] * (n - k - 1) + sum_{j <= k} v[j] >= tau * n; the cap is v[k - 1], or 0 when k = 0 (every value is clipped).
    The sums are taken in float64; the returned cap is one of `values` (or 0 / inf), so comparing `values > cap` in
    their own dtype is exact.
    """
    n = values.numel()
    if n == 0:
        return math.inf
    v = torch.sort(values.detach().flatten().double()).values  # (n,) ascending
    if v.mean().item() <= tau:
        return math.inf
    capped_sums = v * (n - 1 - torch.arange(n, dtype=v.dtype, device=v.device)) + torch.cumsum(v, dim=0)  # (n,)
    k = int(torch.nonzero(capped_sums >= tau * n)[0])  # exists: at k = n - 1 it is the sum, > tau * n
    return 0.0 if k == 0 else v[k - 1].item()


@dataclass
class TrustRegion:
    """M2PO's trust region of one micro-batch."""

    threshold: float  # t: harmful tokens with |log r| > t are clipped; inf when nothing is clipped
    harmful: torch.Tensor  # (B, C) bool, see `harmful_token_mask`
    clipped: torch.Tensor  # (B, C) bool, harmful tokens beyond the threshold
    ratio_low: float  # lower bound of the ratio clamp, e^-t (0 when nothing is clipped)
    ratio_high: float  # upper bound of the ratio clamp, e^t (inf when nothing is clipped)


def m2po_trust_region(
    log_ratio: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, tau: float
) -> TrustRegion:
    """M2PO's threshold over the harmful tokens of a micro-batch, and the ratio clamp that enforces it.

    The clamp bounds are e^-t and e^t, widened where float rounding would put an unclipped token's ratio just outside
    them (the boundary token has |log r| = t exactly), so that the clamp acts on exactly the tokens in `clipped`.
    """
    log_ratio = log_ratio.detach()
    harmful = harmful_token_mask(log_ratio, advantages, mask)  # (B, C)
    squared = log_ratio.square()  # (B, C), v
    cap = second_moment_cap(squared[harmful], tau)
    if math.isinf(cap):
        return TrustRegion(math.inf, harmful, torch.zeros_like(harmful), 0.0, math.inf)
    clipped = harmful & (squared > cap)  # (B, C)
    threshold = math.sqrt(cap)
    advantages = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages  # (B, 1)
    ratio = torch.exp(log_ratio)  # (B, C)
    kept = harmful & ~clipped
    high, low = math.exp(threshold), math.exp(-threshold)
    kept_high = ratio[kept & (advantages > 0)]
    kept_low = ratio[kept & (advantages < 0)]
    if kept_high.numel():
        high = max(high, kept_high.max().item())
    if kept_low.numel():
        low = min(low, kept_low.min().item())
    return TrustRegion(threshold, harmful, clipped, low, high)


def m2po_per_token_loss(
    log_ratio: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, tau: float
) -> tuple[torch.Tensor, TrustRegion]:
    """Per-token M2PO loss max(-A r, -A clamp(r, e^-t, e^t)) (B, C), and the trust region it used.

    Only the clipped tokens lose their gradient (their ratio is replaced by the bound); there is no other clip.
    Aggregation over tokens is left to the caller (SOUP/M2PO use the DAPO token-level normaliser).
    """
    region = m2po_trust_region(log_ratio, advantages, mask, tau)
    advantages = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages  # (B, 1)
    ratio = torch.exp(log_ratio)  # (B, C)
    clamped = torch.clamp(ratio, region.ratio_low, region.ratio_high)
    return torch.maximum(-advantages * ratio, -advantages * clamped), region


def trust_region_stats(log_ratio: torch.Tensor, mask: torch.Tensor, region: TrustRegion) -> torch.Tensor:
    """Sums behind M2PO's metrics, to be reduced across processes before dividing.

    Returns float64 [loss tokens, harmful tokens, clipped tokens, sum of (log r)^2 over loss tokens,
    1 if a threshold applied, the threshold if it applied else 0].
    """
    mask = mask.bool()
    applied = not math.isinf(region.threshold)
    sums = [
        mask.sum(),
        region.harmful.sum(),
        region.clipped.sum(),
        log_ratio.detach().double().square()[mask].sum(),
        float(applied),
        region.threshold if applied else 0.0,
    ]
    return torch.stack([torch.as_tensor(x, dtype=torch.float64, device=log_ratio.device) for x in sums])  # (6,)


def trust_region_metrics(totals: torch.Tensor) -> dict[str, float]:
    """Means from reduced `trust_region_stats` sums; the threshold only when some micro-batch clipped."""
    tokens, harmful, clipped, squared, applied, threshold = totals.tolist()
    metrics = {}
    if tokens > 0:
        metrics["m2po/masked_token_frac"] = clipped / tokens
        metrics["m2po/harmful_token_frac"] = harmful / tokens
        metrics["m2po/second_moment"] = squared / tokens
    if applied > 0:
        metrics["m2po/threshold"] = threshold / applied
    return metrics
