"""Grading one completion against one gold answer with math-verify, and grading batches under a time limit.

`grade` reads the answer of a completion (its last ``\\boxed{}``, or an answer introduced by "final answer is" /
"answer:"), normalises it and the gold the same way (`answers.normalize_answer`), and compares them with
math-verify. `grade_batch` runs `grade` for many samples in worker processes, each sample under `TIMEOUT_SECONDS`
(see `deadline`); it never raises for a sample: a timeout or an error is a `Grade` with reward 0.0.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import sympy
from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from ..core.text import completion_text
from . import deadline
from .answers import gold_text, last_boxed_content, normalize_answer, string_key

#: Wall-clock budget (seconds) to grade one completion: gold parsing, answer parsing and comparison together.
TIMEOUT_SECONDS: float = 5.0


class _DropTimeoutDisabledWarning(logging.Filter):
    """math-verify warns once that its timeouts are off; `grade_batch` enforces its own limit, so that is expected."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutDisabledWarning())


@dataclass(frozen=True)
class Grade:
    """Outcome of grading one completion.

    `status` is one of: "correct" (math-verify: equivalent), "wrong", "no_answer" (no parseable answer),
    "string_match" (not verifiable by math-verify, but the normalised answer is literally the gold: 1.0),
    "gold_unparseable" (math-verify cannot parse the gold and the answer differs from it as a string: 0.0),
    "gold_empty" (no gold at all: None), "timeout", "error".
    """

    reward: float | None
    status: str
    gold: str = ""  # normalised gold answer
    answer: str = ""  # normalised answer extracted from the completion ("" if none)
    detail: str = ""  # error message, for "error" and "timeout"
    gold_ok: bool = True  # False if math-verify could not parse the gold


_LATEX_CONFIG = (LatexExtractionConfig(boxed_match_priority=-1),)
# Used only when a completion has no \boxed{}: an answer must follow "final answer is" / "answer:".
_ANCHORED_CONFIG = (
    LatexExtractionConfig(try_extract_without_anchor=False, boxed_match_priority=0),
    ExprExtractionConfig(try_extract_without_anchor=False),
)


@lru_cache(maxsize=8192)
def _parse_latex(latex: str) -> tuple:
    """Parse one normalised answer with math-verify; returns the parsed SymPy objects (no string fallbacks).

    Cached (SymPy objects are immutable): the completions of a group share their gold and often their answers.
    """
    if not latex:
        return ()
    parsed = parse(
        f"${latex}$",
        extraction_config=_LATEX_CONFIG,
        fallback_mode="no_fallback",
        extraction_mode="any_match",
        parsing_timeout=None,  # the time limit is enforced by the worker pool (signals work only in a main thread)
    )
    return tuple(p for p in parsed if not isinstance(p, str))


def _real_value(expr: Any) -> float | None:
    """The value of a constant real expression, or None (symbols, sets, complex, too large, ...)."""
    if not isinstance(expr, sympy.Expr) or not expr.is_number or expr.free_symbols:
        return None
    try:
        value = complex(expr.evalf(20))
    except (TypeError, ValueError, OverflowError, ArithmeticError):
        return None
    if value.imag != 0 or not math.isfinite(value.real):
        return None
    return value.real


def _values_disagree(gold_parsed: Sequence, answer_parsed: Sequence, gold: str, answer: str) -> bool:
    """True if math-verify called two numbers equal that differ beyond a relative 1e-4.

    math-verify compares floats after rounding to 6 decimals, and constant expressions with ``evalf(chop=True)``:
    both make every tiny number equal (1.3e-27 == 2.9e-19; 1e-8 == 0.00000002). Physics answers are often tiny, so
    we re-check plain numbers relatively. Percentages are left alone (math-verify deliberately accepts 10% == 10).
    """
    if len(gold_parsed) != 1 or len(answer_parsed) != 1 or "%" in gold or "%" in answer:
        return False
    a, b = _real_value(gold_parsed[0]), _real_value(answer_parsed[0])
    if a is None or b is None:
        return False
    return abs(a - b) > 1e-4 * max(abs(a), abs(b))


def _extract_answer(text: str) -> tuple[str, tuple]:
    """(normalised answer string, parsed SymPy objects) of a completion; ("", ()) when it states no answer."""
    boxed = last_boxed_content(text)
    if boxed is not None:
        answer = normalize_answer(boxed)
        return answer, _parse_latex(answer)
    parsed = parse(
        text,
        extraction_config=_ANCHORED_CONFIG,
        fallback_mode="first_match",
        extraction_mode="first_match",
        parsing_timeout=None,
    )
    strings = [p for p in parsed if isinstance(p, str)]
    answer = normalize_answer(strings[-1]) if strings else ""
    # the extracted text through our normalisation first (as for boxes), math-verify's own reading otherwise
    return answer, _parse_latex(answer) or tuple(p for p in parsed if not isinstance(p, str))


