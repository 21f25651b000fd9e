"""SOUP against on-policy DAPO, DAPO with dynamic sampling, M2PO and LUFFY on the chained-addition task, over seeds;
and SOUP against DAPO on a real language model (`--task smollm2`).

    python benchmarks/compare_methods.py                        # every method x 5 seeds -> outputs/compare-methods/
    python benchmarks/compare_methods.py --task smollm2 --docs docs/real-model.md   # SmolLM2-135M-Instruct, word problems
    python benchmarks/compare_methods.py --sweep sensitivity    # SOUP's ratio and T, 5 seeds -> outputs/sensitivity/
    python benchmarks/compare_methods.py --sweep history --docs docs/history.md   # history-seeded prefixes, 4 epochs
    python benchmarks/compare_methods.py --sweep beyond --docs docs/beyond.md     # drift-aware cut, adaptive refresh
    python benchmarks/compare_methods.py --sweep control --docs docs/results-cpu.md   # the paper's Figure 5 settings
    python benchmarks/compare_methods.py --task smollm2 --sweep control         # the same at T = 4 on SmolLM2
    python benchmarks/compare_methods.py --sweep claims --docs docs/claims.md --readme README.md   # the paper's claims
    python benchmarks/compare_methods.py --task smollm2 --sweep claims --docs docs/claims.md   # the same on SmolLM2
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

The command is this file; the comparison itself is the package beside it, `benchmarks/comparison/`: `variants` (the
variants of each sweep, the sizes, the tasks), `runs` (a run's argv, the process that trains and evaluates it,
launching and resuming runs, reading their results), `statistics` (mean and t-interval, paired differences, verdicts),
`summary` (the per-variant summary of a sweep), `claims` (the paper's claims, one paired statistic each), `reports`
(tables, plots, results files, the docs' marked sections) and `host` (the machine, memory). A run is evaluated on its
task's held-out benchmark of `soup-trl eval` (`chain`, `word_problems`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from comparison.claims import evaluate_claims, readme_line
from comparison.reports import fill_docs, fill_page, headline, write_results
from comparison.runs import (
    ROOT,
    build_base_model,
    evaluate_base_model,
    load_results,
    record_invocation,
    run_all,
    run_one,
)
from comparison.summary import add_provenance, summarize
from comparison.variants import SWEEP_OTHERS, SWEEPS, TASKS


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sweep", choices=SWEEPS, default="methods",
                        help="methods (default), sensitivity, history (several epochs over 200 prompts), beyond "
                        "(drift-aware cut, adaptive refresh), control (the paper's Figure 5: DAPO, DAPO with "
                        "mini-batch updates, SOUP) or claims (the paper's claims, one paired statistic each: "
                        "docs/claims.md)")
    parser.add_argument("--task", choices=list(TASKS), default="chain", help="chain (default: the tiny model on "
                        "chained addition) or smollm2 (SmolLM2-135M-Instruct on word problems; methods, control "
                        "and claims sweeps)")
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
    if args.readme is not None and (args.sweep, args.task) not in (("methods", "chain"), ("claims", "chain")):
        parser.error("--readme takes the chain task's methods sweep's headline table or its claims sweep's line; "
                     "drop --readme")
    task = TASKS[args.task]
    if args.sweep != "methods" and args.sweep not in task.sweeps:
        parser.error(f"--task {args.task} has the sweeps methods, {', '.join(task.sweeps)}; not {args.sweep}")

    scale = task.quick if args.quick else task.full_scale(args.sweep)
    scale = dataclasses.replace(scale, seeds=args.seeds or scale.seeds, steps=args.steps or scale.steps)
    variants = task.sweep_variants(args.sweep)
    if args.only:
        names = [v.name for v in variants]
        unknown = sorted(set(args.only.split(",")) - set(names))
        if unknown:
            parser.error(f"--only: unknown variant(s) {', '.join(unknown)}; the {args.sweep} sweep has {', '.join(names)}")
        variants = [v for v in variants if v.name in args.only.split(",")]
    out = args.out or ROOT / "outputs" / task.out_dir(args.sweep)
    out.mkdir(parents=True, exist_ok=True)

    start = time.monotonic()
    base = build_base_model(scale)  # built once here, not by two runs at a time
    scale = dataclasses.replace(scale, base_model=base)
    base_eval = evaluate_base_model(scale, out)
    trained = run_all(variants, scale, out, args.jobs)
    invocations = record_invocation(out, sys.argv[1:] if argv is None else argv, trained, time.monotonic() - start)
    summary = summarize(variants, scale, out, SWEEP_OTHERS.get(args.sweep, ()))
    command = " ".join(["python benchmarks/compare_methods.py", *(argv if argv is not None else sys.argv[1:])])
    add_provenance(summary, json.loads(base_eval.read_text()), command, args.jobs, invocations)
    if args.sweep == "claims":
        summary["claims"] = evaluate_claims(load_results(variants, scale, out))
    body, files = write_results(summary, out, args.sweep, args.quick)
    print(body)
    if args.docs is not None:
        section = task.doc_section(args.sweep)
        fill_page(args.docs, section, body, files)
        print(f"Filled the '{section}' section of {args.docs}")
    if args.readme is not None and args.sweep == "claims":
        page = f"docs/{args.docs.name}" if args.docs is not None else "docs/claims.md"
        fill_docs(args.readme, "claims-readme", readme_line(summary["claims"], scale.seeds, task.name, page))
        print(f"Filled the 'claims-readme' section of {args.readme}")
    elif args.readme is not None:
        fill_docs(args.readme, "headline", headline(summary))
        print(f"Filled the 'headline' section of {args.readme}")
    print(f"Results: {out / 'results.json'}, {out / 'results.md'}, plots in {out}")


if __name__ == "__main__":
    main()
