"""The `soup-trl` command: evaluate models, relay sampling, checkpoint selection and training plots.

    soup-trl eval                                   # offline: the tiny model on the built-in arithmetic set
    soup-trl eval --model Qwen/Qwen2.5-Math-7B --benchmarks aime24,aime25,math500
    soup-trl relay --behavior-model RUN/checkpoint-400 --model RUN/checkpoint-450 --ratio 0.5
    soup-trl select RUN                             # best checkpoint by the AIME24+AIME25 average avg@32
    soup-trl plot RUN                               # training curves and the entropy / clip-ratio position bins

Heavy libraries (torch, transformers, vLLM) are imported only by the commands that need them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import textwrap
from pathlib import Path

from ..errors import UserError

OFFLINE_NOTE = (
    "Offline default: with --model omitted the warmed-up tiny model of the recipes is used (built and cached in "
    "~/.cache/soup_trl on first use, about 90 s on CPU) and --benchmarks defaults to 'arithmetic', a built-in "
    "held-out addition set: no network access is needed."
)


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps descriptions paragraph by paragraph (argparse's default joins the paragraphs)."""

    def _fill_text(self, text, width, indent):
        return "\n\n".join(
            textwrap.fill(
                " ".join(p.split()), width, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False
            )
            for p in text.split("\n\n")
        )

    def _split_lines(self, text, width):
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def _benchmark_list() -> str:
    from ..evaluation.benchmarks import HUB_BENCHMARKS

    entries = [
        f"{name} = {b.hub_id} (split {b.split}; {'/'.join(b.problem_fields)} -> {'/'.join(b.answer_fields)})"
        for name, b in HUB_BENCHMARKS.items()
    ]
    return "Named benchmarks: " + "; ".join(entries) + "; arithmetic = built-in held-out addition problems."


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------------------------------


def _add_benchmark_args(parser: argparse.ArgumentParser, default_help: str) -> None:
    from ..rewards.math_data import MATH_PROMPT_TEMPLATE

    group = parser.add_argument_group("benchmarks")
    group.add_argument(
        "--benchmarks",
        nargs="+",
        default=None,
        metavar="NAME|FILE",
        help="Comma- or space-separated benchmark names (aime24, aime25, math500, amc23, minerva, olympiadbench, "
        f"arithmetic) and/or local .jsonl/.json/.parquet files. {default_help}",
    )
    group.add_argument("--limit", type=int, default=None, help="Evaluate only the first N problems of each benchmark.")
    group.add_argument(
        "--problem-field", default="problem", help="Field of a local file holding the problem (dotted paths allowed)."
    )
    group.add_argument("--answer-field", default="answer", help="Field of a local file holding the gold answer.")
    group.add_argument(
        "--prompt-template",
        default=MATH_PROMPT_TEMPLATE,
        help="Prompt text, '{problem}' replaced by the problem (default: the training recipes' template, "
        "soup_trl.data.MATH_PROMPT_TEMPLATE). Not used for 'arithmetic', whose prompts are plain 'A+B='.",
    )
    group.add_argument("--system-prompt", default=None, help="Optional system message.")
    group.add_argument(
        "--no-chat-template",
        action="store_true",
        help="Send prompts as plain text instead of chat messages through the tokenizer's chat template.",
    )


def _add_sampling_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("sampling")
    group.add_argument(
        "--num-samples", "-n", type=int, default=32, help="Samples per problem, n of avg@n (default 32)."
    )
    group.add_argument(
        "--temperature",
        type=float,
        default=0.6,
        help="Sampling temperature (default 0.6; 0 = greedy). The paper does not state its evaluation temperature.",
    )
    group.add_argument("--top-p", type=float, default=0.95, help="Nucleus sampling threshold (default 0.95).")
    group.add_argument("--top-k", type=int, default=0, help="Top-k filtering (default 0: off).")
    group.add_argument(
        "--max-new-tokens",
        type=int,
        default=None,
        help="Completion budget in tokens (default: 24 for arithmetic, 3072 for math benchmarks).",
    )
    group.add_argument("--seed", type=int, default=0, help="Random seed of sampling (default 0).")


