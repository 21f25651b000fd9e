"""SOUP's state in a checkpoint: the behavior samples of a cycle a checkpoint interrupts, and the rollout history.

A checkpoint taken in the middle of a cycle keeps each process's `BehaviorCycle` (with adaptive refresh's drift sums),
so that a resumed run finishes the cycle with the same samples (through the core's checkpoint state,
`soup_trl.core.process_state`); the rollout history is the same on every process and is written once, as an index and
one raw file per token field (`soup_history.index.pt`, `soup_history.{field}.bin`).
"""

from __future__ import annotations

import dataclasses
import os

import torch

from .cycle import BehaviorCycle

CYCLE_STATE = "soup_cycle"  # per process: soup_cycle_rank{R}.pt
HISTORY_STATE = "soup_history"  # once: soup_history.index.pt and soup_history.{field}.bin (0.1: soup_history.pt)


def mid_cycle(global_step: int, gradient_accumulation_steps: int, steps_per_generation: int) -> bool:
    """Whether optimizer step `global_step` (steps done) falls inside a cycle rather than at its boundary."""
    return (global_step * gradient_accumulation_steps) % steps_per_generation != 0


def cycle_state(cycle: BehaviorCycle, drift_sums: torch.Tensor) -> dict:
    """What a checkpoint keeps of a cycle: its fields (tensors on CPU) and the drift sums of the steps since the last."""
    fields = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in dataclasses.asdict(cycle).items()}
    return {**fields, "drift_sums": drift_sums.clone()}


def restore_cycle(saved: dict, device) -> tuple[BehaviorCycle, torch.Tensor]:
    """The cycle and drift sums of `cycle_state` (a checkpoint of any release), tensors on `device`."""
    saved = upgraded_cycle(dict(saved))
    drift_sums = saved.pop("drift_sums", torch.zeros(2, dtype=torch.float64))
    cycle = BehaviorCycle(**{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in saved.items()})
    return cycle, drift_sums


def upgraded_cycle(saved: dict) -> dict:
    """A saved cycle in today's fields: checkpoints written before history-seeded prefixes kept behavior log-probs for
    steps 2..T only and trained step 1 on whole rows."""
    if "whole" in saved:
        return saved
    rows, per_step = len(saved["completion_ids"]), saved["rows_per_step"]
    tail = saved["behavior_logps"]
    saved["behavior_logps"] = torch.cat([tail.new_zeros(per_step, tail.size(1)), tail])
    saved["whole"] = [i < per_step for i in range(rows)]
    saved["cut_positions"][:per_step] = float("nan")
    saved["prefix_sampled_at"] = torch.zeros(rows, tail.size(1), dtype=torch.long)
    saved["history_age"] = torch.full((rows,), float("nan"))
    return saved


def load_history(history, folder: str) -> bool:
    """Restore `history` from checkpoint `folder` (today's files, or the single file of soup-trl 0.1); False when the
    checkpoint holds none."""
    prefix = os.path.join(folder, HISTORY_STATE)
    if os.path.exists(f"{prefix}.index.pt"):
        history.load(prefix)
        return True
    if os.path.exists(f"{prefix}.pt"):
        history.load_state_dict(torch.load(f"{prefix}.pt", weights_only=False, mmap=True))
        return True
    return False
