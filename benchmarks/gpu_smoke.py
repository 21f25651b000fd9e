"""The first run on a GPU: one SOUP cycle at a realistic size, measured phase by phase, and what only a GPU can show.

    python benchmarks/gpu_smoke.py            # one 80 GB GPU, under 8 minutes: a 1.5B Qwen2-shaped model
    python benchmarks/gpu_smoke.py --toy      # the same script at toy size, on CPU (what CI runs) or a GPU

The model has the shape of Qwen2.5-1.5B (28 layers, hidden 1536, 12 heads, 2 KV heads) and its vocabulary size
(151,936), random weights, built here (no download): every row runs to its budget, the worst case. It trains one SOUP
cycle (T = 4, ratio 0.5, 8 prompts x 8 samples per step, 2,048-token completions) in bf16, under DeepSpeed ZeRO-3
(one process), with vLLM colocated with sleep mode, at learning rate 0: the behavior policy and the current policy are
the same weights, so every difference between log-probs of the same tokens is numerical. Printed:

- per phase (behavior call, behavior forward, continuation calls, training: loss forwards and backwards), the
  seconds and the peak GPU memory of the trainer's allocator (vLLM's own memory is in `device used`, read after each
  phase from the device);
- the bf16 noise floor of prefix ratios: |log ratio| between the behavior forward and the loss forward of the same
  weights on prefix tokens (what `soup_refresh_drift` must stay above to mean drift);
- the engine mismatch of each segment (`soup/mismatch/*`: vLLM's log-probs against the trainer's);
- that every continuation the engine returned keeps to its row's own budget;
- that a checkpoint taken in the middle of the cycle restores it: a run resumed from it finishes the cycle with the
  saved behavior samples, without sampling new ones.

Exit status: 0 when every check passes, 1 when one fails, 2 when this machine cannot run it (no CUDA device, or vLLM or
DeepSpeed not installed; `--toy` runs anywhere, on the Transformers path without DeepSpeed on CPU).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import multiprocessing as mp
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

NO_GPU = (
    "gpu_smoke: no CUDA device (torch.cuda.is_available() is False). Run it on a GPU, or `--toy` to run the same "
    "checks at toy size on CPU (CI does)."
)
NO_VLLM = 'gpu_smoke: vLLM is not installed: pip install -e ".[vllm]"'
NO_DEEPSPEED = 'gpu_smoke: DeepSpeed is not installed: pip install -e ".[deepspeed]"'
SHAPES = {  # Qwen2Config fields
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2, vocab_size=151_936),
    "toy": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1, vocab_size=512),
}  # fmt: skip
T = 4
PHASES = ("behavior call", "behavior forward", "continuation calls", "training")
ZERO3 = {
    "zero_optimization": {"stage": 3, "overlap_comm": True, "stage3_gather_16bit_weights_on_model_save": True},
    "bf16": {"enabled": True},
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
}


def build_model(directory: str, shape: str, positions: int) -> str:
    """A randomly initialised Qwen2-shaped model of `SHAPES[shape]`, with the arithmetic tokenizer grown to its
    vocabulary size (so that every sampled token decodes), saved to `directory`."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from soup_trl.toy.tiny_model import build_tokenizer

    fields = SHAPES[shape]
    tokenizer = build_tokenizer()
    tokenizer.add_tokens([f"<r{i}>" for i in range(fields["vocab_size"] - len(tokenizer))])
    config = Qwen2Config(**fields, max_position_embeddings=positions, tie_word_embeddings=False,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16 if shape != "toy" else torch.float32)
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id,
                                               eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@dataclasses.dataclass
