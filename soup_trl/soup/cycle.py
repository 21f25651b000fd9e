"""A SOUP cycle's records and schedule.

One behavior sampling serves T = `soup_behavior_steps` optimizer steps: its `BehaviorCycle` holds one process's rows
of the whole cycle (T steps' worth, groups contiguous), what was sampled for them and where each is cut. For each step
a `GenerationPlan` says what generation serves instead of sampling from scratch. `CyclePosition` places a micro-step
of the Trainer's loop in the cycle. Nothing here touches a model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class CyclePosition:
    """Where a micro-step (the Trainer's `_step`, counting forward/backward calls) falls in its cycle."""

    micro_step: int  # micro-step within the cycle
    step: int  # optimizer step within the dataloader's cycle (0 .. T-1)
    micro_in_step: int  # micro-step within its optimizer step

    @classmethod
    def of(cls, micro_steps: int, steps_per_generation: int, gradient_accumulation_steps: int) -> CyclePosition:
        micro = micro_steps % steps_per_generation
        return cls(micro, micro // gradient_accumulation_steps, micro % gradient_accumulation_steps)

    @property
    def starts_cycle(self) -> bool:
        return self.micro_step == 0

    @property
    def starts_step(self) -> bool:
        return self.micro_in_step == 0


@dataclass
class GenerationPlan:
    """What generation serves for one scored step instead of sampling from scratch: per row, either a whole behavior
    completion (served as it is) or a behavior prefix for the current policy to continue."""

    prompt_ids: list[list[int]]
    tokens: list[list[int]]  # whole completions (rows with `whole`) and prefixes to continue (the others)
    whole: list[bool]
    logprobs: list[list[float]] | None = None  # sampler log-probs of `tokens` (vLLM), else None
    filler: list[int] | None = None  # a prompt to decode and discard when other processes continue rows and this none
    used: bool = False

    @property
    def open_rows(self) -> list[int]:
        """The rows the current policy continues."""
        return [i for i, whole in enumerate(self.whole) if not whole]

    @property
    def prefixes(self) -> list[list[int]] | None:
        """The prefixes this step continues (None when every row is a whole completion)."""
        return [self.tokens[i] for i in self.open_rows] or None


@dataclass
class BehaviorCycle:
    """Everything one behavior sampling leaves for the steps of its cycle (one process's rows)."""

    inputs: list[dict]  # dataset rows, (T - first_step) * rows_per_step, groups contiguous
    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    sampler_logps: list[list[float]] | None  # vLLM sampling log-probs, None on the transformers path
    behavior_logps: torch.Tensor  # (N, W) behavior log-probs of the prefix tokens (0 beyond a row's prefix)
    prefix_lengths: torch.Tensor  # (N,) prefix kept (0 for whole rows)
    cut_positions: torch.Tensor  # (N,) prefix length / content length, NaN for whole rows and empty completions
    rows_per_step: int
    whole: list[bool]  # rows trained on as sampled (step 1's fresh rows); the others are cut and continued
    prefix_sampled_at: torch.Tensor  # (N, W) the optimizer step that sampled each prefix token
    history_age: torch.Tensor  # (N,) age in steps of a row's stored group (history rows), NaN for fresh rows
    first_step: int = 0  # the step of the dataloader's cycle this sampling starts at (> 0 after a refresh)

    def step_rows(self, step: int) -> slice:
        """The rows of the cycle's `step` (counted from its first step)."""
        return slice(step * self.rows_per_step, (step + 1) * self.rows_per_step)

    def plan(self, rows: slice) -> GenerationPlan:
        """What generation serves for `rows`: whole rows as sampled, the others' prefixes to continue."""
        kept = [None if w else k for w, k in zip(self.whole[rows], self.prefix_lengths[rows].tolist())]
        logprobs = None if self.sampler_logps is None else [lp[:k] for lp, k in zip(self.sampler_logps[rows], kept)]
        return GenerationPlan(
            prompt_ids=self.prompt_ids[rows],
            tokens=[c[:k] for c, k in zip(self.completion_ids[rows], kept)],
            whole=self.whole[rows],
            logprobs=logprobs,
            filler=self.prompt_ids[0],
        )


def rest_of_cycle(generation_batch: list[dict], step: int, steps: int) -> list[dict]:
    """The rows of a cycle's generation batch (`steps` steps' worth) from its `step` on."""
    rows_per_step = len(generation_batch) // steps
    return generation_batch[step * rows_per_step :]
