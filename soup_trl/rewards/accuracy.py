"""`accuracy_reward`: math answers graded against gold answers, as a TRL reward function.

It has TRL's reward-function signature, so it can be passed straight to `GRPOTrainer`/`SOUPTrainer`. Grading
contract (one value per completion):

- ``1.0``: the completion's answer is mathematically equivalent to the gold answer (math-verify), or is literally
  the gold answer after normalisation.
- ``0.0``: the answer is wrong, or the completion states no parseable answer (logged and counted, see
  `ACCURACY_STATS` and the ``accuracy_reward/*_frac`` metrics reported through TRL's ``log_metric``).
- ``NaN``: grading timed out or raised: no verdict, so no reward (logged and counted the same way). TRL leaves NaN
  out of its group's mean and std; the package's trainers give such a sample advantage 0 (see
  `soup_trl.core.reward_guard`), where a 0.0 would punish an answer that may be right.
- Gold that math-verify cannot parse (e.g. prose such as ``f(x)=ax+b, where b is an arbitrary integer``): the
  sample is graded by exact string match of the normalised answers (1.0 if the completion's answer is literally
  the gold, else 0.0) and a warning naming the gold string is logged once per distinct gold. We do not return
  ``None`` like TRL does, so such rows still reward exact answers and are not silently dropped.
- ``None``: only when the gold is empty (nothing to compare against). TRL turns ``None`` into NaN and skips it.

The answer of a completion is the content of its last ``\\boxed{...}`` (boxes placed right next to each other, as
in ``\\boxed{1}, \\boxed{2}``, are read together as a list). Without a box, an answer introduced by "final answer
is" / "answer:" is accepted; nothing else is.

Gold answers are accepted the way datasets ship them: raw LaTeX without delimiters (``\\frac43``, ``11\\sqrt2``,
``\\text{(C)}``, ``10\\%``, ``5\\text{ cm}^2``, ``90^\\circ``, ``1,2``, ...), ``$``-wrapped, inside ``\\boxed{}``, as
lists or numbers. The gold and the completion's answer go through the same normalisation
(`answers.normalize_answer`), so a completion that boxes the gold verbatim is always graded correct.

Each sample is graded under a time limit (`grading.TIMEOUT_SECONDS`) in a worker process that is killed when it
overruns (`deadline`), from any thread: a runaway SymPy computation never blocks training.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from ..core.text import completion_text
from . import grading
from .grading import Grade

logger = logging.getLogger(__name__)

#: Cumulative counts of grading outcomes in this process: one per sample for its `Grade.status`, plus
#: "unparseable_gold" for every sample whose gold math-verify could not parse.
ACCURACY_STATS: Counter[str] = Counter()

#: Grade statuses without a verdict: their reward is NaN.
UNGRADED = ("timeout", "error")

_STATS_LOCK = threading.Lock()
_WARNED_GOLDS: set[str] = set()
_MAX_WARNED_GOLDS = 1000


def _shorten(text: Any, limit: int = 200) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit // 2] + " ... " + text[-limit // 2 :]


def report_grades(grades: Sequence[Grade], completions: Sequence[Any], golds: Sequence[Any]) -> Counter[str]:
    """Count the grades in `ACCURACY_STATS` and log what went wrong; returns this batch's counts.

    A warning per sample that timed out or failed, and once per distinct gold that math-verify cannot parse.
    """
    counts = Counter(g.status for g in grades)
    counts["unparseable_gold"] = sum(not g.gold_ok for g in grades)
    with _STATS_LOCK:
        ACCURACY_STATS.update(counts)
    for g, completion, gold in zip(grades, completions, golds):
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
                "accuracy_reward: grading %s (%s; gold %r, completion %r); no reward (NaN).",
                "timed out" if g.status == "timeout" else "failed",
                g.detail,
                _shorten(gold),
                _shorten(completion_text(completion)),
            )
    return counts


def accuracy_reward(
    completions: list,
    solution: list,
    log_extra: Callable[[str, list], None] | None = None,
    log_metric: Callable[[str, float], None] | None = None,
    **kwargs,
) -> list[float | None]:
    r"""1.0 if a completion's final answer equals the gold `solution`, 0.0 if not, None if the gold is empty.

    NaN when grading timed out or failed (no verdict).

    Args:
        completions: completions as strings, or as chat messages (``[{"role": "assistant", "content": "..."}]``).
        solution: gold answers, one per completion: raw LaTeX (``\frac43``), ``$``-wrapped, in ``\boxed{}``, a list
            or a number.
        log_extra, log_metric: provided by TRL's trainers to add completions-table columns and scalar metrics.
        **kwargs: other dataset columns and trainer arguments; ignored.

    Example::

        >>> accuracy_reward([r"so \boxed{\dfrac{4}{3}}", "so \\boxed{2}", "no idea"], [r"\frac43"] * 3)
        [1.0, 0.0, 0.0]

    See the module docstring for the exact contract.
    """
    if len(completions) != len(solution):
        raise ValueError(f"accuracy_reward got {len(completions)} completions but {len(solution)} solutions.")
    grades = grading.grade_batch(completions, solution)
    counts = report_grades(grades, completions, solution)
    if log_metric is not None and grades:
        for status in ("no_answer", "unparseable_gold", "timeout", "error"):
            log_metric(f"accuracy_reward/{status}_frac", counts.get(status, 0) / len(grades))
    if log_extra is not None:
        log_extra("solution", [str(gold) for gold in solution])
        log_extra("gold_parsed", [g.gold if g.gold_ok else f"[unparseable] {g.gold}" for g in grades])
        log_extra("answer_parsed", [g.answer or f"[{g.status}]" for g in grades])
    return [math.nan if g.status in UNGRADED else g.reward for g in grades]


accuracy_reward.answer_columns = ("solution",)  # read as text; checked before training
