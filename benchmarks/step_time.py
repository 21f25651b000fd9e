"""Step time, decoded tokens and peak memory of SOUPTrainer settings and the baselines, as ratios to GRPOTrainer.

Every setting trains the same model on the same prompts with the same seed and lengths, in its own fresh process
(so peak memory is its own), in an interleaved order repeated `--repeats` times; the table reports medians, the spread
of the seconds over the repeats (half the range, in % of the median) and ratios to GRPOTrainer (on-policy DAPO,
`generate`'s decoding loop) and to `soup_t1` (T = 1, GRPO on the compacted decoding loop every trainer of the package
uses) measured in the same run. Timing covers whole SOUP cycles: the first `--warmup-steps` optimizer steps are
excluded, the next `--steps` are measured. Peak memory: on a GPU the peak allocated; on a CPU the resident set's
high-water mark during training above its size when training started (Linux; the growth of `ru_maxrss` elsewhere).

Decoded tokens are the tokens the sampler produced: each row up to its EOS, its budget or the length limit. Decode
iterations are a step's critical path: a generation call lasts as many decoding steps as its longest row, so they are
the longest row of each call, summed over the step's calls (on a GPU a decoding step of many rows costs little more
than one of a few, so the iterations, not the tokens, set the step's generation time). The padding token is suppressed
from sampling in every setting, so that a row's trailing padding marks where it stopped.

Workloads:
- `toy` (default): the built-in warmed-up tiny model on the addition task (completions of 2-14 tokens).
- `decode-heavy`: a randomly initialised 4-layer model built locally whose LM head almost never picks the EOS, so
  completions run to `--max-completion-length` (128) as long reasoning does; 32 completions per step. LUFFY's traces
  are random digit strings as long as a completion.
- `smollm2`: a real model, SmolLM2-135M-Instruct (`builtin:smollm2-135m-instruct`), on the package's English word
  problems in its chat template, rewarded by math-verify (`accuracy_reward`), LUFFY's traces the worked solutions;
  the smollm2_* recipes' settings: 8 completions per step (2 prompts x 4), up to 64 new tokens, the top 4 decoder
  layers trained, T=4 for SOUP (M2PO 4 steps stale), one measured cycle after one warm-up cycle. Beside the table it
  times a plain `model.generate` of one step's prompts with the same sampling settings: the tokens/s this CPU decodes
  at, and what share of each setting's step its decoding is.

`soup_history` is in its steady state (every measured step's prompts trained on before) when `--prompts` is at most
the warm-up steps' prompts: 128 for the toy, 64 for decode-heavy, 8 for smollm2.

    python benchmarks/step_time.py --repeats 2 --prompts 128                   # tiny CPU model, a few minutes
    python benchmarks/step_time.py --workload decode-heavy --repeats 3 --prompts 64
    python benchmarks/step_time.py --workload smollm2 --repeats 1 --threads 2 --prompts 8  # a real model, ~30 min
    python benchmarks/step_time.py --model Qwen/Qwen2.5-Math-1.5B --use-vllm --bf16 \\
        --max-completion-length 1024 --per-device-batch 64 --steps 16 --threads 0
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import statistics
import sys
import time

from comparison.host import resident_kib  # benchmarks/ is the script's directory, first on sys.path

SETTINGS = {
    "grpo": {"trainer": "grpo"},
    # T=1 with generate's own decoding loop, as GRPOTrainer decodes; every other setting of the package decodes with
    # the compacted loop (`compact_generation`, the default): `soup_t1` is GRPO on that loop
    "soup_t1_generate": {"soup_behavior_steps": 1, "compact_generation": False},
    "soup_t1": {"soup_behavior_steps": 1},
    "soup_ratio0.5_t8": {"soup_behavior_steps": 8, "soup_truncation": "ratio", "soup_prefix_ratio": 0.5},
    "soup_entropy_t16": {"soup_behavior_steps": 16, "soup_truncation": "entropy", "soup_entropy_top_k": 32},
    "soup_budget0.25_t8": {"soup_behavior_steps": 8, "soup_truncation": "prefix_budget", "soup_prefix_budget": 0.25},
    # prefixes from the rollouts each prompt was last trained on: steady state once every prompt has history
    # (`--prompts` at most the warm-up steps' prompts, so that every measured step's prompts have been trained on;
    # an age limit of 2 epochs serves every return)
    "soup_history": {"soup_behavior_steps": 1, "soup_behavior_source": "history", "soup_truncation": "ratio",
                     "soup_prefix_ratio": 0.5, "soup_history_max_epochs": 2.0},
    "m2po": {"trainer": "m2po", "m2po_staleness": 8},
    "luffy": {"trainer": "luffy", "luffy_num_traces": 1, "luffy_trace_field": "trace", "remove_unused_columns": False},
}
REAL_MODEL_SETTINGS = {  # the smollm2 workload: one cycle is 4 steps (each step is seconds of CPU, not milliseconds)
    "grpo": {"trainer": "grpo"},
    "soup_t1_generate": {"soup_behavior_steps": 1, "compact_generation": False},
    "soup_t1": {"soup_behavior_steps": 1},
    "soup_ratio0.5_t4": {"soup_behavior_steps": 4, "soup_truncation": "ratio", "soup_prefix_ratio": 0.5},
    "soup_entropy_t4": {"soup_behavior_steps": 4, "soup_truncation": "entropy", "soup_entropy_top_k": 8},
    "soup_budget0.25_t4": {"soup_behavior_steps": 4, "soup_truncation": "prefix_budget", "soup_prefix_budget": 0.25},
    "soup_history": SETTINGS["soup_history"],
    "m2po": {"trainer": "m2po", "m2po_staleness": 4},
    "luffy": {"trainer": "luffy", "luffy_num_traces": 1, "luffy_trace_field": "trace", "remove_unused_columns": False},
}


def settings_for(workload: str) -> dict[str, dict]:
    """The settings a workload measures (by name): the real model's cycles are shorter."""
    return REAL_MODEL_SETTINGS if workload == "smollm2" else SETTINGS

