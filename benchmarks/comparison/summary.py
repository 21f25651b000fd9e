"""The summary of a sweep, rebuilt from every finished run: per variant its metrics over seeds with 95% intervals, the
paired differences to DAPO (and to the sweep's other references), step time and decoding cost as ratios to DAPO,
entropy and clip ratio by relative position early vs late, SOUP's logged diagnostics, and the training reward by step.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from .host import machine
from .runs import load_results
from .statistics import mean_ci, nanmean, paired_difference, paired_ratio, verdict
from .variants import REFERENCE, Scale, Variant

DIAGNOSTICS = {  # logged metrics the tables report, averaged over a run's logs, then over seeds
    "soup/cut_position_mean": "mean cut position",
    "soup/prefix_token_frac": "prefix token share (%)",
    "soup/refresh": "steps that refreshed (%)",
    "soup/history_row_frac": "rows from history (%)",
    "clip_ratio/region_mean": "clipped tokens (%)",  # GRPOTrainer's, every method
    "soup/high_entropy/clip_ratio": "clipped high-entropy tokens (%)",  # top 20% by entropy: SOUPTrainer at any T
}


def metric_values(runs: dict[int, dict], metric: str) -> dict[int, float]:
    """One metric per seed; `pass@4` reads the pass@k curve, `relay-model@4` the relay difference curve."""
    if metric.startswith("pass@"):
        return {s: r["pass@k"][metric[5:]] for s, r in runs.items()}
    if metric.startswith("relay-model@"):
        return {s: r["relay_minus_model"][metric[12:]] for s, r in runs.items() if "relay_minus_model" in r}
    return {s: r[metric] for s, r in runs.items()}


def position_profiles(runs: dict[int, dict], metric: str) -> list[list[float]] | None:
    """Early and late (first and second half of the logged steps) profiles of a metric by position, seed-averaged."""
    from soup_trl.evaluation.plots import position_bin_profiles

    per_seed = [position_bin_profiles(r["log_history"], metric, num_phases=2) for r in runs.values()]
    per_seed = [p for p in per_seed if len(p) == 2]
    if not per_seed:
        return None
    return [
        [nanmean([p[phase][1][b] for p in per_seed]) for b in range(len(per_seed[0][phase][1]))] for phase in (0, 1)
    ]


def reward_curve(runs: dict[int, dict], window: int = 10) -> list[list[float]]:
    """Training reward by optimizer step: ``[step, mean over seeds, trailing `window`-step average]`` for the steps
    every seed logged a reward at (M2PO logs none while its first batches are still queued); empty without logs."""
    per_seed = []
    for r in runs.values():
        rewards = {h["step"]: h["reward"] for h in r["log_history"] if "reward" in h and "step" in h}
        if rewards:
            per_seed.append(rewards)
    if not per_seed:
        return []
    steps = sorted(set.intersection(*(set(seq) for seq in per_seed)))
    mean = [sum(seq[step] for seq in per_seed) / len(per_seed) for step in steps]
    smooth = [sum(mean[max(0, i - window + 1) : i + 1]) / (i + 1 - max(0, i - window + 1)) for i in range(len(mean))]
    return [[step, m, a] for step, m, a in zip(steps, mean, smooth)]


def diagnostics(runs: dict[int, dict]) -> dict[str, float]:
    """Per logged SOUP metric of `DIAGNOSTICS`: its mean over each run's logs, averaged over seeds (absent: not logged)."""
    out = {}
    for key in DIAGNOSTICS:
        per_seed = [[h[key] for h in r["log_history"] if key in h] for r in runs.values()]
        per_seed = [sum(v) / len(v) for v in per_seed if v]
        if per_seed:
            out[key] = sum(per_seed) / len(per_seed)
    return out


def decoded_tokens_per_step(run: dict) -> float | None:
    """Mean over a run's logged optimizer steps of the tokens its generation calls decoded (`decoded_tokens`, logged
    by every trainer of the package), or None for a run that did not log it."""
    values = [h["decoded_tokens"] for h in run["log_history"] if "decoded_tokens" in h]
    return sum(values) / len(values) if values else None


