"""What a comparison writes: its tables (the sweep's markdown, the README's headline), its plots, results.json, and
the marked sections of docs pages it fills.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

from .claims import claims_text
from .statistics import fmt_ci
from .summary import DIAGNOSTICS
from .variants import REFERENCE, SWEEP_OTHERS, TASKS, Scale

DIAGNOSTIC_SWEEPS = ("history", "beyond", "control", "claims")  # the sweeps whose tables report the runs' logged diagnostics

# Every sweep of every task ("methods", "control", ...; "smollm2", "smollm2-control" for --task smollm2), and
# "headline": the short table of the methods sweep, and "claims-readme", the claims sweep's line, for the README
DOC_SECTIONS = (*(task.doc_section(sweep) for task in TASKS.values() for sweep in ("methods", *task.sweeps)), "headline",
                "claims-readme")  # fmt: skip
DOC_MARKERS = {name: (f"<!-- {name}: start -->", f"<!-- {name}: end -->") for name in DOC_SECTIONS}


def markdown(summary: dict[str, Any], sweep: str) -> str:
    from soup_trl.evaluation.runner import markdown_table

    scale = Scale(**summary["scale"])
    k = scale.k
    lines = [
        f"{scale.seeds} seeds x {scale.steps} optimizer steps per run; greedy accuracy on {scale.eval_problems} held-out "
        f"problems, avg@{k} and pass@{k} of {k} samples at temperature {TASKS[scale.task].temperature:g} on "
        f"{scale.sample_problems}. Mean ± half-width "
        "of the 95% t-interval over seeds, in %; Δ: paired difference to DAPO (same seed), with its interval; a Δ "
        "whose interval contains 0 is no difference measured.",
        "",
    ]
    rows = []
    # runs trained before trainers logged `decoded_tokens` have no cost columns
    cost_columns = any(e.get("decoded_tokens", {}).get("n") for e in summary["variants"].values())
    for name, e in summary["variants"].items():
        seconds = e["seconds_per_step"]
        ratio = e.get(f"step_time / {REFERENCE}")
        rows.append(
            [
                e["label"],
                str(len(e["seeds"])),
                fmt_ci(e["greedy_accuracy"]),
                fmt_ci(e[f"greedy_accuracy - {REFERENCE}"], signed=True) if name != REFERENCE else "",
                fmt_ci(e["avg@k"]),
                fmt_ci(e[f"avg@k - {REFERENCE}"], signed=True) if name != REFERENCE else "",
                fmt_ci(e[f"pass@{k}"]),
                fmt_ci(e[f"pass@{k} - {REFERENCE}"], signed=True) if name != REFERENCE else "",
                f"{seconds['mean']:.2f}" if seconds["n"] else "-",
                fmt_ci(ratio, scale=1.0).replace(" ± ", " ± ") if ratio and ratio["n"] else "-",
            ]
        )
        if cost_columns:
            tokens, token_ratio, rss = (e.get(key) for key in ("decoded_tokens", f"decoded_tokens / {REFERENCE}",
                                                               "peak_rss_mb"))  # fmt: skip
            rows[-1] += [
                f"{tokens['mean']:.0f}" if tokens and tokens["n"] else "-",
                f"{token_ratio['mean']:.2f} ± {token_ratio['ci95']:.2f}" if token_ratio and token_ratio["n"] else "-",
                f"{rss['mean']:.0f}" if rss and rss["n"] else "-",
            ]
    headers = ["method", "seeds", "greedy", "Δ greedy", f"avg@{k}", f"Δ avg@{k}", f"pass@{k}", f"Δ pass@{k}"]
    headers += ["s/step", "step time / DAPO"]
    if cost_columns:
        headers += ["decoded tokens/step", "tokens / DAPO", "peak RSS MB"]
    lines.append(markdown_table(headers, rows))
    headline_note = " (the headline metric: greedy sits near its ceiling from the start)" if scale.task == "chain" else ""
    names = {"avg@k": f"avg@{k}{headline_note}", "greedy_accuracy": "greedy"}
    for metric, name in names.items():
        verdicts = [
            f"{e['label']}: {e[f'{metric} - {REFERENCE}']['verdict']}"
            for e in summary["variants"].values()
            if f"{metric} - {REFERENCE}" in e
        ]
        lines += ["", f"Held-out {name} against DAPO (95% interval of the paired difference): " + "; ".join(verdicts) + "."]
    for other in SWEEP_OTHERS.get(sweep, ()):
        label = summary["variants"][other]["label"] if other in summary["variants"] else other
        key = f"avg@k - {other}"
        diffs = [
            f"{e['label']}: {fmt_ci(e[key], signed=True)}, {e[key]['verdict']}"
            for e in summary["variants"].values() if key in e
        ]  # fmt: skip
        if diffs:
            lines += ["", f"Held-out avg@{k} against {label} (paired difference, same seed): " + "; ".join(diffs) + "."]
    logged = [k for k in DIAGNOSTICS if any(k in e.get("diagnostics", {}) for e in summary["variants"].values())]
    if sweep in DIAGNOSTIC_SWEEPS and logged:
        lines += ["", "What the runs logged (mean over each run's logged steps, then over seeds):", ""]
        rows = [
            [e["label"], *[
                "-" if k not in e["diagnostics"]
                else f"{e['diagnostics'][k]:.4f}" if k == "soup/cut_position_mean"
                else f"{100 * e['diagnostics'][k]:.2f}"
                for k in logged
            ]]
            for e in summary["variants"].values() if e.get("diagnostics")
        ]  # fmt: skip
        lines.append(markdown_table(["method", *[DIAGNOSTICS[k] for k in logged]], rows))
    relay = [(e["label"], e["relay_minus_model"]) for e in summary["variants"].values() if "relay_minus_model" in e]
    if relay:
        ks = list(relay[0][1])
        lines += [
            "",
            f"Relay sampling (half-way model writes the first half, final model continues; {k} samples "
            "per problem): relay minus final-model pass@k, points, mean ± 95% interval over seeds.",
            "",
        ]
        lines.append(markdown_table(["method", *[f"pass@{x}" for x in ks]], [
            [label, *[fmt_ci(curve[x], signed=True) for x in ks]] for label, curve in relay
        ]))  # fmt: skip
    return "\n".join(lines) + "\n"


def headline(summary: dict[str, Any]) -> str:
    """The short table for the README: avg@k and its paired difference to DAPO with the verdict, step time."""
    from soup_trl.evaluation.runner import markdown_table

    scale, base = Scale(**summary["scale"]), summary["base_model"]
    k = scale.k
    rows = []
    for e in summary["variants"].values():
        diff = e.get(f"avg@k - {REFERENCE}")
        ratio = e.get(f"step_time / {REFERENCE}")
        rows.append(
            [
                e["label"],
                fmt_ci(e["avg@k"]),
                fmt_ci(diff, signed=True) if diff else "",
                diff["verdict"] if diff else "(reference)",
                fmt_ci(ratio, scale=1.0) if ratio and ratio["n"] else "-",
            ]
        )
    headers = ["method", f"avg@{k} (%)", "Δ to DAPO, paired", "verdict", "step time / DAPO"]
    return (
        f"{scale.seeds} seeds x {scale.steps} steps per method from the same base model (avg@{k} "
        f"{100 * base['avg@k']:.1f}%), {k} samples on each of {scale.sample_problems} held-out problems; mean ± 95% "
        "t-interval over seeds.\n\n" + markdown_table(headers, rows) + "\n"
    )


def _decorate(ax) -> None:
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)


def _save(fig, path: Path, files: list[str]) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    files.append(str(path))


def plot(summary: dict[str, Any], out: Path) -> list[str]:
    """Figure 5 (entropy and clip ratio by relative position, early vs late) and a per-seed accuracy plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    variants = summary["variants"]
    fig, axes = plt.subplots(2, 2, figsize=(12, 7), squeeze=False)
    centers = [10 * b + 5 for b in range(10)]
    for row, metric in enumerate(("entropy", "clip_ratio")):
        for phase, title in enumerate(("early (first half of training)", "late (second half)")):
            ax = axes[row][phase]
            for e in variants.values():
                profile = e["position_bins"][metric]
                if profile is not None:
                    ax.plot(centers, profile[phase], marker="o", markersize=3, label=e["label"])
            ax.set_title(f"{metric.replace('_', ' ')}: {title}", fontsize=10)
            ax.set_xlabel("relative position in the completion (%)")
            _decorate(ax)
    _save(fig, out / "position_bins.png", files)

    fig, axes = plt.subplots(1, 2, figsize=(13, 4), squeeze=False)
    for ax, metric, name in zip(axes[0], ("avg@k", "greedy_accuracy"), (f"avg@{summary['scale']['k']}", "greedy")):
        for i, e in enumerate(variants.values()):
            per_seed = list(e[metric]["per_seed"].values())
            ax.scatter([i] * len(per_seed), [100 * v for v in per_seed], color="tab:blue", alpha=0.5, s=14)
            if e[metric]["n"]:
                mean, ci = 100 * e[metric]["mean"], 100 * e[metric]["ci95"]
                ax.errorbar([i + 0.15], [mean], yerr=[0 if math.isnan(ci) else ci], fmt="o", color="black", capsize=4)
        base = summary.get("base_model", {}).get(metric)
        if base is not None:
            ax.axhline(100 * base, color="gray", linestyle="--", linewidth=1, label="base model")
        ax.set_xticks(range(len(variants)), [e["label"] for e in variants.values()], rotation=20, fontsize=8)
        ax.set_ylabel(f"held-out {name} (%)")
        ax.set_title("Each seed (dots) and mean ± 95% t-interval", fontsize=10)
        _decorate(ax)
    _save(fig, out / "accuracy.png", files)

    fig, ax = plt.subplots(figsize=(8, 4))
    for e in variants.values():
        curve = e.get("train_reward")
        if curve:
            ax.plot([c[0] for c in curve], [c[2] for c in curve], label=e["label"], linewidth=1.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training reward (mean over seeds,\n10-step average)")
    ax.set_title(
        "Rewards of the batches each method trained on: LUFFY's include its worked solutions, dynamic sampling's\n"
        "only the groups it kept, so compare the methods on the held-out numbers",
        fontsize=8,
    )
    _decorate(ax)
    _save(fig, out / "train_reward.png", files)
    return files


def json_safe(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return value


def fill_docs(page: Path, section: str, body: str) -> None:
    """Replace a section of a docs page (between its markers, `DOC_MARKERS[section]`) with `body`."""
    start, end = DOC_MARKERS[section]
    text = page.read_text()
    if start not in text or end not in text:
        raise SystemExit(f"{page} has no section for '{section}': add the lines {start!r} and {end!r} to it.")
    head, rest = text.split(start, 1)
    page.write_text(f"{head}{start}\n{body}{end}{rest.split(end, 1)[1]}")


def results_text(summary: dict[str, Any], sweep: str, quick: bool) -> str:
    """The text of results.md and of the docs section: how the runs were made, the base model, the sweep's tables."""
    scale, base_model = Scale(**summary["scale"]), summary["base_model"]
    training = [i for i in summary["invocations"] if i["runs_trained"]]
    return (
        (
            "Quick mode (a smoke test of the command): too few steps and seeds for these numbers to mean anything.\n\n"
            if quick
            else ""
        )
        + f"Command: `{summary['command']}` on {summary['machine']}, {summary['jobs']} run(s) at a time, 1 torch thread each; "
        f"{sum(i['runs_trained'] for i in training)} runs trained and evaluated in "
        f"{sum(i['wall_seconds'] for i in training) / 60:.1f} min wall clock ({len(training)} invocation(s) that "
        f"trained, evaluation included, and the base model's warm-up if it was not cached yet; {summary['run_seconds_total'] / 60:.1f} min summed over "
        f"runs, {summary['cpu_seconds_total'] / 60:.1f} CPU-minutes). Base model: greedy {100 * base_model['greedy_accuracy']:.1f}%, avg@{scale.k} "
        f"{100 * base_model['avg@k']:.1f}%, pass@{scale.k} {100 * base_model['pass@k'][str(scale.k)]:.1f}%.\n\n"
        + (claims_section(summary) if "claims" in summary else "")
        + markdown(summary, sweep)
    )


def claims_section(summary: dict[str, Any]) -> str:
    """The claims sweep's tables (`claims.claims_text`), before the per-variant table they are computed from."""
    labels = {name: e["label"] for name, e in summary["variants"].items()}
    k = summary["scale"]["k"]
    return claims_text(summary["claims"], labels, k, summary["command"]) + "\nThe runs behind it, per variant:\n\n"


def write_results(summary: dict[str, Any], out: Path, sweep: str, quick: bool) -> tuple[str, list[str]]:
    """The plots, results.json and results.md in `out`; returns the text of results.md's body and the plot files."""
    files = plot(summary, out)
    (out / "results.json").write_text(json.dumps(json_safe(summary), indent=1))
    body = results_text(summary, sweep, quick)
    (out / "results.md").write_text(f"# {sweep}\n\n{body}\n" + "".join(f"![]({Path(f).name})\n" for f in files))
    return body, files


def fill_page(page: Path, section: str, body: str, files: list[str]) -> None:
    """Fill a docs page's section with `body` and the plots, copied next to the page (docs/*.png is the tracked
    pattern) as `<page>-<section>-<plot>.png`."""
    links = []
    for f in files:
        target = page.parent / f"{page.stem}-{section}-{Path(f).name}"
        shutil.copyfile(f, target)
        links.append(f"![{section} {Path(f).stem}]({target.name})\n")
    fill_docs(page, section, body + "\n" + "".join(links))