def _add_backend_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("backend")
    group.add_argument(
        "--backend",
        choices=("auto", "hf", "vllm"),
        default="auto",
        help="'vllm' (GPU, needs vllm installed), 'hf' (Transformers generate, CPU or GPU), or 'auto': vLLM when it "
        "is installed and a GPU is visible, else hf.",
    )
    group.add_argument("--batch-size", type=int, default=64, help="hf: sequences per generate call (default 64).")
    group.add_argument("--dtype", default="auto", help="Model dtype: auto, bfloat16, float16 or float32.")
    group.add_argument("--device", default=None, help="hf: torch device (default: cuda if available, else cpu).")
    group.add_argument("--tensor-parallel-size", type=int, default=1, help="vllm: GPUs per model.")
    group.add_argument("--gpu-memory-utilization", type=float, default=0.9, help="vllm: GPU memory fraction.")
    group.add_argument("--max-model-len", type=int, default=None, help="vllm: context length.")
    group.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice).")
    group.add_argument("--no-progress", action="store_true", help="Hide progress bars.")


def build_parser() -> argparse.ArgumentParser:
    formatter = _HelpFormatter
    parser = argparse.ArgumentParser(
        prog="soup-trl",
        description="Evaluate SOUP models (avg@n, pass@k), relay sampling, checkpoint selection and training plots.",
        epilog="Run 'soup-trl COMMAND --help' for the options of a command.\n\nOffline: every command works "
        "without network access on the built-in arithmetic set (--benchmarks arithmetic) and the tiny model. With "
        "--model omitted, eval and relay use the recipes' warmed-up tiny model (built and cached in ~/.cache/soup_trl "
        "on first use, about 90 s on CPU) and default to --benchmarks arithmetic.",
        formatter_class=formatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "eval",
        help="avg@n and pass@k of a model on math benchmarks or local files.",
        description="Sample n completions per problem, grade them (math-verify accuracy reward; the arithmetic reward "
        "for 'arithmetic'), and report avg@n and unbiased pass@k for k = 1, 2, 4, ..., n.\n\nWrites "
        "OUTPUT_DIR/results.json, OUTPUT_DIR/results.md and one OUTPUT_DIR/<benchmark>.jsonl of graded samples.\n\n"
        f"{_benchmark_list()}\n\n{OFFLINE_NOTE}\n\nExample (offline): soup-trl eval --benchmarks arithmetic",
        formatter_class=formatter,
    )
    p.add_argument(
        "--model",
        default=None,
        help="Model path or Hub id (default: the warmed-up tiny model, 'builtin:tiny-arithmetic').",
    )
    p.add_argument("--tokenizer", default=None, help="Tokenizer path, when the model directory has none.")
    p.add_argument("--output-dir", default=None, help="Where to write results (default: eval_results/<model name>).")
    _add_benchmark_args(p, "Default: the paper's six benchmarks, or 'arithmetic' when --model is omitted.")
    _add_sampling_args(p)
    _add_backend_args(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "relay",
        help="Relay sampling (model A writes a prefix, B continues) vs B alone: pass@k curves (Figure 4).",
        description="Relay sampling of the paper's section 5.1. The behavior model A samples n full answers per "
        "problem; each is cut to its first round(len * ratio) tokens (SOUP's length-ratio truncation: len counts "
        "the tokens before the EOS, which is never kept) and model B continues prompt + prefix. B also samples n "
        "answers alone. Reports pass@k of relay sampling, of B alone and of A alone, and plots relay minus B "
        "against k (log2 axis) per benchmark.\n\nWrites OUTPUT_DIR/results.json, relay.md, "
        "relay_pass_at_k_difference.png (Figure 4), relay_pass_at_k.png (Figure 6) and graded samples per "
        f"benchmark and sampler.\n\n{OFFLINE_NOTE}\n\nExample (offline): soup-trl relay --behavior-model "
        "RUN/checkpoint-100 --benchmarks arithmetic",
        formatter_class=formatter,
    )
    p.add_argument("--behavior-model", required=True, help="Model A, which writes the prefixes (path or Hub id).")
    p.add_argument(
        "--model", default=None, help="Model B, which continues (default: the tiny model, 'builtin:tiny-arithmetic')."
    )
    p.add_argument("--ratio", type=float, default=0.5, help="Fraction of A's answer kept as prefix, in [0, 1) (0.5).")
    p.add_argument("--output-dir", default=None, help="Where to write results (default: relay_results/<B>_from_<A>).")
    _add_benchmark_args(p, "Default: the paper's six benchmarks, or 'arithmetic' when --model is omitted.")
    _add_sampling_args(p)
    _add_backend_args(p)
    p.set_defaults(func=cmd_relay)

    p = sub.add_parser(
        "select",
        help="Evaluate every checkpoint of a training run and report the best.",
        description="Evaluate every OUTPUT_DIR/checkpoint-N (and the final model saved in OUTPUT_DIR, if any) and "
        "rank them by the average avg@n over the selection benchmarks: AIME24 + AIME25 by default (the paper's "
        "model selection), else the --benchmarks given (or --select-by). Ties go to the earliest checkpoint.\n\n"
        "Writes OUTPUT_DIR/eval/<checkpoint>/ (the eval outputs of each model; an evaluation with the same "
        "settings is reused unless --overwrite) and OUTPUT_DIR/eval/selection.{md,json}.\n\nOffline: pass "
        "--benchmarks arithmetic (the default benchmarks are downloaded from the Hub).\n\n"
        "Example (offline): soup-trl select outputs/tiny-arithmetic-soup --benchmarks arithmetic (the tiny recipe "
        "keeps checkpoints when run with --save_strategy steps --save_steps 60; otherwise only its final model is "
        "evaluated)",
        formatter_class=formatter,
    )
    p.add_argument("run_dir", metavar="OUTPUT_DIR", help="A training output_dir holding checkpoint-N directories.")
    p.add_argument(
        "--select-by",
        default=None,
        help="Benchmarks whose mean avg@n ranks the checkpoints (default: every evaluated benchmark).",
    )
    p.add_argument(
        "--tokenizer", default=None, help="Tokenizer for checkpoints that have none (default: OUTPUT_DIR's)."
    )
    p.add_argument("--output-dir", default=None, help="Where to write results (default: OUTPUT_DIR/eval).")
    p.add_argument("--overwrite", action="store_true", help="Re-evaluate checkpoints that already have results.")
    _add_benchmark_args(p, "Default: aime24,aime25 (from the Hub).")
    _add_sampling_args(p)
    _add_backend_args(p)
    p.set_defaults(func=cmd_select)

    p = sub.add_parser(
        "plot",
        help="PNG training curves and entropy / clip ratio by token position (Figure 5) of a run.",
        description="Read RUN_DIR/trainer_state.json (or the newest RUN_DIR/checkpoint-N/trainer_state.json) and "
        "write: training_curves.png (reward, entropy, clip ratio, response length, and SOUP's prefix share and cut "
        "position when logged), reward.png, prefix_vs_continuation.png (clip ratio and entropy of off-policy "
        "prefix vs on-policy continuation tokens, when logged) and position_bins.png (entropy and clip ratio by "
        "relative token position in 10% bins, one line per training phase: the paper's Figure 5).\n\nWorks "
        "offline on any run, e.g. the tiny recipe's: soup-trl plot outputs/tiny-arithmetic-soup",
        formatter_class=formatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="A training output_dir (or a trainer_state.json file).")
    p.add_argument("--output-dir", default=None, help="Where to write the PNGs (default: RUN_DIR/plots).")
    p.add_argument(
        "--phases", type=int, default=3, help="Training phases (lines) of the position-bin plot (default 3: thirds)."
    )
    p.set_defaults(func=cmd_plot)
    return parser


