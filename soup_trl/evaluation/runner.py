"""Sampling-based evaluation: avg@n and unbiased pass@k, grading, per-sample records and result tables.

For every problem, n completions are sampled and graded (math benchmarks: the grading of
`soup_trl.rewards.accuracy_reward`, all samples of a benchmark as one batch in parallel worker processes; the
built-in arithmetic set: `soup_trl.rewards.arithmetic_reward`). With c correct samples out of n:

- avg@n is the mean over problems of c / n (the paper reports avg@32);
- pass@k is the mean over problems of the unbiased estimator 1 - C(n - c, k) / C(n, k), for k = 1, 2, 4, ..., n
  (n itself is included when it is not a power of 2). pass@1 equals avg@n.

An answer the grader cannot read (no ``\\boxed{}``, a box math-verify cannot parse, a grading timeout or error; for
arithmetic, no ``|``) counts as wrong and is counted in ``unparseable_answers``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..toy.builtin import resolve_model
from .arguments import (
    BackendArguments,
    BenchmarkArguments,
    ModelArguments,
    OutputArguments,
    SamplingArguments,
    run_record,
)
from .backends import check_model_path, load_backend
from .benchmarks import Benchmark
from .outputs import claim_output_dir, model_slug, write_results

logger = logging.getLogger(__name__)

UNPARSEABLE_STATUSES = ("no_answer", "timeout", "error")


# ----------------------------------------------------------------------------------------------------------------------
# Metrics
# ----------------------------------------------------------------------------------------------------------------------


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with `c` correct samples out of `n`: 1 - C(n - c, k) / C(n, k).

    Computed as 1 - prod_{i = n - c + 1}^{n} (1 - k / i), which never forms the (huge) binomial coefficients.
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:  # every set of k samples contains a correct one
        return 1.0
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


def k_values(n: int) -> list[int]:
    """1, 2, 4, ... up to n, and n itself."""
    ks, k = [], 1
    while k < n:
        ks.append(k)
        k *= 2
    return ks + [n] if n >= 1 else []


def summarize(correct: Sequence[int], n: int) -> dict[str, Any]:
    """avg@n and pass@k (k in `k_values(n)`) over problems with `correct[i]` correct samples out of `n` each."""
    if not correct:
        return {"avg@n": 0.0, "pass@k": {str(k): 0.0 for k in k_values(n)}}
    return {
        "avg@n": sum(c / n for c in correct) / len(correct),
        "pass@k": {str(k): sum(pass_at_k(n, c, k) for c in correct) / len(correct) for k in k_values(n)},
    }


# ----------------------------------------------------------------------------------------------------------------------
# Grading
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class SampleGrade:
    reward: float  # 1.0 or 0.0
    status: str  # "correct", "wrong", or an unparseable status ("no_answer", "timeout", "error")
    answer: str  # the answer read from the completion ("" if none)
    gold_parseable: bool = True  # False: math-verify cannot parse the gold (graded by exact string match)


def _sample_grade(grade) -> SampleGrade:
    """A `soup_trl.rewards.Grade` as a benchmark sample's grade (an exact string match counts as correct)."""
    status = grade.status if grade.status in UNPARSEABLE_STATUSES else "correct" if grade.reward == 1.0 else "wrong"
    return SampleGrade(float(grade.reward or 0.0), status, grade.answer, grade.gold_ok)


def _arithmetic_grade(completion: str, gold: str) -> SampleGrade:
    from ..rewards.arithmetic import arithmetic_reward, extract_answer

    reward = arithmetic_reward([completion], [gold])[0]
    answer = extract_answer(completion)
    status = "no_answer" if not answer else ("correct" if reward == 1.0 else "wrong")
    return SampleGrade(float(reward), status, answer or "")


def iter_sample_grades(pairs: Sequence[tuple[str, str]], reward: str) -> Iterator[SampleGrade]:
    """Grade (completion, gold) pairs with a benchmark's reward ("accuracy" or "arithmetic"), in order.

    Math answers are graded in parallel worker processes, each under the per-sample time limit
    (`soup_trl.rewards.grading.iter_grades`); timeouts, errors and unparseable golds are logged and counted as in training.
    """
    if reward == "accuracy":
        from ..rewards import accuracy, grading

        grades = grading.iter_grades([c for c, _ in pairs], [g for _, g in pairs])
        for (completion, gold), grade in zip(pairs, grades):
            accuracy.report_grades([grade], [completion], [gold])
            yield _sample_grade(grade)
    elif reward == "arithmetic":
        for completion, gold in pairs:
            yield _arithmetic_grade(completion, gold)
    else:
        raise ValueError(f"unknown reward {reward!r}")