class Phases:
    """Seconds and peak allocator memory per phase, and the device's used memory after it."""

    seconds: dict = dataclasses.field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    peak_gib: dict = dataclasses.field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))
    device_gib: dict = dataclasses.field(default_factory=lambda: dict.fromkeys(PHASES, 0.0))

    def timed(self, phase: str, fn):
        import torch

        def wrapper(*args, **kwargs):
            gpu = torch.cuda.is_available()
            if gpu:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            began = time.perf_counter()
            out = fn(*args, **kwargs)
            if gpu:
                torch.cuda.synchronize()
                self.peak_gib[phase] = max(self.peak_gib[phase], torch.cuda.max_memory_allocated() / 2**30)
                free, total = torch.cuda.mem_get_info()
                self.device_gib[phase] = max(self.device_gib[phase], (total - free) / 2**30)
            self.seconds[phase] += time.perf_counter() - began
            return out

        return wrapper


def smoke_config(bench: dict, output_dir: str, **overrides):
    from soup_trl import SOUPConfig

    gpu = bench["gpu"]
    settings = dict(save_strategy="steps", save_steps=2)
    settings.update(overrides)
    return SOUPConfig(
        output_dir=output_dir, per_device_train_batch_size=8 * bench["prompts"], num_generations=8,
        max_completion_length=bench["max_completion_length"], learning_rate=0.0, max_steps=T, temperature=1.0,
        soup_behavior_steps=T, soup_truncation="ratio", soup_prefix_ratio=0.5, logging_steps=1, report_to="none", seed=0, disable_tqdm=True, bf16=gpu, use_cpu=not gpu,
        use_vllm=gpu, vllm_mode="colocate", vllm_enable_sleep_mode=gpu, vllm_gpu_memory_utilization=0.6,
        vllm_max_model_length=bench["max_completion_length"] + 64, vllm_importance_sampling_correction=False,
        deepspeed=ZERO3 if gpu else None, activation_checkpointing=gpu, **settings,
    )  # fmt: skip


def train_cycle(bench: dict) -> dict:
    """Train one cycle, saving a checkpoint in its middle; the measurements, the budget check and the cycle saved."""
    import torch

    from soup_trl import SOUPTrainer
    from soup_trl.soup import behavior
    from soup_trl.testing.rewards import shaped_reward
    from soup_trl.toy import make_arithmetic_dataset

    _distributed_env(bench)
    prompts = make_arithmetic_dataset(1000, seed=0)
    trainer = SOUPTrainer(bench["model"], shaped_reward, args=smoke_config(bench, bench["output_dir"]),
                          train_dataset=prompts)  # fmt: skip
    phases, budgets, over_budget, noise, saved = Phases(), {}, [], [], {}
    pad = trainer.processing_class.pad_token_id
    in_cycle = [False]

    sample_cycle, score_step = trainer._sample_cycle, trainer._score_step

    def sampling(*args, **kwargs):
        in_cycle[0] = True
        try:
            return sample_cycle(*args, **kwargs)
        finally:
            in_cycle[0] = False

    def scoring(cycle, step):
        for r in range(step * cycle.rows_per_step, (step + 1) * cycle.rows_per_step):  # each open row's own budget
            if not cycle.whole[r]:
                k = int(cycle.prefix_lengths[r])
                budgets[tuple(cycle.prompt_ids[r]) + tuple(cycle.completion_ids[r][:k])] = bench["max_completion_length"] - k
        return score_step(cycle, step)

    generate_rows = trainer._generate_rows
    timed_behavior = phases.timed("behavior call", generate_rows)
    timed_continuation = phases.timed("continuation calls", generate_rows)

    def generating(prompt_ids, num_generations):
        if in_cycle[0]:
            return timed_behavior(prompt_ids, num_generations)
        completions, logps = timed_continuation(prompt_ids, num_generations)
        for prompt, completion in zip(prompt_ids, completions):
            budget = budgets.get(tuple(prompt))
            written = sum(token != pad for token in completion)  # Transformers pads rows it stopped
            if budget is not None and written > budget:
                over_budget.append((written, budget))
        return completions, logps

    after_loss = trainer._after_loss

    def measuring(loss, inputs, forward):
        old = forward.inputs.get("old_per_token_logps")
        prefix = (inputs["soup_prefix_mask"] * inputs["completion_mask"]).bool()
        if old is not None and prefix.any():  # learning rate 0: the behavior policy is the current one
            noise.append((forward.logps.detach() - old).abs()[prefix].float())
        return after_loss(loss, inputs, forward)

    process_state = trainer._process_state

    def saving():
        state = process_state()
        if "soup_cycle" in state:
            saved["cycle"] = copy.deepcopy(state["soup_cycle"])
        return state

    trainer._sample_cycle, trainer._score_step, trainer._generate_rows = sampling, scoring, generating
    trainer._after_loss, trainer._process_state = measuring, saving
    trainer.compute_loss = phases.timed("training", trainer.compute_loss)
    trainer.accelerator.backward = phases.timed("training", trainer.accelerator.backward)
    lockstep = behavior.lockstep_logps
    behavior.lockstep_logps = phases.timed("behavior forward", lockstep)
    began = time.perf_counter()
    try:
        trainer.train()
    finally:
        behavior.lockstep_logps = lockstep
    seconds = time.perf_counter() - began
    history = trainer.state.log_history
    mismatch = {key: max(h[key] for h in history if key in h) for key in
                {k for h in history for k in h if k.startswith("soup/mismatch/")}}  # fmt: skip
    diffs = torch.cat(noise) if noise else torch.zeros(0)
    return {
        "seconds": seconds, "phases": dataclasses.asdict(phases), "mismatch": mismatch, "saved_cycle": saved.get("cycle"),
        "budget_check": ("every continuation within its row's budget",
                         f"{len(budgets)} spliced rows, {len(over_budget)} over", bool(budgets) and not over_budget),
        "noise": {"tokens": diffs.numel(), "mean": diffs.mean().item() if diffs.numel() else float("nan"),
                  "p99": diffs.quantile(0.99).item() if diffs.numel() else float("nan"),
                  "max": diffs.max().item() if diffs.numel() else float("nan")},
    }  # fmt: skip


