"""Plots of a training run's log history (`trainer.state.log_history`) and of pass@k comparisons.

- `plot_reward_curve`: the reward per step (written by the training recipe).
- `plot_training_curves`: reward, entropy, clip ratio, response length (and SOUP's prefix share and cut position).
- `plot_segment_curves`: clip ratio and entropy of off-policy prefix tokens vs on-policy continuation tokens.
- `plot_position_bins`: entropy and clip ratio by relative token position (10% bins), one line per training phase
  (the paper's Figure 5).
- `plot_cut_tokens`: how often each token sits at SOUP's cuts (the paper's Figure 3), from the run's
  `soup_cut_tokens.jsonl`.
- `plot_pass_at_k_difference` / `plot_pass_at_k_curves`: relay sampling vs single-model sampling (Figures 4 and 6).
- `plot_run`: all training plots of a run directory (found by `runs.load_log_history`).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..core.errors import UserError  # noqa: E402
from ..soup.metrics import CUT_TOKENS_FILE  # noqa: E402
from .runs import load_log_history  # noqa: E402

NUM_POSITION_BINS = 10


def series(log_history: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one logged metric, skipping entries without it."""
    points = [(h["step"], h[key]) for h in log_history if h.get(key) is not None and "step" in h]
    return [s for s, _ in points], [v for _, v in points]


