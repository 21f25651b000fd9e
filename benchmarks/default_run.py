"""The offline default run over seeds: SOUP (recipe `tiny_arithmetic`) against its on-policy DAPO twin.

    python benchmarks/default_run.py                              # 2 recipes x 3 seeds -> outputs/default-run/
    python benchmarks/default_run.py --docs docs/default-run.md   # also fill the page's `default-run` section
    python benchmarks/default_run.py --seeds 42 --steps 30 --out /tmp/dr   # a smaller run

Every run trains a shipped recipe as it is (`tiny_arithmetic`: SOUP, T=4, ratio 0.25; `tiny_arithmetic_dapo`: the
same with T=1), with only `--seed` and `--output_dir` changed, in its own process with 1 torch thread (`--jobs` of
them at a time, default 2), through the training script's own `parse_args` / `main`. Then it evaluates the final
model on held-out problems: greedy decoding of 500 (`soup_trl.toy.tiny_model.evaluate_greedy`: accuracy and the share
of direct answers, those without a scratchpad) and 4 samples at temperature 1 of 256 (the evaluation package's
Transformers backend: the share of direct answers and how often each kind is right). The base model is built (or
taken from the cache) once, before any run, and evaluated the same way.

Each run writes `runs/<recipe>-seed<s>/result.json`; a run whose result exists with the same settings is skipped, so
an interrupted invocation resumes. The summary is mean ± half-width of the 95% t-interval over seeds and the paired
difference SOUP - DAPO (same seed), with the statistics of the method comparison (`benchmarks/comparison/`). With
`--docs` it fills the page's section between `<!-- default-run: start -->` and `<!-- default-run: end -->` and copies
the reward curve of the default run (SOUP, seed 42) next to the page as `default_run_reward.png`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from comparison import runs as comparison_runs  # noqa: E402
from comparison.host import machine  # noqa: E402
from comparison.statistics import fmt_ci, mean_ci, paired_difference, verdict  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RECIPES = {"soup": "tiny_arithmetic", "dapo": "tiny_arithmetic_dapo"}  # the default recipe and its on-policy twin
LABELS = {"soup": "SOUP (`tiny_arithmetic`, the default)", "dapo": "DAPO twin (`tiny_arithmetic_dapo`)"}
SEEDS = (42, 1, 2)  # 42 is the recipes' own seed: its SOUP run is the default command's
WINDOWS = 6  # reward means over sixths of the run (40 steps each for the recipes' 240)
GREEDY_PROBLEMS, SAMPLED_PROBLEMS, SAMPLES = 500, 256, 4
SECTION = "default-run"


# ----------------------------------------------------------------------------------------------------------------------
# One run (in its own process): train, evaluate
# ----------------------------------------------------------------------------------------------------------------------


def train_argv(spec: dict[str, Any], run_dir: Path) -> list[str]:
    argv = ["--config", spec["recipe"], "--seed", str(spec["seed"]), "--output_dir", str(run_dir)]
    argv += ["--num_threads", "1", "--disable_tqdm", "true"]
    return argv + (["--max_steps", str(spec["steps"])] if spec["steps"] else [])


def sampled_answers(model: str, seed: int = 0) -> dict[str, float]:
    """`SAMPLES` answers at temperature 1 to each of `SAMPLED_PROBLEMS` held-out problems: how many skip the
    scratchpad, and how often each kind of answer is right."""
    from soup_trl.evaluation.arguments import SamplingArguments
    from soup_trl.evaluation.backends import HFBackend
    from soup_trl.evaluation.benchmarks import ARITHMETIC_MAX_NEW_TOKENS, Benchmark, Problem
    from soup_trl.evaluation.runner import grade_problems, sample_problems
    from soup_trl.toy import make_arithmetic_dataset

    data = make_arithmetic_dataset(SAMPLED_PROBLEMS, seed=0, split="test")
    problems = [Problem(str(i), p, p, s) for i, (p, s) in enumerate(zip(data["prompt"], data["solution"]))]
    benchmark = Benchmark(
        "sampled", "builtin:arithmetic (test split)", "arithmetic", ARITHMETIC_MAX_NEW_TOKENS, problems
    )
    sampling = SamplingArguments(num_samples=SAMPLES, temperature=1.0, top_p=1.0, top_k=0, seed=seed)
    engine = HFBackend(model, batch_size=256)
    _, results = sample_problems(engine, benchmark, SAMPLES, ARITHMETIC_MAX_NEW_TOKENS, sampling, "sampled answers")
    engine.close()
    grade_problems(results, "arithmetic")
    samples = [s for r in results for s in r.samples]
    direct = [s.grade.reward for s in samples if s.text.startswith("|")]
    scratchpad = [s.grade.reward for s in samples if not s.text.startswith("|")]
    return {
        "sampled_accuracy": sum(direct + scratchpad) / len(samples),
        "sampled_direct_share": len(direct) / len(samples),
        "sampled_direct_accuracy": sum(direct) / len(direct) if direct else float("nan"),
        "sampled_scratchpad_accuracy": sum(scratchpad) / len(scratchpad) if scratchpad else float("nan"),
    }


def evaluate(model: str, seed: int = 0) -> dict[str, float]:
    from soup_trl.toy.tiny_model import evaluate_greedy

    greedy = evaluate_greedy(model)  # the 500 held-out problems
    return {
        "greedy_accuracy": greedy["accuracy"],
        "greedy_direct_share": greedy["direct_answer_share"],
        **sampled_answers(model, seed),
    }


def reward_windows(history: list[dict[str, Any]], steps: int) -> list[float]:
    """Mean logged training reward over each of `WINDOWS` equal stretches of the run's steps."""
    size = max(1, steps // WINDOWS)
    sums, counts = [0.0] * WINDOWS, [0] * WINDOWS
    for entry in history:
        if "reward" in entry and "step" in entry:
            index = min(WINDOWS - 1, (entry["step"] - 1) // size)
            sums[index] += entry["reward"]
            counts[index] += 1
    return [s / c if c else float("nan") for s, c in zip(sums, counts)]


def run_one(spec_path: Path) -> None:
    """Worker: train the run described by `spec.json`, evaluate it, write `result.json` next to it."""
    from soup_trl.evaluation.runs import load_log_history
    from soup_trl.scripts import train

    run_dir = spec_path.parent
    spec = json.loads(spec_path.read_text())
    start, cpu_start = time.monotonic(), time.process_time()
    script_args, training_args, model_args = train.parse_args(train_argv(spec, run_dir))
    train.main(script_args, training_args, model_args)
    seconds, cpu_seconds = time.monotonic() - start, time.process_time() - cpu_start
    _, history = load_log_history(run_dir)
    summary = next(h for h in reversed(history) if "train_runtime" in h)
    steps = training_args.max_steps
    result = {
        "spec": spec,
        "steps": steps,
        "reward_windows": reward_windows(history, steps),
        "train_runtime": summary["train_runtime"],
        "seconds_per_step": summary["train_runtime"] / steps,
        "train_process_seconds": seconds,
        "train_cpu_seconds": cpu_seconds,
        **evaluate(str(run_dir)),
    }
    (run_dir / "result.json").write_text(json.dumps(result, indent=1))


# ----------------------------------------------------------------------------------------------------------------------
# Scheduling
# ----------------------------------------------------------------------------------------------------------------------


def finished(run_dir: Path, spec: dict[str, Any]) -> bool:
    try:
        return json.loads((run_dir / "result.json").read_text()).get("spec") == spec
    except (OSError, json.JSONDecodeError):
        return False


def launch(run_dir: Path, spec: dict[str, Any]) -> int:
    """One training + evaluation in a fresh process with one torch thread (the comparison's launcher,
    `comparison.runs.launch`, with this script's `--run-one`); its output goes to run.log."""
    began = time.monotonic()
    code = comparison_runs.launch(run_dir, spec, lambda line: print(line, flush=True), script=Path(__file__))
    if code == 0:
        print(f"{run_dir.name}: done after {time.monotonic() - began:.0f} s", flush=True)
    return code


def spec_of(method: str, seed: int, steps: int | None) -> dict[str, Any]:
    return {"method": method, "recipe": RECIPES[method], "seed": seed, "steps": steps}


def run_all(seeds: list[int], steps: int | None, out: Path, jobs: int) -> int:
    todo = []
    for seed in seeds:
        for method in RECIPES:
            spec, run_dir = spec_of(method, seed, steps), out / "runs" / f"{RECIPES[method]}-seed{seed}"
            if not finished(run_dir, spec):
                todo.append((run_dir, spec))
    total = len(seeds) * len(RECIPES)
    print(f"{total - len(todo)} of {total} runs already finished in {out}; {len(todo)} to run, {jobs} at a time")
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        codes = list(pool.map(lambda job: launch(*job), todo))
    failures = sum(code != 0 for code in codes)
    if failures:
        raise SystemExit(f"{failures} run(s) failed; rerun the same command to retry them (finished runs are kept).")
    return len(todo)


# ----------------------------------------------------------------------------------------------------------------------
# Summary (pure functions of the results)
# ----------------------------------------------------------------------------------------------------------------------

METRICS = [  # (key of a run's metrics, label, percent)
    *[(f"reward_{i}", None, True) for i in range(WINDOWS)],
    ("reward_gain", "reward gain, last sixth - first", True),
    ("greedy_accuracy", f"held-out greedy accuracy ({GREEDY_PROBLEMS} problems)", True),
    ("greedy_direct_share", "direct answers, greedy", True),
    ("sampled_accuracy", f"sampled accuracy ({SAMPLES} x {SAMPLED_PROBLEMS} at temperature 1)", True),
    ("sampled_direct_share", "direct answers, sampled", True),
    ("sampled_scratchpad_accuracy", "sampled scratchpad answers right", True),
    ("seconds_per_step", "s/step, wall clock of training (load-dependent)", False),
    ("cpu_seconds_per_step", "CPU s/step of the training process (1 thread)", False),
]


def run_metrics(result: dict[str, Any]) -> dict[str, float]:
    windows = result["reward_windows"]
    metrics = {f"reward_{i}": w for i, w in enumerate(windows)}
    metrics["reward_gain"] = windows[-1] - windows[0]
    metrics.update({key: result[key] for key, _, _ in METRICS if key in result})
    metrics["cpu_seconds_per_step"] = result["train_cpu_seconds"] / result["steps"]
    return metrics


def window_labels(steps: int) -> list[str]:
    size = max(1, steps // WINDOWS)
    ends = [size * (i + 1) for i in range(WINDOWS - 1)] + [steps]
    return [f"{size * i + 1}-{end}" for i, end in enumerate(ends)]


def _seconds(stats: dict[str, Any], signed: bool = False) -> str:
    if not stats["n"]:
        return "-"
    mean = f"{stats['mean']:+.2f}" if signed else f"{stats['mean']:.2f}"
    return mean if math.isnan(stats["ci95"]) else f"{mean} ± {stats['ci95']:.2f}"


def _percent(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.1f}"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def summary_markdown(results: dict[str, dict[int, dict[str, Any]]], base: dict[str, float], about: str) -> str:
    """The page's section: `results[method][seed]` are the runs' result.json, `base` the base model's evaluation."""
    seeds = [s for s in results["soup"] if s in results["dapo"]]  # in the order they were asked for
    steps = next(iter(results["soup"].values()))["steps"]
    labels = window_labels(steps)
    metrics = {m: {s: run_metrics(r) for s, r in runs.items()} for m, runs in results.items()}
    rows = []
    for key, label, percent in METRICS:
        name = label or f"training reward, steps {labels[int(key.split('_')[1])]}"
        known = [s for s in seeds if not (math.isnan(metrics["soup"][s][key]) or math.isnan(metrics["dapo"][s][key]))]
        soup = {s: metrics["soup"][s][key] for s in known}
        dapo = {s: metrics["dapo"][s][key] for s in known}
        diff = paired_difference(soup, dapo)
        show = fmt_ci if percent else (lambda stats, signed=False: _seconds(stats, signed))
        rows.append([name, show(mean_ci(list(soup.values()))), show(mean_ci(list(dapo.values()))),
                     show(diff, signed=True), verdict(diff) if percent else ""])  # fmt: skip
    per_run = []
    for method in ("soup", "dapo"):
        for seed in seeds:
            m = metrics[method][seed]
            per_run.append([f"{'SOUP' if method == 'soup' else 'DAPO twin'}, seed {seed}",
                            *[_percent(m[f"reward_{i}"]) for i in range(WINDOWS)],
                            f"{100 * m['greedy_accuracy']:.1f}", f"{100 * m['greedy_direct_share']:.0f}",
                            f"{m['seconds_per_step']:.2f}", f"{m['cpu_seconds_per_step']:.2f}"])  # fmt: skip
    return (
        f"{about}\n\n"
        f"Base model (before RL): held-out greedy accuracy {100 * base['greedy_accuracy']:.1f}% with "
        f"{100 * base['greedy_direct_share']:.0f}% direct answers; sampled ({SAMPLES} x {SAMPLED_PROBLEMS} at "
        f"temperature 1) accuracy {100 * base['sampled_accuracy']:.1f}%, {100 * base['sampled_direct_share']:.0f}% "
        f"direct answers ({100 * base['sampled_direct_accuracy']:.0f}% of them right), scratchpad answers "
        f"{100 * base['sampled_scratchpad_accuracy']:.0f}% right.\n\n"
        f"{len(seeds)} seeds ({', '.join(map(str, seeds))}) x {steps} steps per recipe; in %, mean ± half-width of the "
        "95% t-interval over seeds; SOUP - DAPO: the paired difference (same seed) with its interval, and "
        '"no difference measured" when that interval contains 0.\n\n'
        + _table(["", LABELS["soup"], LABELS["dapo"], "SOUP - DAPO, paired", "verdict"], rows)
        + "\nEach run (training reward in %, mean over the logged steps of each stretch; held-out greedy accuracy and "
        "direct answers in %):\n\n"
        + _table(["run", *labels, "held-out greedy", "direct answers", "s/step", "CPU s/step"], per_run)
    )


def load_results(seeds: list[int], steps: int | None, out: Path) -> dict[str, dict[int, dict[str, Any]]]:
    results: dict[str, dict[int, dict[str, Any]]] = {m: {} for m in RECIPES}
    for method in RECIPES:
        for seed in seeds:
            run_dir = out / "runs" / f"{RECIPES[method]}-seed{seed}"
            if finished(run_dir, spec_of(method, seed, steps)):
                results[method][seed] = json.loads((run_dir / "result.json").read_text())
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="comma-separated seeds (default 42,1,2)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per run (default: the recipes' 240)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time, 1 torch thread each (default 2)")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "default-run", help="output directory")
    parser.add_argument("--docs", type=Path, default=None, help="docs page whose 'default-run' section to fill")
    parser.add_argument("--run-one", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_one is not None:
        return run_one(args.run_one)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.out.mkdir(parents=True, exist_ok=True)

    from soup_trl.core.cache import cache_root
    from soup_trl.core.runtime import configure_threads
    from soup_trl.toy.tiny_model import TinyModelSettings, ensure_tiny_base_model

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # warm-up lines
    configure_threads(1)
    start = time.monotonic()
    settings = TinyModelSettings()
    cached = (cache_root() / f"{settings.CACHE_PREFIX}-{settings.cache_key()}").is_dir()
    base_model = ensure_tiny_base_model()  # built here once (if not cached), not by two runs at a time
    warmup = time.monotonic() - start
    base_file = args.out / "base_model.json"
    if not base_file.is_file() or json.loads(base_file.read_text()).get("model") != base_model:
        record = {"model": base_model, "cached": cached, "warmup_seconds": warmup, **evaluate(base_model)}
        base_file.write_text(json.dumps(record, indent=1))
    trained = run_all(seeds, args.steps, args.out, args.jobs)
    invocations_file = args.out / "invocations.json"  # how long the runs took, kept across resumed invocations
    invocations = json.loads(invocations_file.read_text()) if invocations_file.is_file() else []
    command = " ".join(["python benchmarks/default_run.py", *(sys.argv[1:] if argv is None else argv)])
    invocations.append({"command": command, "runs_trained": trained, "wall_seconds": time.monotonic() - start,
                        "base_model_seconds": warmup, "ended": time.strftime("%Y-%m-%d %H:%M")})  # fmt: skip
    invocations_file.write_text(json.dumps(invocations, indent=1))

    results = load_results(seeds, args.steps, args.out)
    base = json.loads(base_file.read_text())
    training = [i for i in invocations if i["runs_trained"]]
    runs = [r for by_seed in results.values() for r in by_seed.values()]
    last = training[-1] if training else invocations[-1]
    about = (
        f"Command: `{last['command']}` on {machine()}, {args.jobs} run(s) at a time, 1 torch thread each; "
        f"{sum(i['runs_trained'] for i in training)} runs trained and evaluated in "
        f"{sum(i['wall_seconds'] for i in training) / 60:.1f} min wall clock ({len(training)} invocation(s) that "
        f"trained; {sum(r['train_process_seconds'] for r in runs) / 60:.1f} min of training processes summed over runs, "
        f"{sum(r['train_cpu_seconds'] for r in runs) / 60:.1f} CPU-minutes), ended {last['ended']}. "
        + (
            "The base model was in the cache."
            if base["cached"]
            else f"The base model was built by this command: ready {base['warmup_seconds']:.0f} s after it started."
        )
    )
    body = summary_markdown(results, base, about)
    (args.out / "results.md").write_text(body)
    (args.out / "results.json").write_text(json.dumps({"base_model": base, "runs": results}, indent=1))
    print(body)
    if args.docs is not None:
        from soup_trl.scripts.docs import replace_section

        args.docs.write_text(replace_section(args.docs.read_text(), SECTION, body))
        curve = args.out / "runs" / f"{RECIPES['soup']}-seed{SEEDS[0]}" / "reward.png"
        if SEEDS[0] in seeds and curve.is_file():
            shutil.copyfile(curve, args.docs.parent / "default_run_reward.png")
        print(f"Filled the '{SECTION}' section of {args.docs}")


if __name__ == "__main__":
    main()
