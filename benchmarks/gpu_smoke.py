"""First run on a machine with a GPU: a few SOUP and GRPO steps with vLLM colocate, and SOUP's contract checked there.

    python benchmarks/gpu_smoke.py                  # a random small Qwen2-style model, built locally (no network)
    python benchmarks/gpu_smoke.py --model PATH     # a local model directory instead

Each trainer runs in its own process (one vLLM engine each, `use_vllm=True, vllm_mode="colocate"`) for two SOUP
cycles (T=4, ratio truncation 0.5) or as many GRPO steps, vLLM's mismatch correction off as in the paper recipes;
the second cycle is timed. Printed: seconds and decoded tokens per optimizer step, as ratios to GRPO, and the checks
that are cheap to repeat on the GPU, against fresh float32 models rebuilt on CPU from parameter snapshots
(soup_trl/testing/contract.py, shared with the contract tests):

- prefix denominators: the old log-probs of prefix tokens are the behavior policy's;
- continuation denominators: those of continuation tokens are the current policy's (as the loss used them);
- continuation sampler: vLLM sampled each continuation with the current weights (synced before the step);
- groups: every scored step holds whole groups, contiguous, advantages centred.

Designed to finish in under 5 minutes on one GPU, most of it two vLLM engine starts. Exit status: 0 when every check
passes, 1 when one fails, 2 when this machine cannot run it (no CUDA device, or vLLM not installed). The checks keep
about a dozen parameter snapshots: with `--model`, use a model of at most a few hundred million parameters, or
`--no-checks` to time a larger one.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

NO_GPU = (
    "gpu_smoke: no CUDA device (torch.cuda.is_available() is False). This script checks SOUP with vLLM colocate on a "
    "GPU. On CPU the same contract is checked by tests/integration/test_contract.py, and with vLLM's CPU build by "
    "tests/integration/test_vllm.py (docs/vllm.md)."
)
NO_VLLM = 'gpu_smoke: vLLM is not installed: pip install -e ".[vllm]"'
SETTINGS = {"grpo": {}, "soup": {"soup_behavior_steps": 4, "soup_truncation": "ratio", "soup_prefix_ratio": 0.5}}
PREFIX_TOLERANCE = 1e-3  # trainer log-probs on GPU against a float32 CPU recomputation


def build_smoke_model(directory: str, positions: int) -> str:
    """A randomly initialised Qwen2-style model (~3 M parameters, head size 64) with the arithmetic tokenizer."""
    from soup_trl.toy.tiny_model import build_tiny_model

    return build_tiny_model(directory, hidden_size=256, num_layers=4, num_heads=4, num_kv_heads=2,
                            intermediate_size=768, max_position_embeddings=positions)  # fmt: skip


def run_setting(name: str, bench: dict) -> dict:
    """Train one setting; returns its step times, decoded tokens, losses and, for SOUP, the checks."""
    import torch
    from transformers import PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from soup_trl import SOUPConfig, SOUPTrainer
    from soup_trl.testing.contract import (  # the contract checks shared with the test suite
        ContractRecorder,
        broken_groups,
        continuation_denominators,
        continuation_sampler,
        prefix_denominators,
    )
    from soup_trl.testing.rewards import shaped_reward
    from soup_trl.testing.snapshots import SnapshotPolicy
    from soup_trl.toy import make_arithmetic_dataset

    if bench["use_vllm"]:  # vLLM colocate runs under torch.distributed: one process here
        for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                           "MASTER_PORT": str(bench["port"])}.items():  # fmt: skip
            os.environ.setdefault(key, value)
    cycle = SETTINGS["soup"]["soup_behavior_steps"]
    common = dict(
        output_dir=os.path.join(bench["output_dir"], name), per_device_train_batch_size=bench["batch"],
        num_generations=bench["num_generations"], max_completion_length=bench["max_completion_length"],
        learning_rate=bench["learning_rate"], max_steps=2 * cycle, temperature=1.0, epsilon_high=0.28,
        logging_steps=1, save_strategy="no", report_to="none", seed=0, disable_tqdm=True, bf16=False,
        use_cpu=not bench["use_vllm"], use_vllm=bench["use_vllm"], vllm_mode="colocate",
        vllm_gpu_memory_utilization=0.3, vllm_max_model_length=bench["max_completion_length"] + 64,
        vllm_importance_sampling_correction=False,  # as in the paper recipes (docs/scaling-out.md)
    )  # fmt: skip
    prompts = make_arithmetic_dataset(1000, seed=0)
    if name == "grpo":
        trainer = GRPOTrainer(bench["model"], shaped_reward, args=GRPOConfig(**common), train_dataset=prompts)
    else:
        args = SOUPConfig(**common, **SETTINGS[name])
        trainer = SOUPTrainer(bench["model"], shaped_reward, args=args, train_dataset=prompts)

    decoded = [0]
    if bench["use_vllm"]:
        generate = trainer.vllm_generation.generate

        def counting_generate(*args, **kwargs):
            out = generate(*args, **kwargs)
            decoded[0] += sum(len(c) for c in out[1])
            return out

        trainer.vllm_generation.generate = counting_generate
    checking = bench["checks"] and name == "soup"
    recorder = ContractRecorder(trainer) if checking else None

    class StepClock(TrainerCallback):
        def __init__(self):
            self.times, self.tokens = [], []

        def on_step_begin(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.start, self.start_tokens = time.perf_counter(), decoded[0]

        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.start)
            self.tokens.append(decoded[0] - self.start_tokens)

    clock = StepClock()
    trainer.add_callback(clock)
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    timed = slice(cycle, None)  # the second cycle: engine and kernels warm
    result = {
        "seconds_per_step": sum(clock.times[timed]) / len(clock.times[timed]),
        "tokens_per_step": sum(clock.tokens[timed]) / len(clock.tokens[timed]),
        "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
        "checks": [],
    }
    if checking:
        def policy(params):  # float32 on CPU, whatever dtype the checkpoint has
            return SnapshotPolicy(bench["model"], params, temperature=1.0, wrap=lambda model: model.float())

        records, rows = recorder.records, bench["check_rows"]
        for label, measure in [("prefix denominators = behavior policy", prefix_denominators),
                               ("continuation denominators = current policy", continuation_denominators),
                               ("continuation sampler = current weights", continuation_sampler)]:  # fmt: skip
            if measure is continuation_sampler and not bench["use_vllm"]:
                continue
            m = measure(records, policy, max_rows=rows)
            if measure is continuation_sampler:  # vLLM may sample in lower precision: nearer the current policy
                passed = m.error < m.other / 2
            else:
                passed = m.error <= PREFIX_TOLERANCE and m.other > 10 * m.error
            detail = f"max |diff| {m.error:.1e} (the other policy: {m.other:.1e}), {m.rows} rows"
            result["checks"].append((label, detail, passed and m.rows > 0))
        broken = broken_groups(records, bench["num_generations"])
        result["checks"].append(("groups whole", f"{broken} broken groups in {len(records['steps'])} steps",
                                 broken == 0))  # fmt: skip
        calls = [len(s["calls"]) for s in records["steps"] if s["step"] > 0]
        if bench["use_vllm"]:
            result["checks"].append(("one vLLM call per spliced step", f"calls per step {calls}", set(calls) == {1}))
    return result


def measure(name: str, bench: dict) -> dict:
    """`run_setting` in a fresh process: each vLLM engine gets the GPU to itself and frees it on exit."""
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(run_setting, name, bench).result()


def report(results: dict[str, dict]) -> tuple[str, bool]:
    grpo = results["grpo"]
    lines = ["| setting | s/step | x GRPO | tokens decoded/step | x GRPO |", "|---|---|---|---|---|"]
    for name, r in results.items():
        time_ratio = r["seconds_per_step"] / grpo["seconds_per_step"]
        token_ratio = r["tokens_per_step"] / grpo["tokens_per_step"] if grpo["tokens_per_step"] else float("nan")
        lines.append(f"| {name} | {r['seconds_per_step']:.3f} | {time_ratio:.2f} | {r['tokens_per_step']:.0f} | "
                     f"{token_ratio:.2f} |")  # fmt: skip
    lines.append("")
    passed = True
    for label, detail, ok in [check for r in results.values() for check in r["checks"]]:
        lines.append(f"{'PASS' if ok else 'FAIL'}  {label}: {detail}")
        passed &= ok
    return "\n".join(lines), passed


def unavailable() -> str | None:
    """Why this machine cannot run the smoke test, or None."""
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        return NO_GPU
    if importlib.util.find_spec("vllm") is None:
        return NO_VLLM
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="Local model directory (default: a random small Qwen2-style model).")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="Default 1e-3 for the random model (its policies must move), 1e-5 with --model.")  # fmt: skip
    parser.add_argument("--max-completion-length", type=int, default=256)
    parser.add_argument("--prompts", type=int, default=16, help="Prompts per step (x 8 samples).")
    parser.add_argument("--check-rows", type=int, default=8, help="Rows per micro-batch the checks recompute.")
    parser.add_argument("--no-checks", action="store_true", help="Time only (no parameter snapshots).")
    parser.add_argument("--output-dir", default=None, help="Default: a temporary directory.")
    args = parser.parse_args(argv)
    reason = unavailable()
    if reason:
        print(reason, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="soup-gpu-smoke-") as scratch:
        model = args.model or build_smoke_model(os.path.join(scratch, "model"), args.max_completion_length + 64)
        bench = {
            "model": model, "output_dir": args.output_dir or scratch, "use_vllm": True, "num_generations": 8,
            "batch": 8 * args.prompts, "max_completion_length": args.max_completion_length,
            "learning_rate": args.learning_rate or (1e-5 if args.model else 1e-3), "checks": not args.no_checks,
            "check_rows": args.check_rows, "port": 29531,
        }  # fmt: skip
        started = time.perf_counter()
        results = {name: measure(name, bench) for name in SETTINGS}
        table, passed = report(results)
    print(f"model {args.model or 'random Qwen2-style (built locally)'}, {args.prompts} prompts x 8 samples per step, "
          f"max_completion_length {args.max_completion_length}, vLLM colocate, {time.perf_counter() - started:.0f} s\n")
    print(table)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
