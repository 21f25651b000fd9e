"""Bad rewards in real tiny training runs: the step completes, the affected rows get advantage 0 and stay out of
their group's mean and std, and each function's failures are counted in `rewards/<name>/failed_frac`
(docs/reliability.md)."""

import json
import math
import os
import statistics
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import pytest
import torch
from datasets import Dataset

from soup_trl import M2POConfig, M2POTrainer, SOUPTrainer
from soup_trl.rewards import get_reward_funcs, grading
from soup_trl.rewards.accuracy import accuracy_reward
from soup_trl.testing.rewards import shaped_reward

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


def check_scored_batches(trainer, failing) -> int:
    """Check every scored batch; returns how many rows failed in all."""
    weights = trainer.reward_weights.float()
    failed_rows = 0
    for batch in trainer.scored:
        rewards, advantages = batch["rewards"], batch["advantages"]
        failed = torch.tensor([failing(c, x) for c, x in zip(batch["completions"], batch["inputs"])])
        assert torch.isnan(rewards[failed]).all(), "a failed row kept a reward (it would count as 0 in TRL's nansum)"
        assert not torch.isnan(rewards[~failed]).any()
        assert (advantages[failed] == 0).all()
        torch.testing.assert_close(advantages, expected_advantages(rewards, weights, trainer.num_generations))
        failed_rows += int(failed.sum())
    return failed_rows


def logged(trainer, key):
    return [h[key] for h in trainer.state.log_history if key in h]


@pytest.mark.parametrize("reward", [raises, returns_nan, returns_none, wrong_count], ids=lambda f: f.__name__)
def test_failing_samples_get_zero_advantage_and_are_counted(tiny_model_dir, make_config, make_dataset, reward):
    trainer = RecordingSOUP(tiny_model_dir, reward, args=make_config(max_steps=3), train_dataset=make_dataset(16))
    trainer.scored = []
    trainer.train()
    assert trainer.state.global_step == 3
    failed = check_scored_batches(trainer, lambda completion, row: bad(completion))
    rows = sum(len(b["completions"]) for b in trainer.scored)
    assert 0 < failed < rows  # the run met both kinds of rows
    metric = "none_frac" if reward is returns_none else "failed_frac"
    counted = logged(trainer, f"rewards/{reward.__name__}/{metric}")
    assert counted == pytest.approx([torch.isnan(b["rewards"][:, 0]).float().mean().item() for b in trainer.scored])


@pytest.mark.parametrize("behavior_steps", [1, 2])
def test_a_failed_row_gets_no_reward_from_the_other_functions(
    tiny_model_dir, make_config, make_dataset, behavior_steps
):
    """With several functions, a row one of them failed on is not scored by the others alone (as if it were 0)."""
    args = make_config(max_steps=4, soup_behavior_steps=behavior_steps, reward_weights=[1.0, 0.5])
    trainer = RecordingSOUP(tiny_model_dir, [raises, shaped_reward], args=args, train_dataset=make_dataset(16))
    trainer.scored = []
    trainer.train()
    assert check_scored_batches(trainer, lambda completion, row: bad(completion)) > 0
    assert all(not torch.isnan(b["rewards"][:, 1]).all() for b in trainer.scored)


def test_baseline_trainers_fail_rows_too(tiny_model_dir, make_config, make_dataset):
    args = make_config(M2POConfig, max_steps=3, m2po_staleness=1)
    trainer = RecordingM2PO(tiny_model_dir, [raises, shaped_reward], args=args, train_dataset=make_dataset(16))
    trainer.scored = []
    trainer.train()
    assert check_scored_batches(trainer, lambda completion, row: bad(completion)) > 0


def test_a_function_failing_on_every_sample_stops_training_with_its_name(tiny_model_dir, make_config, make_dataset):
    trainer = SOUPTrainer(
        tiny_model_dir, [shaped_reward, always_raises], args=make_config(), train_dataset=make_dataset(16)
    )
    with pytest.raises(RuntimeError, match=r"'always_raises' failed on every sample of the step \(8 on 1 .*KeyError"):
        trainer.train()
    assert trainer.state.global_step == 0


