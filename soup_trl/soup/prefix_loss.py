"""What SOUP's loss does with the off-policy prefix tokens (`soup_prefix_loss`): one small class per choice, whose
hooks `SOUPTrainer` and `soup_trl.soup.step` call, and the pure tensor functions behind them.

- `"token_ratio"` (the default, the paper): every completion token is in the loss with its token-level ratio; prefix
  tokens against the behavior policy, continuation tokens against the current policy. Nothing changes.
- `"mask"` (PrefixRL, arXiv 2601.18795; Prefix Sampling, arXiv 2605.05112): the prefix stays in the context but leaves
  the loss: GRPOTrainer's `tool_mask` (its mask of tokens in the context that the loss skips) gets the prefix zeroed,
  and the step's DAPO count (`num_items_in_batch`) counts the continuation tokens only.
- `"minpro"` (MinPRO, arXiv 2601.22718): each token's loss term is weighed by the smallest token ratio among the tokens
  before it in its row (1 for the first), detached: a non-cumulative stand-in for the prefix importance ratio. The
  weight multiplies the token's advantage, so that GRPOTrainer's clipped term is scaled by it unchanged (for w >= 0,
  min(w r A, w clip(r) A) = w min(r A, clip(r) A)), and the vLLM correction, the entropy mask and the normaliser apply
  as before.

The equations and the choices made where the papers leave room: docs/method.md, "Prefix loss".
"""

from __future__ import annotations

import math

import torch

from ..core.masks import loss_tokens

#: The values of `soup_prefix_loss`.
PREFIX_LOSSES = ("token_ratio", "mask", "minpro")
#: Where "minpro" leaves its weights in the batch the loss reads (for its metrics; GRPOTrainer ignores the key).
WEIGHT_KEY = "soup_minpro_weight"
#: Metrics of "minpro": the mean weight of each segment's loss tokens.
WEIGHT_METRICS = ("soup/minpro/prefix/weight_mean", "soup/minpro/continuation/weight_mean")


# ----------------------------------------------------------------------------------------------------------------------
# Pure tensor functions
# ----------------------------------------------------------------------------------------------------------------------


def without_prefix(mask: torch.Tensor, prefix_mask: torch.Tensor) -> torch.Tensor:
    """`mask` (B, C) with the prefix tokens (`prefix_mask`, 1 on them) set to 0."""
    return mask * (1 - prefix_mask)  # (B, C)


def min_prefix_ratio(logps: torch.Tensor, old_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MinPRO's weight of every token: the smallest token ratio exp(logps - old_logps) among the loss tokens (`mask`)
    before it in its row, and 1 where no loss token precedes it. The token's own ratio is not in its minimum.

    Pass detached log-probs: the weight is a coefficient, not a path for the gradient.
    """
    log_ratio = (logps - old_logps).masked_fill(~mask.bool(), math.inf)  # (B, C), +inf: not a loss token
    running = torch.cummin(log_ratio, dim=1).values  # (B, C): min over j <= t
    before = torch.cat([torch.full_like(running[:, :1], math.inf), running[:, :-1]], dim=1)  # (B, C): min over j < t
    return torch.exp(before.masked_fill(before == math.inf, 0.0))  # (B, C), exp(0) = 1 where nothing precedes


def weighted_advantages(advantages: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-token advantages (B, C): the row's advantage ((B,) or already (B, C)) times the token's weight (B, C) >= 0."""
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)  # (B, 1)
    return advantages * weight  # (B, C)


def weight_sums(weight: torch.Tensor, mask: torch.Tensor, prefix_mask: torch.Tensor) -> torch.Tensor:
    """[prefix token count, sum of their weights, continuation token count, sum of their weights] over the loss tokens
    (`mask`), as float64 sums to be reduced across processes."""
    mask, is_prefix = mask.double(), (prefix_mask * mask).double()
    is_continuation, weight = mask - is_prefix, weight.detach().double()
    return torch.stack([is_prefix.sum(), (weight * is_prefix).sum(), is_continuation.sum(), (weight * is_continuation).sum()])


def weight_metrics(sums: torch.Tensor) -> dict[str, float]:
    """Reduced `weight_sums` as `WEIGHT_METRICS` means; a segment without tokens is left out."""
    metrics = {}
    for k, name in enumerate(WEIGHT_METRICS):
        count, total = sums[2 * k].item(), sums[2 * k + 1].item()
        if count > 0:
            metrics[name] = total / count
    return metrics


# ----------------------------------------------------------------------------------------------------------------------
# The choices
# ----------------------------------------------------------------------------------------------------------------------


class TokenRatio:
    """`"token_ratio"`, the paper's loss: prefix tokens in the loss with their token-level ratios. Every hook leaves the
    batch as it is; the other choices override some of them."""

    name = "token_ratio"
    trains_prefix = True  # False: the step's DAPO count leaves the prefix tokens out (`soup_trl.soup.step`)

    def loss_inputs(self, inputs: dict) -> dict:
        """The batch GRPOTrainer's loss reads (`SOUPTrainer._loss_inputs`): `inputs` itself, or a changed copy."""
        return inputs

    def loss_mask(self, mask: torch.Tensor, prefix_mask: torch.Tensor) -> torch.Tensor:
        """The tokens of `mask` (B, C) that are in the loss (the step's DAPO count and the vLLM correction cover them)."""
        return mask

    def on_policy_forward(self, loss_inputs: dict, logps: torch.Tensor) -> None:
        """Called once the loss forward's denominators are filled in (`logps` detached), before GRPOTrainer's loss reads
        `loss_inputs` (what `loss_inputs()` returned, which this may change)."""

    def weight_sums(self, loss_inputs: dict) -> torch.Tensor | None:
        """Sums behind the choice's metrics (`weight_metrics`), or None: no metrics."""
        return None


class MaskPrefix(TokenRatio):
    """`"mask"`: prefix tokens stay in the context and leave the loss (GRPOTrainer's `tool_mask` skips them)."""

    name = "mask"
    trains_prefix = False

    def loss_inputs(self, inputs: dict) -> dict:
        tool_mask = inputs.get("tool_mask", torch.ones_like(inputs["completion_mask"]))
        return {**inputs, "tool_mask": without_prefix(tool_mask, inputs["soup_prefix_mask"])}

    def loss_mask(self, mask: torch.Tensor, prefix_mask: torch.Tensor) -> torch.Tensor:
        return without_prefix(mask, prefix_mask)


class MinPRO(TokenRatio):
    """`"minpro"`: each token's advantage weighed by the smallest token ratio before it in its row (`min_prefix_ratio`)."""

    name = "minpro"

    def loss_inputs(self, inputs: dict) -> dict:
        return dict(inputs)  # its advantages are replaced below; the scored batch keeps the row advantages

    def on_policy_forward(self, loss_inputs: dict, logps: torch.Tensor) -> None:
        old = loss_inputs.get("old_per_token_logps")
        if old is None:  # an on-policy batch: GRPOTrainer's denominators are these log-probs, every weight is 1
            return
        mask = loss_tokens(loss_inputs)
        weight = min_prefix_ratio(logps, old, mask)  # (B, C)
        loss_inputs[WEIGHT_KEY] = weight
        loss_inputs["advantages"] = weighted_advantages(loss_inputs["advantages"], weight)

    def weight_sums(self, loss_inputs: dict) -> torch.Tensor:
        mask = loss_tokens(loss_inputs)
        weight = loss_inputs.get(WEIGHT_KEY)
        weight = torch.ones_like(mask, dtype=torch.float64) if weight is None else weight  # on-policy: all 1
        return weight_sums(weight, mask, loss_inputs["soup_prefix_mask"])


CHOICES = {choice.name: choice for choice in (TokenRatio, MaskPrefix, MinPRO)}


def get_prefix_loss(name: str) -> TokenRatio:
    """The choice named `name` (a value of `soup_prefix_loss`)."""
    if not isinstance(name, str) or name not in CHOICES:
        raise ValueError(
            f"soup_prefix_loss must be one of {', '.join(repr(n) for n in PREFIX_LOSSES)}, got {name!r}: 'token_ratio' "
            "(the paper), 'mask' (prefix out of the loss) or 'minpro' (MinPRO's minimum prefix ratio)."
        )
    return CHOICES[name]()
