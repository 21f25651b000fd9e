"""accuracy_reward grading, time limits and the reward registry. All gold strings are hand-written."""

import asyncio
import gc
import logging
import math
import os
import signal
import subprocess
import sys
import threading
import time

import pebble
import pytest
from datasets import Dataset

from soup_trl.rewards import (
    ACCURACY_STATS,
    REWARD_FUNCS,
    accuracy_reward,
    deadline,
    get_reward_funcs,
    grade_batch,
    grading,
    last_boxed_content,
    normalize_answer,
    per_sample_fallback,
)
from soup_trl.rewards.math_data import prepare_math_dataset


def boxed(answer: str) -> str:
    return f"Let me think.\n2 + 2 = 4, and so on.\nThe answer is \\boxed{{{answer}}}."


def gold_forms(gold: str) -> list[str]:
    return [gold, f"${gold}$", f"\\boxed{{{gold}}}"]


# Gold answers the way datasets ship them.
HARD_GOLDS = [
    r"\frac43",
    "204",
    "025",
    r"11\sqrt2",
    r"\frac{270}7\text{ degrees}",
    "(3,-1)",
    r"\text{(C)}",
    r"(-\infty, 3]",
    r"[2,5) \cup (7, \infty)",
    "x^2+7x+10",
    "0.5",
    r"10\%",
    r"6\text{ cm}^2",
    r"\$18.90",
    r"2\sqrt{5}",
    r"\pi/4",
    "1,2",
    "-2, 0, 2",
    r"90^\circ",
    r"30^{\circ}",
    "10,000",
    r"1{,}000",
    r"\dfrac{7}{2}",
    "12.",
    "x = 3",
    r"y = \frac{1}{2}x + 3",
    r"\text{Evelyn}",
    "4.5e33",
    "-1./3",
    r"m_{\max}=n^{2}-n-1",
    r"\frac{\mathrm{E}_{0}}{2}",
    r"\begin{pmatrix} 1 \\ -2 \end{pmatrix}",
]


@pytest.mark.parametrize("gold", HARD_GOLDS)
def test_gold_boxed_verbatim_is_correct_in_every_form(gold):
    completions = [boxed(gold)] * 3
    assert accuracy_reward(completions, gold_forms(gold)) == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("gold", "answer"),
    [
        (r"\frac43", r"\dfrac{4}{3}"),
        (r"11\sqrt2", r"11\sqrt{2}"),
        (r"\frac{270}7\text{ degrees}", r"\frac{270}{7}"),
        ("0.5", r"\frac{1}{2}"),
        (r"10\%", "10"),
        (r"\$18.90", "18.9"),
        (r"\pi/4", r"\frac{\pi}{4}"),
        ("1,2", "2, 1"),
        (r"90^\circ", "90"),
        ("10,000", "10000"),
        ("x = 3", "3"),
        ("4.5e33", r"4.5 \times 10^{33}"),
        ("1e-8", r"10^{-8}"),
        (r"6\text{ cm}^2", "6"),
        (r"\text{(C)}", "C"),
        ("x^2+7x+10", "(x+2)(x+5)"),
        (r"2\sqrt{5}", r"\sqrt{20}"),
        ("025", "25"),
        ("1,2,3", r"1, 2, \text{ and } 3"),
    ],
)
def test_equivalent_answer_is_correct(gold, answer):
    for solution in gold_forms(gold):
        assert accuracy_reward([boxed(answer)], [solution]) == [1.0]


@pytest.mark.parametrize(
    ("gold", "answer"),
    [
        (r"\frac43", r"\frac34"),
        ("204", "205"),
        ("(3,-1)", "(-1,3)"),
        (r"\text{(C)}", r"\text{(D)}"),
        (r"(-\infty,3]", r"(-\infty,3)"),
        ("[2,5)", "[2,5]"),
        ("x^2+7x+10", "x^2+7x+11"),
        (r"10\%", r"20\%"),
        ("1,2", "1,3"),
        ("1,2", "1"),
        (r"90^\circ", r"45^\circ"),
        (r"\$18.90", "18.91"),
        (r"2\sqrt{5}", r"5\sqrt{2}"),
        ("x = 3", "x = 4"),
        (r"\text{Evelyn}", r"\text{Devon}"),
        ("10,000", "10"),
        ("4.5e33", "4.5e34"),
        ("1e-8", "0.00000002"),  # math-verify alone rounds both to 0.000000
        ("2.88e-19", "1.325e-27"),  # ... and chops both to 0
        (r"1.325\times 10^{-27}", r"1.324 \times 10^{-27}"),
        ("0.5", "0.6"),
    ],
)
def test_wrong_answer_scores_zero(gold, answer):
    for solution in gold_forms(gold):
        assert accuracy_reward([boxed(answer)], [solution]) == [0.0]