def grade(completion: Any, gold: Any) -> Grade:
    """Grade one completion against one gold answer, in this process and without a time limit (see `grade_batch`).

    `completion` is a string or chat messages; `gold` anything `answers.gold_text` reads.
    """
    gold_norm = normalize_answer(gold)
    if not gold_norm:
        return Grade(None, "gold_empty", gold_ok=False)
    gold_parsed = _parse_latex(gold_norm)
    gold_ok = bool(gold_parsed)
    answer, answer_parsed = _extract_answer(completion_text(completion))
    if (
        gold_ok
        and answer_parsed
        and verify(list(gold_parsed), list(answer_parsed), timeout_seconds=None)
        and not _values_disagree(gold_parsed, answer_parsed, gold_norm, answer)
    ):
        return Grade(1.0, "correct", gold_norm, answer)
    if answer and string_key(answer) == string_key(gold_norm):
        # literally the gold answer: correct even where math-verify cannot parse or compare it
        return Grade(1.0, "string_match", gold_norm, answer, gold_ok=gold_ok)
    if not answer:
        return Grade(0.0, "no_answer", gold_norm, answer, gold_ok=gold_ok)
    if not gold_ok:
        return Grade(0.0, "gold_unparseable", gold_norm, answer, gold_ok=False)
    return Grade(0.0, "wrong" if answer_parsed else "no_answer", gold_norm, answer)


# One answer of each common shape. math-verify's LaTeX parser (ANTLR) is slow the first time it meets a syntactic
# shape (seconds for an equation with a subscript) and fast afterwards; grading these once in this process before the
# worker pool forks means every worker, including one started after a timeout, starts with that knowledge instead of
# spending its first samples' time limits on it.
_WARM_UP_ANSWERS = (
    r"\frac{4}{3}",
    r"2\sqrt{5}",
    r"\frac{\pi}{4}",
    r"(-\infty, 3]",
    r"[2,5) \cup (7, \infty)",
    r"(3,-1)",
    r"\{1, 2\}",
    r"x = 3",
    r"m_{\max}=n^{2}-n-1",
    r"x^2+7x+10",
    r"\begin{pmatrix} 1 \\ -2 \end{pmatrix}",
    r"10\%",
    r"90^\circ",
    r"\text{(C)}",
    r"4.5\times 10^{33}",
    r"x \le 5",
    r"\log_{2} 8",
    r"\sin x + e^{2}",
    r"3 \pm 2i",
    r"1, 2",
)
_warm_pid: int | None = None
_warm_lock = threading.Lock()


def _warm_up() -> None:
    """Grade `_WARM_UP_ANSWERS` in this process, once (fixed answers known to be quick: no time limit needed)."""
    global _warm_pid
    with _warm_lock:
        if _warm_pid != os.getpid():
            for answer in _WARM_UP_ANSWERS:
                grade(f"\\boxed{{{answer}}}", answer)
            _warm_pid = os.getpid()


def iter_grades(
    completions: Sequence[Any], golds: Sequence[Any], timeout: float | None = None, workers: int | None = None
) -> Iterator[Grade]:
    """`grade` every (completion, gold) pair in worker processes, each under `timeout` seconds (`TIMEOUT_SECONDS`).

    Yields the grades in order, as they arrive. Never raises for a sample: a timeout gives ``Grade(0.0, "timeout")``,
    an error ``Grade(0.0, "error")``. Works from any thread, and arms no signal or timer in this process.
    `workers`: see `deadline.WORKERS`.
    """
    if len(completions) != len(golds):
        raise ValueError(f"got {len(completions)} completions but {len(golds)} gold answers.")
    timeout = TIMEOUT_SECONDS if timeout is None else timeout
    # plain strings cross the process boundary (chat messages, numpy numbers and lists need not pickle)
    calls = [(completion_text(c), gold_text(g)) for c, g in zip(completions, golds)]
    _warm_up()
    for outcome in deadline.run_each(grade, calls, timeout, workers):
        if isinstance(outcome, Grade):
            yield outcome
        elif isinstance(outcome, TimeoutError):
            yield Grade(0.0, "timeout", detail=f"over {timeout:g}s")
        else:
            yield Grade(0.0, "error", detail=f"{type(outcome).__name__}: {outcome}"[:500])


def grade_batch(
    completions: Sequence[Any], golds: Sequence[Any], timeout: float | None = None, workers: int | None = None
) -> list[Grade]:
    """The grades of `iter_grades`, as a list."""
    return list(iter_grades(completions, golds, timeout, workers))


def grade_safely(completion: Any, gold: Any, timeout: float | None = None) -> Grade:
    """`grade` one sample under the time limit (`grade_batch` of one); never raises."""
    return grade_batch([completion], [gold], timeout)[0]
