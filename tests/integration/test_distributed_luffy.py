"""LUFFYTrainer in two processes on CPU (gloo), launched with `accelerate launch` (tests/integration/workers/
luffy_worker.py): whole groups on both processes, each of its own prompts, and only the sampled rows decoded.

The launch takes 15-70 s, so the test is marked `slow` (`python -m pytest -m slow`).
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..luffy.test_trainer import G

WORKER = Path(__file__).parent / "workers" / "luffy_worker.py"
CPU_2PROC = Path(__file__).resolve().parent.parent.parent / "soup_trl" / "accelerate_configs" / "cpu_2proc.yaml"


@pytest.mark.slow
def test_two_processes_keep_groups_whole(tiny_model_dir, tmp_path):
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_2PROC), str(WORKER)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(
        [*command, "--model", tiny_model_dir, "--out", str(tmp_path)], env=env, capture_output=True, text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for rank in ranks:
        assert len(rank["scored"]) == 3  # 3 optimizer steps, one generation batch each
        for scored in rank["scored"]:
            prompts, traces, advantages = scored["prompts"], scored["trace_rows"], scored["advantages"]
            assert scored["sampled"] == len(prompts) * 3 // 4  # only G - n rows per group were decoded
            for g in range(0, len(prompts), G):
                assert len({tuple(p) for p in prompts[g : g + G]}) == 1
                assert traces[g : g + G] == [False, False, False, True]
                assert abs(sum(advantages[g : g + G])) < 1e-4
        assert all(0 < frac < 1 for frac in rank["off_policy_token_frac"])
    for r0, r1 in zip(ranks[0]["scored"], ranks[1]["scored"]):  # the ranks scored different prompts
        assert not {tuple(p) for p in r0["prompts"]} & {tuple(p) for p in r1["prompts"]}
    assert sum(math.isfinite(h.get("loss", math.nan)) for h in ranks[0]["log_history"]) == 3
