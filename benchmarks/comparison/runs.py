"""One run of a comparison and the scheduling of many: a run's spec and training argv, the process that trains and
evaluates it (`compare_methods.py --run-one`), launching the runs a sweep still lacks (finished ones are reused, so an
interrupted comparison resumes), and reading back their results.

A run is evaluated on its task's held-out benchmark, the one `soup-trl eval --benchmarks NAME` scores
(`soup_trl.evaluation.benchmarks`: `chain` for the tiny chain model, `word_problems` for SmolLM2).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from .host import peak_resident_mb
from .variants import TASKS, Scale, Variant, task_of, variant_seeds

ROOT = Path(__file__).resolve().parents[2]  # the repository
ENTRY_POINT = Path(__file__).resolve().parents[1] / "compare_methods.py"  # runs `--run-one` for `launch`


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


def evaluate_model(model: str, spec: dict[str, Any], behavior: str | None) -> dict[str, Any]:
    """Greedy accuracy, avg@k and pass@k at the task's temperature, and (with `behavior`) relay minus single-model
    pass@k, on the first problems of the task's held-out benchmark."""
    from soup_trl.evaluation.arguments import SamplingArguments
    from soup_trl.evaluation.backends import HFBackend
    from soup_trl.evaluation.benchmarks import load_benchmark
    from soup_trl.evaluation.relay import difference_curves, relay_continue
    from soup_trl.evaluation.runner import benchmark_summary, grade_problems, sample_problems

    task = task_of(spec)
    greedy_set = load_benchmark(task.benchmark, limit=spec["eval_problems"])
    sample_set = load_benchmark(task.benchmark, limit=spec["sample_problems"])
    reward, budget, k = greedy_set.reward, greedy_set.default_max_new_tokens, spec["k"]
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


def evaluate_base_model(scale: Scale, out: Path) -> Path:
    """`out/base_model.json`: the base model evaluated as the runs are, unless the file holds this base model's."""
    path = out / "base_model.json"
    if not path.is_file() or json.loads(path.read_text()).get("model") != scale.base_model:
        spec = {
            "eval_problems": scale.eval_problems,
            "sample_problems": scale.sample_problems,
            "k": scale.k,
            "seed": 0,
            "task": scale.task,
        }
        result = evaluate_model(scale.base_model, spec, None)
        path.write_text(json.dumps({"model": scale.base_model, **result}, indent=1))
    return path


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

    The process is `script --run-one run_dir/spec.json` (compare_methods.py by default; other benchmarks pass their
    own)."""
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a partial run: start it over
    run_dir.mkdir(parents=True)
    (run_dir / "spec.json").write_text(json.dumps(spec, indent=1))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    with open(run_dir / "run.log", "w") as out:
        cmd = [sys.executable, str(Path(script or ENTRY_POINT).resolve()), "--run-one", str(run_dir / "spec.json")]
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
            if seed not in variant_seeds(variant, scale.seeds):
                continue
            spec, run_dir = run_spec(variant, seed, scale), out / "runs" / f"{variant.name}-seed{seed}"
            if not finished(run_dir, spec):
                todo.append((run_dir, spec))
    total = sum(len(variant_seeds(v, scale.seeds)) for v in variants)
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


def record_invocation(out: Path, argv: list[str], runs_trained: int, wall_seconds: float) -> list[dict[str, Any]]:
    """Append this invocation to `out/invocations.json` (how long the runs took, kept across resumed invocations);
    returns every invocation recorded."""
    path = out / "invocations.json"
    invocations = json.loads(path.read_text()) if path.is_file() else []
    invocations.append({"argv": argv, "runs_trained": runs_trained,
                        "wall_seconds": wall_seconds, "ended": time.strftime("%Y-%m-%d %H:%M")})  # fmt: skip
    path.write_text(json.dumps(invocations, indent=1))
    return invocations


def load_results(variants: list[Variant], scale: Scale, out: Path) -> dict[str, dict[int, dict]]:
    """The `result.json` of every finished run of the sweep: variant name -> seed -> result."""
    results: dict[str, dict[int, dict]] = {v.name: {} for v in variants}
    for variant in variants:
        for seed in variant_seeds(variant, scale.seeds):
            run_dir = out / "runs" / f"{variant.name}-seed{seed}"
            if finished(run_dir, run_spec(variant, seed, scale)):
                results[variant.name][seed] = json.loads((run_dir / "result.json").read_text())
    return results
