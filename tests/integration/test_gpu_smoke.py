"""benchmarks/gpu_smoke.py: its refusal on a machine without CUDA, and its checks on the Transformers path (CPU)."""

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
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the script would run")
def test_without_cuda_it_says_so_and_exits_2():
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == load_script().NO_GPU
    assert "no CUDA device" in load_script().NO_GPU


def test_checks_and_report_on_the_transformers_path(tiny_model_dir, tmp_path):
    """The smoke run's own code, with Transformers generation on CPU in place of vLLM: every check runs and passes."""
    smoke = load_script()
    bench = {"model": tiny_model_dir, "output_dir": str(tmp_path), "use_vllm": False, "num_generations": 4,
             "batch": 16, "max_completion_length": 8, "learning_rate": 1e-2, "checks": True, "check_rows": 4,
             "port": 0}  # fmt: skip
    results = {name: smoke.run_setting(name, bench) for name in smoke.SETTINGS}
    assert [label for label, _, _ in results["soup"]["checks"]] == [
        "prefix denominators = behavior policy", "continuation denominators = current policy", "groups whole",
    ]  # fmt: skip
    assert all(passed for _, _, passed in results["soup"]["checks"]), results["soup"]["checks"]
    assert len(results["grpo"]["losses"]) == len(results["soup"]["losses"]) == 8
    table, passed = smoke.report(results)
    assert passed and table.splitlines()[2].startswith("| grpo | ") and "| soup | " in table
    assert "PASS  groups whole: 0 broken groups in 8 steps" in table
