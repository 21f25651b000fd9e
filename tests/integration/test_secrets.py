"""No remote code unless the user turns it on, and no Hub token in anything a run writes or prints.

Remote code: a copy of the tiny model whose config maps `AutoModelForCausalLM` to a module shipped with the
checkpoint (`auto_map`, what `trust_remote_code` would execute); the module writes a file when imported. Every
loader of the package (the trainers, the training script's config, the evaluation backend) must load the built-in
Qwen2 class without importing it, and `trust_remote_code=True` must import it (so the check can fail).

Hub token: a tiny training run of the training script with fake tokens in `HF_TOKEN` and `--hub_token`; no file
under the output directory (checkpoints, `training_args.bin`, `trainer_state.json`, model card, ...), nothing on
stdout/stderr and no log record (at any level) may contain either token.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys

import pytest
import transformers.dynamic_module_utils

from soup_trl import LUFFYConfig, M2POConfig, SOUPConfig, SOUPTrainer
from soup_trl.scripts.train import main, parse_args, shipped_recipes
from soup_trl.testing.rewards import shaped_reward
from soup_trl.testing.runs import prompt_dataset

REMOTE_MODULE = """\
from pathlib import Path

from transformers import Qwen2ForCausalLM

Path({sentinel!r}).write_text("remote code ran")


class RemoteModel(Qwen2ForCausalLM):
    pass
"""


@pytest.fixture
def remote_code_model(tiny_model_dir, tmp_path, monkeypatch):
    """(model directory with remote code, sentinel path the remote code writes when it runs)."""
    model = tmp_path / "remote_model"
    shutil.copytree(tiny_model_dir, model)
    sentinel = tmp_path / "remote_code_ran"
    (model / "remote_model.py").write_text(REMOTE_MODULE.format(sentinel=str(sentinel)))
    config = json.loads((model / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "remote_model.RemoteModel"}
    config["architectures"] = ["RemoteModel"]  # a class Transformers does not have: only the remote module has it
    (model / "config.json").write_text(json.dumps(config))
    # where Transformers copies remote modules to import them: this test's directory, not the user's cache
    monkeypatch.setattr(transformers.dynamic_module_utils, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    monkeypatch.setattr(sys, "path", list(sys.path))
    return str(model), sentinel


@pytest.mark.parametrize("config_cls", [SOUPConfig, M2POConfig, LUFFYConfig])
def test_configs_default_to_no_remote_code(config_cls, tmp_path):
    assert config_cls(output_dir=str(tmp_path), use_cpu=True).trust_remote_code is False


def test_no_shipped_recipe_turns_remote_code_on():
    for recipe in shipped_recipes():  # GPU recipes parsed as on this CPU machine
        _, training_args, _ = parse_args(["--config", recipe, "--bf16", "false", "--use_cpu", "true"], num_processes=1)
        assert training_args.trust_remote_code is False, recipe
    _, training_args, _ = parse_args(["--config", "tiny_arithmetic", "--trust_remote_code", "true"], num_processes=1)
    assert training_args.trust_remote_code is True  # the user can turn it on


def test_trainer_loads_remote_code_only_when_turned_on(remote_code_model, make_config):
    model, sentinel = remote_code_model
    trainer = SOUPTrainer(model, shaped_reward, args=make_config(), train_dataset=prompt_dataset(16))
    assert type(trainer.model).__name__ == "Qwen2ForCausalLM"
    assert not sentinel.exists()

    trainer = SOUPTrainer(model, shaped_reward, args=make_config(trust_remote_code=True), train_dataset=prompt_dataset(16))
    assert type(trainer.model).__name__ == "RemoteModel"
    assert sentinel.exists()


def test_evaluation_backend_never_runs_remote_code(remote_code_model):
    from soup_trl.evaluation.backends import HFBackend

    model, sentinel = remote_code_model
    backend = HFBackend(model, device="cpu")
    assert type(backend.model).__name__ == "Qwen2ForCausalLM"
    assert not sentinel.exists()


ENV_TOKEN = "hf_FakeEnvironmentToken7Qx2Lm9Rb4Tn"
FLAG_TOKEN = "hf_FakeCommandLineToken3Wk8Zp5Vd1Hs"


def test_hub_token_appears_in_no_file_and_no_output(tiny_model_dir, tmp_path, monkeypatch, capfd, caplog):
    monkeypatch.setenv("HF_TOKEN", ENV_TOKEN)
    caplog.set_level(logging.DEBUG)  # every log record of the run, whatever its level
    out = tmp_path / "run"
    main(*parse_args([
        "--config", "tiny_arithmetic", "--model_name_or_path", tiny_model_dir, "--output_dir", str(out),
        "--reward_funcs", "soup_trl.testing.rewards.shaped_reward", "--max_train_samples", "32", "--per_device_train_batch_size", "8",
        "--num_generations", "4", "--soup_behavior_steps", "2", "--max_steps", "3", "--save_strategy", "steps",
        "--save_steps", "1", "--logging_steps", "1", "--num_threads", "1", "--hub_token", FLAG_TOKEN,
        "--hub_model_id", "someone/tiny-soup", "--log_level", "info",
    ], num_processes=1))  # fmt: skip
    printed = capfd.readouterr()
    written = [p for p in out.rglob("*") if p.is_file()]
    names = {p.relative_to(out).as_posix() for p in written}
    assert {"training_args.bin", "trainer_state.json", "README.md", "checkpoint-1/training_args.bin",
            "checkpoint-1/soup_cycle_rank0.pt", "checkpoint-3/checkpoint_complete.json"} <= names  # fmt: skip
    assert "Saving model checkpoint to" in caplog.text and "step 3/3" in printed.out  # logs and console captured
    for token in (ENV_TOKEN, FLAG_TOKEN):
        for stream in (printed.out, printed.err, caplog.text):
            assert token not in stream
        for path in written:
            assert token.encode() not in path.read_bytes(), path
