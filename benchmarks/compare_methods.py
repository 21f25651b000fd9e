"""SOUP against on-policy DAPO, DAPO with dynamic sampling, M2PO and LUFFY on the chained-addition task, over seeds;
and SOUP against DAPO on a real language model (`--task smollm2`).

    python benchmarks/compare_methods.py                        # every method x 5 seeds -> outputs/compare-methods/
    python benchmarks/compare_methods.py --task smollm2 --docs docs/real-model.md   # SmolLM2-135M-Instruct, word problems
    python benchmarks/compare_methods.py --sweep sensitivity    # SOUP's ratio and T, 5 seeds -> outputs/sensitivity/
    python benchmarks/compare_methods.py --sweep history --docs docs/history.md   # history-seeded prefixes, 4 epochs
    python benchmarks/compare_methods.py --sweep beyond --docs docs/beyond.md     # drift-aware cut, adaptive refresh
    python benchmarks/compare_methods.py --quick --out /tmp/q   # 2 seeds, few steps: a smoke test (CI)
    python benchmarks/compare_methods.py --docs docs/results-cpu.md --readme README.md   # also fill the pages' sections
    python benchmarks/compare_methods.py --only dapo,soup_entropy --seeds 2   # a subset

Every run trains one recipe (`soup_trl/recipes/tiny_chain*.yaml`; with `--task smollm2`, `smollm2_*.yaml`) for the
same number of optimizer steps from the same cached base model (`builtin:tiny-chain`; `builtin:smollm2-135m-instruct`,
graded by math-verify on held-out word problems), in its own process with 1 torch thread (`--jobs` of them at a time),
then evaluates its final model on held-out problems: avg@k / pass@k of k samples at the training temperature (avg@k
is the headline: the base model's greedy accuracy is already ~94%) and greedy accuracy. The DAPO and SOUP-ratio runs also keep their half-way checkpoint for relay sampling (the paper's
section 5.1): the half-way model writes the first half of each answer, the final model continues it.

Each run writes `runs/<variant>-seed<s>/result.json`; a run whose result exists with the same settings is skipped, so
an interrupted comparison resumes where it stopped. The summary (`results.json`, `results.md`, PNG plots) is rebuilt
from every finished run: per variant mean +- 95% t-interval over seeds, the paired difference to DAPO (same seed)
with its interval, wall-clock per step as a ratio to DAPO's run of the same seed, entropy and clip ratio by
relative token position early vs late in training (the paper's Figure 5; logged by the SOUP trainer, so DAPO, DAPO +
dynamic sampling and SOUP, not M2PO and LUFFY), relay minus single-model pass@k, and the training reward by step.
The wall clock of the invocations that trained runs is kept in `invocations.json` and reported with the results.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SWEEPS = ("methods", "sensitivity", "history", "beyond")
RELAY_VARIANTS = ("dapo", "soup_ratio")  # relay needs a half-way checkpoint: kept for these only
REFERENCE = "dapo"
# "headline": the short table of the methods sweep, for the README; "smollm2": the methods sweep of --task smollm2
DOC_SECTIONS = (*SWEEPS, "headline", "smollm2")
DOC_MARKERS = {name: (f"<!-- {name}: start -->", f"<!-- {name}: end -->") for name in DOC_SECTIONS}


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    recipe: str
    overrides: tuple[str, ...] = ()
    label: str = ""


METHOD_VARIANTS = [
    Variant("dapo", "tiny_chain_dapo", label="DAPO (on-policy)"),
    Variant("dapo_ds", "tiny_chain_dapo_ds", label="DAPO + dynamic sampling"),
    Variant("soup_ratio", "tiny_chain", label="SOUP ratio"),
    Variant("soup_entropy", "tiny_chain_soup_entropy", label="SOUP entropy"),
    Variant("soup_prefix_budget", "tiny_chain_soup_prefix_budget", label="SOUP prefix budget"),
    Variant("m2po", "tiny_chain_m2po", label="M2PO"),
    Variant("luffy", "tiny_chain_luffy", label="LUFFY"),
]
SMOLLM2_VARIANTS = [
    Variant("dapo", "smollm2_dapo", label="DAPO (on-policy)"),
    Variant("soup_ratio", "smollm2_soup_ratio", label="SOUP ratio"),
    Variant("soup_prefix_budget", "smollm2_soup_prefix_budget", label="SOUP prefix budget"),
]
SENSITIVITY_T, SENSITIVITY_RATIO = 4, 0.5  # the fixed T of the ratio sweep and the fixed ratio of the T sweep


def sensitivity_variants() -> list[Variant]:
    """DAPO (ratio 0, T = 1), SOUP ratio in {0.25, 0.5, 0.75} at T = 4, T in {2, 8} at ratio 0.5 (Tables 2-3)."""
    variants = [Variant("dapo", "tiny_chain_dapo", label="DAPO (T=1)")]
    settings = [(r, SENSITIVITY_T) for r in (0.25, 0.5, 0.75)] + [(SENSITIVITY_RATIO, t) for t in (2, 8)]
    for ratio, t in settings:
        overrides = ("--soup_prefix_ratio", str(ratio), "--soup_behavior_steps", str(t))
        variants.append(Variant(f"soup_r{ratio:g}_T{t}", "tiny_chain", overrides, f"SOUP ratio {ratio:g}, T={t}"))
    return variants


HISTORY_PROMPTS = 200  # 100 steps of 8 prompts: 4 epochs, so that every prompt comes back every 25 steps


def history_variants() -> list[Variant]:
    """Several epochs over 200 prompts: DAPO, SOUP with fresh behavior samples (T = 4), and SOUP with prefixes from
    each prompt's last trained rollouts (T = 1) at three staleness limits. A prompt comes back about 25 steps after
    it was trained on, and a prefix cut from a spliced rollout keeps its older tokens: with the default limit (64
    steps) a prompt is served from history in its 2nd and 3rd epoch and sampled afresh in its 4th; with 30, every
    other epoch; with no limit, from its 2nd epoch on."""
    data = ("--max_train_samples", str(HISTORY_PROMPTS))
    history = (*data, "--soup_behavior_source", "history", "--soup_behavior_steps", "1")
    return [
        Variant("dapo", "tiny_chain_dapo", data, "DAPO (on-policy)"),
        Variant("soup_ratio", "tiny_chain", data, "SOUP ratio, T=4, fresh behavior samples"),
        Variant("soup_history", "tiny_chain", history, "SOUP ratio, history, max age 64"),
        Variant("soup_history_age30", "tiny_chain", (*history, "--soup_history_max_age", "30"),
                "SOUP ratio, history, max age 30"),
        Variant("soup_history_no_limit", "tiny_chain", (*history, "--soup_history_max_age", "1000000"),
                "SOUP ratio, history, no age limit"),
        Variant("soup_history_pool2", "tiny_chain", (*history, "--soup_history_pool", "2"),
                "SOUP ratio, history, pool of 2 past rollouts per slot"),
    ]  # fmt: skip


# A little above the median (0.0014) of the prefix |log ratio| a T=8 run of this task logs (36 values, 0.0002 to
# 0.0068): soup-trl train --config tiny_chain --soup_behavior_steps 8 --soup_refresh_drift 1e9 --max_steps 48
# --logging_steps 1 (a threshold never reached: fixed T, with the signal logged)
REFRESH_DRIFT = 0.002


def beyond_variants() -> list[Variant]:
    """What the paper leaves open, against DAPO and fixed-T SOUP (ratio 0.5, T = 4): the drift-aware cut (the ratio cut
    shortened to the tokens the current policy accepts) and adaptive refresh (a behavior sample serves 2 to 8 steps,
    refreshed once the prefix |log ratio| exceeds REFRESH_DRIFT)."""
    return [
        Variant("dapo", "tiny_chain_dapo", label="DAPO (on-policy)"),
        Variant("soup_ratio", "tiny_chain", label="SOUP ratio, fixed T=4"),
        Variant("soup_drift", "tiny_chain", ("--soup_truncation", "drift", "--soup_drift_lenience", "0.5"),
                "SOUP drift-aware cut, T=4"),
        Variant("soup_refresh", "tiny_chain", ("--soup_behavior_steps", "8", "--soup_refresh_drift", str(REFRESH_DRIFT),
                                               "--soup_refresh_min_steps", "2"), "SOUP adaptive refresh, T=2..8"),
    ]  # fmt: skip


SWEEP_VARIANTS = {"sensitivity": sensitivity_variants, "history": history_variants, "beyond": beyond_variants}
SWEEP_OTHERS = {"history": ("soup_ratio",), "beyond": ("soup_ratio",)}  # further references of paired differences


@dataclasses.dataclass(frozen=True)
class Scale:
    """Sizes of one sweep: everything that changes the numbers except the variant and the seed."""

    seeds: int
    steps: int
    eval_problems: int  # greedy accuracy
    sample_problems: int  # avg@k, pass@k and relay
    k: int
    warmup_steps: int | None = None  # SFT steps of the base model (None: ChainModelSettings' default)
    base_model: str = ""  # path of the cached base model, filled in once it is built
    task: str = "chain"  # a name of TASKS


FULL = {"methods": Scale(seeds=5, steps=100, eval_problems=300, sample_problems=300, k=8)}
FULL["sensitivity"] = FULL["methods"]  # 5 seeds too: with 3, t_{0.975,2} = 4.3 makes most intervals uninformative
FULL["history"] = FULL["beyond"] = FULL["methods"]
QUICK = Scale(seeds=2, steps=8, eval_problems=40, sample_problems=16, k=4, warmup_steps=150)  # a smoke test


@dataclasses.dataclass(frozen=True)
class Task:
    """What a comparison trains and evaluates on: its methods, its base model and its held-out problems."""

    name: str
    variants: list[Variant]
    reward: str  # the evaluation grader: "arithmetic" (after `|`) or "accuracy" (math-verify of the last \boxed{})
    full: Scale
    quick: Scale
    relay: tuple[str, ...]  # variants that keep a half-way checkpoint for relay sampling
    out: str  # default output directory under outputs/
    temperature: float = 1.0  # of the sampled evaluation (avg@k, pass@k): the recipes' training temperature


TASKS = {
    "chain": Task("chain", METHOD_VARIANTS, "arithmetic", FULL["methods"], QUICK, RELAY_VARIANTS, "compare-methods"),
    # A real model: each step is seconds of CPU and evaluation decodes up to 128 tokens per sample, so fewer steps,
    # problems and samples; the sizes were chosen by measuring a step first (docs/real-model.md).
    "smollm2": Task(
        "smollm2", SMOLLM2_VARIANTS, "accuracy",
        Scale(seeds=3, steps=20, eval_problems=60, sample_problems=30, k=4, task="smollm2"),
        Scale(seeds=2, steps=2, eval_problems=4, sample_problems=2, k=2, task="smollm2"),
        (), "compare-smollm2", temperature=0.7,
    ),
}  # fmt: skip


def task_of(spec: dict[str, Any]) -> Task:
    return TASKS[spec.get("task", "chain")]


# ----------------------------------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------------------------------

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
    if not stats["n"]:
        return "-"
    mean = f"{scale * stats['mean']:+.1f}" if signed else f"{scale * stats['mean']:.1f}"
    return mean if math.isnan(stats["ci95"]) else f"{mean} ± {scale * stats['ci95']:.1f}"


# ----------------------------------------------------------------------------------------------------------------------
# One run: train, then evaluate (in its own process)
# ----------------------------------------------------------------------------------------------------------------------


def run_spec(variant: Variant, seed: int, scale: Scale) -> dict[str, Any]:
    """Everything that determines a run's result; a finished run is reused only when its spec is equal."""
    return ({"task": scale.task} if scale.task != "chain" else {}) | {
        "variant": variant.name,
        "recipe": variant.recipe,
        "overrides": list(variant.overrides),
        "seed": seed,
        "steps": scale.steps,
        "eval_problems": scale.eval_problems,
        "sample_problems": scale.sample_problems,
        "k": scale.k,
        "relay": variant.name in TASKS[scale.task].relay,
        "model": scale.base_model,
    }


