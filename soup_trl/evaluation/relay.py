"""Relay sampling at inference (the paper's section 5.1, Figure 4 and appendix B).

A behavior model A samples n full answers per problem. Each answer is cut with SOUP's length-ratio rule, exactly as
the trainer cuts behavior samples (`soup_trl.soup.truncation`): the prefix keeps the first round(len * ratio) tokens, len
counting the tokens before the EOS (Python's round: halves go to even), so the EOS is never kept, and at least one
token of the completion budget is left. Model B then continues every prompt + prefix once, within the remaining
budget, and the relay sample is prefix + continuation (token level). B alone samples n answers for the same
problems; pass@k of relay sampling minus pass@k of B is the curve of Figure 4.

`run_relay` is the `soup-trl relay` command: it samples with A, then with B (one model in memory at a time), grades,
and writes the results, the samples and the figures.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..core.errors import UserError
from ..soup.continuation import continuation_budgets, splice
from ..soup.truncation import TruncationInputs, clamp_prefix_lengths, content_lengths, ratio_truncation
from ..toy.builtin import resolve_model
from .arguments import (
    BackendArguments,
    BenchmarkArguments,
    ModelArguments,
    OutputArguments,
    RelayArguments,
    SamplingArguments,
    run_record,
)
from .backends import check_model_path, load_backend
from .outputs import claim_output_dir, model_slug, write_results
from .runner import (
    ProblemResult,
    Sample,
    benchmark_summary,
    grade_problems,
    k_values,
    markdown_table,
    pct,
    sample_problems,
    unique_names,
    write_samples,
)

SAMPLERS = ("behavior", "target", "relay")


def relay_prefix_lengths(completions: list[list[int]], eos_token_ids, ratio: float, max_new_tokens: int) -> list[int]:
    """Prefix length kept from each behavior completion: the trainer's 'ratio' truncation, clamped the same way."""
    if not completions:
        return []
    width = max(1, max(len(c) for c in completions))
    ids = torch.zeros(len(completions), width, dtype=torch.long)
    mask = torch.zeros(len(completions), width, dtype=torch.long)
    for row, c in enumerate(completions):
        ids[row, : len(c)] = torch.tensor(c, dtype=torch.long)
        mask[row, : len(c)] = 1
    lengths = content_lengths(ids, mask, sorted(eos_token_ids))
    proposal = ratio_truncation(TruncationInputs(ids, mask, lengths), prefix_ratio=ratio)
    return clamp_prefix_lengths(proposal, lengths, max_new_tokens).tolist()


def relay_continue(
    backend,
    prompt_ids: list[list[int]],
    behavior: list[ProblemResult],
    ratio: float,
    max_new_tokens: int,
    sampling,
    behavior_eos_ids=(),
    desc: str = "relay: continuing",
) -> list[ProblemResult]:
    """B (`backend`) continues every behavior sample of every problem from prompt + prefix; returns relay samples.

    `behavior_eos_ids` are the behavior model's EOS ids (the prefix never keeps one of them or of B's). Each relay
    sample records its prefix length and the behavior completion it came from (`ProblemResult.extra`).
    """
    eos_ids = set(backend.eos_token_ids) | set(behavior_eos_ids)
    rows, budgets, prefixes, where = [], [], [], []
    for p, (ids, result) in enumerate(zip(prompt_ids, behavior)):
        completions = [s.token_ids for s in result.samples]
        lengths = relay_prefix_lengths(completions, eos_ids, ratio, max_new_tokens)
        for s, (completion, k) in enumerate(zip(completions, lengths)):
            prefixes.append(completion[:k])
            rows.append(list(ids) + completion[:k])
            where.append((p, s))
        budgets.extend(continuation_budgets(lengths, max_new_tokens))
    continuations = [c[0] for c in backend.generate(rows, 1, budgets, sampling, desc=desc)]
    spliced = splice(prefixes, continuations, budgets)

    relay = [ProblemResult(r.id, r.problem, r.gold, [None] * len(r.samples), [{}] * len(r.samples)) for r in behavior]
    for (p, s), ids, prefix in zip(where, spliced, prefixes):
        behavior_sample = behavior[p].samples[s]
        relay[p].samples[s] = Sample(ids, backend.decode(ids), backend.ends_with_eos(ids))
        relay[p].extra[s] = {
            "prefix_tokens": len(prefix),
            "behavior_tokens": len(behavior_sample.token_ids),
            "prefix": backend.decode(prefix),
            "behavior_completion": behavior_sample.text,
            "behavior_reward": behavior_sample.grade.reward if behavior_sample.grade else None,
        }
    return relay


def difference_curves(relay: dict[str, dict], target: dict[str, dict]) -> dict[str, dict[str, float]]:
    """pass@k(relay) - pass@k(B) per benchmark and k."""
    return {
        name: {k: relay[name]["pass@k"][k] - target[name]["pass@k"][k] for k in relay[name]["pass@k"]}
        for name in relay
    }


@dataclasses.dataclass
class RelayRun:
    report: dict[str, Any]
    table: str  # markdown: avg@n and pass@k of A alone, B alone and relay, and relay - B, per benchmark
    output_dir: Path
    figure4: str  # relay minus B against k
    figure6: str  # pass@k curves of the three samplers