def grade_completions(completions: Sequence[str], gold: str, reward: str) -> list[SampleGrade]:
    """Grade the completions of one problem with the benchmark's reward ("accuracy" or "arithmetic")."""
    return list(iter_sample_grades([(c, gold) for c in completions], reward))


# ----------------------------------------------------------------------------------------------------------------------
# Evaluating one benchmark
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class Sample:
    token_ids: list[int]
    text: str
    finished: bool  # ended with an EOS (False: cut at the token budget)
    grade: SampleGrade | None = None


@dataclass
class ProblemResult:
    id: str
    problem: str
    gold: str
    samples: list[Sample]
    extra: list[dict] = field(default_factory=list)  # per-sample fields added by callers (relay prefixes)

    @property
    def num_correct(self) -> int:
        return sum(s.grade is not None and s.grade.reward == 1.0 for s in self.samples)


def grade_problems(results: list[ProblemResult], reward: str, desc: str = "grading") -> None:
    """Grade every sample of every problem, all in one batch (so that every grading worker stays busy)."""
    from tqdm.auto import tqdm

    samples = [(sample, result.gold) for result in results for sample in result.samples]
    grades = iter_sample_grades([(sample.text, gold) for sample, gold in samples], reward)
    for (sample, _), grade in zip(samples, tqdm(grades, total=len(samples), desc=desc, unit="sample", leave=False)):
        sample.grade = grade


def sample_problems(backend, benchmark: Benchmark, n: int, max_new_tokens: int, sampling, desc: str | None = None):
    """Sample `n` completions per problem of `benchmark` with `backend` (no grading)."""
    prompt_ids = [backend.encode_prompt(p.prompt) for p in benchmark.problems]
    completions = backend.generate(
        prompt_ids, n, [max_new_tokens] * len(prompt_ids), sampling, desc=desc or f"{benchmark.name}: sampling"
    )
    return prompt_ids, [
        ProblemResult(
            p.id,
            p.problem,
            p.gold,
            [Sample(c, backend.decode(c), backend.ends_with_eos(c)) for c in samples],
        )
        for p, samples in zip(benchmark.problems, completions)
    ]


def benchmark_summary(results: list[ProblemResult], n: int) -> dict[str, Any]:
    """Metrics of one benchmark: avg@n, pass@k, and counts of unparseable answers and unfinished samples."""
    samples = [s for r in results for s in r.samples]
    summary = {"num_problems": len(results), "num_samples": n, **summarize([r.num_correct for r in results], n)}
    summary["unparseable_answers"] = sum(
        s.grade is not None and s.grade.status in UNPARSEABLE_STATUSES for s in samples
    )
    statuses: dict[str, int] = {}
    for s in samples:
        if s.grade is not None:
            statuses[s.grade.status] = statuses.get(s.grade.status, 0) + 1
    summary["grade_statuses"] = dict(sorted(statuses.items()))
    summary["unparseable_gold_problems"] = sum(
        any(s.grade is not None and not s.grade.gold_parseable for s in r.samples) for r in results
    )
    summary["truncated_samples"] = sum(not s.finished for s in samples)
    summary["mean_completion_tokens"] = sum(len(s.token_ids) for s in samples) / max(1, len(samples))
    return summary


def write_samples(path: Path, results: list[ProblemResult]) -> None:
    """One JSON line per sample: problem id and text, gold, completion, extracted answer, reward, status, tokens."""
    with open(path, "w", encoding="utf-8") as f:
        for r in results:
            for index, s in enumerate(r.samples):
                record = {
                    "problem_id": r.id,
                    "sample": index,
                    "problem": r.problem,
                    "gold": r.gold,
                    "completion": s.text,
                    "answer": s.grade.answer if s.grade else None,
                    "reward": s.grade.reward if s.grade else None,
                    "status": s.grade.status if s.grade else None,
                    "num_tokens": len(s.token_ids),
                    "finished": s.finished,
                }
                if r.extra:
                    record.update(r.extra[index])
                f.write(json.dumps(record, ensure_ascii=False) + "\n")


