"""Checkpoint selection (`soup-trl select`): evaluate every model a training run saved and rank them.

The score of a model is the mean avg@n over the selection benchmarks (the paper's model selection: AIME24 + AIME25);
ties go to the earliest checkpoint. Each model's evaluation is written to `<eval dir>/<checkpoint>/` and reused by a
later selection whose benchmark and sampling options (`RESULT_FIELDS`) are the same; one made with other options is
replaced only with `--overwrite`. The completion budget is the run's own `max_completion_length` (read from the
`training_args.bin` Trainer saves) unless `--max-new-tokens` is given.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import UserError
from .arguments import result_settings, run_record
from .backends import load_backend
from .benchmarks import SELECTION_BENCHMARKS, benchmark_name
from .outputs import RESULTS, previous_results, remove_results
from .runner import markdown_table, pct, run_eval, unique_names
from .runs import SavedModel, saved_models, training_setting

SELECTION = "selection.json"

if TYPE_CHECKING:
    from .arguments import BackendArguments, BenchmarkArguments, OutputArguments, SamplingArguments, SelectArguments


def rank(scores: list[float]) -> int:
    """Index of the best score; the first of equal scores (the earliest checkpoint) wins."""
    return max(range(len(scores)), key=lambda i: (scores[i], -i))


@dataclass
class Selection:
    record: dict[str, Any]  # what selection.json holds
    table: str  # markdown: one row per model, * marks the best
    score_name: str  # e.g. "mean avg@32 (aime24+aime25)"
    output_dir: Path


def _reusable(directory: Path, model: SavedModel, settings: dict[str, Any], overwrite: bool) -> dict | None:
    """The earlier evaluation of `model` in `directory` if it was made with `settings`; refuses to replace another."""
    previous = previous_results(directory)
    if previous is None:
        return None
    same = previous.get("model") == str(model.path) and result_settings(previous.get("settings", {})) == settings
    if same and not overwrite:
        return previous
    if not same and not overwrite:
        raise UserError(
            f"{directory / RESULTS} holds an evaluation of {previous.get('model')} with other options: pass "
            "--overwrite to replace it, or another --output-dir."
        )
    remove_results(directory)
    return None


def select_checkpoint(
    select: SelectArguments,
    benchmarks: BenchmarkArguments,
    sampling: SamplingArguments,
    backend: BackendArguments,
    output: OutputArguments,
    log: Callable[[str], None] = print,
) -> Selection:
    run = Path(select.run_dir)
    models = saved_models(run, select.tokenizer)
    names = benchmarks.names(SELECTION_BENCHMARKS)
    out_names = unique_names([benchmark_name(name) for name in names])
    known = {**dict(zip(names, out_names)), **dict(zip(out_names, out_names))}  # a file's path or its name
    unknown = [c for c in select.select_by or [] if c not in known]
    if unknown:
        raise UserError(
            f"--select-by {', '.join(unknown)}: not among the evaluated benchmarks ({', '.join(out_names)})."
        )
    criterion_names = [known[c] for c in select.select_by] if select.select_by else out_names
    eval_dir = Path(output.output_dir or run / "eval")
    sampling, budget_note = _run_budget(run, sampling)
    record = run_record(select, benchmarks, sampling, backend, output)
    settings = result_settings(record)
    _check_previous_selection(eval_dir, record, output.overwrite)  # every check before any evaluation
    reused = {m.name: _reusable(eval_dir / m.name, m, settings, output.overwrite) for m in models}
    if budget_note:
        log(budget_note)
    log(f"{len(models)} models to evaluate: {', '.join(m.name for m in models)}")
    loaded = benchmarks.load(names, log)

    rows = []
    for model in models:
        report = reused[model.name]
        if report is not None:
            log(f"{model.name}: reusing {eval_dir / model.name / RESULTS}")
        else:
            engine = load_backend(backend, str(model.path), model.tokenizer, sampling.seed, log)
            try:
                report = run_eval(engine, loaded, sampling, eval_dir / model.name, str(model.path), log, record)
            finally:
                engine.close()
        scores = {name: report["benchmarks"][name]["avg@n"] for name in out_names}
        score = sum(scores[name] for name in criterion_names) / len(criterion_names)
        rows.append({"name": model.name, "path": str(model.path), "step": model.step, "avg@n": scores, "score": score})
    best = rows[rank([r["score"] for r in rows])]

    n = sampling.num_samples
    score_name = f"mean avg@{n} ({'+'.join(criterion_names)})"
    table = markdown_table(
        ["model", "step", *[f"{name} avg@{n}" for name in out_names], score_name],
        [
            [
                r["name"] + (" *" if r is best else ""),
                "-" if r["step"] is None else str(r["step"]),
                *[pct(r["avg@n"][name]) for name in out_names],
                pct(r["score"]),
            ]
            for r in rows
        ],
    )
    selection = {"criterion": criterion_names, "num_samples": n, "best": best, "models": rows, "settings": record}
    (eval_dir / "selection.md").write_text(
        f"# Checkpoint selection: {run}\n\nScores in %; * marks the best.\n\n{table}\n"
    )
    (eval_dir / SELECTION).write_text(json.dumps(selection, indent=2) + "\n")
    return Selection(selection, table, score_name, eval_dir)


def _run_budget(run: Path, sampling: SamplingArguments) -> tuple[SamplingArguments, str | None]:
    """`sampling` with the run's max_completion_length as completion budget unless --max-new-tokens was given, and
    the line that says so."""
    if sampling.max_new_tokens is not None:
        return sampling, None
    saved = training_setting(run, "max_completion_length")
    if saved is None:
        return sampling, (f"{run} has no readable training_args.bin: each benchmark's default completion budget "
                          "(--max-new-tokens sets one)")  # fmt: skip
    length, path = saved
    note = f"max_new_tokens = {length}: the run's max_completion_length ({path}); --max-new-tokens overrides it"
    return replace(sampling, max_new_tokens=int(length)), note


def _check_previous_selection(eval_dir: Path, record: dict[str, Any], overwrite: bool) -> None:
    """Refuse to replace a selection made with other benchmark, sampling or --select-by options."""
    try:
        previous = json.loads((eval_dir / SELECTION).read_text()).get("settings", {})
    except (OSError, json.JSONDecodeError, AttributeError):
        return
    key = lambda r: (result_settings(r), r.get("select_by"))  # noqa: E731
    if key(previous) != key(record) and not overwrite:
        raise UserError(
            f"{eval_dir / SELECTION} holds a selection made with other options: pass --overwrite to replace it, or "
            "another --output-dir."
        )
