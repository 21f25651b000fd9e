"""Every YAML recipe parses with the launch script's own parser, and the script trains end to end."""

import json
from pathlib import Path

import pytest

from soup_trl.scripts import train

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "soup_trl" / "recipes"
CPU = ["--bf16", "false", "--use_cpu", "true"]  # the recipes ask for bf16, which a CPU-only machine refuses at parse time


@pytest.mark.parametrize("recipe", sorted(p.name for p in RECIPES.glob("*.yaml")))
def test_recipe_parses(recipe):
    script_args, training_args, model_args = train.parse_args(["--config", str(RECIPES / recipe), *CPU])
    assert training_args.loss_type == "dapo"
    assert training_args.beta == 0.0
    if script_args.method == "soup":  # other methods replace the epsilon clip and schedule (their own tests)
        assert training_args.epsilon_high == 0.28
    behavior_steps = getattr(training_args, "soup_behavior_steps", 1)  # methods other than SOUP sample every step
    if script_args.method != "m2po":  # M2PO's queue sets its own schedule
        assert training_args.steps_per_generation == behavior_steps * training_args.gradient_accumulation_steps
    rows_per_step = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
    assert rows_per_step % training_args.num_generations == 0
    assert model_args.model_name_or_path and script_args.dataset_name


def test_paper_batches_are_32_prompts_by_8_samples_on_8_processes():
    paper_recipes = sorted(RECIPES.glob("[qr]*.yaml"))  # qwen2.5_math_7b_*, r1_distill_qwen_1.5b_*
    assert len(paper_recipes) >= 6
    for recipe in paper_recipes:
        _, args, _ = train.parse_args(["--config", str(recipe), *CPU], num_processes=8)
        assert args.num_generations == 8
        assert args.per_device_train_batch_size * args.gradient_accumulation_steps * 8 == 32 * 8, recipe.name


def test_no_arguments_runs_the_tiny_default():
    _, args, model_args = train.parse_args([])
    assert model_args.model_name_or_path == "builtin:tiny-arithmetic"
    assert args.use_cpu and args.soup_behavior_steps > 1


def test_mistyped_key_fails(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((RECIPES / "tiny_arithmetic.yaml").read_text() + "soup_behaviour_steps: 4\n")
    with pytest.raises(ValueError, match="soup_behaviour_steps"):
        train.parse_args(["--config", str(bad)])


def test_script_trains_and_writes_outputs(tiny_model_dir, tmp_path):
    args = train.parse_args(
        [
            "--model_name_or_path", tiny_model_dir,
            "--output_dir", str(tmp_path),
            "--max_steps", "4",
            "--logging_steps", "1",
            "--per_device_train_batch_size", "16",
            "--num_generations", "4",
            "--soup_behavior_steps", "2",
            "--max_completion_length", "12",
            "--max_train_samples", "256",
            "--num_threads", "1",
        ]
    )
    train.main(*args)
    state = json.loads((tmp_path / "trainer_state.json").read_text())
    assert sum("reward" in h for h in state["log_history"]) == 4
    assert (tmp_path / "reward.png").stat().st_size > 0
    assert (tmp_path / "model.safetensors").exists()
