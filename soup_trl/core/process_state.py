"""Trainer state beyond the model and optimizer, saved with each checkpoint: per process, or once for all processes.

A trainer keeps state that Transformers' checkpoints do not (SOUP's behavior samples in the middle of a cycle, M2PO's
queue of scored batches, dynamic sampling's refill position). Each piece has a name; a per-process piece is written by
every process to `NAME_rank{R}.pt` (a piece the same on every process could go to `NAME.pt`, written by one).
A resumed run reads the pieces its process finds; a checkpoint written by an older release may name a piece
differently (`aliases`).
"""

from __future__ import annotations

import os
from typing import Any

import torch


def state_file(folder: str, name: str, process_index: int | None) -> str:
    """Where piece `name` lives in checkpoint `folder`: per process (`process_index`), or shared (None)."""
    suffix = "" if process_index is None else f"_rank{process_index}"
    return os.path.join(folder, f"{name}{suffix}.pt")


def save_state(folder: str, pieces: dict[str, Any], process_index: int | None) -> None:
    """Write every piece that is not None (objects `torch.save` can write)."""
    pieces = {name: value for name, value in pieces.items() if value is not None}
    if pieces:
        os.makedirs(folder, exist_ok=True)
    for name, value in pieces.items():
        torch.save(value, state_file(folder, name, process_index))


def load_state(
    folder: str, names: tuple[str, ...], process_index: int | None, aliases: dict[str, str] | None = None
) -> dict[str, Any]:
    """The pieces among `names` that `folder` holds (a name's alias, its older file name, is read when the name is
    missing). Tensors are mapped from the file, not read into memory: a process reads only what it touches (large
    shared pieces, such as SOUP's rollout history, are read by one process of a machine)."""
    found = {}
    for name in names:
        for candidate in (name, (aliases or {}).get(name)):
            path = candidate and state_file(folder, candidate, process_index)
            if path and os.path.exists(path):
                found[name] = torch.load(path, weights_only=False, mmap=True)
                break
    return found
