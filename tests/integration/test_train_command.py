"""`soup-trl train`: shipped recipes by name, through Accelerate, from an installed (not editable) package."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from soup_trl.scripts.launch import SINGLE_PROCESS, TRAIN_SCRIPT, launch_command, recipe_summary
from soup_trl.scripts.train import resolve_recipe, shipped_recipes

ROOT = Path(__file__).resolve().parent.parent.parent


def test_launch_command_runs_the_packaged_script_through_accelerate():
    command = launch_command(None, ["--config", "tiny_arithmetic"])
    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert command[3:3 + len(SINGLE_PROCESS)] == SINGLE_PROCESS
    assert command[-3:] == [str(TRAIN_SCRIPT), "--config", "tiny_arithmetic"]
    shipped = str(ROOT / "soup_trl" / "accelerate_configs" / "zero3.yaml")  # by name: tests/scripts/test_launch.py
    assert launch_command("zero3.yaml", [])[3:5] == ["--config_file", shipped]


def test_recipes_resolve_by_name_or_path(tmp_path):
    assert "tiny_arithmetic" in shipped_recipes()
    assert resolve_recipe("tiny_arithmetic") == resolve_recipe("recipes/tiny_arithmetic.yaml")
    assert Path(resolve_recipe("tiny_arithmetic")).parent == ROOT / "soup_trl" / "recipes"
    own = tmp_path / "mine.yaml"
    own.write_text("max_steps: 1\n")
    assert resolve_recipe(str(own)) == str(own)
    with pytest.raises(FileNotFoundError, match="Shipped recipes: .*tiny_arithmetic"):
        resolve_recipe("tiny_arithmetc")
    assert recipe_summary("tiny_arithmetic_dapo") == (
        "On-policy DAPO twin of tiny_arithmetic.yaml (same everything, soup_behavior_steps: 1)"
    )


@pytest.mark.slow
def test_installed_package_trains_a_shipped_recipe(tiny_model_dir, tmp_path):
    """`pip install .` (a wheel, no checkout on the path), then `soup-trl train --config tiny_arithmetic` trains."""
    source, target = tmp_path / "source", tmp_path / "site"  # built from a copy: the build leaves files behind
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".ci-venv", "build", "*.egg-info", "outputs",
                                                                "__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, cwd=tmp_path)
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_NUM_THREADS": "1"}
    run = tmp_path / "run"
    listing = subprocess.run([sys.executable, "-m", "soup_trl.scripts.cli", "train", "--list"], cwd=tmp_path,
                             env=env, capture_output=True, text=True, check=True)
    assert "tiny_arithmetic " in listing.stdout and "qwen2.5_math_7b_soup_ratio" in listing.stdout
    where = subprocess.run([sys.executable, "-c", "import soup_trl; print(soup_trl.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(target)), where
    result = subprocess.run(
        [sys.executable, "-m", "soup_trl.scripts.cli", "train", "--config", "tiny_arithmetic",
         "--model_name_or_path", tiny_model_dir, "--output_dir", str(run), "--max_steps", "2", "--logging_steps", "1",
         "--max_train_samples", "64", "--num_threads", "1"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((run / "trainer_state.json").read_text())
    assert sum("reward" in h for h in state["log_history"]) == 2
    assert (run / "model.safetensors").exists()


def test_accumulation_keeps_the_global_batch():
    from soup_trl.scripts.train import accumulation_steps

    assert [accumulation_steps(32, 8, 8, n) for n in (1, 2, 4, 8)] == [32, 16, 8, 4]
    with pytest.raises(ValueError, match="over 6 processes .* Process counts that work with this batch size: "
                                         "1, 2, 4, 8, 16, 32;"):
        accumulation_steps(32, 8, 8, 6)


@pytest.mark.parametrize(("processes", "accumulation"), [("8", 4), ("4", 8), ("1", 32)])
def test_paper_recipes_keep_32_prompts_on_any_process_count(processes, accumulation):
    from soup_trl.scripts.train import parse_args

    argv = ["--config", "qwen2.5_math_7b_soup_ratio", "--bf16", "false", "--use_cpu", "true"]
    script_args, args, _ = parse_args(argv, num_processes=int(processes))
    assert script_args.prompts_per_step == 32
    assert args.gradient_accumulation_steps == accumulation
    assert args.steps_per_generation == args.soup_behavior_steps * accumulation
    rows = args.per_device_train_batch_size * accumulation * int(processes)
    assert rows == 32 * args.num_generations
