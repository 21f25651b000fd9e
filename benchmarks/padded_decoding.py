"""What padded decoding costs a step's continuation call on the Transformers path, and whether splitting the call by
budget pays.

A step's continuations are one `generate` call: each row stops at its own budget (`soup_trl.budgets.RowBudgets`), but
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

It reports seconds (median of `--repeats`), decoding steps and decoded tokens, as ratios to `on-policy`.

    python benchmarks/padded_decoding.py                                     # the step-time benchmark's decode-heavy model
    python benchmarks/padded_decoding.py --model builtin:smollm2-135m-instruct --rows 8 --max-new 64 --long-rows 1
"""

from __future__ import annotations

import argparse
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
    parser.add_argument("--output-dir", default="outputs/padded_decoding")
    args = parser.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, StoppingCriteriaList

    from soup_trl.budgets import RowBudgets

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
    tokenizer = AutoTokenizer.from_pretrained(path)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    vocab = min(model.config.vocab_size, len(tokenizer))
    suppress = [pad] if pad != tokenizer.eos_token_id else None
    half = args.max_new // 2

    def ids(rows: int, length: int) -> torch.Tensor:
        return torch.randint(3, vocab, (rows, length))

    def call(prompts: torch.Tensor, budgets: list[int]) -> tuple[float, int, int]:
        config = GenerationConfig(max_new_tokens=max(budgets), do_sample=True, temperature=1.0, pad_token_id=pad,
                                  eos_token_id=tokenizer.eos_token_id, suppress_tokens=suppress)  # fmt: skip
        start = time.perf_counter()
        with torch.no_grad():
            out = model.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts), generation_config=config,
                                 stopping_criteria=StoppingCriteriaList([RowBudgets(budgets)]))  # fmt: skip
        seconds = time.perf_counter() - start
        new = out[:, prompts.size(1) :]
        return seconds, new.size(1), int((new != pad).sum())

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
    results = {name: [] for name in scenarios}
    for _ in range(args.repeats):
        for name, calls in scenarios.items():
            measured = [call(p, b) for p, b in calls]
            results[name].append(tuple(sum(m[i] for m in measured) for i in range(3)))
    base = statistics.median(r[0] for r in results["on-policy"])
    base_steps, base_tokens = results["on-policy"][0][1], statistics.median(r[2] for r in results["on-policy"])
    print(f"model `{label}`, {args.rows} rows, max_new {args.max_new}, {args.long_rows} row(s) with a 1-token prefix, "
          f"the others with {half}; median of {args.repeats}, CPU, {args.threads or torch.get_num_threads()} thread(s)")  # fmt: skip
    print()
    print("| calls | s | x on-policy | decoding steps | x | decoded tokens | x |")
    print("|---|---|---|---|---|---|---|")
    for name, runs in results.items():
        seconds = statistics.median(r[0] for r in runs)
        steps, tokens = runs[0][1], statistics.median(r[2] for r in runs)
        print(f"| {name} | {seconds:.3f} | {seconds / base:.2f} | {steps} | {steps / base_steps:.2f} | {tokens:.0f} | "
              f"{tokens / base_tokens:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
