"""SOUP's diagnostics: per-token statistics of the loss by segment, by relative position and of the high-entropy
tokens (the paper's Figure 5 and Section 5.2), the cycle's own metrics, and the tokens at the cuts (Figure 3).
SOUPTrainer logs the per-token statistics at every T, so on-policy DAPO (T = 1) and DAPO with mini-batch updates
(T = 1, `steps_per_generation` > `gradient_accumulation_steps`) log them from the same function as SOUP.

`token_stats` / `stats_to_metrics`, `high_entropy_mask` and `cut_tokens` are pure; the loggers reduce or gather over processes (every
process calls them, in the same order) and write to the trainer's metrics or the run's output directory.
"""

from __future__ import annotations

import json
import math
import os

import torch
from accelerate.utils import gather_object
from trl.trainer.utils import nanmax, nanmin

from ..core.masks import loss_tokens

#: Where SOUPTrainer writes the tokens at its cuts, in the run's output_dir (one JSON line per cycle), and where
#: `soup-trl plot` reads them (the paper's Figure 3).
CUT_TOKENS_FILE = "soup_cut_tokens.jsonl"


def cut_tokens(completion_ids: torch.Tensor, completion_mask: torch.Tensor, prefix_lengths: torch.Tensor) -> list:
    """The behavior token at each row's cut, the first one the current policy writes anew (the prefix keeps the
    tokens before it), as a token id; None where the behavior completion ends at the cut (nothing was cut away: an
    empty completion, or a row that the prefix budget sampled only up to its budget)."""
    lengths = completion_mask.sum(dim=1).long()  # (B,)
    at = prefix_lengths.long().clamp(max=max(completion_ids.size(1) - 1, 0))  # (B,)
    tokens = completion_ids.gather(1, at.unsqueeze(1)).squeeze(1) if completion_ids.size(1) else at  # (B,)
    return [int(t) if k < n else None for t, k, n in zip(tokens.tolist(), prefix_lengths.tolist(), lengths.tolist())]



SEGMENTS = ("prefix", "continuation")
STAT_NAMES = ("tokens", "ratio", "clipped", "entropy")
#: The share of a batch's loss tokens, those of highest entropy, whose clipping the paper's Section 5.2 is about (its
#: claim: SOUP lets more high-entropy tokens contribute gradients); their statistics are `soup/high_entropy/*`.
HIGH_ENTROPY_FRACTION = 0.2


