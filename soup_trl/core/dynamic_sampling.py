"""DAPO's dynamic sampling (the constraint 0 < #correct < G of the DAPO paper's Eq. 1), for every trainer.

A group whose rewards are all equal has zero advantage: it teaches nothing, yet its tokens dilute the token-level
loss. With `dynamic_sampling=True` (a field of every method's config) such groups are dropped after scoring and
replaced by groups of further prompts, whole groups only, until the batch has its configured number of groups (or
`dynamic_sampling_max_rounds` extra generation rounds were spent). `refill_groups` does that for a trainer; the rest of
the module is the row bookkeeping, as pure functions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from .masks import loss_tokens

logger = logging.getLogger(__name__)

LEFT_PADDED = ("prompt_ids", "prompt_mask")
NOT_ROWS = ("num_items_in_batch",)


def group_has_variance(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(B,) rewards, groups contiguous -> (B // G,) bool: the group's rewards are not all equal.

    NaN rewards (no reward function scored the sample) are left out; a group with fewer than two scored samples has
    no variance. Exact comparison, so rewards of 0.3 and 0.30000000000000004 differ, as they do for the advantage.
    """
    groups = rewards.view(-1, group_size)  # (N, G)
    scored = ~torch.isnan(groups)
    low = torch.where(scored, groups, torch.full_like(groups, float("inf"))).amin(dim=1)
    high = torch.where(scored, groups, torch.full_like(groups, float("-inf"))).amax(dim=1)
    return (scored.sum(dim=1) >= 2) & (high > low)


def groups_with_variance(rewards_per_func: torch.Tensor, weights: torch.Tensor, group_size: int, aggregation: str):
    """(B, F) rewards of whole groups -> (B // G,) bool: which groups have rewards that are not all equal, as
    GRPOTrainer aggregates them (`multi_objective_aggregation`): the weighted sum's, or, with "normalize_then_sum",
    any one function's."""
    if aggregation == "sum_then_normalize":
        rewards = (rewards_per_func * weights.to(rewards_per_func.device).unsqueeze(0)).nansum(dim=1)
        rewards[torch.isnan(rewards_per_func).all(dim=1)] = float("nan")
        return group_has_variance(rewards, group_size)
    columns = [group_has_variance(rewards_per_func[:, i], group_size) for i in range(rewards_per_func.size(1))]
    return torch.stack(columns).any(dim=0)


def group_rows(groups: torch.Tensor, group_size: int) -> torch.Tensor:
    """Row indices of the given group indices, groups kept whole and in order."""
    return (groups.unsqueeze(1) * group_size + torch.arange(group_size, device=groups.device)).reshape(-1)


def take_rows(batch: dict, rows: torch.Tensor) -> dict:
    """The given rows of every per-row entry of a scored batch (tensors with a batch dimension, per-row lists)."""
    size = batch["completion_ids"].size(0)
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.ndim > 0 and key not in NOT_ROWS:
            out[key] = value[rows.to(value.device)]
        elif isinstance(value, list) and len(value) == size:
            out[key] = [value[i] for i in rows.tolist()]
        else:
            out[key] = value
    return out


def _pad_to(value: torch.Tensor, width: int, left: bool, fill) -> torch.Tensor:
    missing = width - value.size(1)
    if missing <= 0:
        return value
    padding = value.new_full((value.size(0), missing, *value.shape[2:]), fill)
    return torch.cat([padding, value] if left else [value, padding], dim=1)


def concat_batches(batches: list[dict], pad_token_id: int) -> dict:
    """Rows of several scored batches in one batch: prompts left-padded, completion-side tensors right-padded.

    Every batch must carry the same keys. Token ids are padded with `pad_token_id`, masks and per-token values
    with 0 (they sit under a zero completion mask). `num_items_in_batch` is left to the caller to recompute.
    """
    keys = set(batches[0])
    for batch in batches[1:]:
        if set(batch) != keys:
            raise ValueError(f"Cannot merge scored batches with different fields: {sorted(keys ^ set(batch))}.")
    merged = {}
    for key, first in batches[0].items():
        values = [batch[key] for batch in batches]
        if key in NOT_ROWS:
            merged[key] = first
        elif isinstance(first, torch.Tensor) and first.ndim >= 2:
            width = max(v.size(1) for v in values)
            fill = pad_token_id if key.endswith("_ids") else 0
            merged[key] = torch.cat([_pad_to(v, width, key in LEFT_PADDED, fill) for v in values])
        elif isinstance(first, torch.Tensor) and first.ndim == 1:
            merged[key] = torch.cat(values)
        elif isinstance(first, list):
            merged[key] = [item for v in values for item in v]
        else:
            merged[key] = first
    return merged