# ----------------------------------------------------------------------------------------------------------------------
# Shared steps
# ----------------------------------------------------------------------------------------------------------------------


def _setup(args) -> None:
    if getattr(args, "no_progress", False):
        os.environ["TQDM_DISABLE"] = "1"
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # math-verify warns that its own timeouts are off (the project's grader enforces one); Hub retries are
    # summarised by our own error message.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    try:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def _check_sampling(args) -> None:
    if args.num_samples < 1:
        raise UserError(f"--num-samples must be >= 1, got {args.num_samples}.")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}.")
    if args.temperature < 0 or not 0 < args.top_p <= 1:
        raise UserError("--temperature must be >= 0 and --top-p in (0, 1].")
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be >= 1, got {args.limit}.")


def _check_models(*models: str | None) -> None:
    """Fail on a missing local model path before benchmarks are downloaded or the tiny model is built."""
    from ..evaluation.backends import BUILTIN_TINY_MODEL, check_model_path

    for model in models:
        if model not in (None, BUILTIN_TINY_MODEL):
            check_model_path(model)


def _benchmark_names(args, default: tuple[str, ...]) -> list[str]:
    from ..evaluation.benchmarks import check_names, split_names

    names = split_names(args.benchmarks) or list(default)
    check_names(names)
    return names


