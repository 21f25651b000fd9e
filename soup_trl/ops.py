"""Pure tensor functions behind SOUP: splicing, token-level old log-probs, loss normalisation, metrics.

Nothing here touches a model or a process group, so every function is tested on hand-made tensors.
"""

from __future__ import annotations

import math

import torch


def prefix_mask_from_lengths(prefix_lengths: torch.Tensor, width: int) -> torch.Tensor:
    """(B,) prefix lengths -> (B, width) long mask, 1 on the first `prefix_lengths[i]` positions of row i."""
    positions = torch.arange(width, device=prefix_lengths.device).unsqueeze(0)  # (1, C)
    return (positions < prefix_lengths.unsqueeze(1)).long()  # (B, C)


def continuation_budgets(prefix_lengths: list[int], max_completion_length: int) -> list[int]:
    """Tokens the current policy may still write after each prefix (always >= 1)."""
    budgets = [max_completion_length - k for k in prefix_lengths]
    if any(b < 1 for b in budgets):
        raise ValueError(f"a prefix leaves no continuation budget (max_completion_length={max_completion_length}).")
    return budgets


def splice(prefixes: list[list], continuations: list[list], budgets: list[int]) -> list[list]:
    """Row-wise `prefix + continuation[:budget]`: the spliced completion (works for ids and for log-probs)."""
    if not len(prefixes) == len(continuations) == len(budgets):
        raise ValueError("prefixes, continuations and budgets must have one entry per row.")
    return [list(p) + list(c[:b]) for p, c, b in zip(prefixes, continuations, budgets)]


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


def step_major_order(num_steps: int, num_processes: int, rows_per_step: int) -> list[int]:
    """Order of a cycle's global rows so that every process's contiguous share holds its part of every step.

    The dataloader hands process p the p-th contiguous share of a generation batch, and SOUP splits each share into
    `num_steps` contiguous steps. Reordering the batch with this permutation makes optimizer step s train on the
    global rows [s * P * R, (s + 1) * P * R) whatever the number of processes P (R = rows per process per step), so
    a run gives the same steps on 1 or N processes.
    """
    order = []
    for process in range(num_processes):
        for step in range(num_steps):
            start = (step * num_processes + process) * rows_per_step
            order.extend(range(start, start + rows_per_step))
    return order


SEGMENTS = ("prefix", "continuation")
STAT_NAMES = ("tokens", "ratio", "clipped", "entropy")


def token_stats(
    per_token_logps: torch.Tensor,
    old_per_token_logps: torch.Tensor,
    advantages: torch.Tensor,
    entropies: torch.Tensor,
    mask: torch.Tensor,
    prefix_mask: torch.Tensor,
    epsilon_low: float,
    epsilon_high: float,
    num_bins: int = 10,
) -> torch.Tensor:
    """Sums behind SOUP's diagnostics, to be reduced across processes before dividing.

    Returns a (len(SEGMENTS) + num_bins, 4) float tensor: for each
    segment (prefix, continuation) and each relative-position bin, the sums of [token count, importance ratio,
    clipped indicator, entropy] over the loss tokens. A token is clipped as in GRPOTrainer's `clip_ratio/region_mean`:
    ratio < 1 - epsilon_low with a negative advantage, or ratio > 1 + epsilon_high with a positive one. The relative
    position of token t in a row of n loss tokens is t / n, binned into `num_bins` equal intervals.
    """
    mask = mask.float()
    advantages = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages  # (B, 1)
    ratio = torch.exp(per_token_logps.detach() - old_per_token_logps)  # (B, C)
    clipped = ((ratio < 1 - epsilon_low) & (advantages < 0)) | ((ratio > 1 + epsilon_high) & (advantages > 0))
    values = torch.stack([torch.ones_like(ratio), ratio, clipped.float(), entropies.detach().float()])  # (4, B, C)

    is_prefix = prefix_mask.float() * mask
    segments = torch.stack([is_prefix, mask - is_prefix])  # (2, B, C)
    seg_sums = torch.einsum("sbc,vbc->sv", segments, values)  # (2, 4)

    lengths = mask.sum(dim=1, keepdim=True).clamp(min=1.0)  # (B, 1)
    position = torch.cumsum(mask, dim=1) - 1  # index of each loss token within its row
    bins = torch.clamp((position / lengths * num_bins).floor().long(), 0, num_bins - 1)  # (B, C)
    one_hot = torch.nn.functional.one_hot(bins, num_bins).float() * mask.unsqueeze(-1)  # (B, C, bins)
    bin_sums = torch.einsum("bcn,vbc->nv", one_hot, values)  # (bins, 4)
    return torch.cat([seg_sums, bin_sums])  # (2 + bins, 4)


def stats_to_metrics(totals: torch.Tensor, num_bins: int = 10) -> dict[str, float]:
    """Turn reduced `token_stats` sums into means; a category with no tokens is left out."""
    metrics = {}
    total_tokens = totals[: len(SEGMENTS), 0].sum().item()
    if total_tokens > 0:
        metrics["soup/prefix_token_frac"] = totals[0, 0].item() / total_tokens
    for row, segment in enumerate(SEGMENTS):
        count = totals[row, 0].item()
        if count > 0:
            metrics[f"soup/{segment}/ratio_mean"] = totals[row, 1].item() / count
            metrics[f"soup/{segment}/clip_ratio"] = totals[row, 2].item() / count
            metrics[f"soup/{segment}/entropy"] = totals[row, 3].item() / count
    for b in range(num_bins):
        count = totals[len(SEGMENTS) + b, 0].item()
        if count > 0:
            metrics[f"soup/position_bin_{b}/entropy"] = totals[len(SEGMENTS) + b, 3].item() / count
            metrics[f"soup/position_bin_{b}/clip_ratio"] = totals[len(SEGMENTS) + b, 2].item() / count
    return metrics
