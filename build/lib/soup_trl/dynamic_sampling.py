"""DAPO's dynamic sampling (the constraint 0 < #correct < G of the DAPO paper's Eq. 1), as pure functions.

A group whose rewards are all equal has zero advantage: it teaches nothing, yet its tokens dilute the token-level
loss. With `dynamic_sampling=True` such groups are dropped after scoring and replaced by groups of further prompts,
whole groups only, until the step has its configured number of groups (or `dynamic_sampling_max_rounds` extra
generation rounds were spent). The trainer hooks live in `SOUPTrainer`; this module holds the row bookkeeping.
"""

from __future__ import annotations

import torch

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