def _default_benchmarks(args) -> tuple[str, ...]:
    from ..evaluation.benchmarks import ARITHMETIC, PAPER_BENCHMARKS

    return (ARITHMETIC,) if args.model is None else PAPER_BENCHMARKS


def _load_benchmarks(args, names: list[str]):
    from ..evaluation.benchmarks import HUB_BENCHMARKS, PromptFormat, load_benchmark

    prompt_format = PromptFormat(args.prompt_template, args.system_prompt, not args.no_chat_template)
    benchmarks = []
    if any(name in HUB_BENCHMARKS for name in names):
        import datasets
        import huggingface_hub

        # one summarising error instead of a warning per retry when the Hub cannot be reached
        huggingface_hub.utils.logging.set_verbosity_error()
        datasets.utils.logging.set_verbosity_error()
    for name in names:
        if name in HUB_BENCHMARKS:
            _log(f"Loading benchmark {name} from the Hub ({HUB_BENCHMARKS[name].hub_id})")
        benchmarks.append(load_benchmark(name, prompt_format, args.problem_field, args.answer_field, args.limit))
    return benchmarks


def _sampling(args, seed_offset: int = 0):
    from ..evaluation.backends import SamplingSettings

    return SamplingSettings(args.temperature, args.top_p, args.top_k, args.seed + seed_offset)


def _eval_settings(args):
    from ..evaluation.runner import EvalSettings

    return EvalSettings(
        num_samples=args.num_samples,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        dtype=args.dtype,
        device=args.device,
        tensor_parallel_size=args.tensor_parallel_size,
        gpu_memory_utilization=args.gpu_memory_utilization,
        max_model_len=args.max_model_len,
    )


def _backend(args, model: str, tokenizer: str | None = None):
    from ..evaluation.backends import check_model_path, load_backend, resolve_backend

    backend = resolve_backend(args.backend)
    check_model_path(model)
    _log(f"Loading {model} ({backend} backend)")
    return load_backend(
        backend,
        model,
        tokenizer_path=tokenizer,
        dtype=args.dtype,
        device=args.device,
        batch_size=args.batch_size,
        seed=args.seed,
        tensor_parallel_size=args.tensor_parallel_size,
        gpu_memory_utilization=args.gpu_memory_utilization,
        max_model_len=args.max_model_len,
    )


def _slug(model: str) -> str:
    path = Path(model.rstrip("/"))
    name = path.name
    if re.match(r"checkpoint-\d+$", name) and path.parent.name:
        name = f"{path.parent.name}_{name}"
    if name.startswith("tiny-addition-"):  # the cached warmed-up tiny model
        name = "tiny-arithmetic"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "model"


def _run_record(args, names: list[str]) -> dict:
    """The settings that determine an evaluation's results (a finished evaluation is reused when they match)."""
    return {
        "benchmarks": names,
        "num_samples": args.num_samples,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k,
        "max_new_tokens": args.max_new_tokens,
        "seed": args.seed,
        "limit": args.limit,
        "prompt_template": args.prompt_template,
        "system_prompt": args.system_prompt,
        "chat_template": not args.no_chat_template,
        "problem_field": args.problem_field,
        "answer_field": args.answer_field,
    }