@pytest.mark.parametrize(
    "completion",
    [
        "",
        "I am not sure how to solve this.",
        "We get x = 3 and then 5 apples.",
        r"The answer is \boxed{12",  # truncated: the box never closes
        r"The answer is \boxed{}",
    ],
)
def test_no_answer_scores_zero_and_is_counted(completion):
    before = ACCURACY_STATS["no_answer"]
    assert accuracy_reward([completion], ["12"]) == [0.0]
    assert ACCURACY_STATS["no_answer"] == before + 1


def test_answer_without_box_needs_an_anchor():
    assert accuracy_reward(["So the final answer is $\\frac{4}{3}$."], [r"\frac43"]) == [1.0]
    assert accuracy_reward(["Answer: 42"], ["42"]) == [1.0]


def test_last_box_wins_and_adjacent_boxes_form_a_list():
    assert accuracy_reward([r"First \boxed{3}, but actually \boxed{4}."], ["4"]) == [1.0]
    assert accuracy_reward([r"First \boxed{3}, but actually \boxed{4}."], ["3"]) == [0.0]
    assert accuracy_reward([r"$x = \boxed{1}$ or $x = \boxed{2}$"], ["1, 2"]) == [0.0]  # far apart: last box only
    assert accuracy_reward([r"$\boxed{1}, \boxed{2}$"], ["1, 2"]) == [1.0]
    assert last_boxed_content(r"a \boxed{\frac{1}{2}} b") == r"\frac{1}{2}"
    assert last_boxed_content(r"\boxed{1} and \boxed{2}") == "1,2"
    assert last_boxed_content(r"\boxed{\{1\}}") == r"\{1\}"
    assert last_boxed_content("no box") is None


def test_normalize_answer():
    assert normalize_answer(27.0) == "27"
    assert normalize_answer("['$2^{1009}$']") == "2^{1009}"  # a stringified list, as gold_text reads it
    assert normalize_answer(" $\\frac{1}{2}$. ") == "\\frac{1}{2}"
    assert normalize_answer("\\boxed{5}") == "5"
    assert normalize_answer("\\$18.90") == "\\$18.90"
    assert normalize_answer("3e8") == "3\\times 10^{8}"
    assert normalize_answer(["$1$", "$2$"]) == "1, 2"
    assert normalize_answer(None) == ""


def test_non_string_golds():
    assert accuracy_reward([boxed("27"), boxed("1,2"), boxed("2")], [27.0, ["$1$", "$2$"], ["$2$"]]) == [1.0, 1.0, 1.0]
    assert run_in_thread(lambda: accuracy_reward([boxed("27")], [27.0])) == [1.0]


def test_training_data_reads_gold_as_grading_does():
    rows = Dataset.from_list(
        [
            {"problem": "p1", "answer": ["$1$", "$2$"]},
            {"problem": "p2", "answer": ["$\\frac{4}{3}$"]},
            {"problem": "p3", "answer": ["27.0"]},
        ]
    )
    solutions = prepare_math_dataset(rows, solution_field="answer")["solution"]
    assert solutions == ["$1$, $2$", "$\\frac{4}{3}$", "27.0"]  # not "['$1$', '$2$']"
    completions = [boxed("1, 2"), boxed(r"\frac43"), boxed("27")]
    assert accuracy_reward(completions, solutions) == [1.0, 1.0, 1.0]


def test_chat_message_completions():
    completions = [
        [{"role": "assistant", "content": boxed(r"\frac{4}{3}")}],
        [{"role": "assistant", "content": boxed("2")}],
        [{"role": "assistant", "content": [{"type": "text", "text": boxed("4/3")}]}],
        [{"role": "user", "content": r"\boxed{4/3}"}, {"role": "assistant", "content": "no idea"}],
    ]
    assert accuracy_reward(completions, [r"\frac43"] * 4) == [1.0, 0.0, 1.0, 0.0]


def test_trl_calling_convention_and_logging_hooks():
    extra, metrics = {}, {}
    out = accuracy_reward(
        prompts=[[{"role": "user", "content": "q"}]] * 3,
        completions=[[{"role": "assistant", "content": c}] for c in (boxed("7"), boxed("8"), "none")],
        completion_ids=[[1], [2], [3]],
        solution=["7", "7", "7"],
        problem=["p"] * 3,
        trainer_state=None,
        log_extra=lambda k, v: extra.__setitem__(k, v),
        log_metric=lambda k, v: metrics.__setitem__(k, v),
    )
    assert out == [1.0, 0.0, 0.0]
    assert extra["solution"] == ["7", "7", "7"]
    assert extra["gold_parsed"] == ["7", "7", "7"]
    assert extra["answer_parsed"] == ["7", "8", "[no_answer]"]
    assert metrics["accuracy_reward/no_answer_frac"] == pytest.approx(1 / 3)
    assert metrics["accuracy_reward/timeout_frac"] == 0.0


def test_length_mismatch_raises():
    with pytest.raises(ValueError, match="2 completions but 1 solutions"):
        accuracy_reward(["a", "b"], ["1"])


def test_unparseable_gold_falls_back_to_exact_string_match(caplog):
    gold = r"k(1,2]"  # not LaTeX math-verify can read
    with caplog.at_level(logging.WARNING, logger="soup_trl.rewards"):
        out = accuracy_reward([boxed(gold), boxed("k(1,3]"), "nothing"], [gold] * 3)
    assert out == [1.0, 0.0, 0.0]
    assert any("cannot parse the gold answer 'k(1,2]'" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("gold", ["", "   ", "$$", None])
def test_empty_gold_is_skipped(gold, caplog):
    with caplog.at_level(logging.WARNING, logger="soup_trl.rewards"):
        assert accuracy_reward([boxed("1")], [gold]) == [None]
    assert any("cannot parse the gold answer" in r.getMessage() for r in caplog.records)


# -- time limits: graded in killable worker processes, never with a signal in this process --------------------------

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


def run_in_thread(func):
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("out", func()))
    thread.start()
    thread.join(120)
    assert not thread.is_alive()
    return box["out"]


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


# -- registry ---------------------------------------------------------------------------------------------------------


def test_registry_names():
    assert {"accuracy", "arithmetic"} <= set(REWARD_FUNCS)
    # get_reward_funcs wraps each function in the per-sample fallback (see below)
    assert [f.__wrapped__ for f in get_reward_funcs("accuracy")] == [accuracy_reward]
    assert [f.__wrapped__ for f in get_reward_funcs(["accuracy"])] == [accuracy_reward]


def test_dotted_paths(tmp_path, monkeypatch):
    (tmp_path / "my_rewards_pkg").mkdir()
    (tmp_path / "my_rewards_pkg" / "__init__.py").write_text("")
    (tmp_path / "my_rewards_pkg" / "mod.py").write_text(
        "def my_reward(completions, **kwargs):\n    return [1.0] * len(completions)\n"
        "class Holder:\n    @staticmethod\n    def nested(completions, **kwargs):\n        return [2.0]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    funcs = get_reward_funcs("accuracy, my_rewards_pkg.mod.my_reward,my_rewards_pkg.mod:Holder.nested")
    assert funcs[0].__wrapped__ is accuracy_reward
    assert funcs[1].__name__ == "my_reward" and funcs[1](completions=["x"]) == [1.0]
    assert funcs[2](completions=["x"]) == [2.0]
    assert get_reward_funcs(["trl.rewards.accuracy_reward"])[0].__module__.startswith("trl.rewards")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("acuracy", "not a registered name"),
        ("no_such_pkg_xyz.mod.fn", "ModuleNotFoundError"),
        ("soup_trl.rewards.no_such_function", "AttributeError"),
        ("soup_trl.rewards.REWARD_FUNCS", "not a callable"),
    ],
)
def test_unknown_names_list_valid_names(name, expected):
    with pytest.raises(ValueError) as info:
        get_reward_funcs([name])
    message = str(info.value)
    assert repr(name) in message
    assert expected in message
    assert "accuracy" in message and "arithmetic" in message
    assert "my_pkg.my_module.my_reward" in message


@pytest.mark.parametrize("name", ["broken_reward_mod.f", "broken_reward_pkg.broken.f"])
def test_broken_module_import_is_reported(name, tmp_path, monkeypatch):
    broken = "import no_such_dependency_xyz\ndef f(**kw):\n    return []\n"
    (tmp_path / "broken_reward_mod.py").write_text(broken)
    (tmp_path / "broken_reward_pkg").mkdir()
    (tmp_path / "broken_reward_pkg" / "__init__.py").write_text("")
    (tmp_path / "broken_reward_pkg" / "broken.py").write_text(broken)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="no_such_dependency_xyz") as info:
        get_reward_funcs(name)
    assert "ModuleNotFoundError" in str(info.value)


def test_empty_name_list_raises():
    with pytest.raises(ValueError, match="accuracy"):
        get_reward_funcs([])


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