def resume_cycle(bench: dict) -> tuple[dict | None, int]:
    """A new trainer resumed from the run's mid-cycle checkpoint: its restored cycle, and how many behavior samplings
    it made to finish the cycle."""
    from soup_trl import SOUPTrainer
    from soup_trl.soup.checkpoint import cycle_state
    from soup_trl.testing.rewards import shaped_reward
    from soup_trl.toy import make_arithmetic_dataset

    _distributed_env(bench)
    prompts = make_arithmetic_dataset(1000, seed=0)
    trainer = SOUPTrainer(bench["model"], shaped_reward,
                          args=smoke_config(bench, bench["output_dir"] + "-resumed", save_strategy="no"),
                          train_dataset=prompts)  # fmt: skip
    restored, samplings = {}, [0]
    load, sample_cycle = trainer._restore_process_state, trainer._sample_cycle

    def restoring(found):
        load(found)
        restored["cycle"] = None if trainer._cycle is None else cycle_state(trainer._cycle, trainer._drift.sums)

    def sampling(*args, **kwargs):
        samplings[0] += 1
        return sample_cycle(*args, **kwargs)

    trainer._restore_process_state, trainer._sample_cycle = restoring, sampling
    trainer.train(resume_from_checkpoint=os.path.join(bench["output_dir"], "checkpoint-2"))
    return restored.get("cycle"), samplings[0]


def _distributed_env(bench: dict) -> None:
    if bench["gpu"]:  # vLLM colocate and DeepSpeed run under torch.distributed: one process here
        for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                           "MASTER_PORT": str(bench["port"]), "ACCELERATE_USE_DEEPSPEED": "true"}.items():  # fmt: skip
            os.environ.setdefault(key, value)


def run(bench: dict) -> dict:
    """`train_cycle`, then `resume_cycle`, each in a process of its own on a GPU (vLLM and DeepSpeed free the GPU when
    their process ends), in this one on CPU; the measurements and the checks."""
    result = _isolated(train_cycle, bench)
    restored, samplings = _isolated(resume_cycle, bench)
    same = _same_cycle(result.pop("saved_cycle"), restored)
    result["checks"] = [
        result.pop("budget_check"),
        ("a mid-cycle checkpoint restores the cycle",
         f"behavior samples equal: {same}, new behavior samplings after resuming: {samplings}", same and samplings == 0),
    ]  # fmt: skip
    return result