WORKLOADS = {
    "toy": {},
    "decode-heavy": {"max_completion_length": 128, "per_device_batch": 32, "steps": 16},
    "smollm2": {"max_completion_length": 64, "per_device_batch": 8, "num_generations": 4, "steps": 4,
                "warmup_steps": 4, "learning_rate": 1e-5},  # the smollm2_* recipes' settings
}
DECODE_HEAVY_LM_HEAD_SCALE = 20.0  # sharp random next-token distributions; with the EOS row at 0 the EOS is rare


def build_decode_heavy_model(save_dir: str) -> str:
    """A seeded random 4-layer Qwen2 model on the task's tokenizer whose completions run to the length limit."""
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    from soup_trl.toy import build_tokenizer

    tokenizer = build_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=96, intermediate_size=288, num_hidden_layers=4, num_attention_heads=3,
        num_key_value_heads=3, max_position_embeddings=512, tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        model.lm_head.weight.mul_(DECODE_HEAVY_LM_HEAD_SCALE)
        model.lm_head.weight[tokenizer.eos_token_id] = 0.0
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(save_dir)
    tokenizer.save_pretrained(save_dir)
    return save_dir


def training_prompts(bench: dict):
    """The workload's prompts, with a `trace` column for LUFFY (a correct scratchpad, or random digits)."""
    import random

    from soup_trl.toy import make_arithmetic_dataset

    if bench["workload"] == "smollm2":
        from soup_trl.toy.word_problems import make_word_problem_dataset

        problems = make_word_problem_dataset(min(bench["prompts"], 2000), seed=bench["seed"], with_target=True)
        return problems.rename_column("completion", "trace")
    prompts = make_arithmetic_dataset(bench["prompts"], seed=bench["seed"], with_target=True)
    if bench["workload"] == "toy":
        return prompts.rename_column("completion", "trace")
    rng = random.Random(bench["seed"])
    length = bench["max_completion_length"] - 1  # one token per digit, then the EOS
    traces = ["".join(rng.choice("0123456789") for _ in range(length)) for _ in range(len(prompts))]
    return prompts.remove_columns("completion").add_column("trace", traces)


def decoded_tokens(completion_ids: list[list[int]], eos_id: int, pad_id: int) -> int:
    """Tokens the sampler produced: each row up to its first EOS (included), else its non-padding tokens."""
    return sum(row_tokens(completion_ids, eos_id, pad_id))


def row_tokens(completion_ids: list[list[int]], eos_id: int, pad_id: int) -> list[int]:
    """Per row, the tokens the sampler produced (as `decoded_tokens` counts them)."""
    return [row.index(eos_id) + 1 if eos_id in row else sum(t != pad_id for t in row) for row in completion_ids]


def call_cost(completion_ids: list[list[int]], eos_id: int, pad_id: int) -> tuple[int, int]:
    """One generation call's (decoded tokens, decode iterations): the call lasts as many decoding steps as its
    longest row."""
    rows = row_tokens(completion_ids, eos_id, pad_id)
    return sum(rows), max(rows, default=0)


