"""The paper's measurable claims, each a statistic over seeds computed from what the runs logged and how they were
evaluated (the claims sweep, docs/claims.md). Pure functions of the runs' results (`runs.load_results`).

A claim names a statistic of one run (`STATISTICS`), the variant the paper says it is higher or lower for, the variant
it is compared with (a paired difference over the seeds both have) or none (a one-sample mean: relay minus
single-model pass@k is already a difference within each run), and the direction the paper reports. Its verdict:
"reproduced" when the 95% t-interval excludes 0 on the paper's side, "not reproduced" when it excludes 0 on the other
side, "no difference measured" when it contains 0.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from .statistics import mean_ci, paired_difference, seeds_for_half_width, verdict

LATE_BINS = (7, 8, 9)  # the last 30% of a completion's positions, in the 10% bins of `soup/position_bin_{b}/*`
LATE_STEPS = 0.25  # the training reward "at fixed steps": the last quarter of the run's steps
RELAY_K = 8  # the paper's Figure 4: relay sampling gains at k >= 8


def logged(run: dict, key: str) -> list[tuple[int, float]]:
    """(step, value) of every log entry of a run's `log_history` that has `key`, by step."""
    return sorted((h["step"], h[key]) for h in run["log_history"] if "step" in h and h.get(key) is not None)


def logged_mean(run: dict, key: str) -> float | None:
    """The mean of a logged metric over the steps that logged it (None when none did)."""
    values = [v for _, v in logged(run, key)]
    return sum(values) / len(values) if values else None


def late_entropy(run: dict) -> float | None:
    """Mean entropy of the last 30% of positions: the `LATE_BINS` bins' entropies, each averaged over the logged steps
    (`position_bin_profiles` in one phase, the profile the plots draw), then averaged."""
    from soup_trl.evaluation.plots import position_bin_profiles

    profiles = position_bin_profiles(run["log_history"], "entropy", num_phases=1)
    values = [profiles[0][1][b] for b in LATE_BINS] if profiles else []
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else None


def late_reward(run: dict) -> float | None:
    """Mean training reward over the last `LATE_STEPS` of the logged steps (the same steps for every run of a sweep)."""
    rewards = logged(run, "reward")
    if not rewards:
        return None
    last = rewards[-1][0]
    kept = [v for step, v in rewards if step > last * (1 - LATE_STEPS)]
    return sum(kept) / len(kept)


def reward_fluctuation(run: dict) -> float | None:
    """Standard deviation of the step-to-step change of the training reward (the paper's "smaller fluctuations")."""
    values = [v for _, v in logged(run, "reward")]
    if len(values) < 3:
        return None
    return mean_ci([b - a for a, b in zip(values, values[1:])])["std"]


def relay_gain(run: dict) -> float | None:
    """Relay minus single-model pass@`RELAY_K` of one run (None for a run evaluated without relay or with k < 8)."""
    return run.get("relay_minus_model", {}).get(str(RELAY_K))


@dataclasses.dataclass(frozen=True)
class Statistic:
    label: str
    unit: str
    scale: float  # displayed value = scale x value
    decimals: int
    of_run: Callable[[dict], float | None]


