"""accuracy_reward grading, time limits and the reward registry. All gold strings are hand-written."""

import logging
import signal
import threading
import time

import pytest

from soup_trl import rewards
from soup_trl.rewards import (
    ACCURACY_STATS,
    REWARD_FUNCS,
    accuracy_reward,
    get_reward_funcs,
    last_boxed_content,
    normalize_answer,
)


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
    assert normalize_answer(" $\\frac{1}{2}$. ") == "\\frac{1}{2}"
    assert normalize_answer("\\boxed{5}") == "5"
    assert normalize_answer("\\$18.90") == "\\$18.90"
    assert normalize_answer("3e8") == "3\\times 10^{8}"
    assert normalize_answer(["$1$", "$2$"]) == "1, 2"
    assert normalize_answer(None) == ""


def test_non_string_golds():
    assert accuracy_reward([boxed("27"), boxed("1,2"), boxed("2")], [27.0, ["$1$", "$2$"], ["$2$"]]) == [1.0, 1.0, 1.0]
    assert run_in_thread(lambda: accuracy_reward([boxed("27")], [27.0])) == [1.0]


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


# -- time limits ----------------------------------------------------------------------------------------------------

PATHOLOGICAL = [
    r"10^{10^{10^{10}}}",
    r"9^{9^{9^{9}}}+1",
    "(" * 3000 + "1" + ")" * 3000,
    r"\frac{" * 400 + "1" + "}{2}" * 400,
    "x" + "^{x" * 500 + "}" * 500,
]


@pytest.fixture
def short_timeout(monkeypatch):
    monkeypatch.setattr(rewards, "TIMEOUT_SECONDS", 1.0)


@pytest.mark.parametrize("answer", PATHOLOGICAL)
def test_pathological_answer_returns_quickly_in_main_thread(answer, short_timeout):
    handler_before = signal.getsignal(signal.SIGALRM)
    start = time.monotonic()
    assert accuracy_reward([boxed(answer)], ["5"]) == [0.0]
    assert time.monotonic() - start < 5.0
    assert signal.getsignal(signal.SIGALRM) is handler_before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_pathological_gold_returns_quickly(short_timeout):
    start = time.monotonic()
    out = accuracy_reward([boxed("5")], [r"10^{10^{10^{10}}}"])
    assert out == [0.0]
    assert time.monotonic() - start < 5.0


def test_timeout_is_logged_and_counted(short_timeout, caplog):
    before = ACCURACY_STATS["timeout"]
    with caplog.at_level(logging.WARNING, logger="soup_trl.rewards"):
        assert accuracy_reward([boxed(r"10^{10^{10^{10}}}")], ["5"]) == [0.0]
    assert ACCURACY_STATS["timeout"] == before + 1
    assert any("timed out" in r.getMessage() for r in caplog.records)


def test_outer_alarm_survives_grading():
    fired = []
    old = signal.signal(signal.SIGALRM, lambda *_: fired.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 30.0)
        assert accuracy_reward([boxed("3")], ["3"]) == [1.0]
        remaining, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 20.0 < remaining <= 30.0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert fired == []


def test_errors_are_caught_logged_and_score_zero(monkeypatch, caplog):
    def boom(completion, gold):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(rewards, "grade", boom)
    with caplog.at_level(logging.WARNING, logger="soup_trl.rewards"):
        assert accuracy_reward([boxed("1")], ["1"]) == [0.0]
    assert any("RuntimeError: kaboom" in r.getMessage() for r in caplog.records)


def run_in_thread(func):
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("out", func()))
    thread.start()
    thread.join(60)
    assert not thread.is_alive()
    return box["out"]


def test_non_main_thread_uses_helper_process(short_timeout):
    completions = [boxed(r"\frac{4}{3}"), boxed("2"), boxed(r"10^{10^{10^{10}}}"), "nothing"]
    out = run_in_thread(lambda: accuracy_reward(completions, [r"\frac43"] * 4))
    assert out == [1.0, 0.0, 0.0, 0.0]
    start = time.monotonic()
    assert run_in_thread(lambda: accuracy_reward([boxed("7")], ["7"])) == [1.0]
    assert time.monotonic() - start < 2.0  # the helper is reused, not restarted


def test_overrunning_helper_is_killed_and_restarted(monkeypatch, short_timeout):
    # the parent stops waiting long before the helper's own 1 s deadline: it must kill and restart the helper
    monkeypatch.setattr(rewards._HELPER, "_SLACK", -0.8)
    assert run_in_thread(lambda: accuracy_reward([boxed(r"10^{10^{10^{10}}}")], ["5"])) == [0.0]
    monkeypatch.setattr(rewards._HELPER, "_SLACK", 5.0)
    assert run_in_thread(lambda: accuracy_reward([boxed("5")], ["5"])) == [1.0]


def test_process_isolation_from_main_thread(monkeypatch):
    monkeypatch.setattr(rewards, "ISOLATION", "process")
    assert accuracy_reward([boxed("0.5"), boxed("1")], [r"\frac12", r"\frac12"]) == [1.0, 0.0]


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
        ("soup_trl.rewards.TIMEOUT_SECONDS", "not a callable"),
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


def test_broken_module_import_is_reported(tmp_path, monkeypatch):
    (tmp_path / "broken_reward_mod.py").write_text("import no_such_dependency_xyz\ndef f(**kw):\n    return []\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="no_such_dependency_xyz") as info:
        get_reward_funcs("broken_reward_mod.f")
    assert "ModuleNotFoundError" in str(info.value)


def test_empty_name_list_raises():
    with pytest.raises(ValueError, match="accuracy"):
        get_reward_funcs([])


def test_failing_sample_gets_none_and_training_goes_on(caplog):
    from soup_trl.rewards import per_sample_fallback

    def picky_reward(completions, **kwargs):
        return [1.0 / float(c) for c in completions]  # "0" raises ZeroDivisionError

    metrics = {}
    guarded = per_sample_fallback(picky_reward)
    rewards = guarded(completions=["2", "0", "4"], prompts=["a", "b", "c"], log_metric=metrics.__setitem__)
    assert rewards == [0.5, None, 0.25]
    assert metrics == {"picky_reward/failed_frac": pytest.approx(1 / 3)}
    assert "picky_reward" in caplog.text and "ZeroDivisionError" in caplog.text
    assert guarded.__name__ == "picky_reward"  # TRL names the reward metrics after it


def test_reward_failing_everywhere_is_named():
    from soup_trl.rewards import per_sample_fallback

    def broken_reward(completions, solution, **kwargs):
        raise KeyError("solution")

    with pytest.raises(RuntimeError, match="'broken_reward' failed on every sample.*remove it from reward_funcs"):
        per_sample_fallback(broken_reward)(completions=["1", "2"], solution=["1", "2"])
