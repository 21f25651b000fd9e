"""Training samplers that keep a resumed run on the uninterrupted run's data order."""

from __future__ import annotations

import torch


class EpochReplaySampler(torch.utils.data.Sampler):
    """A sampler whose order comes from a generator advanced once per pass (TRL's `RepeatSampler`), made resumable.

    TRL's sampler draws each pass's permutation from one generator seeded at construction, and the Trainer does not
    iterate the epochs a resumed run skips, so a run resumed in epoch E would replay epoch 0's order in epoch E and
    diverge from the uninterrupted run at its next epoch. The Trainer calls `set_epoch(e)` before pass e; when this
    sampler has made fewer passes than that, it first makes the missing ones (index lists only, no data is loaded).
    An uninterrupted run's order is unchanged.
    """

    def __init__(self, sampler):
        self.sampler = sampler
        self.epoch = 0
        self.passes = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self):
        while self.passes < self.epoch:
            for _ in self.sampler:
                pass
            self.passes += 1
        self.passes += 1
        yield from self.sampler

    def __len__(self):
        return len(self.sampler)
