"""M2POConfig: its checks, each error naming the field, and the M2PO recipes as read by the training script (the
DAPO recipes' twins with M2PO's staleness and threshold)."""

import math
from pathlib import Path

import pytest

from soup_trl import M2POConfig
from soup_trl.testing.runs import small_config


def make_config(tmp_path, **overrides):
    """The suite's small run (`small_config`) as an M2POConfig with these tests' batch: 4 rows of 4 generations per
    device, 2 accumulation steps, staleness 2."""
    fields = dict(m2po_staleness=2, per_device_train_batch_size=4, gradient_accumulation_steps=2)
    return small_config(tmp_path, M2POConfig, **{**fields, **overrides})


@pytest.mark.parametrize(
    ("overrides", "field_name"),
    [
        ({"m2po_staleness": -1}, "m2po_staleness"),
        ({"m2po_staleness": 1.5}, "m2po_staleness"),
        ({"m2po_tau": 0.0}, "m2po_tau"),
        ({"m2po_tau": -0.04}, "m2po_tau"),
        ({"m2po_tau": math.inf}, "m2po_tau"),
        ({"steps_per_generation": 4}, "steps_per_generation"),
        ({"generation_batch_size": 16}, "steps_per_generation"),
        ({"num_iterations": 2}, "num_iterations"),
        ({"loss_type": "grpo"}, "loss_type"),
        ({"importance_sampling_level": "sequence"}, "importance_sampling_level"),
        ({"delta": 2.0}, "delta"),
        ({"off_policy_mask_threshold": 0.5}, "off_policy_mask_threshold"),
        ({"per_device_train_batch_size": 2, "gradient_accumulation_steps": 3}, "num_generations"),
    ],
)
def test_config_errors_name_the_field(tmp_path, overrides, field_name):
    with pytest.raises(ValueError, match=field_name):
        make_config(tmp_path, **overrides)


def test_staleness_zero_is_allowed(tmp_path):
    assert make_config(tmp_path, m2po_staleness=0).steps_per_generation == 2


# ---------------------------------------------------------------------------------------------------- recipes

RECIPES = Path(__file__).resolve().parent.parent.parent / "soup_trl" / "recipes"
SAME_AS_DAPO = (
    "model_name_or_path", "dataset_name", "per_device_train_batch_size", "gradient_accumulation_steps",
    "num_generations", "learning_rate", "max_completion_length", "temperature", "loss_type", "beta", "seed",
)  # fmt: skip


def parse_recipe(name, *extra):
    from soup_trl.scripts import train

    script_args, args, model_args = train.parse_args(["--config", str(RECIPES / name), "--bf16", "false", *extra])
    return {**vars(script_args), **vars(model_args), **vars(args), "config": args}


@pytest.mark.parametrize(
    ("recipe", "twin", "staleness"),
    [
        ("qwen2.5_math_7b_m2po.yaml", "qwen2.5_math_7b_dapo.yaml", 256),  # the M2PO paper's headline staleness
        ("r1_distill_qwen_1.5b_m2po.yaml", "r1_distill_qwen_1.5b_dapo.yaml", 256),
        ("tiny_arithmetic_m2po.yaml", "tiny_arithmetic_dapo.yaml", 8),
    ],
)
def test_recipes_are_the_dapo_twins_with_m2po(recipe, twin, staleness):
    m2po, dapo = parse_recipe(recipe, "--use_cpu", "true"), parse_recipe(twin, "--use_cpu", "true")
    assert m2po["method"] == "m2po" and isinstance(m2po["config"], M2POConfig)
    assert (m2po["m2po_staleness"], m2po["m2po_tau"]) == (staleness, 0.04)
    assert {k: m2po[k] for k in SAME_AS_DAPO} == {k: dapo[k] for k in SAME_AS_DAPO}


def test_method_flag_picks_the_config(tmp_path):
    recipe = tmp_path / "no_method.yaml"
    recipe.write_text((RECIPES / "tiny_arithmetic_m2po.yaml").read_text().replace("method: m2po\n", ""))
    with pytest.raises(ValueError, match="m2po_staleness"):  # without a method, the recipe is read as SOUP's
        parse_recipe(recipe)
    parsed = parse_recipe(recipe, "--method", "m2po", "--m2po_staleness", "3")
    assert isinstance(parsed["config"], M2POConfig) and parsed["m2po_staleness"] == 3
    with pytest.raises(ValueError, match="method='ppo' is unknown. Methods: soup, m2po, luffy"):
        parse_recipe(recipe, "--method", "ppo")
