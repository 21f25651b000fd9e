"""accuracy_reward (`soup_trl.rewards.accuracy`): gold answers of every hard form, equivalent and wrong answers, what
counts as no answer, chat messages and TRL's calling convention. All gold strings are hand-written.

Time limits: tests/rewards/test_grading.py; the registry: tests/rewards/test_registry.py."""

import logging
import threading

import pytest

from soup_trl.rewards import (
    ACCURACY_STATS,
    accuracy_reward,
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


def run_in_thread(func):
    box = {}
    thread = threading.Thread(target=lambda: box.setdefault("out", func()))
    thread.start()
    thread.join(120)
    assert not thread.is_alive()
    return box["out"]
