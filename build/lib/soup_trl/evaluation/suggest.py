"""Near-miss suggestions for names a user typed: benchmarks, options, config keys, commands."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable


def _plain(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The choice `name` most likely meant: equal up to case and punctuation (`math-500` -> `math500`), else the
    closest by `difflib` similarity (at least 0.6), else None."""
    choices = list(choices)
    same = [c for c in choices if _plain(c) == _plain(name)]
    if same:
        return same[0]
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`" (did you mean 'x'?)"` for the closest choice, or "" when none is close."""
    match = closest(name, choices)
    return f" (did you mean {match!r}?)" if match is not None and match != name else ""