STATISTICS = {
    "entropy": Statistic("mean token entropy", "nats", 1.0, 4, lambda r: logged_mean(r, "entropy")),
    "late_entropy": Statistic("entropy of the last 30% of positions", "nats", 1.0, 4, late_entropy),
    "clip_ratio": Statistic("clipped tokens", "%", 100.0, 3, lambda r: logged_mean(r, "clip_ratio/region_mean")),
    "high_entropy_clip": Statistic("clipped share of the top 20% tokens by entropy", "%", 100.0, 3,
                                   lambda r: logged_mean(r, "soup/high_entropy/clip_ratio")),
    "train_reward": Statistic("training reward, last 25% of steps", "points", 100.0, 1, late_reward),
    "reward_fluctuation": Statistic("std of the step-to-step change of the training reward", "points", 100.0, 2,
                                    reward_fluctuation),
    "avg@k": Statistic("held-out avg@k", "points", 100.0, 1, lambda r: r.get("avg@k")),
    "relay_gain": Statistic(f"relay minus single-model pass@{RELAY_K}", "points", 100.0, 1, relay_gain),
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Claim:
    claim: str
    where: str  # its place in the paper
    statistic: str  # a key of STATISTICS
    variant: str
    reference: str | None  # None: a one-sample mean of the variant's values
    direction: int  # +1: the paper reports the variant higher (or the value positive), -1: lower


CLAIMS = [
    Claim("Mini-batch updates raise the policy's entropy", "§5.2, Fig. 5(a-b)", "entropy", "dapo_minibatch", "dapo", +1),
    Claim("Mini-batch updates clip many more tokens", "§5.2, Fig. 5(a-b)", "clip_ratio", "dapo_minibatch", "dapo", +1),
    Claim("SOUP keeps the late positions' entropy above on-policy training's", "§5.2, Fig. 5(a, c)", "late_entropy",
          "soup_ratio", "dapo", +1),
    Claim("SOUP clips fewer tokens than mini-batch updates", "§5.2, Fig. 5(b-c)", "clip_ratio", "soup_ratio",
          "dapo_minibatch", -1),
    Claim("SOUP clips fewer of its high-entropy tokens", "§5.2", "high_entropy_clip", "soup_ratio", "dapo_minibatch",
          -1),
    Claim("SOUP's training reward fluctuates less", "§4.2, Fig. 2", "reward_fluctuation", "soup_ratio", "dapo", -1),
    Claim("SOUP's training reward is higher at the same steps", "Fig. 2", "train_reward", "soup_ratio", "dapo", +1),
    Claim("SOUP is more accurate on held-out problems", "Table 1", "avg@k", "soup_ratio", "dapo", +1),
    Claim(f"Relay sampling beats single-model sampling at k >= {RELAY_K}", "§5.1, Fig. 4", "relay_gain", "soup_ratio",
          None, +1),
]  # fmt: skip

# The design choice the paper does not test: what the loss does with the prefix (`soup_prefix_loss`), against SOUP's
# token-level ratios, on the same seeds
PREFIX_LOSS_VARIANTS = ("soup_prefix_mask", "soup_prefix_minpro")
PREFIX_LOSS_REFERENCE = "soup_ratio"
PREFIX_LOSS_STATISTICS = ("avg@k", "late_entropy", "clip_ratio", "high_entropy_clip", "train_reward")


def per_seed(runs: dict[int, dict], statistic: str) -> dict[int, float]:
    """A statistic of each run (seed -> value), leaving out runs that did not log what it needs."""
    of_run = STATISTICS[statistic].of_run
    values = {seed: of_run(run) for seed, run in runs.items()}
    return {seed: float(v) for seed, v in values.items() if v is not None and not math.isnan(v)}


def claim_verdict(stats: dict[str, Any], direction: int) -> str:
    """'reproduced' / 'not reproduced' when the 95% interval excludes 0 on the claimed / the other side, else 'no
    difference measured' (or 'not measured' without values, 'not enough seeds' with one)."""
    if not stats["n"]:
        return "not measured"
    side = verdict(stats)  # higher / lower / no difference measured / not enough seeds
    if side in ("higher", "lower"):
        return "reproduced" if (side == "higher") == (direction > 0) else "not reproduced"
    return side


def compare(results: dict[str, dict[int, dict]], statistic: str, variant: str, reference: str | None) -> dict[str, Any]:
    """The variant's statistic over seeds, and its paired difference to the reference (or its own mean and interval
    without one): `mean`, `std`, `ci95`, `n`, plus each side's mean."""
    values = per_seed(results.get(variant, {}), statistic)
    out: dict[str, Any] = {"variant_mean": mean_ci(list(values.values()))["mean"]}
    if reference is None:
        return {**out, **mean_ci(list(values.values())), "seeds": sorted(values)}
    reference_values = per_seed(results.get(reference, {}), statistic)
    out["reference_mean"] = mean_ci([reference_values[s] for s in values if s in reference_values])["mean"]
    return {**out, **paired_difference(values, reference_values)}


def evaluate_claims(results: dict[str, dict[int, dict]], half_width: float = 0.01) -> dict[str, Any]:
    """Every claim of `CLAIMS` and every prefix-loss comparison the sweep's results allow, with verdicts, and the
    resolution: the paired standard deviation of SOUP's held-out avg@k difference to DAPO and the seeds a 95% interval
    of +-`half_width` (1 point) would need at that deviation."""
    rows = []
    for claim in CLAIMS:
        stats = compare(results, claim.statistic, claim.variant, claim.reference)
        rows.append({**dataclasses.asdict(claim), **stats, "verdict": claim_verdict(stats, claim.direction)})
    side = []
    for variant in PREFIX_LOSS_VARIANTS:
        if not results.get(variant):
            continue
        for statistic in PREFIX_LOSS_STATISTICS:
            stats = compare(results, statistic, variant, PREFIX_LOSS_REFERENCE)
            side.append({"variant": variant, "reference": PREFIX_LOSS_REFERENCE, "statistic": statistic, **stats,
                         "verdict": verdict(stats) if stats["n"] else "not measured"})  # fmt: skip
    accuracy = compare(results, "avg@k", "soup_ratio", "dapo")
    resolution = {"std": accuracy["std"], "n": accuracy["n"], "ci95": accuracy["ci95"], "half_width": half_width}
    if accuracy["n"] >= 2 and accuracy["std"] > 0:
        resolution["seeds_needed"] = seeds_for_half_width(accuracy["std"], half_width)
    return {"claims": rows, "prefix_loss": side, "resolution": resolution}


def fmt_stat(stats: dict[str, Any], statistic: str, signed: bool = True) -> str:
    """`mean ± ci95` in the statistic's unit (the mean alone without an interval, '-' without values)."""
    if not stats["n"]:
        return "-"
    s = STATISTICS[statistic]
    number = f"{{:{'+' if signed else ''}.{s.decimals}f}}"
    mean = number.format(s.scale * stats["mean"])
    if math.isnan(stats["ci95"]):
        return mean
    return f"{mean} ± {s.scale * stats['ci95']:.{s.decimals}f}"


def claims_text(evaluated: dict[str, Any], labels: dict[str, str], k: int, command: str) -> str:
    """The claims table (claim | paper | statistic | measured | verdict), the resolution statement and the prefix-loss
    table, in markdown."""
    from soup_trl.evaluation.runner import markdown_table

    def name(statistic: str) -> str:
        return STATISTICS[statistic].label.replace("avg@k", f"avg@{k}")

    rows = []
    for row in evaluated["claims"]:
        s = STATISTICS[row["statistic"]]
        versus = f"`{row['variant']}`" + (f" minus `{row['reference']}`" if row["reference"] else "")
        measured = fmt_stat(row, row["statistic"])
        if row["n"]:
            measured += f" {s.unit} (n={row['n']}, sd {s.scale * row['std']:.{s.decimals}f})" if row["n"] > 1 else ""
        sides = [row["variant_mean"], *([row["reference_mean"]] if row["reference"] else [])]
        values = " / ".join("-" if math.isnan(v) else f"{s.scale * v:.{s.decimals}f}" for v in sides)
        rows.append([row["claim"], row["where"], f"{name(row['statistic'])}: {versus}", values, measured,
                     row["verdict"]])  # fmt: skip
    lines = [
        f"Each row: a statistic of each run, its mean over seeds for each side (variant / reference), their paired "
        f"difference over seeds (same seed, both variants; the variants are named as in the table below) with the "
        f"half-width of its 95% t-interval and the standard deviation of the differences (sd); written by `{command}`.",
        "",
        markdown_table(["claim", "paper", "statistic", "mean of each side", "measured (95% interval)", "verdict"], rows),
    ]
    resolution = evaluated["resolution"]
    if "seeds_needed" in resolution:
        lines += [
            "",
            f"Resolution: the paired standard deviation of SOUP's held-out avg@{k} difference to DAPO is "
            f"{100 * resolution['std']:.2f} points over {resolution['n']} seeds (95% interval ± "
            f"{100 * resolution['ci95']:.2f}); an interval of ± {100 * resolution['half_width']:.0f} point at that "
            f"deviation needs {resolution['seeds_needed']} seeds.",
        ]
    if evaluated["prefix_loss"]:
        rows = [
            [labels.get(r["variant"], r["variant"]), name(r["statistic"]), f"{fmt_stat(r, r['statistic'])} "
             f"{STATISTICS[r['statistic']].unit} (n={r['n']})", r["verdict"]]
            for r in evaluated["prefix_loss"]
        ]  # fmt: skip
        reference = labels.get(PREFIX_LOSS_REFERENCE, PREFIX_LOSS_REFERENCE)
        lines += [
            "",
            f"What the loss does with the prefix (`soup_prefix_loss`), against {reference} (token-level ratios, the "
            "paper's), paired over the seeds both have:",
            "",
            markdown_table(["prefix loss", "statistic", f"difference to {reference}", "verdict"], rows),
        ]
    return "\n".join(lines) + "\n"


def readme_line(evaluated: dict[str, Any], seeds: int, task: str, page: str) -> str:
    """One line for the README: how many of the claims were reproduced, with a link to the page."""
    verdicts = [row["verdict"] for row in evaluated["claims"]]
    order = ("reproduced", "not reproduced", "no difference measured", "not enough seeds", "not measured")
    counts = ", ".join(f"{verdicts.count(v)} {v}" for v in order if v in verdicts)
    return (
        f"The paper's {len(verdicts)} measurable claims on the {task} task, {seeds} paired seed{'s' * (seeds != 1)}: "
        f"{counts} "
        f"([the claims, one by one]({page})).\n"
    )
