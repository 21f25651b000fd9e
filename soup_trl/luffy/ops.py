"""Pure functions behind LUFFY: policy shaping, the off-policy loss, trace rows and trace text.

Nothing here touches a model or a process group, so every function is tested on hand-made tensors and strings.
"""

from __future__ import annotations

from typing import Any

import torch

THINK_OPENING = "<think>\n"


def policy_shaping(probs: torch.Tensor, gamma: float) -> torch.Tensor:
    """LUFFY's policy shaping f(p) = p / (p + gamma), applied to the current policy's token probabilities."""
    return probs / (probs + gamma)


def shaping_gradient_weight(probs: torch.Tensor, gamma: float) -> torch.Tensor:
    """d f(p) / d log p = gamma * p / (p + gamma)^2: the factor that multiplies -A * grad log p on a trace token.

    It plays the part of the importance ratio on on-policy tokens (about 1 there): at most 1/4 (at p = gamma), and
    small for tokens the policy already finds likely, so that training does not only sharpen them.
    """
    return gamma * probs / (probs + gamma) ** 2


def off_policy_token_loss(
    per_token_logps: torch.Tensor, advantages: torch.Tensor, off_policy_mask: torch.Tensor, gamma: float
) -> torch.Tensor:
    """Per-token loss of trace tokens, -A * f(exp(log p)), and 0 elsewhere. No behavior probability, no clip.

    `per_token_logps` (B, C) are the current policy's log-probs (with grad), `advantages` (B,) or (B, 1).
    """
    advantages = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages  # (B, 1)
    shaped = policy_shaping(torch.exp(per_token_logps), gamma)  # (B, C)
    return -advantages * shaped * off_policy_mask  # (B, C)


def off_policy_sums(
    per_token_logps: torch.Tensor, off_policy_mask: torch.Tensor, loss_mask: torch.Tensor, gamma: float
) -> torch.Tensor:
    """Sums behind LUFFY's metrics, to be reduced across processes before dividing.

    Returns [trace tokens, loss tokens (both kinds), sum of p over trace tokens, sum of `shaping_gradient_weight`
    over trace tokens] as a float tensor of 4.
    """
    off = off_policy_mask.float()
    probs = torch.exp(per_token_logps.detach().float())  # (B, C)
    return torch.stack(
        [off.sum(), loss_mask.float().sum(), (probs * off).sum(), (shaping_gradient_weight(probs, gamma) * off).sum()]
    )


def off_policy_metrics(totals: torch.Tensor) -> dict[str, float]:
    """LUFFY's metrics from `off_policy_sums` reduced over processes; a mean with no tokens is left out."""
    trace_tokens, loss_tokens, prob_sum, weight_sum = totals.tolist()
    metrics = {}
    if loss_tokens > 0:
        metrics["luffy/off_policy_token_frac"] = trace_tokens / loss_tokens
    if trace_tokens > 0:
        metrics["luffy/off_policy_prob_mean"] = prob_sum / trace_tokens
        metrics["luffy/shaping_weight_mean"] = weight_sum / trace_tokens
    return metrics


def trace_row_mask(num_rows: int, num_generations: int, num_traces: int, first_row: int = 0) -> torch.Tensor:
    """(num_rows,) bool: True on the rows that carry a trace, the last `num_traces` rows of every group.

    Rows are numbered from `first_row` in a batch whose groups are `num_generations` contiguous rows.
    """
    position = (torch.arange(num_rows) + first_row) % num_generations  # position of each row in its group
    return position >= num_generations - num_traces


def trace_content(value: Any, field: str) -> str:
    """The trace text of one dataset value: a string, or a one-message list `[{"role": "assistant", "content": ...}]`.

    Raises ValueError naming `field` when the value holds no non-empty trace.
    """
    if isinstance(value, list | tuple) and len(value) == 1 and isinstance(value[0], dict):
        value = value[0].get("content")
    if not isinstance(value, str):
        raise ValueError(
            f"luffy_trace_field={field!r}: expected a trace string or [{{'role': 'assistant', 'content': TRACE}}], "
            f"got {type(value).__name__}."
        )
    if not value.strip():
        raise ValueError(f"luffy_trace_field={field!r}: the trace is empty.")
    return value


def strip_reopened_think(trace: str, prompt_text: str) -> str:
    """Drop a leading `<think>\\n` from the trace when the templated prompt already ends with one (R1-style templates
    open the thinking block in the generation prompt), so the trace does not open it twice."""
    if prompt_text.endswith(THINK_OPENING) and trace.startswith(THINK_OPENING):
        return trace[len(THINK_OPENING) :]
    return trace
