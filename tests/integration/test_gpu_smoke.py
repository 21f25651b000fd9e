"""benchmarks/gpu_smoke.py: its refusal on a machine without CUDA, and the whole run at toy size on CPU (the phases, the
noise floor, the budgets and the mid-cycle resume it reports), so that the script the first GPU run needs cannot rot."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent.parent / "benchmarks" / "gpu_smoke.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_smoke", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_smoke"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the script would run")
def test_without_cuda_it_says_so_and_exits_2():
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == load_script().NO_GPU
    assert "no CUDA device" in load_script().NO_GPU


def test_the_toy_run_measures_every_phase_and_passes_its_checks(tmp_path, capsys):
    smoke = load_script()
    assert smoke.main(["--toy", "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for phase in smoke.PHASES:
        assert f"| {phase} | " in out
    assert "noise floor of prefix |log ratio| (learning rate 0, " in out
    assert "PASS  every continuation within its row's budget: " in out and " 0 over" in out
    assert "PASS  a mid-cycle checkpoint restores the cycle: behavior samples equal: True, new behavior samplings " \
           "after resuming: 0" in out  # fmt: skip
    assert "FAIL" not in out


def test_the_paper_sized_model_has_qwen2_5_1_5b_shape():
    assert load_script().SHAPES["1.5b"] == dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                                                num_attention_heads=12, num_key_value_heads=2, vocab_size=151_936)  # fmt: skip
