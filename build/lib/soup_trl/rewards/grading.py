"""Reward functions for SOUP training, and a registry to select them by name.

`accuracy_reward` grades math answers with [math-verify](https://github.com/huggingface/Math-Verify). It has
TRL's reward-function signature, so it can be passed straight to `GRPOTrainer`/`SOUPTrainer`::

    from soup_trl.rewards import get_reward_funcs

    reward_funcs = get_reward_funcs(["accuracy", "my_pkg.my_module.my_reward"])

Grading contract of `accuracy_reward` (one value per completion):

- ``1.0``: the completion's answer is mathematically equivalent to the gold answer (math-verify), or is literally
  the gold answer after normalisation.
- ``0.0``: the answer is wrong, the completion states no parseable answer, grading timed out, or grading raised.
  The last three are logged and counted (see `ACCURACY_STATS`, and the ``accuracy_reward/*_frac`` metrics reported
  through TRL's ``log_metric``).
- Gold that math-verify cannot parse (e.g. prose such as ``f(x)=ax+b, where b is an arbitrary integer``): the
  sample is graded by exact string match of the normalised answers (1.0 if the completion's answer is literally
  the gold, else 0.0) and a warning naming the gold string is logged once per distinct gold. We do not return
  ``None`` like TRL does, so such rows still reward exact answers and are not silently dropped.
- ``None``: only when the gold is empty (nothing to compare against). TRL turns ``None`` into NaN and skips it.

The answer of a completion is the content of its last ``\\boxed{...}`` (boxes placed right next to each other, as
in ``\\boxed{1}, \\boxed{2}``, are read together as a list). Without a box, an answer introduced by "final answer
is" / "answer:" is accepted; nothing else is.

Gold answers are accepted the way datasets ship them: raw LaTeX without delimiters (``\\frac43``, ``11\\sqrt2``,
``\\text{(C)}``, ``10\\%``, ``5\\text{ cm}^2``, ``90^\\circ``, ``1,2``, ...), ``$``-wrapped, or inside ``\\boxed{}``.
The gold and the completion's answer go through the same normalisation (`normalize_answer`) before math-verify
parses and compares them, so a completion that boxes the gold verbatim is always graded correct.

Time limits: math-verify's own timeouts rely on ``signal.alarm`` and only work in the main thread. We disable them
and enforce one deadline per sample ourselves (`TIMEOUT_SECONDS`):

- in the main thread, with a ``SIGALRM`` interval timer (the previous handler and timer are restored);
- in any other thread (or always, with ``ISOLATION = "process"``), grading runs in a small helper process that
  is killed and restarted when it overruns, so a runaway SymPy computation can never block training.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib
import json
import logging
import math
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import sympy
from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from ..text import completion_text as _completion_text
from .arithmetic import arithmetic_reward, scratchpad_reward

logger = logging.getLogger(__name__)

#: Wall-clock budget (seconds) to grade one completion: gold parsing, answer parsing and comparison together.
TIMEOUT_SECONDS: float = 5.0
#: "auto": signal-based deadline in the main thread, helper process elsewhere. "process": always the helper process.
ISOLATION: str = "auto"
#: Cumulative counts of grading outcomes in this process: one per sample for its `Grade.status`, plus
#: "unparseable_gold" for every sample whose gold math-verify could not parse.
ACCURACY_STATS: Counter[str] = Counter()

_STATS_LOCK = threading.Lock()


class _DropTimeoutDisabledWarning(logging.Filter):
    """math-verify warns once that its timeouts are off; we run it under our own deadline, so that is expected."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutDisabledWarning())

_WARNED_GOLDS: set[str] = set()
_MAX_WARNED_GOLDS = 1000


# ----------------------------------------------------------------------------------------------------------------------
# Answer extraction and normalisation
# ----------------------------------------------------------------------------------------------------------------------

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# What may separate two boxes that together form one list answer: "\boxed{1}, \boxed{2}", "\boxed{1} and \boxed{2}".
_BOX_SEPARATOR_RE = re.compile(r"^\s*\$?\s*(?:,|;|\\quad|\\qquad|\\text\{\s*(?:and|or|,)\s*\}|and|or)?\s*\$?\s*$")