class PromptStream:
    """Prompts drawn for refills: a seeded permutation of the training set per process, epoch after epoch.

    Its state is the number of prompts drawn, so a resumed run draws the same prompts as an uninterrupted one.
    """

    def __init__(self, dataset, seed: int):
        if len(dataset) == 0:
            raise ValueError("dynamic_sampling needs a non-empty training dataset to draw refill prompts from.")
        self.dataset, self.seed, self.drawn = dataset, seed, 0

    def _order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(len(self.dataset), generator=generator).tolist()

    def take(self, n: int) -> list[dict]:
        rows, size = [], len(self.dataset)
        while len(rows) < n:
            epoch, offset = divmod(self.drawn, size)
            order = self._order(epoch)
            for index in order[offset : offset + n - len(rows)]:
                rows.append(self.dataset[index])
                self.drawn += 1
        return rows


#: The per-process checkpoint state of the refill prompts (`PromptStream.drawn`); checkpoints written before dynamic
#: sampling moved to the core named it after SOUP.
PROMPT_STREAM_STATE = "dynamic_sampling_prompts"
LEGACY_PROMPT_STREAM_STATE = "soup_prompt_stream"


def refill_seed(seed: int, process_index: int) -> int:
    """The seed of a process's refill prompt order."""
    return seed + 1_000_003 * (process_index + 1)


def refill_groups(
    trainer, batch: dict, rewards: torch.Tensor, score: Callable[[list[dict]], tuple[dict, torch.Tensor]]
) -> tuple[dict, torch.Tensor]:
    """Drop `batch`'s zero-variance groups and refill them with groups of further prompts, whole groups only.

    `rewards` (B, F) are this process's rows' rewards per function; `score(rows)` scores further dataset rows (each
    prompt repeated num_generations times) and returns the same pair. Returns the batch (same number of rows) and,
    per row, the index of its source row in `batch` (-1 for refilled rows). Every process runs the same number of
    refill rounds (the most any process needs: scoring is collective), and draws its refill prompts from its own
    seeded order over the training set (`trainer._refill_prompts`, created on first use).
    """
    args, accelerator, group_size = trainer.args, trainer.accelerator, trainer.num_generations
    device = accelerator.device

    def variance(values: torch.Tensor) -> torch.Tensor:
        return groups_with_variance(values, trainer.reward_weights, group_size, trainer.multi_objective_aggregation)

    keep = variance(rewards)
    kept = group_rows(keep.nonzero().flatten(), group_size)
    parts, sources = [take_rows(batch, kept)], [kept]
    missing, rounds = int((~keep).sum()), 0
    while rounds < args.dynamic_sampling_max_rounds:
        need = int(accelerator.gather(torch.tensor([missing], device=device)).max())
        if need == 0:
            break
        rounds += 1
        if trainer._refill_prompts is None:
            trainer._refill_prompts = PromptStream(trainer.train_dataset, refill_seed(args.seed, accelerator.process_index))
        extra, extra_rewards = score([row for row in trainer._refill_prompts.take(need) for _ in range(group_size)])
        good = variance(extra_rewards).nonzero().flatten()[:missing]
        parts.append(take_rows(extra, group_rows(good, group_size)))
        sources.append(torch.full((len(good) * group_size,), -1, dtype=torch.long))
        missing -= len(good)
    metrics = trainer._metrics["train"]
    metrics["dynamic_sampling/kept_group_frac"].append(accelerator.gather(keep.float()).mean().item())
    metrics["dynamic_sampling/rounds"].append(float(rounds))
    unfilled = accelerator.gather(torch.tensor([float(missing)], device=device)).sum().item()
    metrics["dynamic_sampling/unfilled_group_frac"].append(unfilled / (keep.numel() * accelerator.num_processes))
    if missing:
        logger.warning(
            "dynamic sampling: %d of %d groups still have equal rewards after %d refill rounds "
            "(dynamic_sampling_max_rounds); this step trains on the other groups only.",
            missing, keep.numel(), rounds,
        )
        filler_rows = group_rows((~keep).nonzero().flatten()[:missing], group_size)
        filler = take_rows(batch, filler_rows)
        filler["completion_mask"] = torch.zeros_like(filler["completion_mask"])  # out of the loss and its count
        parts.append(filler)
        sources.append(filler_rows)
    merged = concat_batches(parts, trainer._tokenizer.pad_token_id) if len(parts) > 1 else parts[0]
    merged["num_items_in_batch"] = accelerator.gather(loss_tokens(merged).sum()).sum()
    return merged, torch.cat(sources)
