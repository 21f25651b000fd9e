"""What padded decoding costs a step's continuation call on the Transformers path, and what compacted decoding and
splitting the call by budget each save.

A step's continuations are one `generate` call: each row stops at its own budget (`soup_trl.soup.continuation.RowBudgets`), but
the call runs until its longest row is done, and finished rows keep computing on padding. With ratio 0.5 most rows
continue about half a completion; a row whose behavior sample ended early has a short prefix and a budget near the
whole length, and holds the call for all of it. This script times, on one model, with `generate` as the trainer calls
it:

- `on-policy`: `rows` fresh completions of `max_new` tokens (what a GRPO step decodes);
- `one call`: the continuations, `long_rows` of them with a 1-token prefix (budget `max_new - 1`), the others with
  `max_new / 2`;
- `split by budget`: the same rows in two calls, short budgets and long budgets;
- `short budgets only`: every row with budget `max_new / 2` (the call without the long rows: what decoding tokens
  alone would cost).

Each scenario runs twice: through `generate`'s own loop (stopped rows decode padding until the longest row is done) and
through `soup_trl.core.generation.compacted_sample` (stopped rows leave the forward batch; the trainers' default,
`compact_generation`), from the same seed, with the same tokens. It reports seconds (median of `--repeats`),
decoding steps, the rows the forward passes computed and decoded tokens, as ratios to `on-policy` through `generate`'s
loop.

    python benchmarks/padded_decoding.py                                     # the step-time benchmark's decode-heavy model
    python benchmarks/padded_decoding.py --model builtin:smollm2-135m-instruct --rows 8 --max-new 64 --long-rows 1
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="path, Hub id or builtin: name (default: the decode-heavy model)")
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--max-new", type=int, default=128)
    parser.add_argument("--long-rows", type=int, default=2, help="rows with a 1-token prefix")
    parser.add_argument("--prompt-tokens", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--continuous-batching", action="store_true",
                        help="also run on-policy and one call through Transformers' continuous batching")
    parser.add_argument("--output-dir", default="outputs/padded_decoding")
    args = parser.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, StoppingCriteriaList

    from soup_trl.core.generation import compacted_generation
    from soup_trl.soup.continuation import RowBudgets

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    path, label = args.model, args.model
    if path is None:
        from step_time import build_decode_heavy_model

        path = build_decode_heavy_model(os.path.join(args.output_dir, "decode_heavy_model"))
        label = "random 4-layer model, EOS rare (step_time.py's decode-heavy)"
    elif path.startswith("builtin:"):
        from soup_trl.toy.builtin import resolve_model

        path = resolve_model(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    forward_rows = [0]

    def count_rows(module, args, kwargs):
        forward_rows[0] += kwargs["input_ids"].size(0)

    model.register_forward_pre_hook(count_rows, with_kwargs=True)
    tokenizer = AutoTokenizer.from_pretrained(path)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    vocab = min(model.config.vocab_size, len(tokenizer))
    suppress = [pad] if pad != tokenizer.eos_token_id else None
    half = args.max_new // 2

    def ids(rows: int, length: int) -> torch.Tensor:
        return torch.randint(3, vocab, (rows, length))

    def call(prompts: torch.Tensor, budgets: list[int], compact: bool) -> tuple[float, int, int, int]:
        config = GenerationConfig(max_new_tokens=max(budgets), do_sample=True, temperature=1.0, pad_token_id=pad,
                                  eos_token_id=tokenizer.eos_token_id, suppress_tokens=suppress)  # fmt: skip
        mask = (prompts != pad).long()
        forward_rows[0] = 0
        start = time.perf_counter()
        with torch.no_grad(), compacted_generation(model) if compact else contextlib.nullcontext():
            out = model.generate(input_ids=prompts, attention_mask=mask, generation_config=config,
                                 stopping_criteria=StoppingCriteriaList([RowBudgets(budgets)]))  # fmt: skip
        seconds = time.perf_counter() - start
        new = out[:, prompts.size(1) :]
        return seconds, new.size(1), forward_rows[0] - prompts.size(0), int((new != pad).sum())

    def continuous_batching_call(prompts: torch.Tensor, budgets: list[int]) -> tuple[float, float, float, int]:
        """The rows as requests of Transformers' continuous-batching manager, each with its own `max_new_tokens`
        (CPU settings: no CUDA graphs, no async batching, a cache sized to the call)."""
        from transformers.generation.configuration_utils import ContinuousBatchingConfig

        config = GenerationConfig(do_sample=True, temperature=1.0, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id,
                                  suppress_tokens=suppress, max_new_tokens=max(budgets))  # fmt: skip
        paging = ContinuousBatchingConfig(page_size=32, num_blocks=256, max_batch_tokens=64, use_cuda_graph=False,
                                          use_async_batching=False)  # fmt: skip
        rows = [[t for t in row if t != pad] for row in prompts.tolist()]
        start = time.perf_counter()
        with model.continuous_batching_context_manager(config, continuous_batching_config=paging, warmup=False,
                                                       timeout=5) as manager:  # fmt: skip
            requests = {manager.add_request(row, max_new_tokens=b) for row, b in zip(rows, budgets)}
            done = {}
            while len(done) < len(requests):
                result = manager.get_result(timeout=1)
                if result is not None and result.is_finished():
                    done[result.request_id] = result
        seconds = time.perf_counter() - start
        return seconds, float("nan"), float("nan"), sum(len(r.generated_tokens) for r in done.values())

    prompt = ids(args.rows, args.prompt_tokens)
    long_prefix = torch.cat([prompt[: args.long_rows], ids(args.long_rows, 1)], dim=1)
    short_prefix = torch.cat([prompt[args.long_rows :], ids(args.rows - args.long_rows, half)], dim=1)
    long_budget, short_budget = args.max_new - 1, args.max_new - half

    def left_pad(parts: list[torch.Tensor]) -> torch.Tensor:
        width = max(p.size(1) for p in parts)
        return torch.cat([torch.nn.functional.pad(p, (width - p.size(1), 0), value=pad) for p in parts])

    scenarios = {
        "on-policy": [(prompt, [args.max_new] * args.rows)],
        "one call": [(left_pad([long_prefix, short_prefix]),
                      [long_budget] * args.long_rows + [short_budget] * (args.rows - args.long_rows))],
        "split by budget": [(short_prefix, [short_budget] * (args.rows - args.long_rows)),
                            (long_prefix, [long_budget] * args.long_rows)],
        "short budgets only": [(left_pad([torch.cat([prompt[: args.long_rows], ids(args.long_rows, half)], dim=1),
                                          short_prefix]), [short_budget] * args.rows)],
    }  # fmt: skip
    loops = {
        "generate": lambda p, b: call(p, b, compact=False),
        "compacted": lambda p, b: call(p, b, compact=True),
        "continuous batching": continuous_batching_call,
    }
    runs = [(name, loop) for name in scenarios for loop in ("generate", "compacted")]
    if args.continuous_batching:
        runs += [("on-policy", "continuous batching"), ("one call", "continuous batching")]
    results = {run: [] for run in runs}
    for repeat in range(args.repeats):
        for name, loop in runs:
            torch.manual_seed(repeat)
            measured = [loops[loop](p, b) for p, b in scenarios[name]]
            results[name, loop].append(tuple(sum(m[i] for m in measured) for i in range(4)))
    base_runs = results["on-policy", "generate"]
    base = statistics.median(r[0] for r in base_runs)
    base_steps, base_rows, base_tokens = (statistics.median(r[i] for r in base_runs) for i in (1, 2, 3))
    print(f"model `{label}`, {args.rows} rows, max_new {args.max_new}, {args.long_rows} row(s) with a 1-token prefix, "
          f"the others with {half}; median of {args.repeats}, CPU, {args.threads or torch.get_num_threads()} thread(s)")  # fmt: skip
    print()
    print("| calls | decoding loop | s | x on-policy | decoding steps | x | forward rows | x | decoded tokens | x |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (name, loop), measured in results.items():
        seconds, steps, rows, tokens = (statistics.median(r[i] for r in measured) for i in range(4))
        counted = "| - | - | - | - |" if math.isnan(steps) else (
            f"| {steps:.0f} | {steps / base_steps:.2f} | {rows:.0f} | {rows / base_rows:.2f} |")
        print(f"| {name} | {loop} | {seconds:.3f} | {seconds / base:.2f} {counted} {tokens:.0f} | "
              f"{tokens / base_tokens:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