# ----------------------------------------------------------------------------------------------------------------------
# Commands
# ----------------------------------------------------------------------------------------------------------------------


def cmd_eval(args) -> int:
    _check_sampling(args)
    names = _benchmark_names(args, _default_benchmarks(args))
    _check_models(args.model)
    benchmarks = _load_benchmarks(args, names)
    from ..evaluation.backends import resolve_model
    from ..evaluation.runner import results_table, run_eval

    model = resolve_model(args.model)
    output_dir = Path(args.output_dir or Path("eval_results") / _slug(model))
    backend = _backend(args, model, args.tokenizer)
    try:
        report = run_eval(
            backend,
            benchmarks,
            _eval_settings(args),
            _sampling(args),
            output_dir,
            model,
            _log,
            _run_record(args, names),
        )
    finally:
        backend.close()
    print(results_table(report["benchmarks"], args.num_samples))
    _print_unparseable(report["benchmarks"])
    print(f"\nResults: {output_dir / 'results.json'}\nTable:   {output_dir / 'results.md'}")
    print(f"Samples: {', '.join(str(output_dir / f'{name}.jsonl') for name in report['benchmarks'])}")
    return 0


def _print_unparseable(summaries: dict) -> None:
    for name, s in summaries.items():
        if s["unparseable_answers"]:
            total = s["num_problems"] * s["num_samples"]
            print(
                f"{name}: {s['unparseable_answers']} of {total} answers could not be read by the grader (graded wrong)."
            )
        if s.get("unparseable_gold_problems"):
            print(
                f"{name}: math-verify cannot parse the gold answer of {s['unparseable_gold_problems']} problems; "
                "they are graded by exact string match."
            )


