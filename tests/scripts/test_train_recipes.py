"""Every YAML recipe parses with the launch script's own parser, and the script trains end to end."""

import functools
import json
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from transformers.integrations import get_available_reporting_integrations

from soup_trl import SOUPTrainer
from soup_trl.evaluation.runs import training_setting
from soup_trl.scripts import train
from soup_trl.testing.rewards import shaped_reward

ROOT = Path(__file__).resolve().parent.parent.parent
RECIPES = ROOT / "soup_trl" / "recipes"
CPU = ["--bf16", "false", "--use_cpu", "true"]  # the recipes ask for bf16, which a CPU-only machine refuses at parse time


MINIBATCH_TWINS = sorted(p.name for p in RECIPES.glob("*_dapo_minibatch.yaml"))


@pytest.mark.parametrize("recipe", sorted(p.name for p in RECIPES.glob("*.yaml")))
def test_recipe_parses(recipe):
    script_args, training_args, model_args = train.parse_args(["--config", str(RECIPES / recipe), *CPU])
    assert training_args.loss_type == "dapo"
    assert training_args.beta == 0.0
    if script_args.method == "soup":  # other methods replace the epsilon clip and schedule (their own tests)
        assert training_args.epsilon_high == 0.28
    behavior_steps = getattr(training_args, "soup_behavior_steps", 1)  # methods other than SOUP sample every step
    if recipe in MINIBATCH_TWINS:  # one rollout batch for several steps: test_a_minibatch_twin_...
        assert training_args.steps_per_generation > training_args.gradient_accumulation_steps
    elif script_args.method != "m2po":  # M2PO's queue sets its own schedule
        assert training_args.steps_per_generation == behavior_steps * training_args.gradient_accumulation_steps
    rows_per_step = training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps
    assert rows_per_step % training_args.num_generations == 0
    assert model_args.model_name_or_path and script_args.dataset_name


PAPER_RECIPES = sorted(p.name for p in RECIPES.glob("[qr]*.yaml"))  # qwen2.5_math_7b_*, r1_distill_qwen_1.5b_*


def recipe_lines(recipe: str) -> list[str]:
    return (RECIPES / recipe).read_text().splitlines()


def test_paper_recipes_are_the_gpu_recipes():
    assert len(PAPER_RECIPES) == 14
    for recipe in sorted(p.name for p in RECIPES.glob("*.yaml")):
        uses_vllm = "use_vllm: true" in recipe_lines(recipe)
        assert uses_vllm == (recipe in PAPER_RECIPES), recipe


@pytest.mark.parametrize("recipe", PAPER_RECIPES)
@pytest.mark.parametrize("processes", [1, 2, 4, 8])
def test_paper_batches_are_32_prompts_by_8_samples_on_any_process_count(recipe, processes):
    assert "prompts_per_step: 32  # the global batch, on any number of processes (x num_generations samples)" in (
        recipe_lines(recipe)
    )
    script_args, args, _ = train.parse_args(["--config", str(RECIPES / recipe), *CPU], num_processes=processes)
    assert script_args.prompts_per_step == 32 and args.num_generations == 8
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps * processes == 32 * 8


@pytest.mark.parametrize("recipe", PAPER_RECIPES)
def test_paper_batch_fails_before_training_on_a_process_count_that_cannot_keep_it(recipe):
    with pytest.raises(ValueError, match="32 x num_generations=8 = 256 rows .* over 3 processes .* Process counts "
                                         "that work with this batch size: 1, 2, 4, 8, 16, 32;"):
        train.parse_args(["--config", str(RECIPES / recipe), *CPU], num_processes=3)  # parsing: before any model


@pytest.mark.parametrize("recipe", PAPER_RECIPES)
def test_paper_recipes_turn_vllm_mismatch_correction_off_explicitly_with_the_reason(recipe):
    lines = recipe_lines(recipe)
    key = "vllm_importance_sampling_correction: false"
    assert key in lines  # written in the recipe, not left to TRL's default (on)
    comment = lines[lines.index(key) - 3 : lines.index(key)]
    assert all(line.startswith("# ") for line in comment)
    assert "The paper's losses have no vLLM/trainer mismatch correction" in comment[0]
    _, args, _ = train.parse_args(["--config", str(RECIPES / recipe), *CPU])
    assert args.use_vllm and args.vllm_importance_sampling_correction is False


# The staleness of each twin: the T of the SOUP recipe it is compared with, and the paper's 16 (batch 512 / 32)
TWIN_STEPS = {"tiny_arithmetic": ("tiny_arithmetic", 4), "tiny_chain": ("tiny_chain", 4),
              "smollm2": ("smollm2_soup_ratio", 4), "qwen2.5_math_7b": (None, 16), "r1_distill_qwen_1.5b": (None, 16)}


def test_every_dapo_recipe_has_a_minibatch_twin():
    assert [t.replace("_minibatch", "") for t in MINIBATCH_TWINS] == sorted(p.name for p in RECIPES.glob("*_dapo.yaml"))
    assert sorted(t.removesuffix("_dapo_minibatch.yaml") for t in MINIBATCH_TWINS) == sorted(TWIN_STEPS)


