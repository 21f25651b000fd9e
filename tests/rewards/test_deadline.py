"""The pool of killable worker processes behind the grading time limit (`soup_trl.rewards.deadline`): every way a
call ends, and processes that exit once they graded."""

import os
import subprocess
import sys
import threading

import pebble
import pytest

from soup_trl.rewards import deadline


def report_pid_and_hang(path):
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    threading.Event().wait()


def fail(message):
    raise ValueError(message)


def test_run_each_reports_every_way_a_call_ends(tmp_path):
    pid_file = tmp_path / "pid"
    calls = [(os.getpid,), (fail, "bad"), (report_pid_and_hang, str(pid_file)), (os._exit, 3)]
    outcomes = list(deadline.run_each(call_with_args, calls, timeout=1.0, workers=2))
    assert isinstance(outcomes[0], int) and outcomes[0] != os.getpid()
    assert isinstance(outcomes[1], ValueError) and str(outcomes[1]) == "bad"
    assert isinstance(outcomes[2], TimeoutError)
    assert isinstance(outcomes[3], pebble.ProcessExpired) and outcomes[3].exitcode == 3
    with pytest.raises(ProcessLookupError):  # the overrunning worker was killed (and reaped)
        os.kill(int(pid_file.read_text()), 0)
    assert list(deadline.run_each(call_with_args, [(sum, [1, 2])], timeout=1.0, workers=2)) == [3]


def call_with_args(func, *args):
    return func(*args)


EXIT_AFTER_TIMEOUT = """
from soup_trl.rewards import grade_batch
grades = grade_batch([r"\\boxed{10^{10^{10^{10}}}}", r"\\boxed{1}", r"\\boxed{1}"], ["1"] * 3, timeout=0.5, workers=2)
print(" ".join(g.status for g in grades))
"""


def test_process_exits_after_a_worker_was_killed():
    # without the pool's own exit handler, 2 in 3 such processes hung at exit (a worker started during shutdown)
    for _ in range(3):
        done = subprocess.run([sys.executable, "-c", EXIT_AFTER_TIMEOUT], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == ["timeout", "correct", "correct"]


GRADE_IN_A_MULTIPROCESSING_CHILD = """
import multiprocessing


def grade_there(queue):
    from soup_trl.rewards import grade_batch

    queue.put([g.status for g in grade_batch([r"\\boxed{2}"], ["2"], timeout=5.0, workers=2)])


if __name__ == "__main__":
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=grade_there, args=(queue,))
    child.start()
    print(" ".join(queue.get()))
    child.join()  # the child must end by itself once its target returns
    print("exit", child.exitcode)
"""


def test_a_multiprocessing_child_that_graded_exits(tmp_path):
    """A process started by `multiprocessing` (benchmarks/step_time.py runs each setting in one) runs no atexit
    handlers: it joins its children on return, and the grading pool's idle workers used to keep it waiting forever."""
    script = tmp_path / "child.py"
    script.write_text(GRADE_IN_A_MULTIPROCESSING_CHILD)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["correct", "exit", "0"]