# ----------------------------------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------------------------------


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def results_table(benchmarks: dict[str, dict], n: int) -> str:
    """Markdown table: one row per benchmark (and their average), avg@n and pass@k in %, diagnostics."""
    ks = k_values(n)
    headers = ["benchmark", "problems", f"avg@{n}", *[f"pass@{k}" for k in ks], "unparseable", "truncated"]
    rows = []
    for name, s in benchmarks.items():
        total = s["num_problems"] * n
        rows.append(
            [name, str(s["num_problems"]), pct(s["avg@n"]), *[pct(s["pass@k"][str(k)]) for k in ks]]
            + [f"{s['unparseable_answers']}/{total}", f"{s['truncated_samples']}/{total}"]
        )
    if len(benchmarks) > 1:
        mean = lambda key: sum(key(s) for s in benchmarks.values()) / len(benchmarks)  # noqa: E731
        rows.append(
            [
                "average",
                "",
                pct(mean(lambda s: s["avg@n"])),
                *[pct(mean(lambda s, k=k: s["pass@k"][str(k)])) for k in ks],
            ]
            + ["", ""]
        )
    return markdown_table(headers, rows)


# ----------------------------------------------------------------------------------------------------------------------
# The `eval` command
# ----------------------------------------------------------------------------------------------------------------------


def unique_names(names: list[str]) -> list[str]:
    """Output names of benchmarks: their names, made unique (two files called test.jsonl: test, test_2)."""
    unique, seen = [], {}
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return unique


def run_eval(
    backend,
    benchmarks: list[Benchmark],
    sampling: SamplingArguments,
    output_dir: str | Path,
    model_name: str,
    log: Callable[[str], None] = print,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Evaluate `backend` on every benchmark; write results.json, results.md and <benchmark>.jsonl to `output_dir`.

    `settings` (every option of the run, `run_record`) is stored as results.json's "settings" and as config.yaml.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    n = sampling.num_samples
    summaries: dict[str, dict] = {}
    for name, benchmark in zip(unique_names([b.name for b in benchmarks]), benchmarks):
        budget = sampling.budget(benchmark)
        log(f"{name}: {len(benchmark.problems)} problems x {n} samples, max {budget} new tokens ({benchmark.source})")
        _, results = sample_problems(backend, benchmark, n, budget, sampling, desc=f"{name}: sampling")
        grade_problems(results, benchmark.reward, desc=f"{name}: grading")
        summary = benchmark_summary(results, n)
        summary.update(source=benchmark.source, reward=benchmark.reward, max_new_tokens=budget)
        summaries[name] = summary
        write_samples(output_dir / f"{name}.jsonl", results)
    report = {
        "model": model_name,
        "backend": backend.name,
        "num_samples": n,
        "sampling": asdict(sampling),
        "settings": settings or {},
        "benchmarks": summaries,
    }
    if summaries:
        report["average_avg@n"] = sum(s["avg@n"] for s in summaries.values()) / len(summaries)
    table = results_table(summaries, n)
    (output_dir / "results.md").write_text(
        f"# {model_name}\n\n{n} samples per problem, temperature {sampling.temperature}, top-p {sampling.top_p}, "
        f"seed {sampling.seed}, backend {backend.name}. Scores in %.\n\n{table}\n"
    )
    write_results(output_dir, report, ["results.md", *(f"{name}.jsonl" for name in summaries)])
    return report


def evaluate(
    model: ModelArguments,
    benchmarks: BenchmarkArguments,
    sampling: SamplingArguments,
    backend: BackendArguments,
    output: OutputArguments,
    log: Callable[[str], None] = print,
) -> tuple[dict[str, Any], Path]:
    """The `eval` command: sample, grade and score one model; returns the report and the directory written."""
    names = benchmarks.names(model.default_benchmarks())
    check_model_path(model.model)  # before benchmarks are downloaded
    loaded = benchmarks.load(names, log)
    model_path = resolve_model(model.model)
    output_dir = claim_output_dir(output.output_dir, Path("eval_results") / model_slug(model_path), output.overwrite)
    engine = load_backend(backend, model_path, model.tokenizer, sampling.seed, log)
    try:
        record = run_record(model, benchmarks, sampling, backend, output)
        report = run_eval(engine, loaded, sampling, output_dir, model_path, log, record)
    finally:
        engine.close()
    return report, output_dir


def unparseable_notes(summaries: dict[str, dict]) -> list[str]:
    """One line per benchmark with answers or gold answers the grader could not read."""
    notes = []
    for name, s in summaries.items():
        if s["unparseable_answers"]:
            total = s["num_problems"] * s["num_samples"]
            notes.append(
                f"{name}: {s['unparseable_answers']} of {total} answers could not be read by the grader (graded wrong)."
            )
        if s.get("unparseable_gold_problems"):
            notes.append(
                f"{name}: math-verify cannot parse the gold answer of {s['unparseable_gold_problems']} problems; "
                "they are graded by exact string match."
            )
    return notes