def cmd_relay(args) -> int:
    _check_sampling(args)
    if not 0.0 <= args.ratio < 1.0:
        raise UserError(f"--ratio must be in [0, 1), got {args.ratio}.")
    names = _benchmark_names(args, _default_benchmarks(args))
    _check_models(args.behavior_model, args.model)
    benchmarks = _load_benchmarks(args, names)
    from ..evaluation.backends import resolve_model
    from ..evaluation.plots import plot_pass_at_k_curves, plot_pass_at_k_difference
    from ..evaluation.relay import difference_curves, relay_continue
    from ..evaluation.runner import (
        benchmark_summary,
        grade_problems,
        k_values,
        markdown_table,
        pct,
        sample_problems,
        unique_names,
        write_samples,
    )

    behavior_model, target_model = resolve_model(args.behavior_model), resolve_model(args.model)
    output_dir = Path(args.output_dir or Path("relay_results") / f"{_slug(target_model)}_from_{_slug(behavior_model)}")
    output_dir.mkdir(parents=True, exist_ok=True)
    settings, n = _eval_settings(args), args.num_samples
    out_names = unique_names(benchmarks)

    backend = _backend(args, behavior_model, None)
    try:
        behavior_eos, behavior_vocab = set(backend.eos_token_ids), backend.tokenizer.get_vocab()
        behavior = {}
        for name, b in zip(out_names, benchmarks):
            _log(f"{name}: A samples {len(b.problems)} problems x {n} ({b.source})")
            behavior[name] = sample_problems(
                backend, b, n, settings.budget(b), _sampling(args), f"{name}: A sampling"
            )[1]
            grade_problems(behavior[name], b.reward, f"{name}: grading A")
    finally:
        backend.close()

    backend = _backend(args, target_model, None)
    try:
        if backend.tokenizer.get_vocab() != behavior_vocab:
            raise UserError("relay needs the two models to share a tokenizer (prefixes are token ids); they differ.")
        target, relay = {}, {}
        for name, b in zip(out_names, benchmarks):
            budget = settings.budget(b)
            _log(f"{name}: B samples alone, then continues A's prefixes (ratio {args.ratio})")
            prompt_ids, target[name] = sample_problems(backend, b, n, budget, _sampling(args), f"{name}: B sampling")
            relay[name] = relay_continue(
                backend, prompt_ids, behavior[name], args.ratio, budget, _sampling(args, 1), behavior_eos,
                desc=f"{name}: B continuing",
            )  # fmt: skip
            grade_problems(target[name], b.reward, f"{name}: grading B")
            grade_problems(relay[name], b.reward, f"{name}: grading relay")
    finally:
        backend.close()

    summaries = {"behavior": {}, "target": {}, "relay": {}}
    for name in out_names:
        for sampler, results in (("behavior", behavior), ("target", target), ("relay", relay)):
            summaries[sampler][name] = benchmark_summary(results[name], n)
            write_samples(output_dir / f"{name}.{sampler}.jsonl", results[name])
    diffs = difference_curves(summaries["relay"], summaries["target"])
    report = {
        "behavior_model": behavior_model,
        "model": target_model,
        "ratio": args.ratio,
        "num_samples": n,
        "settings": _run_record(args, names),
        "pass@k": {s: {name: summaries[s][name]["pass@k"] for name in out_names} for s in summaries},
        "avg@n": {s: {name: summaries[s][name]["avg@n"] for name in out_names} for s in summaries},
        "relay_minus_model": diffs,
        "details": summaries,
    }
    (output_dir / "results.json").write_text(json.dumps(report, indent=2) + "\n")

    ks = k_values(n)
    labels = {"behavior": "A alone", "target": "B alone", "relay": f"relay A->B ({args.ratio:g})"}
    rows = []
    for name in out_names:
        for sampler, label in labels.items():
            s = summaries[sampler][name]
            rows.append([name, label, pct(s["avg@n"]), *[pct(s["pass@k"][str(k)]) for k in ks]])
        rows.append([name, "relay - B", "", *[f"{100 * diffs[name][str(k)]:+.1f}" for k in ks]])
    table = markdown_table(["benchmark", "sampler", f"avg@{n}", *[f"pass@{k}" for k in ks]], rows)
    (output_dir / "relay.md").write_text(
        f"# Relay sampling\n\nA (behavior): {behavior_model}\nB: {target_model}\n\nratio {args.ratio}, {n} samples "
        f"per problem, temperature {args.temperature}, top-p {args.top_p}, seed {args.seed}. Scores in %.\n\n{table}\n"
    )
    figure4 = plot_pass_at_k_difference(diffs, str(output_dir / "relay_pass_at_k_difference.png"))
    curves = {name: {labels[s]: summaries[s][name]["pass@k"] for s in labels} for name in out_names}
    figure6 = plot_pass_at_k_curves(curves, str(output_dir / "relay_pass_at_k.png"))
    print(table)
    print(f"\nResults: {output_dir / 'results.json'}\nTable:   {output_dir / 'relay.md'}")
    print(f"Figure 4 (relay minus B): {figure4}\nFigure 6 (pass@k curves): {figure6}")
    return 0


def _model_candidates(run: Path, tokenizer: str | None) -> list[dict]:
    """Checkpoints (by step) and the final model of a run, each with the tokenizer to load it with."""
    from ..evaluation.plots import checkpoint_dirs

    def has_model(path: Path) -> bool:
        return (path / "config.json").is_file() or (path / "adapter_config.json").is_file()

    def has_tokenizer(path: Path) -> bool:
        return (path / "tokenizer_config.json").is_file()

    candidates = [{"name": p.name, "path": p, "step": step} for step, p in checkpoint_dirs(run) if has_model(p)]
    if has_model(run):
        step = math.inf
        state = run / "trainer_state.json"
        if state.is_file():
            try:
                step = json.loads(state.read_text()).get("global_step", math.inf)
            except (json.JSONDecodeError, AttributeError):
                pass
        candidates.append({"name": "final", "path": run, "step": step})
    if not candidates:
        raise UserError(
            f"no model in {run}: no checkpoint-N directory with a saved model (config.json) and no final model. "
            "Train with save_strategy='steps' to keep checkpoints."
        )
    fallback = tokenizer or (str(run) if has_tokenizer(run) else None)
    for c in candidates:
        c["tokenizer"] = None if has_tokenizer(c["path"]) else fallback
        if c["tokenizer"] is None and not has_tokenizer(c["path"]):
            raise UserError(f"{c['path']} has no tokenizer and neither has {run}: pass --tokenizer.")
    return candidates


