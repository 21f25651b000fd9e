"""Reward functions that fail on some completions, and trainers that keep every scored batch: shared by
tests/core/test_reward_guard.py and the two-process run of tests/integration/workers/bad_rewards_worker.py.

Which completions fail is decided by their text (`bad`, about one in three), so every process decides alike. The
functions fail each in its own way (raise, NaN, None, too few values, hang); `hangs` is meant to run under
`soup_trl.rewards.deadline.time_limited` (one sample at a time, killed after its limit). `hang_dataset` has gold
answers (`HANGS`) whose grading overruns every time limit.
"""

import math
import statistics
import threading
import zlib

import torch
from datasets import Dataset

from ..m2po.trainer import M2POTrainer
from ..soup.trainer import SOUPTrainer
from .rewards import shaped_reward

HANGS = "(" * 3000 + "1" + ")" * 3000  # a gold answer whose parsing takes minutes: every grading of it overruns


def bad(completion) -> bool:
    """About one completion in three, decided by its text (the same in every process)."""
    return zlib.crc32(str(completion).encode()) % 3 == 0


def raises(completions, **kwargs):
    if any(bad(c) for c in completions):
        raise ValueError("cannot score this completion")
    return shaped_reward(completions)


def returns_nan(completions, **kwargs):
    return [math.nan if bad(c) else r for c, r in zip(completions, shaped_reward(completions))]


def returns_none(completions, **kwargs):
    return [None if bad(c) else r for c, r in zip(completions, shaped_reward(completions))]


def wrong_count(completions, **kwargs):
    return [r for c, r in zip(completions, shaped_reward(completions)) if not bad(c)]


def hangs(completions, **kwargs):
    """Never returns on a bad completion (scored one sample at a time under `time_limited`)."""
    if any(bad(c) for c in completions):
        threading.Event().wait()
    return shaped_reward(completions)


def always_raises(completions, **kwargs):
    raise KeyError("solution")


class Recording:
    """Keeps, for every scored batch, the rows' completions, dataset rows, rewards per function and advantages."""

    def _score(self, inputs):  # every scored batch of every trainer, dynamic sampling's refills included
        output, rewards = super()._score(inputs)
        texts = self.processing_class.batch_decode(output["completion_ids"], skip_special_tokens=True)
        self.scored.append(
            {
                "inputs": inputs,
                "completions": texts,
                "rewards": self._recorded_rewards.clone(),
                "advantages": output["advantages"].clone(),
            }
        )
        return output, rewards

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._recorded_rewards = rewards
        return rewards


class RecordingSOUP(Recording, SOUPTrainer):
    scored: list


class RecordingM2PO(Recording, M2POTrainer):
    scored: list


def expected_advantages(rewards: torch.Tensor, weights: torch.Tensor, group: int) -> torch.Tensor:
    """GRPO's group advantages (r - mean) / (std + 1e-4) over the scorable rows only; 0 for the others."""
    scorable = ~torch.isnan(rewards).all(dim=1)
    total = torch.nan_to_num(rewards, nan=0.0) @ weights
    expected = torch.zeros(len(total))
    for start in range(0, len(total), group):
        rows = [i for i in range(start, start + group) if scorable[i]]
        values = [total[i].item() for i in rows]
        if len(values) < 2:
            continue  # a lone scorable row has no std: TRL gives it advantage 0
        mean, std = statistics.fmean(values), statistics.stdev(values)
        for i in rows:
            expected[i] = (total[i].item() - mean) / (std + 1e-4)
    return expected


def hang_dataset(every=2):
    """16 addition prompts; the gold answer of every `every`-th one hangs the grader."""
    prompts = [f"{a}+{b}=" for a in range(4) for b in range(4)]
    return Dataset.from_dict({"prompt": prompts, "solution": [HANGS if i % every == 1 else "7" for i in range(16)]})
