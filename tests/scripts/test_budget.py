"""The GPU memory arithmetic of the paper recipes (`soup_trl/scripts/budget.py`, docs/memory.md): exact on a made-up
model, and every paper recipe's vLLM, logging and checkpoint settings against it."""

import dataclasses

import pytest
import yaml

from soup_trl.scripts.budget import GIB, MODEL_SHAPES, PROMPT_TOKENS, ModelShape, memory_budget, rollout_steps
from soup_trl.scripts.train import RECIPES_DIR

PAPER_RECIPES = sorted(p for p in RECIPES_DIR.glob("*.yaml") if yaml.safe_load(p.read_text())["model_name_or_path"] in MODEL_SHAPES)
GPU_GIB = 80.0


def test_a_made_up_model_by_hand(monkeypatch):
    shape = ModelShape(params=8 * GIB, layers=4, hidden=1024, intermediate=2048, kv_heads=2, head_dim=64, vocab=1000,
                       context=4096)  # fmt: skip
    monkeypatch.setitem(MODEL_SHAPES, "made-up", shape)
    recipe = dict(model_name_or_path="made-up", max_completion_length=3072, per_device_train_batch_size=2,
                  num_generations=4, prompts_per_step=8, soup_behavior_steps=4, vllm_gpu_memory_utilization=0.5)  # fmt: skip
    budget = memory_budget(recipe, gpus=8, gpu_gib=80)
    assert budget.model_length == PROMPT_TOKENS + 3072 == 4096
    assert budget.model_states_gib == 16  # 16 bytes x 8 GiB parameters / 8 GPUs
    assert budget.vllm_gib == 40 and budget.vllm_weights_gib == 16  # bf16 weights
    assert budget.kv_cache_gib == 40 - 16 - 2
    assert shape.kv_bytes_per_token == 2 * 4 * 2 * 64 * 2 == 2048
    assert budget.kv_sequences == int(22 * GIB // (2048 * 4096))
    assert budget.cycle_rows == 4 * 8 * 4 // 8  # T steps of 8 prompts x 4 samples, over 8 GPUs
    layer_inputs = 4 * 2 * 4096 * 1024 * 2
    recomputed = 2 * 4096 * (4 * 1024 + 3 * 2048) * 2
    assert budget.activations_gib == pytest.approx((layer_inputs + recomputed + 2 * 8 * GIB / 4) / GIB)
    assert budget.generation_peak_gib == pytest.approx(1 + 16 + 40)
    assert budget.training_peak_gib == pytest.approx(1 + 16 + budget.activations_gib + 40)  # vLLM awake
    asleep = memory_budget({**recipe, "vllm_enable_sleep_mode": True})
    assert asleep.training_peak_gib == pytest.approx(1 + 16 + budget.activations_gib)
    assert budget.checkpoint_gib == 14 * 8


ROLLOUT_DEFAULTS = {"method": "soup", "soup_behavior_steps": 1, "gradient_accumulation_steps": 1,
                    "steps_per_generation": None, "generation_batch_size": None, "prompts_per_step": None}


@pytest.mark.parametrize(
    ("settings", "steps"),
    [
        ({"soup_behavior_steps": 8}, 8),  # SOUP's cycle
        ({}, 1),  # on-policy DAPO: a rollout batch a step
        ({"generation_batch_size": 4096, "prompts_per_step": 32, "num_generations": 8}, 16),  # the paper's 512 / 32
        ({"generation_batch_size": 256, "per_device_train_batch_size": 64}, 4),  # one process, no prompts_per_step
        ({"steps_per_generation": 8, "gradient_accumulation_steps": 2}, 4),
        ({"method": "m2po", "steps_per_generation": 8}, 1),  # M2PO samples every step
    ],
)
def test_rollout_steps(settings, steps):
    assert rollout_steps(lambda key: {**ROLLOUT_DEFAULTS, **settings}[key]) == steps


@pytest.mark.parametrize("model", ["qwen2.5_math_7b", "r1_distill_qwen_1.5b"])
def test_a_minibatch_twin_samples_its_whole_rollout_batch_at_once(model):
    dapo, twin = (memory_budget(yaml.safe_load((RECIPES_DIR / f"{model}_{name}.yaml").read_text()))
                  for name in ("dapo", "dapo_minibatch"))  # fmt: skip
    assert twin.cycle_rows == 16 * dapo.cycle_rows == 16 * 32 * 8 // 8  # 16 steps of 32 prompts x 8, over 8 GPUs
    assert dataclasses.replace(twin, cycle_rows=dapo.cycle_rows) == dapo  # and nothing else differs


@pytest.mark.parametrize("path", PAPER_RECIPES, ids=lambda p: p.stem)
def test_every_paper_recipe_fits_8_gpus_of_80_gb(path):
    recipe = yaml.safe_load(path.read_text())
    shape = MODEL_SHAPES[recipe["model_name_or_path"]]
    budget = memory_budget(recipe, gpus=8, gpu_gib=GPU_GIB)
    assert recipe["vllm_mode"] == "colocate" and recipe["vllm_enable_sleep_mode"] is True
    # vLLM's context holds the longest prompt and a whole completion, and no more than the model knows
    assert budget.model_length <= recipe["vllm_max_model_length"] <= shape.context
    # both peaks leave a tenth of the GPU for what the estimate does not count (fragmentation, NCCL buffers)
    assert budget.generation_peak_gib <= 0.9 * GPU_GIB and budget.training_peak_gib <= 0.9 * GPU_GIB
    # one optimizer step's rows fit in the KV cache at once; a SOUP cycle's may come in waves
    assert budget.kv_sequences >= recipe["prompts_per_step"] * recipe["num_generations"] / 8
    assert recipe["num_completions_to_print"] <= 8 if recipe.get("log_completions") else True
    assert recipe["save_total_limit"] * budget.checkpoint_gib <= 250  # a few hundred GB of disk, not terabytes


def test_every_paper_model_has_its_shape():
    assert {yaml.safe_load(p.read_text())["model_name_or_path"] for p in PAPER_RECIPES} == set(MODEL_SHAPES)
    assert len(PAPER_RECIPES) == 14