def _isolated(fn, bench: dict):
    if not bench["gpu"]:
        return fn(bench)
    with ProcessPoolExecutor(max_workers=1, mp_context=mp.get_context("spawn")) as pool:
        return pool.submit(fn, bench).result()


def _same_cycle(saved: dict | None, restored: dict | None) -> bool:
    if saved is None or restored is None:
        return False
    keys = ("prompt_ids", "completion_ids", "whole", "rows_per_step", "first_step")
    tensors = ("prefix_lengths", "behavior_logps")
    return all(saved[k] == restored[k] for k in keys) and all(
        saved[k].cpu().equal(restored[k].cpu()) for k in tensors
    )


def report(bench: dict, result: dict) -> tuple[str, bool]:
    phases = result["phases"]
    lines = [
        f"model {bench['shape']} (Qwen2-shaped, random), {bench['prompts']} prompts x 8 samples per step, "
        f"max_completion_length {bench['max_completion_length']}, T = {T}, "
        + ("bf16, ZeRO-3, vLLM colocate with sleep mode" if bench["gpu"] else "float32 on CPU, Transformers")
        + f": {result['seconds']:.0f} s for the cycle",
        "",
        "| phase | seconds | peak allocated (GiB) | device used after (GiB) |",
        "|---|---|---|---|",
    ]
    for phase in PHASES:
        lines.append(f"| {phase} | {phases['seconds'][phase]:.1f} | {phases['peak_gib'][phase]:.1f} | "
                     f"{phases['device_gib'][phase]:.1f} |")  # fmt: skip
    noise = result["noise"]
    lines += ["", f"noise floor of prefix |log ratio| (learning rate 0, {noise['tokens']} prefix tokens): mean "
                  f"{noise['mean']:.2e}, 99th percentile {noise['p99']:.2e}, max {noise['max']:.2e}"]  # fmt: skip
    for key, value in sorted(result["mismatch"].items()):
        lines.append(f"{key}: {value:.2e} (largest over the logged steps)")
    passed = True
    for label, detail, ok in result["checks"]:
        lines.append(f"{'PASS' if ok else 'FAIL'}  {label}: {detail}")
        passed &= ok
    return "\n".join(lines), passed


def unavailable(toy: bool) -> str | None:
    """Why this machine cannot run the smoke run, or None."""
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        return None if toy else NO_GPU
    if importlib.util.find_spec("vllm") is None:
        return NO_VLLM
    if importlib.util.find_spec("deepspeed") is None:
        return NO_DEEPSPEED
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--toy", action="store_true", help="A toy model and short completions (CPU or GPU).")
    parser.add_argument("--prompts", type=int, default=None, help="Prompts per step, x 8 samples (8; toy: 2).")
    parser.add_argument("--max-completion-length", type=int, default=None, help="2048 (toy: 16).")
    parser.add_argument("--output-dir", default=None, help="Default: a temporary directory.")
    args = parser.parse_args(argv)
    reason = unavailable(args.toy)
    if reason:
        print(reason, file=sys.stderr)
        return 2
    import torch

    shape = "toy" if args.toy else "1.5b"
    length = args.max_completion_length or (16 if args.toy else 2048)
    with tempfile.TemporaryDirectory(prefix="soup-gpu-smoke-") as scratch:
        bench = {
            "shape": shape, "model": build_model(os.path.join(scratch, "model"), shape, length + 64),
            "output_dir": os.path.join(args.output_dir or scratch, "run"), "prompts": args.prompts or (2 if args.toy else 8),
            "max_completion_length": length, "gpu": torch.cuda.is_available(), "port": 29531,
        }  # fmt: skip
        text, passed = report(bench, run(bench))
    print(text)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
