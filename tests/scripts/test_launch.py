"""`soup-trl train --accelerate_config`: the Accelerate configs ship inside the package, by name or by path.

The wheel test builds the package as `pip install soup-trl` would get it (from a copy of the sources, so that the
checkout gets no build folder), checks that the recipes and Accelerate configs are inside, installs it into an empty
folder and resolves a config there, away from the checkout.

How a launched process ends (`soup_trl.core.runtime.leave_launch`) is checked in tests/integration/test_process_exit.py
(two processes of tests/integration/workers/exit_worker.py) and tests/core/test_runtime.py (a run of one process).
"""

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from packaging.requirements import Requirement
from packaging.version import Version

from soup_trl.scripts import cli, launch
from soup_trl.scripts.train import shipped_recipes

ROOT = Path(__file__).resolve().parent.parent.parent
PACKAGED = ROOT / "soup_trl" / "accelerate_configs"
SHIPPED = ["cpu_2proc", "multi_gpu", "zero2", "zero3"]


def test_the_configs_are_package_data():
    assert launch.ACCELERATE_CONFIGS_DIR == PACKAGED
    assert launch.shipped_accelerate_configs() == SHIPPED
    assert not (ROOT / "accelerate_configs").exists()  # one copy, inside the package


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_config_loads_in_accelerate(name):
    config = load_config_from_file(str(PACKAGED / f"{name}.yaml"))
    assert config.num_machines == 1 and config.machine_rank == 0
    assert config.num_processes == (2 if name == "cpu_2proc" else 8)
    assert config.use_cpu == (name == "cpu_2proc")


@pytest.mark.parametrize("given", ["zero3", "zero3.yaml", "accelerate_configs/zero3.yaml", "zero3.yml"])
def test_a_shipped_config_by_name(given):
    assert launch.resolve_accelerate_config(given) == str(PACKAGED / "zero3.yaml")


def test_a_config_file_by_path_is_used_as_it_is(tmp_path, monkeypatch):
    own = tmp_path / "zero3.yaml"  # a file of the user's wins over the shipped config of the same name
    own.write_text("num_processes: 3\n")
    assert launch.resolve_accelerate_config(str(own)) == str(own)
    monkeypatch.chdir(tmp_path)
    assert launch.resolve_accelerate_config("zero3.yaml") == "zero3.yaml"


@pytest.mark.parametrize("given", ["zero4", "configs/zero3.yaml", str(Path("/no/such/dir/mine.yaml"))])
def test_an_unknown_config_names_the_shipped_ones(given):
    with pytest.raises(ValueError) as error:
        launch.resolve_accelerate_config(given)
    message = str(error.value)
    assert f"--accelerate_config {given!r} is neither a file nor a shipped config" in message
    assert "Shipped configs: cpu_2proc, multi_gpu, zero2, zero3" in message


def test_the_command_launches_accelerate_with_the_shipped_file(monkeypatch):
    launched = []
    monkeypatch.setattr(launch.subprocess, "call", lambda command: launched.append(command) or 0)
    assert cli.main(["train", "--accelerate_config", "zero3", "--config", "tiny_arithmetic"]) == 0
    (command,) = launched
    assert command[3:5] == ["--config_file", str(PACKAGED / "zero3.yaml")]
    assert command[-3:] == [str(launch.TRAIN_SCRIPT), "--config", "tiny_arithmetic"]


def test_the_command_refuses_an_unknown_config_before_launching(monkeypatch, capsys):
    monkeypatch.setattr(launch.subprocess, "call", lambda command: pytest.fail(f"launched {command}"))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--accelerate_config", "zero4"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "soup-trl train: error: --accelerate_config 'zero4' is neither a file nor a shipped config" in err
    assert "cpu_2proc, multi_gpu, zero2, zero3" in err


def test_help_names_the_shipped_configs(capsys, monkeypatch):
    monkeypatch.setattr(launch.subprocess, "call", lambda command: 0)  # the training script's own help
    cli.main(["train", "--help"])
    assert "(cpu_2proc, multi_gpu, zero2, zero3)" in " ".join(capsys.readouterr().out.split())


def build_wheel(out: Path) -> Path:
    """The package's wheel, built from a copy of what the build reads (pyproject.toml, README.md, soup_trl/)."""
    source = out / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "soup_trl", source / "soup_trl", ignore=shutil.ignore_patterns("__pycache__"))
    (requirement,) = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    requirement = Requirement(requirement)
    # this environment's setuptools when it meets the requirement and builds wheels (setuptools 70.1 took over
    # bdist_wheel from the `wheel` package): nothing to download; else pip's isolated build environment
    version = importlib.metadata.version(requirement.name)
    builds_wheels = Version(version) >= Version("70.1") or importlib.util.find_spec("wheel") is not None
    isolation = ["--no-build-isolation"] if requirement.specifier.contains(version) and builds_wheels else []
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q", "-w", str(out / "dist"), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (wheel,) = (out / "dist").glob("soup_trl-*.whl")
    return wheel


def test_the_wheel_holds_the_recipes_and_the_accelerate_configs(tmp_path):
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    for config in SHIPPED:
        assert f"soup_trl/accelerate_configs/{config}.yaml" in names
    for recipe in shipped_recipes():
        assert f"soup_trl/recipes/{recipe}.yaml" in names
    assert "Requires-Dist: tensorboard>=2.17.1" in metadata.splitlines()  # the paper recipes' logger

    # installed (not editable) into an empty folder, away from the checkout: configs and recipes resolve there
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]
    probe = (
        "from soup_trl.scripts.launch import resolve_accelerate_config as a\n"
        "from soup_trl.scripts.train import resolve_recipe as r\n"
        "print(a('zero3')); print(r('qwen2.5_math_7b_soup_ratio'))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    config, recipe = result.stdout.split()
    assert Path(config) == site / "soup_trl" / "accelerate_configs" / "zero3.yaml"
    assert Path(recipe) == site / "soup_trl" / "recipes" / "qwen2.5_math_7b_soup_ratio.yaml"
