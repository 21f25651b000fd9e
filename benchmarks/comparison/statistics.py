"""Statistics over seeds: mean and 95% t-interval, paired differences and ratios, verdicts (pure functions).

A value per seed goes in as a list (`mean_ci`) or as a mapping seed -> value (`paired_difference`, `paired_ratio`:
the seeds both sides have); a statistic is a dict with `mean`, `std`, `ci95` (the half-width of the interval) and `n`.
"""

from __future__ import annotations

import math
from typing import Any

# Two-sided 95% quantiles of Student's t, t_{0.975, df}, df = 1..30.
T_975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]  # fmt: skip


def t_quantile_975(df: int) -> float:
    """t_{0.975} with `df` degrees of freedom: the table up to 30, then z + (z^3 + z) / (4 df) (error < 0.001)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(T_975):
        return T_975[df - 1]
    z = 1.959964
    return z + (z**3 + z) / (4 * df)


def mean_ci(values: list[float]) -> dict[str, Any]:
    """Mean, sample standard deviation and the half-width of the 95% t-interval of the mean (NaN with one value)."""
    n = len(values)
    if n == 0:
        return {"mean": math.nan, "std": math.nan, "ci95": math.nan, "n": 0}
    mean = sum(values) / n
    if n == 1:
        return {"mean": mean, "std": math.nan, "ci95": math.nan, "n": 1}
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return {"mean": mean, "std": std, "ci95": t_quantile_975(n - 1) * std / math.sqrt(n), "n": n}


def paired_difference(values: dict[int, float], reference: dict[int, float]) -> dict[str, Any]:
    """`mean_ci` of value - reference over the seeds both have."""
    seeds = sorted(set(values) & set(reference))
    return {**mean_ci([values[s] - reference[s] for s in seeds]), "seeds": seeds}


def paired_ratio(values: dict[int, float], reference: dict[int, float]) -> dict[str, Any]:
    """Mean and interval over seeds of value / reference (same seed)."""
    return mean_ci([values[s] / reference[s] for s in values if s in reference and reference[s]])


def seeds_for_half_width(std: float, half_width: float) -> int:
    """The fewest seeds n (at least 2) whose 95% t-interval of a mean has a half-width t_{0.975,n-1} x std / sqrt(n)
    of at most `half_width`, for values (paired differences) of standard deviation `std`."""
    if not std > 0 or not half_width > 0:
        raise ValueError(f"std and half_width must be positive, got {std} and {half_width}")
    n = 2
    while t_quantile_975(n - 1) * std / math.sqrt(n) > half_width:
        n += 1
    return n


def verdict(diff: dict[str, Any]) -> str:
    """'higher' / 'lower' when the 95% interval of a paired difference excludes 0, else 'no difference measured'."""
    if not diff["n"] or math.isnan(diff["ci95"]):
        return "not enough seeds"
    if diff["mean"] - diff["ci95"] > 0:
        return "higher"
    if diff["mean"] + diff["ci95"] < 0:
        return "lower"
    return "no difference measured"


def fmt_ci(stats: dict[str, Any], scale: float = 100.0, signed: bool = False) -> str:
    """`mean ± ci95` times `scale` (percentage points by default), one decimal; the mean alone without an interval."""
    if not stats["n"]:
        return "-"
    mean = f"{scale * stats['mean']:+.1f}" if signed else f"{scale * stats['mean']:.1f}"
    return mean if math.isnan(stats["ci95"]) else f"{mean} ± {scale * stats['ci95']:.1f}"


def nanmean(values: list[float]) -> float:
    """The mean of the values that are not NaN (NaN when none is)."""
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan
