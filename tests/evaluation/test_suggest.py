"""Suggestions for a mistyped name (`soup_trl.evaluation.suggest`), on the benchmark names."""

import pytest


@pytest.mark.parametrize(
    "typed, expected",
    [
        ("math-500", "math500"),  # equal up to punctuation
        ("AIME24", "aime24"),
        ("aime2025", "aime25"),  # close by similarity
        ("olympiad", "olympiadbench"),
        ("word-problems", "word_problems"),
        ("gsm8k", None),  # nothing close
    ],
)
def test_closest_benchmark_name(typed, expected):
    from soup_trl.evaluation.benchmarks import valid_names
    from soup_trl.evaluation.suggest import closest, did_you_mean

    assert closest(typed, valid_names()) == expected
    assert did_you_mean(typed, valid_names()) == ("" if expected is None else f" (did you mean {expected!r}?)")