@pytest.mark.parametrize("twin", MINIBATCH_TWINS)
def test_a_minibatch_twin_differs_from_its_dapo_recipe_only_in_the_rollout_batch(twin):
    """The same keys and values as the DAPO recipe but the output folder and one of TRL's two spellings of the rollout
    batch; parsed on any process count the paper recipes allow, one rollout batch serves k optimizer steps."""
    base_name = twin.replace("_minibatch", "")
    base, mine = (yaml.safe_load((RECIPES / name).read_text()) for name in (base_name, twin))
    changed = {key for key in base.keys() | mine.keys() if base.get(key) != mine.get(key)}
    rollout_key = "generation_batch_size" if twin in PAPER_RECIPES else "steps_per_generation"
    assert changed == {"output_dir", rollout_key}
    assert mine["output_dir"] == base["output_dir"] + "-minibatch"
    header = " ".join(line.lstrip("# ") for line in recipe_lines(twin) if line.startswith("#"))
    assert "DAPO with mini-batch updates" in header and base_name in header and "Figure 5" in header
    soup_recipe, steps = TWIN_STEPS[twin.removesuffix("_dapo_minibatch.yaml")]
    if soup_recipe is not None:  # the T of the SOUP recipe it is compared with
        assert yaml.safe_load((RECIPES / f"{soup_recipe}.yaml").read_text())["soup_behavior_steps"] == steps
    for processes in [1, 2, 4, 8] if twin in PAPER_RECIPES else [1]:
        _, args, _ = train.parse_args(["--config", str(RECIPES / twin), *CPU], num_processes=processes)
        rows_per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * processes
        assert args.soup_behavior_steps == 1 and args.generation_batch_size == steps * rows_per_step
        assert args.generation_batch_size % args.num_generations == 0  # whole groups in a rollout batch
        if processes == 1:  # what TRL derived (its config counts this machine's processes, not the ones simulated)
            assert args.steps_per_generation == steps * args.gradient_accumulation_steps


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


def test_recipe_model_init_kwargs_reach_the_loaded_model(tiny_model_dir, tmp_path):
    """A recipe's `model_init_kwargs:` are merged with ModelConfig's (dtype) into the trainer's model loading."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text((RECIPES / "tiny_arithmetic.yaml").read_text() + "model_init_kwargs:\n  attention_dropout: 0.125\n")
    run = tmp_path / "run"
    args = train.parse_args(
        ["--config", str(recipe), "--model_name_or_path", tiny_model_dir, "--output_dir", str(run), "--max_steps", "1",
         "--per_device_train_batch_size", "8", "--num_generations", "4", "--max_completion_length", "4",
         "--max_train_samples", "16", "--num_threads", "1", "--dtype", "bfloat16"]
    )  # fmt: skip
    train.main(*args)
    saved = json.loads((run / "config.json").read_text())
    assert saved["attention_dropout"] == 0.125  # the recipe's kwarg (the tiny model's own is 0.0)
    assert saved["dtype"] == "bfloat16"  # ModelConfig's field, merged in beside it
    # the run directory tells `soup-trl select` its completion budget
    assert training_setting(run, "max_completion_length") == (4, run / "training_args.bin")


ALL_RECIPES = sorted(p.name for p in RECIPES.glob("*.yaml"))
# The distribution behind each logging integration a recipe may name in `report_to` (Transformers' names)
INTEGRATION_DISTRIBUTIONS = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio", "mlflow": "mlflow"}


@functools.cache
def report_to(recipe: str) -> tuple[str, ...]:
    """The recipe's logging integrations, as the Trainer gets them (`none` is [])."""
    return tuple(train.parse_args(["--config", str(RECIPES / recipe), *CPU])[1].report_to)


@pytest.mark.parametrize("recipe", ALL_RECIPES)
def test_every_integration_a_recipe_logs_to_is_installed(recipe):
    """What the Trainer checks only when it starts (TensorBoardCallback raises without tensorboard)."""
    missing = set(report_to(recipe)) - set(get_available_reporting_integrations())
    assert not missing, f"{recipe} sets report_to {sorted(missing)}, which this environment cannot import"


def test_every_integration_a_recipe_logs_to_is_a_dependency_of_the_package():
    """So that it is installed with the package: the test above passes on a fresh install, not only here."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {Requirement(r).name for r in project["dependencies"]}
    used = {integration for recipe in ALL_RECIPES for integration in report_to(recipe)}
    assert "tensorboard" in used  # the paper recipes'
    for integration in used:
        assert INTEGRATION_DISTRIBUTIONS[integration] in declared, f"report_to {integration}: not in pyproject"


def test_tensorboard_logging_writes_the_training_metrics(tiny_model_dir, make_config, make_dataset):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    args = make_config(report_to=["tensorboard"], max_steps=2, soup_behavior_steps=2)
    SOUPTrainer(tiny_model_dir, shaped_reward, args=args, train_dataset=make_dataset(32)).train()
    (events,) = Path(args.output_dir).glob("runs/*/events.out.tfevents.*")  # Transformers' default logging_dir
    scalars = EventAccumulator(str(events)).Reload().Tags()["scalars"]
    assert {"train/loss", "train/reward", "train/soup/cycle_step"} <= set(scalars), scalars  # SOUP's own, too
