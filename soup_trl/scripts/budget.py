"""GPU memory of a recipe on its GPUs: the arithmetic the paper recipes' vLLM and checkpoint settings follow.

A colocated run holds, on each GPU, the trainer's ZeRO-3 share of the model states and vLLM's engine (its weights and
KV cache). `memory_budget` adds them up for a recipe from the shapes of its model (`MODEL_SHAPES`, read from the
models' configs) and the recipe's settings, in GiB, at two moments:

- generation: the trainer's model states, and vLLM at `vllm_gpu_memory_utilization` of the GPU;
- training: the model states, the activations of one micro-batch with activation checkpointing (each layer's input
  kept, one layer's internals recomputed at a time; the LM head is TRL's fused, tiled one, which never holds the
  (rows, length, vocabulary) logits), one layer's gathered weights, and vLLM's memory unless it sleeps
  (`vllm_enable_sleep_mode`: weights and KV cache released between generations).

It also gives the KV cache's room in sequences of the recipe's longest row, the rows one GPU samples at the start of a
SOUP cycle (T steps' worth: they queue for the cache in waves when they do not fit) or of a rollout batch of DAPO with
mini-batch updates (`rollout_steps`), the context vLLM needs, and the size of one checkpoint (bf16 weights, fp32
master weights and Adam moments). Estimates, with the constants below; the first GPU run measures the real peaks
(`benchmarks/gpu_smoke.py`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

GIB = 2**30
ZERO3_BYTES_PER_PARAM = 16  # bf16 weights and gradients (2 + 2), fp32 master weights and Adam's two moments (4 + 8)
CHECKPOINT_BYTES_PER_PARAM = 14  # bf16 weights (2) and the fp32 optimizer states (12)
VLLM_OVERHEAD_GIB = 2.0  # CUDA graphs, sampler buffers and activations of vLLM's forward (vLLM profiles its own)
CUDA_CONTEXT_GIB = 1.0  # per process
MLP_BUFFERS = 3  # up and gate projections and their product, kept while one layer is recomputed


@dataclass(frozen=True)
class ModelShape:
    """What the arithmetic needs of a model's config."""

    params: float
    layers: int
    hidden: int
    intermediate: int
    kv_heads: int
    head_dim: int
    vocab: int
    context: int  # max_position_embeddings

    @property
    def kv_bytes_per_token(self) -> int:
        """Keys and values of every layer, bf16."""
        return 2 * self.layers * self.kv_heads * self.head_dim * 2


MODEL_SHAPES = {  # from the models' config.json on the Hub
    "Qwen/Qwen2.5-Math-7B": ModelShape(7.62e9, 28, 3584, 18944, 4, 128, 152064, 4096),
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B": ModelShape(1.78e9, 28, 1536, 8960, 2, 128, 151936, 131072),
}
#: The longest prompt the recipes' datasets hold, in tokens (templated), with room to spare: DAPO-Math-17k's and
#: OpenR1-Math-46k-8192's problems are a few hundred tokens.
PROMPT_TOKENS = 1024


@dataclass(frozen=True)
class Budget:
    gpus: int
    gpu_gib: float
    model_states_gib: float  # the trainer's ZeRO-3 share, every moment
    vllm_gib: float  # vLLM's share of the GPU while it generates
    vllm_weights_gib: float
    kv_cache_gib: float
    kv_sequences: int  # rows of the longest length the KV cache holds at once
    cycle_rows: int  # rows one GPU samples at once: a SOUP cycle's, or a rollout batch of mini-batch updates
    activations_gib: float  # one micro-batch, activation checkpointing
    generation_peak_gib: float
    training_peak_gib: float
    model_length: int  # the context vLLM needs: the longest prompt and a whole completion
    checkpoint_gib: float  # one checkpoint, every process's files together


def rollout_steps(value: Callable[[str], Any]) -> int:
    """Optimizer steps one rollout batch (one generation call of every process) serves, from a recipe's settings
    (`value(key)`: the recipe's, or the default): SOUP's T (`soup_behavior_steps`); at T = 1, TRL's
    `generation_batch_size` over the rows of a step (`prompts_per_step` x `num_generations`, else
    `per_device_train_batch_size` x `gradient_accumulation_steps` on one process) or `steps_per_generation` over
    `gradient_accumulation_steps`, which is DAPO with mini-batch updates when it is above 1; 1 for the other methods
    (M2PO and LUFFY sample every step)."""
    if value("method") != "soup":
        return 1
    if value("soup_behavior_steps") > 1:
        return value("soup_behavior_steps")
    accumulation = value("gradient_accumulation_steps")
    if value("generation_batch_size") is not None:
        prompts = value("prompts_per_step")
        rows = prompts * value("num_generations") if prompts else value("per_device_train_batch_size") * accumulation
        return value("generation_batch_size") // rows
    return (value("steps_per_generation") or accumulation) // accumulation


#: What `memory_budget` takes for a key a recipe leaves out
RECIPE_DEFAULTS = {"method": "soup", "soup_behavior_steps": 1, "gradient_accumulation_steps": 1}


def memory_budget(recipe: dict, gpus: int = 8, gpu_gib: float = 80.0) -> Budget:
    """The memory of `recipe` (a paper recipe's keys, as the YAML holds them) on `gpus` GPUs of `gpu_gib` each."""
    shape = MODEL_SHAPES[recipe["model_name_or_path"]]
    tensor_parallel = recipe.get("vllm_tensor_parallel_size", 1)
    length = PROMPT_TOKENS + recipe["max_completion_length"]
    rows = recipe["per_device_train_batch_size"]
    states = ZERO3_BYTES_PER_PARAM * shape.params / gpus / GIB
    layer_inputs = shape.layers * rows * length * shape.hidden * 2
    recomputed = rows * length * (4 * shape.hidden + MLP_BUFFERS * shape.intermediate) * 2
    gathered_layer = 2 * shape.params / shape.layers
    activations = (layer_inputs + recomputed + gathered_layer) / GIB
    vllm = recipe.get("vllm_gpu_memory_utilization", 0.3) * gpu_gib
    weights = 2 * shape.params / tensor_parallel / GIB
    kv_cache = max(0.0, vllm - weights - VLLM_OVERHEAD_GIB)
    kv_sequences = int(kv_cache * GIB * tensor_parallel // (shape.kv_bytes_per_token * length))
    prompts_per_step = recipe.get("prompts_per_step") or recipe["per_device_train_batch_size"] // recipe["num_generations"]
    steps = rollout_steps(lambda key: recipe.get(key, RECIPE_DEFAULTS.get(key)))
    cycle_rows = math.ceil(steps * prompts_per_step * recipe["num_generations"] / gpus)
    sleeps = recipe.get("vllm_enable_sleep_mode", False)
    return Budget(
        gpus=gpus,
        gpu_gib=gpu_gib,
        model_states_gib=states,
        vllm_gib=vllm,
        vllm_weights_gib=weights,
        kv_cache_gib=kv_cache,
        kv_sequences=kv_sequences,
        cycle_rows=cycle_rows,
        activations_gib=activations,
        generation_peak_gib=CUDA_CONTEXT_GIB + states + vllm,
        training_peak_gib=CUDA_CONTEXT_GIB + states + activations + (0.0 if sleeps else vllm),
        model_length=length,
        checkpoint_gib=CHECKPOINT_BYTES_PER_PARAM * shape.params / GIB,
    )