def train_argv(spec: dict[str, Any], run_dir: Path) -> list[str]:
    argv = ["--config", spec["recipe"], *spec["overrides"], "--seed", str(spec["seed"])]
    if spec["model"]:  # the base model this comparison built (the recipes name the default one)
        argv += ["--model_name_or_path", spec["model"]]
    argv += ["--max_steps", str(spec["steps"]), "--output_dir", str(run_dir), "--num_threads", "1"]
    argv += ["--logging_steps", "1", "--disable_tqdm", "true"]
    if spec["relay"]:
        argv += [
            "--save_strategy",
            "steps",
            "--save_steps",
            str(max(1, spec["steps"] // 2)),
            "--save_only_model",
            "true",
        ]
    return argv


def chain_benchmark(num_problems: int, name: str):
    """Distinct held-out chain problems as an evaluation `Benchmark` (graded like the addition task: after `|`)."""
    from soup_trl.evaluation.benchmarks import Benchmark, Problem
    from soup_trl.toy.chain import ChainModelSettings, completion_tokens, make_chain_dataset

    task = ChainModelSettings().task_kwargs()  # the task the base model was warmed up on
    data = make_chain_dataset(4 * num_problems + 16, seed=0, split="test", **task)
    problems, seen = [], set()
    for row in data:
        if row["prompt"] not in seen and len(problems) < num_problems:
            seen.add(row["prompt"])
            problems.append(Problem(str(len(problems)), row["prompt"], row["prompt"], row["solution"]))
    return Benchmark(name, "builtin:chain (test split)", "arithmetic", completion_tokens(**task) + 4, problems)


def word_problem_benchmark(num_problems: int, name: str):
    """Distinct held-out word problems (chat prompts, graded by math-verify) as an evaluation `Benchmark`."""
    from soup_trl.evaluation.benchmarks import Benchmark, Problem
    from soup_trl.toy.word_problems import TASK, make_word_problem_dataset

    data = make_word_problem_dataset(2 * num_problems + 16, seed=0, split="test", **TASK)  # the task trained on
    problems, seen = [], set()
    for row in data:
        if row["problem"] not in seen and len(problems) < num_problems:
            seen.add(row["problem"])
            problems.append(Problem(str(len(problems)), row["problem"], row["prompt"], row["solution"]))
    return Benchmark(name, "builtin:word-problems (test split)", "accuracy", 128, problems)


BENCHMARKS = {"chain": chain_benchmark, "smollm2": word_problem_benchmark}


def evaluate_model(model: str, spec: dict[str, Any], behavior: str | None) -> dict[str, Any]:
    """Greedy accuracy, avg@k and pass@k at the task's temperature, and (with `behavior`) relay minus single-model
    pass@k."""
    from soup_trl.evaluation.arguments import SamplingArguments
    from soup_trl.evaluation.backends import HFBackend
    from soup_trl.evaluation.relay import difference_curves, relay_continue
    from soup_trl.evaluation.runner import benchmark_summary, grade_problems, sample_problems

    task = task_of(spec)
    benchmark, reward = BENCHMARKS[task.name], task.reward
    greedy_set = benchmark(spec["eval_problems"], "greedy")
    sample_set = benchmark(spec["sample_problems"], "sampled")
    budget, k = greedy_set.default_max_new_tokens, spec["k"]
    greedy = SamplingArguments(num_samples=1, temperature=0.0, top_p=1.0, seed=spec["seed"])
    sampled = SamplingArguments(num_samples=k, temperature=task.temperature, top_p=1.0, seed=spec["seed"])
    result: dict[str, Any] = {}
    if behavior is not None:  # A samples first (one model in memory at a time)
        engine = HFBackend(behavior, batch_size=256)
        _, behavior_results = sample_problems(engine, sample_set, k, budget, sampled, "relay: A")
        grade_problems(behavior_results, reward)
        result["behavior_summary"] = benchmark_summary(behavior_results, k)
        engine.close()
    engine = HFBackend(model, batch_size=256)
    _, greedy_results = sample_problems(engine, greedy_set, 1, budget, greedy, "greedy")
    grade_problems(greedy_results, reward)
    result["greedy_accuracy"] = benchmark_summary(greedy_results, 1)["avg@n"]
    prompt_ids, sampled_results = sample_problems(engine, sample_set, k, budget, sampled, "sampled")
    grade_problems(sampled_results, reward)
    summary = benchmark_summary(sampled_results, k)
    result["avg@k"], result["pass@k"] = summary["avg@n"], summary["pass@k"]
    result["mean_completion_tokens"] = summary["mean_completion_tokens"]
    if behavior is not None:
        continuing = dataclasses.replace(sampled, seed=spec["seed"] + 1)
        relay = relay_continue(engine, prompt_ids, behavior_results, 0.5, budget, continuing, desc="relay: B")
        grade_problems(relay, reward)
        relay_summary = benchmark_summary(relay, k)
        result["relay_pass@k"] = relay_summary["pass@k"]
        result["relay_minus_model"] = difference_curves({"x": relay_summary}, {"x": summary})["x"]
    engine.close()
    return result


def resident_kib(field: str) -> int | None:
    """A field of /proc/self/status in KiB (VmRSS: resident set now; VmHWM: its high-water mark), None off Linux."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_resident_mb() -> float:
    """This process's resident-set high-water mark in MB: VmHWM on Linux (the memory of this process alone), else
    `ru_maxrss`, which on Linux would also count the parent's resident set at the fork that started this process (the
    kernel carries it across exec), and is KiB on Linux but bytes on macOS."""
    peak = resident_kib("VmHWM")
    if peak is not None:
        return peak / 1024
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024)


def run_one(spec_path: Path) -> None:
    """Worker: train the run described by `spec.json`, evaluate it, write `result.json` next to it."""
    from soup_trl.evaluation.runs import checkpoint_dirs, load_log_history
    from soup_trl.scripts import train

    run_dir = spec_path.parent
    spec = json.loads(spec_path.read_text())
    start, cpu_start = time.monotonic(), time.process_time()
    train.main(*train.parse_args(train_argv(spec, run_dir)))
    seconds, cpu_seconds = time.monotonic() - start, time.process_time() - cpu_start
    peak_rss_mb = peak_resident_mb()  # training, before evaluation
    _, history = load_log_history(run_dir)
    summary = next(h for h in reversed(history) if "train_runtime" in h)
    behavior = None
    if spec["relay"]:
        checkpoints = [p for step, p in checkpoint_dirs(run_dir) if step < spec["steps"]]
        behavior = str(checkpoints[-1]) if checkpoints else None
    evaluation_start, evaluation_cpu_start = time.monotonic(), time.process_time()
    result = evaluate_model(str(run_dir), spec, behavior)
    result.update(
        spec=spec,
        train_runtime=summary["train_runtime"],
        seconds_per_step=summary["train_runtime"] / spec["steps"],
        train_process_seconds=seconds,
        train_cpu_seconds=cpu_seconds,  # 1 thread: the wall clock of an otherwise idle core
        train_peak_rss_mb=peak_rss_mb,
        evaluation_seconds=time.monotonic() - evaluation_start,
        evaluation_cpu_seconds=time.process_time() - evaluation_cpu_start,
        log_history=history,
    )
    for _, path in checkpoint_dirs(run_dir):  # keep the directory small: the final model and the results
        if path != (Path(behavior) if behavior else None):
            shutil.rmtree(path, ignore_errors=True)
    (run_dir / "result.json").write_text(json.dumps(result, indent=1))


# ----------------------------------------------------------------------------------------------------------------------
# Scheduling and resuming
# ----------------------------------------------------------------------------------------------------------------------


def finished(run_dir: Path, spec: dict[str, Any]) -> bool:
    path = run_dir / "result.json"
    if not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("spec") == spec
    except json.JSONDecodeError:
        return False


def launch(run_dir: Path, spec: dict[str, Any], log, script: Path | None = None) -> int:
    """Run one training + evaluation in a fresh process with one torch thread; its output goes to run.log.

    The process is `script --run-one run_dir/spec.json` (this file by default; other benchmarks pass their own)."""
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a partial run: start it over
    run_dir.mkdir(parents=True)
    (run_dir / "spec.json").write_text(json.dumps(spec, indent=1))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    with open(run_dir / "run.log", "w") as out:
        cmd = [sys.executable, str(Path(script or __file__).resolve()), "--run-one", str(run_dir / "spec.json")]
        code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode
    if code != 0:
        log(f"{run_dir.name} failed (exit {code}); see {run_dir / 'run.log'}")
    return code


def run_all(variants: list[Variant], scale: Scale, out: Path, jobs: int, log=print) -> int:
    """Every (variant, seed) run not already finished, `jobs` at a time, with a progress bar; returns how many ran."""
    from tqdm.auto import tqdm

    todo = []
    for seed in range(scale.seeds):  # seed-major: a partly finished sweep has whole seeds of every variant
        for variant in variants:
            spec, run_dir = run_spec(variant, seed, scale), out / "runs" / f"{variant.name}-seed{seed}"
            if not finished(run_dir, spec):
                todo.append((run_dir, spec))
    total = len(variants) * scale.seeds
    log(f"{total - len(todo)} of {total} runs already finished in {out}; {len(todo)} to run, {jobs} at a time")
    failures = 0
    with tqdm(total=total, initial=total - len(todo), desc="runs", unit="run", dynamic_ncols=True) as bar:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            pending = {pool.submit(launch, run_dir, spec, bar.write): run_dir for run_dir, spec in todo}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    run_dir = pending.pop(future)
                    failures += future.result() != 0
                    bar.set_postfix_str(run_dir.name)
                    bar.update(1)
    if failures:
        raise SystemExit(f"{failures} run(s) failed; rerun the same command to retry them (finished runs are kept).")
    return len(todo)


# ----------------------------------------------------------------------------------------------------------------------
# Summary
# ----------------------------------------------------------------------------------------------------------------------


def load_results(variants: list[Variant], scale: Scale, out: Path) -> dict[str, dict[int, dict]]:
    results: dict[str, dict[int, dict]] = {v.name: {} for v in variants}
    for variant in variants:
        for seed in range(scale.seeds):
            run_dir = out / "runs" / f"{variant.name}-seed{seed}"
            if finished(run_dir, run_spec(variant, seed, scale)):
                results[variant.name][seed] = json.loads((run_dir / "result.json").read_text())
    return results


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
        [_nanmean([p[phase][1][b] for p in per_seed]) for b in range(len(per_seed[0][phase][1]))] for phase in (0, 1)
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


DIAGNOSTICS = {  # SOUP's logged metrics the tables report, averaged over a run's logs, then over seeds
    "soup/cut_position_mean": "mean cut position",
    "soup/prefix_token_frac": "prefix token share (%)",
    "soup/refresh": "steps that refreshed (%)",
    "soup/history_row_frac": "rows from history (%)",
}


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


def paired_ratio(values: dict[int, float], reference: dict[int, float]) -> dict[str, Any]:
    """Mean and interval over seeds of value / reference (same seed)."""
    return mean_ci([values[s] / reference[s] for s in values if s in reference and reference[s]])


def _nanmean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


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


def _k_values(n: int) -> list[int]:
    from soup_trl.evaluation.runner import k_values

    return k_values(n)


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
    if sweep in ("history", "beyond") and logged:
        lines += ["", "What the SOUP runs logged (mean over each run's logged steps, then over seeds):", ""]
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


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def build_base_model(scale: Scale) -> str:
    """The local path of the task's base model, built (tiny chain model) or converted (SmolLM2) once and cached."""
    if scale.task == "smollm2":
        from soup_trl.toy.builtin import BUILTIN_SMOLLM2, resolve_model

        return resolve_model(BUILTIN_SMOLLM2)
    from soup_trl.toy.chain import ChainModelSettings
    from soup_trl.toy.tiny_model import ensure_tiny_base_model

    settings = ChainModelSettings()
    if scale.warmup_steps is not None:
        settings = dataclasses.replace(settings, warmup_steps=scale.warmup_steps)
    return ensure_tiny_base_model(settings=settings)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sweep", choices=SWEEPS, default="methods",
                        help="methods (default), sensitivity, history (several epochs over 200 prompts), or beyond "
                        "(drift-aware cut, adaptive refresh)")
    parser.add_argument("--task", choices=list(TASKS), default="chain", help="chain (default: the tiny model on "
                        "chained addition) or smollm2 (SmolLM2-135M-Instruct on word problems; methods sweep only)")
    parser.add_argument("--quick", action="store_true", help="2 seeds, 8 steps, small evaluation, a base model warmed up 150 steps: a smoke test (CI)")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (0, 1, ...); default 5")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps per run")
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time, 1 torch thread each (default 2)")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default outputs/<sweep>)")
    parser.add_argument("--docs", type=Path, default=None, help="docs page whose section of this sweep to fill")
    parser.add_argument("--readme", type=Path, default=None, help="page whose 'headline' section gets the short table")
    parser.add_argument("--only", default=None, help="comma-separated variant names to run (default: all of the sweep)")
    parser.add_argument("--run-one", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_one is not None:
        return run_one(args.run_one)
    if args.readme is not None and args.sweep != "methods":
        parser.error("--readme takes the methods sweep's headline table; drop --sweep")
    if args.task != "chain" and args.sweep != "methods":
        parser.error(f"--task {args.task} has the methods sweep only; drop --sweep")
    task = TASKS[args.task]

    if args.task == "chain":
        scale = QUICK if args.quick else FULL[args.sweep]
    else:
        scale = task.quick if args.quick else task.full
    scale = dataclasses.replace(scale, seeds=args.seeds or scale.seeds, steps=args.steps or scale.steps)
    variants = task.variants if args.sweep == "methods" else SWEEP_VARIANTS[args.sweep]()
    if args.only:
        names = [v.name for v in variants]
        unknown = sorted(set(args.only.split(",")) - set(names))
        if unknown:
            parser.error(f"--only: unknown variant(s) {', '.join(unknown)}; the {args.sweep} sweep has {', '.join(names)}")
        variants = [v for v in variants if v.name in args.only.split(",")]
    out = args.out or ROOT / "outputs" / (task.out if args.sweep == "methods" else args.sweep)
    out.mkdir(parents=True, exist_ok=True)

    start = time.monotonic()
    base = build_base_model(scale)  # built once here, not by two runs at a time
    scale = dataclasses.replace(scale, base_model=base)
    base_eval = out / "base_model.json"
    if not base_eval.is_file() or json.loads(base_eval.read_text()).get("model") != base:
        spec = {
            "eval_problems": scale.eval_problems,
            "sample_problems": scale.sample_problems,
            "k": scale.k,
            "seed": 0,
            "task": scale.task,
        }
        base_eval.write_text(json.dumps({"model": base, **evaluate_model(base, spec, None)}, indent=1))
    trained = run_all(variants, scale, out, args.jobs)
    invocations_file = out / "invocations.json"  # how long the runs took, kept across resumed invocations
    invocations = json.loads(invocations_file.read_text()) if invocations_file.is_file() else []
    invocations.append({"argv": sys.argv[1:] if argv is None else argv, "runs_trained": trained,
                        "wall_seconds": time.monotonic() - start, "ended": time.strftime("%Y-%m-%d %H:%M")})  # fmt: skip
    invocations_file.write_text(json.dumps(invocations, indent=1))
    summary = summarize(variants, scale, out, SWEEP_OTHERS.get(args.sweep, ()))
    summary["base_model"] = json.loads(base_eval.read_text())
    summary["command"] = " ".join(
        ["python benchmarks/compare_methods.py", *(argv if argv is not None else sys.argv[1:])]
    )
    summary["machine"] = machine()
    summary["jobs"] = args.jobs
    summary["invocations"] = invocations
    training = [i for i in invocations if i["runs_trained"]]
    summary["run_seconds_total"] = sum(e["run_seconds"] for e in summary["variants"].values())
    cpu_total = sum(
        e["run_cpu_seconds"]["mean"] * e["run_cpu_seconds"]["n"] for e in summary["variants"].values() if e["seeds"]
    )
    summary["cpu_seconds_total"] = cpu_total  # 1 thread per run: about the wall clock of runs on idle cores
    files = plot(summary, out)
    (out / "results.json").write_text(json.dumps(json_safe(summary), indent=1))
    base_model = summary["base_model"]
    body = (
        (
            "Quick mode (a smoke test of the command): too few steps and seeds for these numbers to mean anything.\n\n"
            if args.quick
            else ""
        )
        + f"Command: `{summary['command']}` on {summary['machine']}, {args.jobs} run(s) at a time, 1 torch thread each; "
        f"{sum(i['runs_trained'] for i in training)} runs trained and evaluated in "
        f"{sum(i['wall_seconds'] for i in training) / 60:.1f} min wall clock ({len(training)} invocation(s) that "
        f"trained, evaluation included, and the base model's warm-up if it was not cached yet; {summary['run_seconds_total'] / 60:.1f} min summed over "
        f"runs, {cpu_total / 60:.1f} CPU-minutes). Base model: greedy {100 * base_model['greedy_accuracy']:.1f}%, avg@{scale.k} "
        f"{100 * base_model['avg@k']:.1f}%, pass@{scale.k} {100 * base_model['pass@k'][str(scale.k)]:.1f}%.\n\n"
        + markdown(summary, args.sweep)
    )
    (out / "results.md").write_text(f"# {args.sweep}\n\n{body}\n" + "".join(f"![]({Path(f).name})\n" for f in files))
    print(body)
    if args.docs is not None:  # figures next to the page (docs/*.png is the tracked pattern)
        section = args.sweep if args.task == "chain" else args.task
        links = []
        for f in files:
            target = args.docs.parent / f"{args.docs.stem}-{section}-{Path(f).name}"
            shutil.copyfile(f, target)
            links.append(f"![{section} {Path(f).stem}]({target.name})\n")
        fill_docs(args.docs, section, body + "\n" + "".join(links))
        print(f"Filled the '{section}' section of {args.docs}")
    if args.readme is not None:
        fill_docs(args.readme, "headline", headline(summary))
        print(f"Filled the 'headline' section of {args.readme}")
    print(f"Results: {out / 'results.json'}, {out / 'results.md'}, plots in {out}")


if __name__ == "__main__":
    main()