def run_relay(
    relay: RelayArguments,
    model: ModelArguments,
    benchmarks: BenchmarkArguments,
    sampling: SamplingArguments,
    backend: BackendArguments,
    output: OutputArguments,
    log: Callable[[str], None] = print,
) -> RelayRun:
    """The `relay` command: A samples, B samples alone and continues A's prefixes; everything graded and written."""
    from .plots import plot_pass_at_k_curves, plot_pass_at_k_difference

    names = benchmarks.names(model.default_benchmarks())
    for path in (relay.behavior_model, model.model):
        check_model_path(path)  # before benchmarks are downloaded or the tiny model is built
    loaded = benchmarks.load(names, log)
    behavior_model, target_model = resolve_model(relay.behavior_model), resolve_model(model.model)
    parent = Path("relay_results") / f"{model_slug(target_model)}_from_{model_slug(behavior_model)}"
    output_dir = claim_output_dir(output.output_dir, parent, output.overwrite)
    n, out_names = sampling.num_samples, unique_names([b.name for b in loaded])
    results: dict[str, dict[str, list[ProblemResult]]] = {sampler: {} for sampler in SAMPLERS}

    engine = load_backend(backend, behavior_model, model.tokenizer, sampling.seed, log)
    try:
        behavior_eos, behavior_vocab = set(engine.eos_token_ids), engine.tokenizer.get_vocab()
        for name, b in zip(out_names, loaded):
            log(f"{name}: A samples {len(b.problems)} problems x {n} ({b.source})")
            _, results["behavior"][name] = sample_problems(
                engine, b, n, sampling.budget(b), sampling, f"{name}: A sampling"
            )
            grade_problems(results["behavior"][name], b.reward, f"{name}: grading A")
    finally:
        engine.close()

    engine = load_backend(backend, target_model, model.tokenizer, sampling.seed, log)
    continuing = dataclasses.replace(sampling, seed=sampling.seed + 1)
    try:
        if engine.tokenizer.get_vocab() != behavior_vocab:
            raise UserError("relay needs the two models to share a tokenizer (prefixes are token ids); they differ.")
        for name, b in zip(out_names, loaded):
            budget = sampling.budget(b)
            log(f"{name}: B samples alone, then continues A's prefixes (ratio {relay.ratio})")
            prompt_ids, results["target"][name] = sample_problems(
                engine, b, n, budget, sampling, f"{name}: B sampling"
            )
            results["relay"][name] = relay_continue(
                engine, prompt_ids, results["behavior"][name], relay.ratio, budget, continuing, behavior_eos,
                desc=f"{name}: B continuing",
            )  # fmt: skip
            grade_problems(results["target"][name], b.reward, f"{name}: grading B")
            grade_problems(results["relay"][name], b.reward, f"{name}: grading relay")
    finally:
        engine.close()

    summaries = {s: {name: benchmark_summary(results[s][name], n) for name in out_names} for s in SAMPLERS}
    files = []
    for sampler in SAMPLERS:
        for name in out_names:
            files.append(f"{name}.{sampler}.jsonl")
            write_samples(output_dir / files[-1], results[sampler][name])
    diffs = difference_curves(summaries["relay"], summaries["target"])
    report = {
        "behavior_model": behavior_model,
        "model": target_model,
        "ratio": relay.ratio,
        "num_samples": n,
        "settings": run_record(relay, model, benchmarks, sampling, backend, output),
        "pass@k": {s: {name: summaries[s][name]["pass@k"] for name in out_names} for s in SAMPLERS},
        "avg@n": {s: {name: summaries[s][name]["avg@n"] for name in out_names} for s in SAMPLERS},
        "relay_minus_model": diffs,
        "details": summaries,
    }

    ks = k_values(n)
    labels = {"behavior": "A alone", "target": "B alone", "relay": f"relay A->B ({relay.ratio:g})"}
    rows = []
    for name in out_names:
        for sampler, label in labels.items():
            s = summaries[sampler][name]
            rows.append([name, label, pct(s["avg@n"]), *[pct(s["pass@k"][str(k)]) for k in ks]])
        rows.append([name, "relay - B", "", *[f"{100 * diffs[name][str(k)]:+.1f}" for k in ks]])
    table = markdown_table(["benchmark", "sampler", f"avg@{n}", *[f"pass@{k}" for k in ks]], rows)
    (output_dir / "relay.md").write_text(
        f"# Relay sampling\n\nA (behavior): {behavior_model}\nB: {target_model}\n\nratio {relay.ratio}, {n} samples "
        f"per problem, temperature {sampling.temperature}, top-p {sampling.top_p}, seed {sampling.seed}. Scores in "
        f"%.\n\n{table}\n"
    )
    figure4 = plot_pass_at_k_difference(diffs, str(output_dir / "relay_pass_at_k_difference.png"))
    curves = {name: {labels[s]: summaries[s][name]["pass@k"] for s in labels} for name in out_names}
    figure6 = plot_pass_at_k_curves(curves, str(output_dir / "relay_pass_at_k.png"))
    files += ["relay.md", Path(figure4).name, Path(figure6).name]
    write_results(output_dir, report, files)
    return RelayRun(report, table, output_dir, figure4, figure6)
