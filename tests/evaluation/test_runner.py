"""The evaluation runner (`soup_trl.evaluation.runner`): pass@k and avg@n against hand-computed values and a
hypothesis property against the closed form, grading (prose gold answers, arithmetic answers), and the exact metrics
and files of a run sampled from a scripted backend.

End-to-end runs of the `soup-trl` subcommands are in tests/scripts/test_cli.py.
"""

import json
import math
from fractions import Fraction
from math import comb

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soup_trl.evaluation.arguments import SamplingArguments
from soup_trl.evaluation.benchmarks import load_benchmark
from soup_trl.evaluation.runner import (
    ProblemResult,
    Sample,
    benchmark_summary,
    grade_problems,
    k_values,
    pass_at_k,
    run_eval,
    summarize,
)
from soup_trl.rewards.math_data import MATH_PROMPT_TEMPLATE
from soup_trl.testing.evaluation import ScriptedBackend, ids
from soup_trl.testing.properties import examples


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (4, 1, 1, 0.25),
        (4, 1, 2, 0.5),
        (4, 1, 4, 1.0),
        (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (5, 2, 4, 1.0),  # any 4 of 5 samples contain one of the 2 correct ones
        (5, 0, 1, 0.0),
        (5, 0, 5, 0.0),
        (5, 5, 1, 1.0),
        (5, 5, 5, 1.0),
        (10, 3, 3, 1 - comb(7, 3) / comb(10, 3)),
    ],
)
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_is_stable_for_large_n():
    # C(1024, 512) overflows a float; the product form does not.
    assert pass_at_k(1024, 1, 512) == pytest.approx(0.5, abs=1e-12)
    assert pass_at_k(1024, 3, 1) == pytest.approx(3 / 1024, abs=1e-15)
    exact = 1 - comb(1000, 300) / comb(1024, 300)  # Python ints: exact, then one rounding
    assert pass_at_k(1024, 24, 300) == pytest.approx(exact, rel=1e-12)


def test_pass_at_k_rejects_impossible_counts():
    for n, c, k in [(4, 5, 1), (4, -1, 1), (4, 1, 0), (4, 1, 5)]:
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)


@settings(max_examples=examples("pass_at_k"))
@given(data=st.data(), n=st.integers(1, 30))
def test_pass_at_k_is_monotone_in_k_and_matches_the_closed_form(data, n):
    c = data.draw(st.integers(0, n))
    values = [pass_at_k(n, c, k) for k in range(1, n + 1)]
    assert all(a <= b for a, b in zip(values, values[1:]))
    for k, value in enumerate(values, start=1):
        exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
        assert math.isclose(value, float(exact), rel_tol=1e-12, abs_tol=1e-12)
        assert (value == 1.0) == (n - c < k) and (value == 0.0) == (c == 0)


def test_k_values():
    assert k_values(1) == [1]
    assert k_values(4) == [1, 2, 4]
    assert k_values(5) == [1, 2, 4, 5]
    assert k_values(32) == [1, 2, 4, 8, 16, 32]


def test_summarize_avg_at_n_and_pass_at_k():
    summary = summarize([1, 4, 2], 4)
    assert summary["avg@n"] == pytest.approx((0.25 + 1.0 + 0.5) / 3)
    assert summary["pass@k"]["1"] == pytest.approx(summary["avg@n"])
    assert summary["pass@k"]["2"] == pytest.approx((0.5 + 1.0 + (1 - 1 / 6)) / 3)
    assert summary["pass@k"]["4"] == 1.0
    assert summarize([0, 0], 2) == {"avg@n": 0.0, "pass@k": {"1": 0.0, "2": 0.0}}


MATH_FILE = [
    {"problem": "What is 1+1?", "answer": "2"},
    {"problem": "Compute 3/4 + 1/4.", "answer": "1"},
    {"problem": "Simplify 8/6.", "answer": "\\frac{4}{3}"},
]


