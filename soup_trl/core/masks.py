"""The tokens of a scored batch that GRPOTrainer's loss covers."""

from __future__ import annotations

import torch


def loss_tokens(batch: dict) -> torch.Tensor:
    """The batch's loss tokens (B, C): `completion_mask` times GRPOTrainer's `tool_mask` (its mask of completion
    tokens that stay in the context but out of the loss) when the batch has one."""
    mask = batch["completion_mask"]
    return mask * batch["tool_mask"] if "tool_mask" in batch else mask
