"""Training samplers: a resumed run keeps the uninterrupted run's data order, and a multi-step generation batch trains
the same rows per step on any number of processes."""

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


def step_major_order(num_steps: int, num_processes: int, rows_per_step: int) -> list[int]:
    """Order of a generation batch's global rows so that every process's contiguous share holds its part of every step.

    The dataloader hands process p the p-th contiguous share of a generation batch, and a trainer that splits each
    share into `num_steps` contiguous steps (SOUP's cycle) would train step s on different global rows for different
    process counts. Reordering the batch with this permutation makes optimizer step s train on the global rows
    [s * P * R, (s + 1) * P * R) whatever the number of processes P (R = rows per process per step), so a run gives the
    same steps on 1 or N processes.
    """
    order = []
    for process in range(num_processes):
        for step in range(num_steps):
            start = (step * num_processes + process) * rows_per_step
            order.extend(range(start, start + rows_per_step))
    return order


class StepMajorSampler(torch.utils.data.Sampler):
    """Reorders every generation batch of a sampler with `step_major_order` (see there)."""

    def __init__(self, sampler, num_steps: int, num_processes: int, rows_per_step: int):
        self.sampler = sampler
        self.order = step_major_order(num_steps, num_processes, rows_per_step)

    def __iter__(self):
        batch = []
        for index in self.sampler:
            batch.append(index)
            if len(batch) == len(self.order):
                yield from (batch[i] for i in self.order)
                batch = []
        yield from batch  # an incomplete last batch is left as it is

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self):
        return len(self.sampler)