def train_in_another_thread(trainer):
    """`trainer.train()` in a thread that is not the main thread (no signal can be armed there)."""
    trainer.scored, errors = [], []

    def train():
        try:
            trainer.train()
        except Exception as error:  # reported below
            errors.append(error)

    thread = threading.Thread(target=train)
    thread.start()
    thread.join(600)
    assert not thread.is_alive() and errors == []


def hang_dataset(every=2):
    """16 addition prompts; the gold answer of every `every`-th one hangs the grader."""
    prompts = [f"{a}+{b}=" for a in range(4) for b in range(4)]
    return Dataset.from_dict({"prompt": prompts, "solution": [HANGS if i % every == 1 else "7" for i in range(16)]})


def test_a_hanging_grader_is_cut_off_the_main_thread(tiny_model_dir, make_config, monkeypatch):
    """accuracy_reward grades under the per-sample time limit also when training runs in another thread."""
    monkeypatch.setattr(grading, "TIMEOUT_SECONDS", 1.0)
    args = make_config(max_steps=2, reward_weights=[1.0, 0.5])
    trainer = RecordingSOUP(tiny_model_dir, [accuracy_reward, shaped_reward], args=args, train_dataset=hang_dataset())
    train_in_another_thread(trainer)
    assert trainer.state.global_step == 2
    failed = check_scored_batches(trainer, lambda completion, row: row["solution"] == HANGS)
    assert failed > 0
    shares = [torch.isnan(b["rewards"][:, 0]).float().mean().item() for b in trainer.scored]
    assert logged(trainer, "rewards/accuracy_reward/failed_frac") == pytest.approx(shares)


def test_a_hanging_user_function_is_cut_off_the_main_thread(tiny_model_dir, make_config, make_dataset):
    """A dotted-path reward under `timeout` is killed per sample, also when training runs in another thread."""
    funcs = get_reward_funcs(["test_bad_rewards.hangs", "test_bad_rewards.returns_nan"], timeout=1.0)
    trainer = RecordingSOUP(tiny_model_dir, funcs, args=make_config(max_steps=2), train_dataset=make_dataset(16))
    train_in_another_thread(trainer)
    assert trainer.state.global_step == 2
    assert check_scored_batches(trainer, lambda completion, row: bad(completion)) > 0
    shares = [torch.isnan(b["rewards"][:, 0]).float().mean().item() for b in trainer.scored]
    assert logged(trainer, "rewards/hangs/failed_frac") == pytest.approx(shares)


@pytest.mark.slow
def test_a_hanging_grader_is_cut_in_two_processes(tiny_model_dir, tmp_path):
    """Each process cuts hanging samples (the grader's own limit, `time_limited` for a user function); the failed rows,
    gathered, get advantage 0 on both processes."""
    worker = Path(__file__).with_name("bad_rewards_worker.py")
    config = Path(__file__).resolve().parent.parent / "soup_trl" / "accelerate_configs" / "cpu_2proc.yaml"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), str(worker)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [*command, "--model", tiny_model_dir, "--out", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert len(ranks[0]["batches"]) == len(ranks[1]["batches"]) > 0
    failed_rows = 0
    for first, second in zip(ranks[0]["batches"], ranks[1]["batches"]):
        rewards = torch.tensor(first["rewards"])
        assert torch.equal(rewards.nan_to_num(-1), torch.tensor(second["rewards"]).nan_to_num(-1))  # gathered
        rows = zip(first["solutions"] + second["solutions"], first["completions"] + second["completions"])
        failed = torch.tensor([s == HANGS or bad(c) for s, c in rows])
        assert torch.isnan(rewards[failed]).all() and not torch.isnan(rewards[~failed]).any()
        expected = expected_advantages(rewards, torch.tensor([1.0, 0.5, 1.0]), 4)  # groups of num_generations=4
        advantages = torch.tensor(first["advantages"] + second["advantages"])
        torch.testing.assert_close(advantages, expected)
        failed_rows += int(failed.sum())
    assert failed_rows > 0
    counted = [h["rewards/accuracy_reward/failed_frac"] for h in ranks[0]["history"] if "loss" in h]
    batches = zip(ranks[0]["batches"], ranks[1]["batches"])
    shares = [
        statistics.fmean(s == HANGS for s in first["solutions"] + second["solutions"]) for first, second in batches
    ]
    assert counted == pytest.approx(shares)