MATH_SCRIPT = {
    "What is 1+1?": ["\\boxed{2}", "\\boxed{3}", "so \\boxed{5}.", "no idea"],  # 1 correct, 1 unparseable
    "Compute 3/4 + 1/4.": ["The answer is \\boxed{1}."] * 4,  # 4 correct
    "Simplify 8/6.": ["\\boxed{\\dfrac{4}{3}}", "\\boxed{\\frac{8}{6}}", "\\boxed{7}", "\\boxed{}"],  # 2 correct
}


def math_script(text):
    return next(completions for problem, completions in MATH_SCRIPT.items() if problem in text)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_run_eval_exact_metrics_and_files(tmp_path):
    bench = load_benchmark(write_jsonl(tmp_path / "math.jsonl", MATH_FILE))
    backend = ScriptedBackend(math_script)
    report = run_eval(
        backend,
        [bench],
        SamplingArguments(num_samples=4, max_new_tokens=50),
        tmp_path / "out",
        "m",
        log=lambda m: None,
    )
    s = report["benchmarks"]["math"]
    assert s["num_problems"] == 3 and s["num_samples"] == 4
    assert s["avg@n"] == pytest.approx(7 / 12)
    assert s["pass@k"] == pytest.approx({"1": 7 / 12, "2": (0.5 + 1 + 5 / 6) / 3, "4": 1.0})
    assert s["unparseable_answers"] == 2
    assert s["grade_statuses"] == {"correct": 7, "no_answer": 2, "wrong": 3}
    assert s["truncated_samples"] == 0 and s["unparseable_gold_problems"] == 0
    assert backend.calls[0]["n"] == 4 and backend.calls[0]["budgets"] == [50, 50, 50]
    # the prompt sent is the recipes' template
    assert backend.calls[0]["rows"][0] == ids(MATH_PROMPT_TEMPLATE.replace("{problem}", "What is 1+1?"), eos=False)

    records = [json.loads(line) for line in (tmp_path / "out" / "math.jsonl").read_text().splitlines()]
    assert len(records) == 12
    assert records[3] == {
        "problem_id": "0",
        "sample": 3,
        "problem": "What is 1+1?",
        "gold": "2",
        "completion": "no idea",
        "answer": "",
        "reward": 0.0,
        "status": "no_answer",
        "num_tokens": 8,
        "finished": True,
    }
    assert [r["reward"] for r in records] == [1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0]
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["benchmarks"]["math"]["pass@k"] == s["pass@k"]
    assert saved["files"] == ["results.md", "math.jsonl", "config.yaml"]  # what --overwrite removes
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| math      | 3        | 58.3  | 58.3   | 77.8   | 100.0  | 2/12        | 0/12      |" in table


def test_prose_gold_is_graded_by_string_match_and_reported():
    from soup_trl.evaluation.runner import grade_completions

    gold = "f(x)=ax+b, where b is an arbitrary integer"
    grades = grade_completions([f"\\boxed{{{gold}}}", "\\boxed{f(x)=x}", "no box"], gold, "accuracy")
    assert [(g.reward, g.status, g.gold_parseable) for g in grades] == [
        (1.0, "correct", False),
        (0.0, "wrong", False),
        (0.0, "no_answer", False),
    ]
    results = [ProblemResult("0", "p", gold, [Sample([1], "x", True, g) for g in grades])]
    assert benchmark_summary(results, 3)["unparseable_gold_problems"] == 1


def test_arithmetic_grading_counts_missing_answers():
    results = [
        ProblemResult("0", "2+3=", "5", [Sample([], t, True) for t in ("05|5", "05|6", "05,", "|5 ")]),
    ]
    grade_problems(results, "arithmetic")
    assert [(s.grade.reward, s.grade.status, s.grade.answer) for s in results[0].samples] == [
        (1.0, "correct", "5"),
        (0.0, "wrong", "6"),
        (0.0, "no_answer", ""),
        (1.0, "correct", "5"),
    ]
    summary = benchmark_summary(results, 4)
    assert summary["unparseable_answers"] == 1 and summary["avg@n"] == 0.5


def test_no_nan_in_summary_of_empty_benchmark():
    summary = benchmark_summary([], 4)
    assert summary["avg@n"] == 0.0 and not any(math.isnan(v) for v in summary["pass@k"].values())
