"""benchmarks/comparison/statistics.py: the t-interval, paired differences and ratios, and verdicts on hand-made
numbers (the comparison's other modules are tested in tests/benchmarks/test_compare_methods.py)."""

import math

import pytest
from comparison import statistics as st  # benchmarks/ is on sys.path (conftest.py), as the benchmark scripts have it


@pytest.mark.parametrize("df, expected", [(1, 12.706), (4, 2.776), (30, 2.042)])
def test_t_quantile_table(df, expected):
    assert st.t_quantile_975(df) == expected


def test_t_quantile_beyond_the_table_approaches_the_normal():
    assert st.t_quantile_975(60) == pytest.approx(2.000, abs=1e-3)  # tables: 2.000
    assert st.t_quantile_975(120) == pytest.approx(1.980, abs=1e-3)  # tables: 1.980
    with pytest.raises(ValueError, match="degrees of freedom"):
        st.t_quantile_975(0)


def test_mean_ci_of_five_values():
    stats = st.mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])  # std = sqrt(2.5), t(4) = 2.776
    assert stats["mean"] == 3.0 and stats["n"] == 5
    assert stats["std"] == pytest.approx(math.sqrt(2.5))
    assert stats["ci95"] == pytest.approx(2.776 * math.sqrt(2.5) / math.sqrt(5))


def test_mean_ci_degenerate_cases():
    assert math.isnan(st.mean_ci([0.5])["ci95"]) and st.mean_ci([0.5])["mean"] == 0.5
    assert st.mean_ci([])["n"] == 0


def test_paired_difference_uses_common_seeds_only():
    diff = st.paired_difference({0: 0.5, 1: 0.7, 2: 0.9}, {0: 0.4, 1: 0.5, 3: 0.0})
    assert diff["seeds"] == [0, 1]
    assert diff["mean"] == pytest.approx(0.15)
    assert diff["std"] == pytest.approx(math.sqrt(2 * 0.05**2))
    assert diff["ci95"] == pytest.approx(12.706 * diff["std"] / math.sqrt(2))


def test_paired_ratio_over_the_seeds_with_a_reference():
    ratio = st.paired_ratio({0: 60.0, 1: 80.0, 2: 10.0}, {0: 120.0, 1: 100.0})  # seed 2 has no reference
    assert ratio["n"] == 2 and ratio["mean"] == pytest.approx(0.65)


@pytest.mark.parametrize(
    "mean, ci, expected",
    [
        (0.1, 0.05, "higher"),
        (-0.1, 0.05, "lower"),
        (0.02, 0.05, "no difference measured"),
        (0.1, math.nan, "not enough seeds"),
    ],
)
def test_verdict(mean, ci, expected):
    assert st.verdict({"mean": mean, "ci95": ci, "n": 3}) == expected


def test_fmt_ci_in_points_signed_or_not():
    assert st.fmt_ci({"mean": 0.781, "ci95": 0.012, "n": 5}) == "78.1 ± 1.2"
    assert st.fmt_ci({"mean": 0.02, "ci95": 0.01, "n": 5}, signed=True) == "+2.0 ± 1.0"
    assert st.fmt_ci({"mean": 1.4, "ci95": 0.05, "n": 5}, scale=1.0) == "1.4 ± 0.1"
    assert st.fmt_ci({"mean": 0.5, "ci95": math.nan, "n": 1}) == "50.0"  # one seed: no interval
    assert st.fmt_ci(st.mean_ci([])) == "-"


def test_nanmean_skips_missing_values():
    assert st.nanmean([0.2, math.nan, 0.4]) == pytest.approx(0.3)
    assert math.isnan(st.nanmean([math.nan]))