def cmd_select(args) -> int:
    from ..evaluation.benchmarks import SELECTION_BENCHMARKS, split_names

    _check_sampling(args)
    run = Path(args.run_dir)
    if not run.is_dir():
        raise UserError(f"run directory {run} does not exist." if not run.exists() else f"{run} is not a directory.")
    names = _benchmark_names(args, SELECTION_BENCHMARKS)
    criterion = split_names(args.select_by) or names
    unknown = [c for c in criterion if c not in names]
    if unknown:
        raise UserError(f"--select-by {', '.join(unknown)}: not among the evaluated benchmarks ({', '.join(names)}).")
    candidates = _model_candidates(run, args.tokenizer)
    _log(f"{len(candidates)} models to evaluate: {', '.join(c['name'] for c in candidates)}")
    benchmarks = _load_benchmarks(args, names)
    from ..evaluation.runner import markdown_table, pct, run_eval, unique_names

    out_names = unique_names(benchmarks)
    criterion_names = [out_names[names.index(c)] for c in criterion]
    eval_dir = Path(args.output_dir or run / "eval")
    record = _run_record(args, names)
    rows = []
    for c in candidates:
        target = eval_dir / c["name"]
        existing = target / "results.json"
        report = None
        if existing.is_file() and not args.overwrite:
            previous = json.loads(existing.read_text())
            if previous.get("settings") == record and previous.get("model") == str(c["path"]):
                _log(f"{c['name']}: reusing {existing}")
                report = previous
        if report is None:
            backend = _backend(args, str(c["path"]), c["tokenizer"])
            try:
                report = run_eval(
                    backend, benchmarks, _eval_settings(args), _sampling(args), target, str(c["path"]), _log, record
                )
            finally:
                backend.close()
        scores = {name: report["benchmarks"][name]["avg@n"] for name in out_names}
        score = sum(scores[name] for name in criterion_names) / len(criterion_names)
        rows.append({"name": c["name"], "path": str(c["path"]), "step": c["step"], "avg@n": scores, "score": score})
    best = max(rows, key=lambda r: r["score"])  # max keeps the first of equal scores: the earliest checkpoint
    n = args.num_samples
    score_name = f"mean avg@{n} ({'+'.join(criterion_names)})"
    table = markdown_table(
        ["model", "step", *[f"{name} avg@{n}" for name in out_names], score_name],
        [
            [
                r["name"] + (" *" if r is best else ""),
                str(r["step"]),
                *[pct(r["avg@n"][b]) for b in out_names],
                pct(r["score"]),
            ]
            for r in rows
        ],
    )
    selection = {
        "criterion": criterion_names,
        "num_samples": n,
        "best": best,
        "models": rows,
        "settings": record,
    }
    eval_dir.mkdir(parents=True, exist_ok=True)
    (eval_dir / "selection.json").write_text(json.dumps(selection, indent=2, default=str) + "\n")
    (eval_dir / "selection.md").write_text(
        f"# Checkpoint selection: {run}\n\nScores in %; * marks the best.\n\n{table}\n"
    )
    print(table)
    print(f"\nBest: {best['name']} ({best['path']}), {score_name} = {pct(best['score'])}")
    print(f"Table: {eval_dir / 'selection.md'}\nResults: {eval_dir / 'selection.json'}")
    return 0


def cmd_plot(args) -> int:
    from ..evaluation.plots import plot_run

    if args.phases < 1:
        raise UserError(f"--phases must be >= 1, got {args.phases}.")
    state_path, files = plot_run(args.run_dir, args.output_dir, args.phases)
    print(f"Read {state_path}")
    missing = {
        "prefix_vs_continuation.png": "no soup/prefix or soup/continuation metrics logged",
        "position_bins.png": "no soup/position_bin_* metrics logged",
    }
    for name, reason in missing.items():
        if not any(f.endswith(name) for f in files):
            print(f"Skipped {name}: {reason}")
    print("Wrote:")
    for f in files:
        print(f"  {f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        _setup(args)
        return args.func(args)
    except UserError as e:
        print(f"soup-trl {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"soup-trl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