def moving_average(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_reward_curve(log_history: list[dict], path: str, key: str = "reward") -> str:
    """Training reward per optimizer step with a moving average; returns `path`."""
    steps, values = series(log_history, key)
    fig, ax = plt.subplots(figsize=(7, 4))
    if steps:
        ax.plot(steps, values, color="tab:blue", alpha=0.3, label=f"{key} (each log)")
        window = max(1, len(values) // 8)
        ax.plot(steps, moving_average(values, window), color="tab:blue", label=f"moving average of {window} logs")
    else:
        ax.text(0.5, 0.5, f"no '{key}' logged", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(key)
    ax.set_title("Training reward")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------------------------------
# Training curves
# ----------------------------------------------------------------------------------------------------------------------

#: (title, [(log key, label)]) of the panels of `plot_training_curves`; the last two only when SOUP logged them.
TRAINING_PANELS = [
    ("Reward", [("reward", "reward")]),
    ("Entropy", [("entropy", "entropy")]),
    (
        "Clip ratio",
        [
            ("clip_ratio/region_mean", "region (any side)"),
            ("clip_ratio/low_mean", "low"),
            ("clip_ratio/high_mean", "high"),
        ],
    ),
    ("Response length (tokens)", [("completions/mean_length", "mean"), ("completions/max_length", "max")]),
]
SOUP_PANELS = [
    ("Off-policy prefix share of loss tokens", [("soup/prefix_token_frac", "prefix token fraction")]),
    ("Cut position (prefix / behavior length)", [("soup/cut_position_mean", "mean cut position")]),
]


def _draw_series(ax, log_history: list[dict], key: str, label: str, color) -> bool:
    steps, values = series(log_history, key)
    if not steps:
        return False
    if len(values) >= 10:
        window = max(2, len(values) // 20)
        ax.plot(steps, values, color=color, alpha=0.25, linewidth=1)
        ax.plot(steps, moving_average(values, window), color=color, label=f"{label} (avg {window})")
    else:
        ax.plot(steps, values, color=color, marker="o", markersize=3, label=label)
    return True


def _save(fig, axes, used: int, path: str) -> str:
    """Hide the grid's unused axes, write the figure to `path` and close it."""
    for ax in list(axes.flat)[used:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _draw_panels(panels, log_history: list[dict], path: str, columns: int = 2) -> str:
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6 * columns, 3.6 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (title, keys) in zip(axes.flat, panels):
        drawn = [
            _draw_series(ax, log_history, key, label, colors[i % len(colors)]) for i, (key, label) in enumerate(keys)
        ]
        if any(drawn):
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="gray")
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    return _save(fig, axes, len(panels), path)


def _logged(log_history: list[dict], key: str) -> bool:
    return any(h.get(key) is not None for h in log_history)


#: Panels of the other methods' own metrics, drawn when the run logged any of their keys.
METHOD_PANELS = [
    (
        "Dynamic sampling: share of groups",
        [("dynamic_sampling/kept_group_frac", "kept before refilling"), ("dynamic_sampling/unfilled_group_frac", "unfilled")],
    ),
    ("Dynamic sampling: refill rounds per step", [("dynamic_sampling/rounds", "rounds")]),
    ("M2PO: share of tokens masked by the trust region", [("m2po/masked_token_frac", "masked token share")]),
    (
        "LUFFY: off-policy trace tokens",
        [("luffy/off_policy_token_frac", "share of loss tokens"), ("luffy/shaping_weight_mean", "shaping weight mean")],
    ),
]


def training_panels(log_history: list[dict]) -> list:
    """GRPO's panels, plus SOUP's and each other method's own panels when the run logged any of their keys."""
    extra = SOUP_PANELS + METHOD_PANELS
    return TRAINING_PANELS + [p for p in extra if any(_logged(log_history, key) for key, _ in p[1])]


def plot_training_curves(log_history: list[dict], path: str) -> str:
    """Reward, entropy, clip ratio and response length per step, plus each method's own metrics when logged."""
    return _draw_panels(training_panels(log_history), log_history, path)


def plot_segment_curves(log_history: list[dict], path: str) -> str | None:
    """Clip ratio and entropy of prefix vs continuation tokens per step; None when SOUP logged neither."""
    keys = ("clip_ratio", "entropy")
    if not any(_logged(log_history, f"soup/{seg}/{k}") for seg in ("prefix", "continuation") for k in keys):
        return None
    panels = [
        (
            title,
            [(f"soup/prefix/{key}", "off-policy prefix"), (f"soup/continuation/{key}", "on-policy continuation")],
        )
        for title, key in (
            ("Clip ratio: prefix vs continuation", "clip_ratio"),
            ("Entropy: prefix vs continuation", "entropy"),
        )
    ]
    return _draw_panels(panels, log_history, path)


# ----------------------------------------------------------------------------------------------------------------------
# Figure 5: entropy and clip ratio by relative position
# ----------------------------------------------------------------------------------------------------------------------


def _bin_key(b: int, metric: str) -> str:
    return f"soup/position_bin_{b}/{metric}"


def position_bin_profiles(
    log_history: list[dict], metric: str, num_phases: int = 3, num_bins: int = NUM_POSITION_BINS
) -> list[tuple[str, list[float]]]:
    """Mean of `soup/position_bin_{b}/{metric}` per bin, over each phase of training.

    The log entries carrying the metric are sorted by step and split into `num_phases` consecutive groups of (nearly)
    equal size. Returns one (label, values per bin) pair per phase; a bin never logged in a phase is NaN.
    """
    entries = sorted(
        (
            h
            for h in log_history
            if "step" in h and any(h.get(_bin_key(b, metric)) is not None for b in range(num_bins))
        ),
        key=lambda h: h["step"],
    )
    if not entries:
        return []
    num_phases = max(1, min(num_phases, len(entries)))
    profiles = []
    for phase in range(num_phases):
        group = entries[phase * len(entries) // num_phases : (phase + 1) * len(entries) // num_phases]
        values = []
        for b in range(num_bins):
            logged = [h[_bin_key(b, metric)] for h in group if h.get(_bin_key(b, metric)) is not None]
            values.append(sum(logged) / len(logged) if logged else float("nan"))
        profiles.append((f"steps {group[0]['step']}-{group[-1]['step']}", values))
    return profiles


def plot_position_bins(log_history: list[dict], path: str, num_phases: int = 3) -> str | None:
    """Entropy and clip ratio by relative position (10% bins), one line per training phase; None if not logged."""
    panels = [("entropy", "Entropy"), ("clip_ratio", "Clip ratio")]
    profiles = {metric: position_bin_profiles(log_history, metric, num_phases) for metric, _ in panels}
    if not any(profiles.values()):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    centers = [10 * b + 5 for b in range(NUM_POSITION_BINS)]
    for ax, (metric, title) in zip(axes, panels):
        lines = profiles[metric]
        cmap = plt.get_cmap("viridis")
        for i, (label, values) in enumerate(lines):
            ax.plot(centers, values, marker="o", color=cmap(i / max(1, len(lines) - 1)), label=label)
        if not lines:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="gray")
        else:
            ax.legend(fontsize=8, title="training phase", title_fontsize=8)
        ax.set_xticks(centers, [f"{10 * b}-{10 * b + 10}%" for b in range(NUM_POSITION_BINS)], rotation=45, fontsize=8)
        ax.set_xlabel("relative position in the completion")
        ax.set_title(f"{title} by relative token position")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------------------------------
# Tokens at the cuts (Figure 3)
# ----------------------------------------------------------------------------------------------------------------------


def read_cut_tokens(path: str | Path) -> dict[str, Counter]:
    """Token counts per truncation strategy from a `soup_cut_tokens.jsonl`; of a step written twice (a resumed run
    repeats the cycles after its checkpoint) the last line counts. A malformed line names its number."""
    by_step: dict[int, dict] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            by_step[int(record["step"])] = record
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise UserError(f"{path}, line {number}: not a cut-token record ({type(e).__name__}: {e}).") from None
    counts: dict[str, Counter] = {}
    for record in by_step.values():
        counts.setdefault(str(record.get("truncation", "?")), Counter()).update(record.get("tokens", []))
    return counts


def _token_label(token: str) -> str:
    """A token as the chart shows it: spaces and line breaks visible."""
    return token.replace(" ", "\u2423").replace("\n", "\\n").replace("\t", "\\t") or "(empty)"


def plot_cut_tokens(path: str | Path, out: str, top: int = 25) -> str | None:
    """Bar chart of the `top` most frequent tokens at the cuts, one panel per truncation strategy (None: no cuts)."""
    counts = {name: c for name, c in read_cut_tokens(path).items() if c}
    if not counts:
        return None
    fig, axes = plt.subplots(1, len(counts), figsize=(6 * len(counts), 0.28 * top + 1.5), squeeze=False)
    for ax, (name, counter) in zip(axes.flat, sorted(counts.items())):
        common = counter.most_common(top)[::-1]  # the most frequent on top
        total = sum(counter.values())
        ax.barh([_token_label(t) for t, _ in common], [100 * n / total for _, n in common], color="tab:blue")
        ax.set_title(f"tokens at the cut: {name} ({total} cuts, {len(counter)} distinct)", fontsize=10)
        ax.set_xlabel("% of cuts")
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    return _save(fig, axes, len(counts), out)


def _cut_tokens_file(run: Path, state_path: Path) -> Path | None:
    """The run's cut-token file: in the run directory, or beside/above the trainer_state.json (a checkpoint's)."""
    for folder in (run if run.is_dir() else state_path.parent, state_path.parent, state_path.parent.parent):
        if (folder / CUT_TOKENS_FILE).is_file():
            return folder / CUT_TOKENS_FILE
    return None


# ----------------------------------------------------------------------------------------------------------------------
# A run's training plots
# ----------------------------------------------------------------------------------------------------------------------


def plot_run(run: str | Path, output_dir: str | Path | None = None, num_phases: int = 3) -> tuple[Path, list[str]]:
    """Write every training plot of a run to `output_dir` (default RUN/plots). Returns (trainer_state path, files)."""
    state_path, history = load_log_history(run)
    if not any("step" in h and set(h) - {"step", "epoch"} for h in history):
        raise UserError(f"{state_path}: the log history is empty (no step was logged; lower logging_steps?).")
    out = (
        Path(output_dir)
        if output_dir is not None
        else (Path(run) if Path(run).is_dir() else state_path.parent) / "plots"
    )
    out.mkdir(parents=True, exist_ok=True)
    files = [
        plot_training_curves(history, str(out / "training_curves.png")),
        plot_reward_curve(history, str(out / "reward.png")),
        plot_segment_curves(history, str(out / "prefix_vs_continuation.png")),
        plot_position_bins(history, str(out / "position_bins.png"), num_phases),
    ]
    cuts = _cut_tokens_file(Path(run), state_path)
    if cuts is not None:
        files.append(plot_cut_tokens(cuts, str(out / "cut_tokens.png")))
    return state_path, [f for f in files if f is not None]


# ----------------------------------------------------------------------------------------------------------------------
# pass@k comparisons (relay sampling)
# ----------------------------------------------------------------------------------------------------------------------


def plot_pass_at_k_difference(differences: dict[str, dict[str, float]], path: str, title: str | None = None) -> str:
    """pass@k(relay) - pass@k(single model) against k (log2 axis), one line per benchmark (the paper's Figure 4)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, curve in differences.items():
        ks = sorted(int(k) for k in curve)
        ax.plot(ks, [100 * curve[str(k)] for k in ks], marker="o", label=name)
    ax.axhline(0.0, color="black", linewidth=1)
    ax.set_xscale("log", base=2)
    all_ks = sorted({int(k) for curve in differences.values() for k in curve})
    if all_ks:
        ax.set_xticks(all_ks, [str(k) for k in all_ks])
    ax.set_xlabel("k")
    ax.set_ylabel("pass@k difference (points)")
    ax.set_title(title or "Relay sampling minus single-model sampling")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_pass_at_k_curves(curves: dict[str, dict[str, dict[str, float]]], path: str) -> str:
    """pass@k against k (log2 axis) of several samplers, one panel per benchmark (the paper's Figure 6).

    `curves[benchmark][sampler][k]` is a pass@k value in [0, 1].
    """
    columns = min(3, max(1, len(curves)))
    rows = math.ceil(len(curves) / columns) or 1
    fig, axes = plt.subplots(rows, columns, figsize=(5 * columns, 3.8 * rows), squeeze=False)
    for ax, (name, samplers) in zip(axes.flat, curves.items()):
        for label, curve in samplers.items():
            ks = sorted(int(k) for k in curve)
            ax.plot(ks, [100 * curve[str(k)] for k in ks], marker="o", label=label)
        ax.set_xscale("log", base=2)
        all_ks = sorted({int(k) for curve in samplers.values() for k in curve})
        ax.set_xticks(all_ks, [str(k) for k in all_ks])
        ax.set_title(name)
        ax.set_xlabel("k")
        ax.set_ylabel("pass@k (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, axes, len(curves), path)