def _k_values(n: int) -> list[int]:
    from soup_trl.evaluation.runner import k_values

    return k_values(n)


def summarize(variants: list[Variant], scale: Scale, out: Path, others: tuple[str, ...] = ()) -> dict[str, Any]:
    """Per variant: metrics with intervals, paired differences to DAPO (and to each variant named in `others`), step
    time, position profiles, reward curve."""
    results = load_results(variants, scale, out)
    reference = results.get(REFERENCE, {})
    ks = [str(k) for k in _k_values(scale.k)]
    metrics = ["greedy_accuracy", "avg@k", *[f"pass@{k}" for k in ks]]
    summary: dict[str, Any] = {"scale": dataclasses.asdict(scale), "variants": {}}
    for variant in variants:
        runs = results[variant.name]
        entry: dict[str, Any] = {
            "label": variant.label,
            "recipe": variant.recipe,
            "overrides": list(variant.overrides),
        }
        entry["seeds"] = sorted(runs)
        for metric in metrics:
            values = metric_values(runs, metric)
            entry[metric] = {**mean_ci(list(values.values())), "per_seed": values}
            if variant.name != REFERENCE and reference:
                diff = paired_difference(values, metric_values(reference, metric))
                entry[f"{metric} - {REFERENCE}"] = {**diff, "verdict": verdict(diff)}
            for other in others:
                if variant.name != other and results.get(other):
                    diff = paired_difference(values, metric_values(results[other], metric))
                    entry[f"{metric} - {other}"] = {**diff, "verdict": verdict(diff)}
        step_time = {s: r["seconds_per_step"] for s, r in runs.items()}
        entry["seconds_per_step"] = mean_ci(list(step_time.values()))
        if reference:
            reference_time = {s: r["seconds_per_step"] for s, r in reference.items()}
            entry[f"step_time / {REFERENCE}"] = paired_ratio(step_time, reference_time)
        tokens = {s: t for s, r in runs.items() if (t := decoded_tokens_per_step(r)) is not None}
        entry["decoded_tokens"] = mean_ci(list(tokens.values()))
        if reference and tokens:
            reference_tokens = {s: t for s, r in reference.items() if (t := decoded_tokens_per_step(r)) is not None}
            entry[f"decoded_tokens / {REFERENCE}"] = paired_ratio(tokens, reference_tokens)
        entry["peak_rss_mb"] = mean_ci([r["train_peak_rss_mb"] for r in runs.values() if "train_peak_rss_mb" in r])
        if any("relay_minus_model" in r for r in runs.values()):
            entry["relay_minus_model"] = {
                k: mean_ci(list(metric_values(runs, f"relay-model@{k}").values())) for k in ks
            }
        entry["position_bins"] = {m: position_profiles(runs, m) for m in ("entropy", "clip_ratio")}
        entry["diagnostics"] = diagnostics(runs)
        entry["train_reward"] = reward_curve(runs)
        entry["run_seconds"] = sum(r["train_process_seconds"] + r["evaluation_seconds"] for r in runs.values())
        entry["run_cpu_seconds"] = mean_ci(
            [r["train_cpu_seconds"] + r["evaluation_cpu_seconds"] for r in runs.values()]
        )
        summary["variants"][variant.name] = entry
    return summary


def add_provenance(
    summary: dict[str, Any], base_model: dict[str, Any], command: str, jobs: int, invocations: list[dict[str, Any]]
) -> None:
    """What produced the summary: the base model's evaluation, the command, the machine, the runs at a time, every
    invocation, and the run time (wall clock and CPU) summed over runs."""
    summary["base_model"] = base_model
    summary["command"] = command
    summary["machine"] = machine()
    summary["jobs"] = jobs
    summary["invocations"] = invocations
    summary["run_seconds_total"] = sum(e["run_seconds"] for e in summary["variants"].values())
    cpu_total = sum(
        e["run_cpu_seconds"]["mean"] * e["run_cpu_seconds"]["n"] for e in summary["variants"].values() if e["seeds"]
    )
    summary["cpu_seconds_total"] = cpu_total  # 1 thread per run: about the wall clock of runs on idle cores