def high_entropy_mask(entropies: torch.Tensor, mask: torch.Tensor, fraction: float = HIGH_ENTROPY_FRACTION) -> torch.Tensor:
    """The ceil(`fraction` x n) loss tokens of highest entropy among the batch's n loss tokens (`mask` (B, C) is 1 on
    them), as a (B, C) bool mask; ties are broken by position, the earlier token (row-major) first."""
    flat = entropies.detach().float().flatten()  # (B * C,)
    loss_tokens = mask.flatten().bool()
    count = math.ceil(round(fraction * int(loss_tokens.sum()), 9))  # round: a float product a hair above a whole number
    order = torch.argsort(torch.where(loss_tokens, -flat, torch.inf), stable=True)  # highest entropy first
    chosen = torch.zeros_like(loss_tokens)
    chosen[order[:count]] = True
    return chosen.view_as(mask)


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
    position_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sums behind SOUP's diagnostics, to be reduced across processes before dividing.

    Returns a (len(SEGMENTS) + num_bins + 1, 4) float tensor: for each segment (prefix, continuation), each
    relative-position bin and, last, the batch's high-entropy tokens (`high_entropy_mask`: the top 20% by entropy of
    this batch's loss tokens; the batch of one loss call on one process, which is the optimizer step's whole batch with
    one process and no gradient accumulation), the sums of [token count, importance ratio, clipped indicator, entropy]
    over the loss tokens. A token is clipped as in GRPOTrainer's `clip_ratio/region_mean`: ratio < 1 - epsilon_low with a negative
    advantage, or ratio > 1 + epsilon_high with a positive one. The relative position of token t in a row of n
    completion tokens (`position_mask` (B, C), 1 on them; `mask` when None) is t / n, binned into `num_bins` equal
    intervals; the bins sum the loss tokens only. A loss that leaves some completion tokens out (the prefix with
    `soup_prefix_loss="mask"`) passes its completion tokens as `position_mask`, so that a continuation token keeps its
    place in the whole completion.
    """
    mask = mask.float()
    advantages = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages  # (B, 1)
    ratio = torch.exp(per_token_logps.detach() - old_per_token_logps)  # (B, C)
    clipped = ((ratio < 1 - epsilon_low) & (advantages < 0)) | ((ratio > 1 + epsilon_high) & (advantages > 0))
    values = torch.stack([torch.ones_like(ratio), ratio, clipped.float(), entropies.detach().float()])  # (4, B, C)

    is_prefix = prefix_mask.float() * mask
    segments = torch.stack([is_prefix, mask - is_prefix])  # (2, B, C)
    seg_sums = torch.einsum("sbc,vbc->sv", segments, values)  # (2, 4)

    positions = mask if position_mask is None else position_mask.float()
    lengths = positions.sum(dim=1, keepdim=True).clamp(min=1.0)  # (B, 1)
    position = torch.cumsum(positions, dim=1) - 1  # index of each completion token within its row
    bins = torch.clamp((position / lengths * num_bins).floor().long(), 0, num_bins - 1)  # (B, C)
    one_hot = torch.nn.functional.one_hot(bins, num_bins).float() * mask.unsqueeze(-1)  # (B, C, bins)
    bin_sums = torch.einsum("bcn,vbc->nv", one_hot, values)  # (bins, 4)
    high = high_entropy_mask(entropies, mask).float()  # (B, C)
    high_sums = torch.einsum("bc,vbc->v", high, values).unsqueeze(0)  # (1, 4)
    return torch.cat([seg_sums, bin_sums, high_sums])  # (2 + bins + 1, 4)


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
    count = totals[-1, 0].item()
    if count > 0:  # the high-entropy tokens: how many of them are clipped, their mean ratio and entropy
        metrics["soup/high_entropy/clip_ratio"] = totals[-1, 2].item() / count
        metrics["soup/high_entropy/ratio_mean"] = totals[-1, 1].item() / count
        metrics["soup/high_entropy/entropy"] = totals[-1, 3].item() / count
    return metrics


def log_cycle_metrics(trainer, step: int, cut_positions: torch.Tensor | None, history_age: torch.Tensor | None) -> None:
    """The scored step's place in its cycle, its mean cut position and, with history-seeded prefixes, the share of rows
    served from the history and their mean age (every process's rows)."""
    metrics = trainer._metrics["train"]
    metrics["soup/cycle_step"].append(float(step + 1))
    if cut_positions is not None:
        gathered = trainer.accelerator.gather(cut_positions)
        metrics["soup/cut_position_mean"].append(torch.nanmean(gathered).item())
    if history_age is not None:
        gathered = trainer.accelerator.gather(history_age)
        from_history = ~gathered.isnan()
        metrics["soup/history_row_frac"].append(from_history.float().mean().item())
        if from_history.any():
            metrics["soup/history_age_mean"].append(gathered[from_history].mean().item())


def log_cut_tokens(trainer, token_ids: list) -> None:
    """Append this cycle's cut tokens, every process's, to OUTPUT_DIR/soup_cut_tokens.jsonl (one line, written by
    the main process). A resumed run writes the lines after its checkpoint again: readers keep a step's last."""
    gathered = gather_object([token_ids])  # one list per process, in process order
    if not trainer.accelerator.is_main_process:
        return
    ids = [t for rows in gathered for t in rows if t is not None]
    record = {
        "step": trainer.state.global_step + 1,  # the cycle's first optimizer step
        "truncation": trainer.args.soup_truncation,
        "token_ids": ids,
        "tokens": [trainer._tokenizer.decode([t]) for t in ids],
        "uncut_rows": sum(t is None for rows in gathered for t in rows),
    }
    os.makedirs(trainer.args.output_dir, exist_ok=True)
    with open(os.path.join(trainer.args.output_dir, CUT_TOKENS_FILE), "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


# ---------------------------------------------------------------------------------------------- sampler mismatch

MISMATCH_SEGMENTS = ("prefix", "continuation")


def segment_mismatch(
    trainer_logps: torch.Tensor,
    old_logps: torch.Tensor,
    sampling_logps: torch.Tensor,
    prefix_mask: torch.Tensor,
    mask: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The engine mismatch of each segment, against the engine that sampled it (all (B, C)): on prefix tokens the
    behavior trainer log-probs (`old_logps`, SOUP's prefix denominators) against the behavior sampler's, on
    continuation tokens the loss forward's (`trainer_logps`, the policy that sampled them) against the current
    sampler's. Tokens without a sampler log-prob (NaN) are left out.

    Returns sums (4,) [prefix tokens, sum |diff|, continuation tokens, sum |diff|] to reduce over processes, and the
    largest |diff| of each segment (2,) (0 without tokens)."""
    valid = mask.bool() & ~torch.isnan(sampling_logps)
    prefix = valid & prefix_mask.bool()
    continuation = valid & ~prefix_mask.bool()
    sums, maxes = [], []
    for segment, reference in ((prefix, old_logps), (continuation, trainer_logps.detach())):
        diff = (reference - sampling_logps).abs()[segment]
        sums += [float(diff.numel()), diff.sum().item()]
        maxes.append(diff.max().item() if diff.numel() else 0.0)
    return torch.tensor(sums, dtype=torch.float64), torch.tensor(maxes)


def mismatch_metrics(sums: torch.Tensor, maxes: torch.Tensor) -> dict[str, float]:
    """`soup/mismatch/{segment}/logp_diff_{mean,max}` from `segment_mismatch`'s sums and maxes over processes; a
    segment without tokens is left out."""
    metrics = {}
    for k, segment in enumerate(MISMATCH_SEGMENTS):
        count, total = sums[2 * k].item(), sums[2 * k + 1].item()
        if count > 0:
            metrics[f"soup/mismatch/{segment}/logp_diff_mean"] = total / count
            metrics[f"soup/mismatch/{segment}/logp_diff_max"] = maxes[k].item()
    return metrics


def log_mismatch(trainer, trainer_logps, inputs: dict) -> None:
    """Log the step's per-segment engine mismatch (vLLM; every process calls it, in the same order)."""
    mask = loss_tokens(inputs)
    old = inputs.get("old_per_token_logps")
    sums, maxes = segment_mismatch(
        trainer_logps, trainer_logps.detach() if old is None else old, inputs["sampling_per_token_logps"],
        inputs["soup_prefix_mask"], mask,
    )
    maxes = trainer.accelerator.gather(maxes.to(trainer.accelerator.device)).view(-1, len(MISMATCH_SEGMENTS)).amax(0)
    trainer._log_sums(sums.to(trainer.accelerator.device), lambda totals: mismatch_metrics(totals, maxes))


#: TRL's sampler-mismatch metrics, logged when a batch is scored with the vLLM correction on.
SAMPLING_METRICS = (
    "sampling/sampling_logp_difference/mean",
    "sampling/sampling_logp_difference/max",
    "sampling/importance_sampling_ratio/min",
    "sampling/importance_sampling_ratio/mean",
    "sampling/importance_sampling_ratio/max",
)


def sampling_metrics(trainer, old_logps, sampling_logps, ratio, mask, sequence_level: bool) -> dict[str, float]:
    """TRL's `sampling/*` statistics as GRPOTrainer computes them (means of the processes' means, extremes of their
    extremes), of a batch whose denominators and correction are SOUP's: with behavior trainer log-probs on prefix
    tokens, they compare each segment with its own sampler instead of the current policy with the behavior engine."""
    gather, device = trainer.accelerator.gather, trainer.accelerator.device
    valid = mask.bool()
    delta = (old_logps - sampling_logps).abs()
    delta = delta[valid & ~torch.isnan(delta)]
    zero = torch.tensor(0.0, device=device)
    flat = ratio.flatten() if sequence_level else ratio[valid]
    return {
        SAMPLING_METRICS[0]: gather(delta.mean() if delta.numel() else zero).mean().item(),
        SAMPLING_METRICS[1]: gather(delta.max() if delta.numel() else zero).max().item(),
        SAMPLING_METRICS[2]: nanmin(gather(flat.min() if flat.numel() else zero)).item(),
        SAMPLING_METRICS[3]: gather(flat.mean() if flat.numel() else zero).nanmean().item(),
        SAMPLING_METRICS[4]: nanmax(gather(flat.max() if flat.numel() else zero)).item(),
    }
