"""Grading under a time limit (`soup_trl.rewards.grading`): each sample graded in a killable worker process, never
with a signal in this process; pathological answers and golds get no reward, and the timeouts are logged and counted.
The worker processes themselves: tests/rewards/test_deadline.py."""

import gc
import logging
import math
import signal
import sys
import threading
import time

import pytest

from soup_trl.rewards import ACCURACY_STATS, accuracy_reward, grade_batch, grading

from .test_accuracy import boxed, run_in_thread

PATHOLOGICAL = [
    r"10^{10^{10^{10}}}",
    r"9^{9^{9^{9}}}+1",
    "(" * 3000 + "1" + ")" * 3000,
    r"\frac{" * 400 + "1" + "}{2}" * 400,
    "x" + "^{x" * 500 + "}" * 500,
]


@pytest.fixture
def short_timeout(monkeypatch):
    monkeypatch.setattr(grading, "TIMEOUT_SECONDS", 1.0)


def nan_as_text(rewards):
    """Rewards with NaN written "nan", so that lists compare with ==."""
    return ["nan" if isinstance(r, float) and math.isnan(r) else r for r in rewards]


@pytest.mark.parametrize("answer", PATHOLOGICAL)
def test_pathological_answer_gets_no_reward_and_leaves_no_signal_behind(answer, short_timeout):
    handler_before = signal.getsignal(signal.SIGALRM)
    assert nan_as_text(accuracy_reward([boxed(answer), boxed("5")], ["5", "5"])) == ["nan", 1.0]
    assert signal.getsignal(signal.SIGALRM) is handler_before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_pathological_gold_gets_no_reward(short_timeout):
    assert nan_as_text(accuracy_reward([boxed("5")], [r"10^{10^{10^{10}}}"])) == ["nan"]


def test_timeout_is_logged_and_counted(short_timeout, caplog):
    before = ACCURACY_STATS["timeout"]
    with caplog.at_level(logging.WARNING, logger="soup_trl.rewards"):
        assert nan_as_text(accuracy_reward([boxed(r"10^{10^{10^{10}}}")], ["5"])) == ["nan"]
    assert ACCURACY_STATS["timeout"] == before + 1
    assert any("timed out (over 1s" in r.getMessage() for r in caplog.records)


class Finalized:
    def __del__(self):
        sum(range(1000))  # work inside a finalizer, where a stray deadline would surface as an unraisable exception


def test_no_deadline_is_ever_armed_in_this_process(short_timeout, monkeypatch):
    """While grading times out, and after, this process has no alarm armed and no finalizer is interrupted."""
    unraisable, seen = [], set()
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    handler = signal.getsignal(signal.SIGALRM)
    grading_done = threading.Event()

    def watch():
        end = None
        while end is None or time.monotonic() < end:
            seen.add((signal.getsignal(signal.SIGALRM) is handler, signal.getitimer(signal.ITIMER_REAL)))
            Finalized()
            gc.collect()
            if end is None and grading_done.is_set():
                end = time.monotonic() + 2 * grading.TIMEOUT_SECONDS  # and for longer than a deadline after it

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        assert nan_as_text(accuracy_reward([boxed(r"10^{10^{10^{10}}}"), boxed("5")], ["5", "5"])) == ["nan", 1.0]
    finally:
        grading_done.set()
        watcher.join()
    assert seen == {(True, (0.0, 0.0))}
    assert unraisable == []


def test_grading_off_the_main_thread(short_timeout):
    completions = [boxed(r"\frac{4}{3}"), boxed("2"), boxed(r"10^{10^{10^{10}}}"), "nothing"]
    assert nan_as_text(run_in_thread(lambda: accuracy_reward(completions, [r"\frac43"] * 4))) == [1.0, 0.0, "nan", 0.0]


def test_parallel_batch_keeps_order(short_timeout):
    golds = [str(i) for i in range(40)]
    completions = [boxed(g if i % 3 else "x") for i, g in enumerate(golds)]
    completions[7] = boxed(r"10^{10^{10^{10}}}")
    grades = grade_batch(completions, golds, workers=2)
    assert [g.reward for g in grades] == [0.0 if i % 3 == 0 or i == 7 else 1.0 for i in range(40)]
    assert grades[7].status == "timeout"
    assert [g.answer for g in grades[1:3]] == ["1", "2"]


def test_outer_alarm_survives_grading():
    fired = []
    old = signal.signal(signal.SIGALRM, lambda *_: fired.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 600.0)
        assert accuracy_reward([boxed("3")], ["3"]) == [1.0]
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert fired == []


def raising_grade(completion, gold):
    raise RuntimeError("kaboom")


def test_errors_are_caught_logged_and_get_no_reward(monkeypatch, caplog):
    assert accuracy_reward([boxed("1")], ["1"]) == [1.0]  # the grading pool is started with the real grader
    monkeypatch.setattr(grading, "grade", raising_grade)  # a module-level function: the workers import it
    with caplog.at_level(logging.WARNING, logger="soup_trl.rewards"):
        assert nan_as_text(accuracy_reward([boxed("1")], ["1"])) == ["nan"]
    assert any("RuntimeError: kaboom" in r.getMessage() for r in caplog.records)
