"""The guard around reward functions (`soup_trl.core.reward_guard`): `per_sample_fallback` on hand-made functions,
then bad rewards in real tiny training runs: the step completes, the affected rows get advantage 0 and stay out of
their group's mean and std, and each function's failures are counted in `rewards/<name>/failed_frac`
(docs/reliability.md). The same in two processes: tests/integration/test_distributed_reward_guard.py."""

import asyncio
import threading

import pytest
import torch
from datasets import Dataset

from soup_trl import M2POConfig, SOUPTrainer
from soup_trl.core.reward_guard import per_sample_fallback
from soup_trl.rewards import get_reward_funcs, grading
from soup_trl.rewards.accuracy import accuracy_reward
from soup_trl.testing.bad_rewards import (
    HANGS,
    RecordingM2PO,
    RecordingSOUP,
    always_raises,
    bad,
    expected_advantages,
    hang_dataset,
    raises,
    returns_nan,
    returns_none,
    wrong_count,
)
from soup_trl.testing.rewards import shaped_reward

# -- per_sample_fallback on hand-made reward functions ----------------------------------------------------------------


def picky_reward(completions, **kwargs):
    return [1.0 / float(c) for c in completions]  # "0" raises ZeroDivisionError


async def async_picky_reward(completions, **kwargs):
    await asyncio.sleep(0)
    return picky_reward(completions)


def test_failing_sample_gets_none_and_training_goes_on(caplog):
    metrics = {}
    guarded = per_sample_fallback(picky_reward)
    rewards = guarded(completions=["2", "0", "4"], prompts=["a", "b", "c"], log_metric=metrics.__setitem__)
    assert rewards == [0.5, None, 0.25]
    assert metrics == {"rewards/picky_reward/failed_frac": pytest.approx(1 / 3), "rewards/picky_reward/none_frac": 0}
    assert "picky_reward" in caplog.text and "ZeroDivisionError" in caplog.text
    assert guarded.__name__ == "picky_reward"  # TRL names the reward metrics after it


def test_async_reward_stays_async_through_the_fallback():
    from trl.trainer.utils import is_async_callable

    guarded = per_sample_fallback(async_picky_reward)
    assert is_async_callable(guarded) and guarded.__name__ == "async_picky_reward"
    assert not is_async_callable(per_sample_fallback(picky_reward))
    metrics = {}
    rewards = asyncio.run(
        guarded(completions=["2", "0", "4"], prompts=["a", "b", "c"], log_metric=metrics.__setitem__)
    )
    assert rewards == [0.5, None, 0.25]
    assert metrics == {
        "rewards/async_picky_reward/failed_frac": pytest.approx(1 / 3),
        "rewards/async_picky_reward/none_frac": 0,
    }


@pytest.mark.parametrize(
    ("returned", "expected"),
    [
        ([1.0, float("nan"), None], [1.0, None, None]),  # NaN (a failure) and None: no reward from this function
        ([1, True, 0.5], [1.0, 1.0, 0.5]),
    ],
)
def test_valid_rewards_pass_through(returned, expected):
    def odd_values(completions, **kwargs):
        return returned

    assert per_sample_fallback(odd_values)(completions=["a", "b", "c"]) == expected


def test_wrong_number_of_rewards_is_retried_per_sample(caplog):
    def drops_empty(completions, **kwargs):
        return [1.0 for c in completions if c]  # one value short when a completion is empty

    metrics = {}
    rewards = per_sample_fallback(drops_empty)(completions=["a", "", "c"], log_metric=metrics.__setitem__)
    assert rewards == [1.0, None, 1.0]
    assert metrics == {"rewards/drops_empty/failed_frac": pytest.approx(1 / 3), "rewards/drops_empty/none_frac": 0}
    assert "'drops_empty' returned 0 values for 1 completions" in caplog.text


def test_reward_failing_everywhere_is_named():
    def broken_reward(completions, solution, **kwargs):
        raise KeyError("solution")

    with pytest.raises(RuntimeError, match="'broken_reward' failed on every sample.*remove it from reward_funcs"):
        per_sample_fallback(broken_reward)(completions=["1", "2"], solution=["1", "2"])


def test_non_numeric_rewards_are_named():
    def labels(completions, **kwargs):
        return ["good"] * len(completions)

    with pytest.raises(RuntimeError, match="'labels' failed on every sample.*'good', not a number"):
        per_sample_fallback(labels)(completions=["1", "2"])


# -- real tiny training runs ------------------------------------------------------------------------------------------


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
    funcs = get_reward_funcs(
        ["soup_trl.testing.bad_rewards.hangs", "soup_trl.testing.bad_rewards.returns_nan"], timeout=1.0
    )
    trainer = RecordingSOUP(tiny_model_dir, funcs, args=make_config(max_steps=2), train_dataset=make_dataset(16))
    train_in_another_thread(trainer)
    assert trainer.state.global_step == 2
    assert check_scored_batches(trainer, lambda completion, row: bad(completion)) > 0
    shares = [torch.isnan(b["rewards"][:, 0]).float().mean().item() for b in trainer.scored]
    assert logged(trainer, "rewards/hangs/failed_frac") == pytest.approx(shares)


def test_async_and_accuracy_rewards_in_grpo_training(tiny_model_dir, tmp_path):
    """TRL runs the wrapped async reward on its event loop, and accuracy_reward grades inside a training step."""
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=4,
        max_steps=1,
        logging_steps=1,
        report_to="none",
        use_cpu=True,
        bf16=False,
        seed=0,
    )
    data = Dataset.from_dict({"prompt": ["1+2=", "3+4="] * 4, "solution": ["3", "7"] * 4})
    trainer = GRPOTrainer(
        tiny_model_dir,
        get_reward_funcs("accuracy") + [per_sample_fallback(async_constant)],
        args=args,
        train_dataset=data,
    )
    trainer.train()
    logged = trainer.state.log_history[0]
    assert logged["rewards/async_constant/mean"] == 0.5
    assert "rewards/accuracy_reward/mean" in logged and "accuracy_reward/no_answer_frac" in logged


async def async_constant(completions, **kwargs):
    await asyncio.sleep(0)
    return [0.5] * len(completions)