def reset_peak_resident() -> bool:
    """Reset the resident set's high-water mark to its current size (Linux `clear_refs`); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        return False
    return resident_kib("VmHWM") is not None


def run_setting(name: str, options: dict, bench: dict, queue) -> None:
    """Child process: train one setting, report seconds per step, decoded tokens per step and peak memory."""
    import torch
    from transformers import PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from soup_trl import LUFFYConfig, LUFFYTrainer, M2POConfig, M2POTrainer, SOUPConfig, SOUPTrainer
    from soup_trl.rewards import accuracy_reward, arithmetic_reward

    if bench["threads"]:
        torch.set_num_threads(bench["threads"])
    decoded, iterations = [0], [0]
    generate = GRPOTrainer._generate_single_turn

    def counting_generate(self, *args, **kwargs):  # counts every token any trainer decodes
        completion_ids, logprobs = generate(self, *args, **kwargs)
        tokenizer = self.processing_class
        tokens, steps = call_cost(completion_ids, tokenizer.eos_token_id, tokenizer.pad_token_id)
        decoded[0] += tokens
        iterations[0] += steps
        return completion_ids, logprobs

    GRPOTrainer._generate_single_turn = counting_generate

    class StepClock(TrainerCallback):
        def __init__(self):
            self.times, self.tokens, self.iterations = [], [], []

        def on_step_begin(self, args, state, control, **kwargs):
            self.start, self.start_tokens, self.start_iterations = time.perf_counter(), decoded[0], iterations[0]

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self.start)
            self.tokens.append(decoded[0] - self.start_tokens)
            self.iterations.append(iterations[0] - self.start_iterations)

    common = dict(
        output_dir=os.path.join(bench["output_dir"], name),
        per_device_train_batch_size=bench["per_device_batch"],
        num_generations=bench["num_generations"],
        max_completion_length=bench["max_completion_length"],
        learning_rate=bench["learning_rate"],
        # M2PO samples nothing in its last m2po_staleness steps (no step would train on them): run past the window
        max_steps=bench["warmup_steps"] + bench["steps"] + options.get("m2po_staleness", 0),
        epsilon_high=0.28,
        logging_steps=10**6,
        save_strategy="no",
        report_to="none",
        seed=bench["seed"],
        use_cpu=not torch.cuda.is_available(),
        bf16=bench["bf16"],
        use_vllm=bench["use_vllm"],
        vllm_mode=bench["vllm_mode"],
        disable_tqdm=True,
        generation_kwargs={"suppress_tokens": [bench["pad_token_id"]]} if bench["suppress_padding"] else None,
    )
    prompts = training_prompts(bench)
    options = dict(options)
    kind = options.pop("trainer", "soup")
    trainer_cls, config_cls = {
        "grpo": (GRPOTrainer, GRPOConfig),
        "soup": (SOUPTrainer, SOUPConfig),
        "m2po": (M2POTrainer, M2POConfig),
        "luffy": (LUFFYTrainer, LUFFYConfig),
    }[kind]
    if bench["workload"] == "smollm2":  # 16 rows of <= 128 new tokens fit in memory: no recomputation in backward
        from soup_trl.core.compat import no_activation_checkpointing

        common.update(no_activation_checkpointing())
    args = config_cls(**common, **options)
    reward = accuracy_reward if bench["workload"] == "smollm2" else arithmetic_reward
    trainer = trainer_cls(bench["model"], reward, args=args, train_dataset=prompts)
    if bench["workload"] == "smollm2":  # as the recipes train it (trainable_top_layers: 4)
        from soup_trl.core.freezing import train_top_layers_only

        train_top_layers_only(trainer.model, 4)
    clock = StepClock()
    trainer.add_callback(clock)
    trainer.remove_callback(PrinterCallback)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    rss_before, peak_reset = resident_kib("VmRSS"), reset_peak_resident()
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    trainer.train()
    if torch.cuda.is_available():
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    elif peak_reset:  # the resident set's high-water mark during training, above its size when training started
        peak_mb = (resident_kib("VmHWM") - rss_before) / 1024
    else:  # growth of the process's peak resident set (hidden if an earlier peak of the process was higher)
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - maxrss_before) / 1024
    measured = slice(bench["warmup_steps"], bench["warmup_steps"] + bench["steps"])
    queue.put(
        {
            "seconds_per_step": sum(clock.times[measured]) / bench["steps"],
            "tokens_per_step": sum(clock.tokens[measured]) / bench["steps"],
            "iterations_per_step": sum(clock.iterations[measured]) / bench["steps"],
            "peak_memory_mb": peak_mb,
        }
    )


def run_plain_generate(bench: dict, queue) -> None:
    """Child process: one step's prompts through a plain `model.generate` (sampling as the trainers sample, KV cache,
    no trainer), the reference for how fast this CPU decodes; reports decoded tokens and seconds."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if bench["threads"]:
        torch.set_num_threads(bench["threads"])
    tokenizer = AutoTokenizer.from_pretrained(bench["model"], padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(bench["model"]).eval()
    prompts = training_prompts(bench)["prompt"][: bench["per_device_batch"] // bench["num_generations"]]
    texts = [p for p in prompts for _ in range(bench["num_generations"])]
    if isinstance(texts[0], list):  # chat messages: the chat template, as GRPOTrainer applies it
        texts = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in texts]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(bench["seed"])
    with torch.no_grad():
        model.generate(**batch, do_sample=True, max_new_tokens=4, pad_token_id=tokenizer.pad_token_id)  # warm-up
        start = time.perf_counter()
        out = model.generate(**batch, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                             max_new_tokens=bench["max_completion_length"], pad_token_id=tokenizer.pad_token_id)
        seconds = time.perf_counter() - start
    completions = out[:, batch["input_ids"].size(1) :].tolist()
    queue.put({"seconds": seconds, "tokens": decoded_tokens(completions, tokenizer.eos_token_id, tokenizer.pad_token_id)})


def measure(name: str, bench: dict) -> dict:
    context = mp.get_context("spawn")
    queue = context.Queue()
    if name == "plain_generate":
        process = context.Process(target=run_plain_generate, args=(bench, queue))
    else:
        options = settings_for(bench["workload"])[name]
        process = context.Process(target=run_setting, args=(name, options, bench, queue))
    process.start()
    result = queue.get()
    process.join()
    if process.exitcode:
        raise RuntimeError(f"setting {name} failed with exit code {process.exitcode}")
    return result


def table(results: dict[str, list[dict]], bench: dict, plain: list[dict] | None = None) -> str:
    medians = {
        name: {key: statistics.median(r[key] for r in runs) for key in runs[0]} for name, runs in results.items()
    }
    base = medians["grpo"]
    same_loop = medians.get("soup_t1")  # GRPO on the compacted decoding loop every other setting of the package uses
    lines = [
        f"workload `{bench['workload']}`, model `{bench['model_label']}`, {bench['per_device_batch']} completions/step "
        f"({bench['per_device_batch'] // bench['num_generations']} prompts x {bench['num_generations']}), "
        f"max_completion_length {bench['max_completion_length']}, "
        f"{min(bench['prompts'], 2000) if bench['workload'] == 'smollm2' else bench['prompts']} distinct prompts, "
        f"{bench['steps']} measured steps after "
        f"{bench['warmup_steps']} warm-up steps, median of {bench['repeats']} interleaved runs, "
        f"{'vLLM' if bench['use_vllm'] else 'transformers'} generation, {bench['device']}",
        "",
        "| setting | s/step | spread | x GRPO | x T=1 | tokens decoded/step | x GRPO | decode iterations/step | x GRPO "
        "| peak memory MB | x GRPO |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rate = None
    if plain:  # decoding alone, at the plain loop's rate
        rate = statistics.median(p["tokens"] / p["seconds"] for p in plain)
        lines[2] += " decoding at the plain rate, s/step | share of the step |"
        lines[3] += "---|---|"
    for name, m in medians.items():
        ratio = {k: m[k] / base[k] if base[k] else float("nan") for k in m}
        to_t1 = f"{m['seconds_per_step'] / same_loop['seconds_per_step']:.3f}" if same_loop else "-"
        times = [r["seconds_per_step"] for r in results[name]]
        spread = f"±{50 * (max(times) - min(times)) / m['seconds_per_step']:.0f}%" if len(times) > 1 else "-"
        line = (
            f"| {name} | {m['seconds_per_step']:.3f} | {spread} | {ratio['seconds_per_step']:.3f} | {to_t1} | "
            f"{m['tokens_per_step']:.0f} | {ratio['tokens_per_step']:.2f} | {m['iterations_per_step']:.0f} | "
            f"{ratio['iterations_per_step']:.2f} | {m['peak_memory_mb']:.0f} | {ratio['peak_memory_mb']:.2f} |"
        )
        if rate:
            decode = m["tokens_per_step"] / rate
            line += f" {decode:.2f} | {decode / m['seconds_per_step']:.0%} |"
        lines.append(line)
    if rate:
        tokens = statistics.median(p["tokens"] for p in plain)
        lines += ["", f"Plain `model.generate` of one step's {bench['per_device_batch']} rows (same sampling, KV cache, "
                      f"no trainer): {tokens:.0f} tokens in {statistics.median(p['seconds'] for p in plain):.2f} s, "
                      f"{rate:.0f} tokens/s (median of {len(plain)})."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", choices=list(WORKLOADS), default="toy", help="see the module docstring")
    parser.add_argument("--model", default=None, help="model path or Hub id (default: the workload's model)")
    parser.add_argument("--settings", default=None, help=f"comma-separated (default: all of the workload's): toy and "
                        f"decode-heavy {list(SETTINGS)}, smollm2 {list(REAL_MODEL_SETTINGS)}")
    parser.add_argument("--steps", type=int, default=None, help="measured optimizer steps (whole cycles: 16; smollm2: 4)")
    parser.add_argument("--warmup-steps", type=int, default=None, help="default 16; smollm2: 4")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--per-device-batch", type=int, default=None, help="toy: 64, decode-heavy: 32")
    parser.add_argument("--num-generations", type=int, default=None, help="default 8; smollm2: 4")
    parser.add_argument("--max-completion-length", type=int, default=None, help="toy: 24, decode-heavy: 128")
    parser.add_argument("--learning-rate", type=float, default=None, help="default 1e-4; smollm2: 1e-5")
    parser.add_argument("--prompts", type=int, default=20_000,
                        help="distinct training prompts (smollm2: at most 2000); the soup_history row is in its steady "
                        "state when the warm-up steps cover them all: toy 16 steps x 8 prompts = 128, decode-heavy "
                        "16 x 4 = 64, smollm2 4 x 2 = 8")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (0: leave torch's default)")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--use-vllm", action="store_true")
    parser.add_argument("--vllm-mode", default="colocate")
    parser.add_argument("--output-dir", default="outputs/step_time")
    parser.add_argument("--json", default=None, help="also write the raw measurements here")
    args = parser.parse_args(argv)
    preset = {"steps": 16, "warmup_steps": 16, "per_device_batch": 64, "max_completion_length": 24,
              "num_generations": 8, "learning_rate": 1e-4, "settings": ",".join(settings_for(args.workload)),
              **WORKLOADS[args.workload]}
    for key, value in preset.items():
        if getattr(args, key) is None:
            setattr(args, key, value)

    names = args.settings.split(",")
    valid = settings_for(args.workload)
    unknown = [n for n in names if n not in valid]
    if unknown:
        parser.error(f"unknown settings {unknown} for workload {args.workload}; valid: {list(valid)}")
    if "grpo" not in names:
        names.insert(0, "grpo")
    model, label = args.model, args.model
    if model is None and args.workload == "toy":
        from soup_trl.toy import ensure_tiny_base_model

        model, label = ensure_tiny_base_model(), "builtin tiny model"
    elif model is None and args.workload == "smollm2":
        from soup_trl.toy.builtin import BUILTIN_SMOLLM2, resolve_model

        model, label = resolve_model(BUILTIN_SMOLLM2), "SmolLM2-135M-Instruct (builtin)"
    elif model is None:
        model = build_decode_heavy_model(os.path.join(args.output_dir, "decode_heavy_model"))
        label = "random 4-layer model, EOS rare"
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)

    bench = {
        **vars(args),
        "model": model,
        "model_label": label,
        "pad_token_id": tokenizer.pad_token_id,
        # a model whose padding token is its EOS keeps it: a row stopped by its budget then counts one token more
        "suppress_padding": tokenizer.pad_token_id not in (None, tokenizer.eos_token_id),
        "device": "CUDA" if torch.cuda.is_available() else f"CPU, {args.threads or torch.get_num_threads()} thread(s)",
    }
    results: dict[str, list[dict]] = {name: [] for name in names}
    for repeat in range(args.repeats):
        for name in names:
            print(f"[{repeat + 1}/{args.repeats}] {name} ...", file=sys.stderr, flush=True)
            results[name].append(measure(name, bench))
    plain = []
    if args.workload == "smollm2":
        for repeat in range(args.repeats):
            print(f"[{repeat + 1}/{args.repeats}] plain generate ...", file=sys.stderr, flush=True)
            plain.append(measure("plain_generate", bench))
    print(table(results, bench, plain))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"bench": {k: v for k, v in bench.items()}, "results": results, "plain": plain}, f, indent=2)


if __name__ == "__main__":
    main()