def _matching_braces(text: str) -> dict[int, int]:
    """Position of each "{" -> position of its "}", in one pass (escaped \\{ and \\} are not braces)."""
    pairs, stack, i = {}, [], 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            pairs[stack.pop()] = i
        i += 1
    return pairs


def _box_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of every complete ``\\boxed{...}`` / ``\\fbox{...}`` (and ``\\boxed 5``) in `text`.

    Boxes inside boxes are not listed; an unclosed box (truncated completion) is ignored.
    """
    spans: list[tuple[int, int, str]] = []
    braces: dict[int, int] | None = None
    for match in _BOX_RE.finditer(text):
        if spans and match.start() < spans[-1][1]:
            continue  # inside the previous box
        i = match.end()
        while i < len(text) and text[i] == " ":
            i += 1
        if i < len(text) and text[i] == "{":
            braces = _matching_braces(text) if braces is None else braces
            if i in braces:
                spans.append((match.start(), braces[i] + 1, text[i + 1 : braces[i]]))
        elif i > match.end() or (i < len(text) and text[i] not in "\\$"):
            # "\\boxed 5": the argument is the next token
            token = re.match(r"[^\s$]+", text[i:])
            if token:
                spans.append((match.start(), i + token.end(), token.group(0)))
    return spans


def last_boxed_content(text: str) -> str | None:
    """Content of the last ``\\boxed{}`` of `text`, or None.

    Boxes that directly precede it, separated only by a comma, "and", "or" or spacing, are joined with commas:
    ``\\boxed{1} and \\boxed{2}`` gives ``"1,2"``.
    """
    spans = _box_spans(text)
    if not spans:
        return None
    parts = [spans[-1][2]]
    for prev, nxt in zip(reversed(spans[:-1]), reversed(spans[1:])):
        if not _BOX_SEPARATOR_RE.match(text[prev[1] : nxt[0]]):
            break
        parts.append(prev[2])
    return ",".join(reversed(parts))


_DELIMITER_RE = re.compile(r"\\\[|\\\]|\\\(|\\\)|(?<!\\)\$")
_TRAILING_RE = re.compile(r"(?:\s|\\[,;:! ]|\\quad|\\qquad|[.;:])+$")
_LEADING_RE = re.compile(r"^(?:\s|\\[,;:! ]|\\quad|\\qquad)+")
# "1./3", "(2.,3.)": a number written with a bare trailing dot
_BARE_DOT_RE = re.compile(r"(?<=\d)\.(?=\s*(?:[-+*/)\],}=]|$))")
# "E_1", "e_{0}": the LaTeX parser reads E/e as Euler's number and then fails on the subscript
_E_SUBSCRIPT_RE = re.compile(r"(?<![A-Za-z\\])([Ee])(?=\s*_)")
# \text{...}-like commands. math-verify strips a trailing "\text{unit}", but its unit regex also deletes everything
# from the *first* \text{ to the end when the answer ends with "}" (so "\frac{\mathrm{x}}{2}" becomes "\frac{").
_TEXT_CMD_RE = re.compile(
    r"\\(?:text|textrm|textnormal|textbf|textit|textup|mathrm|mathit|mathbf|mathsf|mbox|rm)\s*\{([^{}]*)\}"
)
_TRAILING_UNIT_TAIL_RE = re.compile(r"^\s*(?:\^\s*\{?\s*\d\s*\}?)?\s*$")
# 4.5e33, 1e-8, 2.7778E-6: scientific notation, which LaTeX parsing would read as 4.5 * Euler's e * 33
_SCI_RE = re.compile(r"(?<![\w\\.])(\d+(?:\.\d*)?|\.\d+)[eE]([+-]?\d+)(?![\w.])")
# np.arcsin(...), math.sqrt(...): Python spelled answers (Minerva has a few)
_PY_FUNC_RE = re.compile(
    r"\b(?:np|numpy|math|sympy|sp)\.(arcsin|arccos|arctan|sinh|cosh|tanh|sin|cos|tan|exp|log|sqrt|pi)\b"
)
# _{\max}, _{\odot}, _{\text{eff}}, _\mathrm{p}: subscripts made of commands, which the parser rejects
_SUBSCRIPT_RE = re.compile(r"_\s*(\{(?:[^{}]|\{[^{}]*\})*\}|\\[A-Za-z]+)")
_SUBSCRIPT_WRAPPER_RE = re.compile(r"\\(?:text|mathrm|textrm|mathit|textit|mathbf|textbf|rm|operatorname)\b")


def _plain_subscript(match: re.Match) -> str:
    content = match.group(1)
    if "\\" not in content:
        return match.group(0)
    plain = _SUBSCRIPT_WRAPPER_RE.sub("", content)
    plain = re.sub(r"[\\{}\s~]", "", plain)
    return f"_{{{plain}}}" if plain.isalnum() else match.group(0)


def _unwrap_inner_text(s: str) -> str:
    """Replace ``\\text{x}`` by ``x`` except where it is the whole answer or a trailing unit (math-verify's case)."""
    matches = list(_TEXT_CMD_RE.finditer(s))
    if not matches:
        return s
    out, pos = [], 0
    for m in matches:
        whole = m.start() == 0 and not s[m.end() :].strip()
        trailing = m is matches[-1] and bool(_TRAILING_UNIT_TAIL_RE.match(s[m.end() :]))
        out.append(s[pos : m.start()])
        out.append(m.group(0) if whole or trailing else m.group(1).replace("~", " "))
        pos = m.end()
    out.append(s[pos:])
    return "".join(out)


def normalize_answer(answer: Any) -> str:
    """Turn a gold answer, or the content of a completion's box, into one line of LaTeX for math-verify.

    - takes the last ``\\boxed{}`` if there is one; drops math delimiters (``$``, ``\\(``, ``\\[``; an escaped
      ``\\$`` currency sign is kept), newlines, and leading/trailing spacing and punctuation;
    - numbers (datasets sometimes store ``27.0``) become their shortest decimal form; lists are joined with commas;
    - scientific notation ``4.5e33`` becomes ``4.5\\times 10^{33}`` (LaTeX would read 4.5 * e * 33);
    - spellings the LaTeX parser rejects are rewritten: ``1./3`` (bare trailing dot), ``E_{1}`` (E read as Euler's
      number), ``m_{\\max}`` / ``L_{\\odot}`` (commands in subscripts), ``np.arcsin(x)``;
    - ``\\text{..}`` / ``\\mathrm{..}`` inside an answer is unwrapped (math-verify's unit stripping would otherwise
      cut the answer at it); a trailing unit is left for math-verify to strip.

    Everything else (``\\dfrac``, ``\\frac43``, ``\\sqrt2``, units, ``^\\circ``, ``\\%``, thousands separators, ...)
    is left to math-verify's own LaTeX normalisation, which `_parse_latex` applies.
    """
    if answer is None:
        return ""
    if isinstance(answer, list | tuple):  # e.g. OlympiadBench's final_answer: ["$2$"]
        return normalize_answer(", ".join(normalize_answer(a) for a in answer))
    if isinstance(answer, bool):
        answer = str(answer)
    if isinstance(answer, int | float):
        answer = str(int(answer)) if float(answer).is_integer() else repr(answer)
    s = str(answer)
    boxed = last_boxed_content(s)
    if boxed is not None:
        s = boxed
    s = s.replace("\r", " ").replace("\n", " ").replace("\t", " ")
    s = _DELIMITER_RE.sub(" ", s)
    s = _TRAILING_RE.sub("", s)
    s = _LEADING_RE.sub("", s)
    s = _SCI_RE.sub(lambda m: f"{m.group(1).rstrip('.')}\\times 10^{{{m.group(2)}}}", s)
    s = _BARE_DOT_RE.sub("", s)
    s = _PY_FUNC_RE.sub(r"\\\1", s)
    s = _SUBSCRIPT_RE.sub(_plain_subscript, s)
    s = _unwrap_inner_text(s)
    s = _E_SUBSCRIPT_RE.sub(r"\\mathcal{\1}", s)
    return re.sub(r"\s+", " ", s).strip()


def _string_key(answer: str) -> str:
    """Exact-match key of a normalised answer, used when math-verify cannot parse the gold."""
    s = answer
    for junk in ("\\left", "\\right", "\\displaystyle", "\\!", "\\,", "\\;", "\\:", "\\ ", "~", " "):
        s = s.replace(junk, "")
    return s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")


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
    A parse cut by the deadline raises, so it is not cached.
    """
    if not latex:
        return ()
    parsed = parse(
        f"${latex}$",
        extraction_config=_LATEX_CONFIG,
        fallback_mode="no_fallback",
        extraction_mode="any_match",
        parsing_timeout=None,  # the caller enforces the deadline
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


def _parse_gold(gold: str) -> tuple[str, tuple]:
    """(normalised gold, parsed gold)."""
    norm = normalize_answer(gold)
    return norm, _parse_latex(norm)


# ----------------------------------------------------------------------------------------------------------------------
# Grading one sample
# ----------------------------------------------------------------------------------------------------------------------


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
        parsing_timeout=None,  # the caller enforces the deadline
    )
    strings = [p for p in parsed if isinstance(p, str)]
    answer = normalize_answer(strings[-1]) if strings else ""
    # the extracted text through our normalisation first (as for boxes), math-verify's own reading otherwise
    return answer, _parse_latex(answer) or tuple(p for p in parsed if not isinstance(p, str))


def grade(completion: Any, gold: Any) -> Grade:
    """Grade one completion against one gold answer, in-process and without a time limit (see `grade_safely`)."""
    gold_norm, gold_parsed = _parse_gold(gold if isinstance(gold, str) else normalize_answer(gold))
    if not gold_norm:
        return Grade(None, "gold_empty", gold_ok=False)
    gold_ok = bool(gold_parsed)
    answer, answer_parsed = _extract_answer(_completion_text(completion))
    if (
        gold_ok
        and answer_parsed
        and verify(list(gold_parsed), list(answer_parsed), timeout_seconds=None)
        and not _values_disagree(gold_parsed, answer_parsed, gold_norm, answer)
    ):
        return Grade(1.0, "correct", gold_norm, answer)
    if answer and _string_key(answer) == _string_key(gold_norm):
        # literally the gold answer: correct even where math-verify cannot parse or compare it
        return Grade(1.0, "string_match", gold_norm, answer, gold_ok=gold_ok)
    if not answer:
        return Grade(0.0, "no_answer", gold_norm, answer, gold_ok=gold_ok)
    if not gold_ok:
        return Grade(0.0, "gold_unparseable", gold_norm, answer, gold_ok=False)
    return Grade(0.0, "wrong" if answer_parsed else "no_answer", gold_norm, answer)


class _GradingTimeout(BaseException):
    """Raised by our SIGALRM handler. A BaseException, so `except Exception` blocks in SymPy cannot swallow it."""


@contextlib.contextmanager
def _signal_deadline(seconds: float) -> Iterator[None]:
    """Raise `_GradingTimeout` in the main thread if the body runs longer than `seconds`.

    The timer re-fires every 0.2 s until cancelled, in case library code swallows the first exception. The previous
    SIGALRM handler and any pending timer are restored afterwards.
    """
    state = {"armed": True}

    def handler(signum, frame):
        if state["armed"]:
            raise _GradingTimeout

    start = time.monotonic()
    old_handler = signal.signal(signal.SIGALRM, handler)
    old_delay, old_interval = signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001), 0.2)
    try:
        yield
    finally:
        while True:  # the timer may fire while we disarm it: retry until disarmed
            try:
                state["armed"] = False
                signal.setitimer(signal.ITIMER_REAL, 0)
                break
            except _GradingTimeout:
                continue
        signal.signal(signal.SIGALRM, old_handler)
        if old_delay > 0:
            remaining = max(old_delay - (time.monotonic() - start), 0.001)
            signal.setitimer(signal.ITIMER_REAL, remaining, old_interval)


def _grade_with_signal_deadline(completion: Any, gold: Any, timeout: float) -> Grade:
    try:
        with _signal_deadline(timeout):
            return grade(completion, gold)
    except _GradingTimeout:
        return Grade(0.0, "timeout", detail=f"over {timeout:g}s")
    except Exception as e:  # a reward must never crash training
        return Grade(0.0, "error", detail=f"{type(e).__name__}: {e}"[:500])


class _HelperProcess:
    """A helper Python process that grades one sample at a time and can be killed when it overruns.

    It loads this very file by path (not through the `soup_trl` package, whose import pulls in torch), reads one JSON
    request per line on stdin and answers one JSON line on stdout. It grades in its own main thread, with the signal
    deadline; the parent additionally kills it if no answer arrives `_SLACK` seconds after the deadline.
    """

    _SLACK = 5.0
    _STARTUP_TIMEOUT = 120.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._buffer = b""
        self._start_error: str | None = None  # set once starting failed: do not retry (and wait) on every call

    def _start(self) -> None:
        if self._start_error is not None:
            raise RuntimeError(self._start_error)
        try:
            self._spawn()
        except Exception as e:
            self._start_error = f"the grading helper process could not start ({type(e).__name__}: {e})"
            raise RuntimeError(self._start_error) from e

    def _spawn(self) -> None:
        bootstrap = (
            "import importlib.util, sys\n"
            "spec = importlib.util.spec_from_file_location('_soup_rewards_helper', sys.argv[1])\n"
            "module = importlib.util.module_from_spec(spec)\n"
            "sys.modules[spec.name] = module\n"
            "spec.loader.exec_module(module)\n"
            "module._helper_main()\n"
        )
        self._proc = subprocess.Popen(
            [sys.executable, "-P", "-c", bootstrap, os.path.abspath(__file__)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
        )
        self._buffer = b""
        if self._readline(time.monotonic() + self._STARTUP_TIMEOUT) != b"ready":
            self.stop()
            raise RuntimeError("the grading helper process did not start")

    def _readline(self, deadline: float) -> bytes | None:
        """One line from the helper, or None if the deadline passes or the helper dies."""
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:  # helper exited
                    return None
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def grade(self, completion: Any, gold: Any, timeout: float) -> Grade:
        gold = gold if isinstance(gold, str) else normalize_answer(gold)  # JSON-safe (numpy numbers, lists, None)
        request = json.dumps({"completion": _completion_text(completion), "gold": gold, "timeout": timeout})
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            assert self._proc is not None and self._proc.stdin is not None
            try:
                self._proc.stdin.write(request.encode() + b"\n")
                line = self._readline(time.monotonic() + timeout + self._SLACK)
            except OSError:  # broken pipe: the helper died
                line = None
            if line is None:
                self.stop()  # overran or died: the next call starts a fresh helper
                return Grade(0.0, "timeout", detail="grading helper process killed")
        return Grade(**json.loads(line))


_HELPER = _HelperProcess()
atexit.register(_HELPER.stop)


def _helper_main() -> None:
    """Entry point of the helper process (see `_HelperProcess`)."""
    logging.basicConfig(level=logging.ERROR)
    # keep the protocol channel private: anything a library prints goes to stderr
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    out.write(b"ready\n")
    out.flush()
    for raw in sys.stdin.buffer:
        request = json.loads(raw)
        result = _grade_with_signal_deadline(request["completion"], request["gold"], request["timeout"])
        out.write(json.dumps(asdict(result)).encode() + b"\n")
        out.flush()


def grade_safely(completion: Any, gold: Any, timeout: float | None = None) -> Grade:
    """`grade` under a wall-clock limit, from any thread. Never raises: timeouts and errors give reward 0.0."""
    timeout = TIMEOUT_SECONDS if timeout is None else timeout
    in_main_thread = threading.current_thread() is threading.main_thread()
    if ISOLATION == "auto" and in_main_thread:
        return _grade_with_signal_deadline(completion, gold, timeout)
    try:
        return _HELPER.grade(completion, gold, timeout)
    except Exception as e:  # e.g. no subprocess allowed here: fall back to a watched thread
        return _grade_in_watched_thread(completion, gold, timeout, reason=f"{type(e).__name__}: {e}")


def _grade_in_watched_thread(completion: Any, gold: Any, timeout: float, reason: str) -> Grade:
    """Last resort when no helper process can run: grade in a daemon thread and stop waiting at the deadline.

    An overrunning computation cannot be stopped this way; it is abandoned (it keeps a CPU busy until it ends).
    """
    logger.warning("Grading helper process unavailable (%s); grading in a watched thread instead.", reason)
    box: list[Grade] = []

    def target() -> None:
        try:
            box.append(grade(completion, gold))
        except Exception as e:
            box.append(Grade(0.0, "error", detail=f"{type(e).__name__}: {e}"[:500]))

    worker = threading.Thread(target=target, daemon=True, name="soup-grading")
    worker.start()
    worker.join(timeout)
    return box[0] if box else Grade(0.0, "timeout", detail="abandoned grading thread")


# ----------------------------------------------------------------------------------------------------------------------
# The reward function
# ----------------------------------------------------------------------------------------------------------------------


def _shorten(text: Any, limit: int = 200) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit // 2] + " ... " + text[-limit // 2 :]


def accuracy_reward(
    completions: list,
    solution: list,
    log_extra: Callable[[str, list], None] | None = None,
    log_metric: Callable[[str, float], None] | None = None,
    **kwargs,
) -> list[float | None]:
    r"""1.0 if a completion's final answer equals the gold `solution`, 0.0 otherwise, None if the gold is unreadable.

    Args:
        completions: completions as strings, or as chat messages (``[{"role": "assistant", "content": "..."}]``).
        solution: gold answers, one per completion: raw LaTeX (``\frac43``), ``$``-wrapped, or in ``\boxed{}``.
        log_extra, log_metric: provided by TRL's trainers to add completions-table columns and scalar metrics.
        **kwargs: other dataset columns and trainer arguments; ignored.

    Example::

        >>> accuracy_reward([r"so \boxed{\dfrac{4}{3}}", "so \\boxed{2}", "no idea"], [r"\frac43"] * 3)
        [1.0, 0.0, 0.0]

    See the module docstring for the exact contract.
    """
    if len(completions) != len(solution):
        raise ValueError(f"accuracy_reward got {len(completions)} completions but {len(solution)} solutions.")
    grades = [grade_safely(completion, gold) for completion, gold in zip(completions, solution)]

    counts = Counter(g.status for g in grades)
    counts["unparseable_gold"] = sum(not g.gold_ok for g in grades)
    with _STATS_LOCK:
        ACCURACY_STATS.update(counts)
    for g, completion, gold in zip(grades, completions, solution):
        if not g.gold_ok:
            key = str(gold)
            with _STATS_LOCK:
                first_time = key not in _WARNED_GOLDS and len(_WARNED_GOLDS) < _MAX_WARNED_GOLDS
                if first_time:
                    _WARNED_GOLDS.add(key)
            if first_time:
                consequence = (
                    "reward None (sample skipped)"
                    if g.status == "gold_empty"
                    else "graded by exact string match (1.0 only if the answer is literally the gold)"
                )
                logger.warning("accuracy_reward: math-verify cannot parse the gold answer %r; %s.", key, consequence)
        if g.status in ("timeout", "error"):
            logger.warning(
                "accuracy_reward: grading %s (%s; gold %r, completion %r); reward 0.0.",
                "timed out" if g.status == "timeout" else "failed",
                g.detail or f"over {TIMEOUT_SECONDS:g}s",
                _shorten(gold),
                _shorten(_completion_text(completion)),
            )

    if log_metric is not None and grades:
        for status in ("no_answer", "unparseable_gold", "timeout", "error"):
            log_metric(f"accuracy_reward/{status}_frac", counts.get(status, 0) / len(grades))
    if log_extra is not None:
        log_extra("solution", [str(gold) for gold in solution])
        log_extra("gold_parsed", [g.gold if g.gold_ok else f"[unparseable] {g.gold}" for g in grades])
        log_extra("answer_parsed", [g.answer or f"[{g.status}]" for g in grades])
    return [g.reward for g in grades]


# ----------------------------------------------------------------------------------------------------------------------
# Registry
# ----------------------------------------------------------------------------------------------------------------------


#: Reward functions selectable by name (e.g. ``--reward_funcs accuracy``). Anything else is a dotted import path.
REWARD_FUNCS: dict[str, Callable] = {
    "accuracy": accuracy_reward,
    "arithmetic": arithmetic_reward,
    "scratchpad": scratchpad_reward,
}


def _unknown_reward_error(name: str, reason: str) -> ValueError:
    return ValueError(
        f"Unknown reward function {name!r}: {reason}. Use a registered name ({', '.join(sorted(REWARD_FUNCS))}) or "
        "the dotted import path of a callable, e.g. 'my_pkg.my_module.my_reward' (the module must be importable; "
        "the function is called as f(prompts=..., completions=..., **dataset_columns, **kwargs))."
    )


def _import_dotted(name: str) -> Callable:
    """Import `pkg.module.attr` (or `pkg.module:attr`, or `pkg.module.Class.attr`)."""
    if ":" in name:
        module_name, _, attr_path = name.partition(":")
        candidates = [(module_name, attr_path.split("."))]
    else:
        parts = name.split(".")
        candidates = [(".".join(parts[:i]), parts[i:]) for i in range(len(parts) - 1, 0, -1)]
    if not candidates or not all(candidates[0]):
        raise _unknown_reward_error(name, "not a registered name, nor a dotted path 'module.function'")
    error: BaseException | None = None
    for module_name, attrs in candidates:
        try:
            obj: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            # a missing *prefix* means we should try a shorter module path; anything else is a real error
            if e.name is not None and (module_name == e.name or module_name.startswith(e.name + ".")):
                error = error or e
                continue
            raise _unknown_reward_error(name, f"importing {module_name!r} failed with {type(e).__name__}: {e}") from e
        except Exception as e:
            raise _unknown_reward_error(name, f"importing {module_name!r} failed with {type(e).__name__}: {e}") from e
        try:
            for attr in attrs:
                obj = getattr(obj, attr)
        except AttributeError as e:
            raise _unknown_reward_error(name, f"AttributeError: {e}") from e
        if not callable(obj):
            raise _unknown_reward_error(name, f"{name!r} is a {type(obj).__name__}, not a callable")
        return obj
    raise _unknown_reward_error(name, f"{type(error).__name__}: {error}")


def get_reward_func(name: str) -> Callable:
    """One reward function from a registry name or a dotted import path."""
    name = name.strip()
    if name in REWARD_FUNCS:
        return REWARD_FUNCS[name]
    if "." not in name and ":" not in name:
        raise _unknown_reward_error(name, "not a registered name, nor a dotted path 'module.function'")
    return _import_dotted(name)


def per_sample_fallback(func: Callable) -> Callable:
    """Wrap a reward function so that one odd sample cannot stop training.

    When the function raises on a batch, it is called again sample by sample; samples that still fail get ``None``
    (TRL gives them no advantage), each failure is logged with the function's name and the error, and counted in the
    ``<name>/failed_frac`` metric. If every sample fails the function itself is broken, and the error is raised
    with its name.
    """
    name = getattr(func, "__name__", repr(func))

    @functools.wraps(func)
    def wrapper(*, completions, **kwargs):
        try:
            return func(completions=completions, **kwargs)
        except Exception as batch_error:  # retried per sample below
            first_error = batch_error
        rewards, failed = [], 0
        size = len(completions)
        for i, completion in enumerate(completions):
            row = {k: [v[i]] if isinstance(v, list) and len(v) == size else v for k, v in kwargs.items()}
            try:
                rewards.extend(func(completions=[completion], **row))
            except Exception as error:
                failed += 1
                rewards.append(None)
                logger.warning("reward function %r failed on sample %d (%r): %r; reward None.", name, i,
                               _shorten(_completion_text(completion)), error)
        if failed == size:
            raise RuntimeError(
                f"Reward function {name!r} failed on every sample of the batch with {first_error!r}. Fix the "
                "function (it is called as f(prompts=..., completions=..., completion_ids=..., **dataset_columns)) "
                "or remove it from reward_funcs."
            ) from first_error
        if kwargs.get("log_metric") is not None:
            kwargs["log_metric"](f"{name}/failed_frac", failed / size)
        return rewards

    return wrapper


def get_reward_funcs(names: list[str] | str) -> list[Callable]:
    """Reward functions from registry names and/or dotted paths; a string may hold several, comma-separated.

    Raises:
        ValueError: for an unknown name or a failed import, listing the valid names and the dotted-path form.
    """
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    if not names:
        raise ValueError(f"No reward function given. Registered names: {', '.join(sorted(REWARD_FUNCS))}.")
    return [per_sample_fallback(get_reward_func(name)) for name in names]
