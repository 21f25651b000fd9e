"""Pure tensor functions behind SOUP's loss: prefix masks, token-level old log-probs, loss normalisation, the sampler
correction, group shuffles.

Nothing here touches a model or a process group, so every function is tested on hand-made tensors.
"""

from __future__ import annotations

import math

import torch


def prefix_mask_from_lengths(prefix_lengths: torch.Tensor, width: int) -> torch.Tensor:
    """(B,) prefix lengths -> (B, width) long mask, 1 on the first `prefix_lengths[i]` positions of row i."""
    positions = torch.arange(width, device=prefix_lengths.device).unsqueeze(0)  # (1, C)
    return (positions < prefix_lengths.unsqueeze(1)).long()  # (B, C)


def fit_width(values: torch.Tensor, width: int) -> torch.Tensor:
    """Right-trim or right-pad (with zeros) a (B, C') tensor to (B, width)."""
    if values.size(1) >= width:
        return values[:, :width]
    return torch.nn.functional.pad(values, (0, width - values.size(1)))


def mix_old_logps(
    current_logps: torch.Tensor, behavior_logps: torch.Tensor, prefix_mask: torch.Tensor
) -> torch.Tensor:
    """Token-level denominators of SOUP's importance ratio.

    Prefix tokens use the behavior policy that sampled them; continuation tokens use the policy that wrote the
    continuation (pi_old). All tensors are (B, C); `behavior_logps` may be narrower or wider (right-padded).
    """
    behavior = fit_width(behavior_logps, current_logps.size(1)).to(current_logps.dtype)
    return torch.where(prefix_mask.bool(), behavior, current_logps)  # (B, C)


def fill_current_logps(
    old_per_token_logps: torch.Tensor, current_logps: torch.Tensor, prefix_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Denominators with NaN ("the current policy at loss time") replaced by the loss forward's detached log-probs.

    Only continuation tokens may be NaN: a prefix token's denominator is a stored behavior log-prob, and a NaN there
    means the behavior forward broke (an overflow, a bad checkpoint). Filling it would silently count an off-policy
    token as on-policy, so with `prefix_mask` (1 on prefix tokens) a NaN inside a prefix raises instead.
    """
    missing = torch.isnan(old_per_token_logps)  # (B, C)
    if prefix_mask is not None:
        broken = missing & prefix_mask.bool()
        if broken.any():
            rows = sorted(set(broken.nonzero()[:, 0].tolist()))
            raise FloatingPointError(
                f"SOUP: {int(broken.sum())} prefix token(s) in row(s) {rows[:8]} of this micro-batch have NaN behavior "
                "log-probs: the behavior policy's forward produced NaN, and such a token cannot be weighted against "
                "the policy that sampled it. Check the model for inf/NaN activations (float16 overflow: train in "
                "bfloat16 or float32)."
            )
    return torch.where(missing, current_logps.detach(), old_per_token_logps)  # (B, C)


def dapo_num_items(step_tokens: torch.Tensor, steps_per_generation: int, gradient_accumulation_steps: int):
    """The `num_items_in_batch` to hand GRPOTrainer's DAPO loss so that it divides by `step_tokens`.

    GRPOTrainer assumes `num_items_in_batch` counts a whole generation batch of `steps_per_generation` micro-steps
    and divides it by `steps_per_generation / gradient_accumulation_steps`. SOUP scores every optimizer step on its
    own, so the count is scaled up by that same factor: the loss of a step is then normalised by that step's own
    completion-token count, as in DAPO.
    """
    return step_tokens * steps_per_generation / gradient_accumulation_steps


def importance_sampling_ratio(
    trainer_logps: torch.Tensor,
    sampler_logps: torch.Tensor,
    mask: torch.Tensor,
    mode: str,
    clip_min: float | None,
    clip_max: float | None,
) -> torch.Tensor:
    """Sampler-mismatch correction pi_trainer / pi_sampler, per token (B, C) or per sequence (B, 1).

    Same modes as GRPOConfig.vllm_importance_sampling_mode: "token_truncate", "token_mask", "sequence_truncate",
    "sequence_mask". Tokens whose sampler log-prob is NaN get no correction.
    """
    diff = torch.nan_to_num((trainer_logps - sampler_logps) * mask, nan=0.0)  # (B, C)
    if mode.startswith("sequence"):
        diff = diff.sum(dim=-1, keepdim=True)  # (B, 1)
    ratio = torch.exp(diff)
    if mode.endswith("truncate"):
        return torch.clamp(ratio, min=clip_min, max=clip_max)
    if mode.endswith("mask"):
        low = -math.inf if clip_min is None else clip_min
        high = math.inf if clip_max is None else clip_max
        return ratio.masked_fill((ratio < low) | (ratio > high), 0.0)
    raise ValueError(f"Unknown vllm_importance_sampling_mode: {mode!r}.")


def group_permutation(num_rows: int, group_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random row permutation that moves whole groups of `group_size` contiguous rows."""
    if num_rows % group_size:
        raise ValueError(f"{num_rows} rows do not split into groups of {group_size}.")
    order = torch.randperm(num_rows // group_size, generator=generator)
    return (order.unsqueeze(1) * group_size + torch.arange(group_size)).flatten()
