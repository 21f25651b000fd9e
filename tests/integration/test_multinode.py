"""Two "machines" on localhost: the multi-node launch of docs/scaling-out.md, one process per node, CPU over gloo.

Each node runs the same `accelerate launch` command (the same config file, `--num_machines 2`, `--num_processes 2`
in all, the same `--main_process_ip` and `--main_process_port`); only `--machine_rank` differs. Here both "nodes"
are processes of this machine that meet on a free loopback port, train a few steps of the tiny recipe, and write
to one output directory, as nodes sharing a filesystem would. Marked `slow` (two launches side by side, 12-32 s).
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

CPU_2PROC = Path(__file__).resolve().parent.parent.parent / "soup_trl" / "accelerate_configs" / "cpu_2proc.yaml"
STEPS = 3


def free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_command(machine_rank: int, port: int, model_dir: str, out: Path) -> list[str]:
    """What node `machine_rank` runs: everything but `--machine_rank` is the same on both."""
    return [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_2PROC),
        "--num_machines", "2", "--num_processes", "2", "--machine_rank", str(machine_rank),
        "--main_process_ip", "127.0.0.1", "--main_process_port", str(port),
        "-m", "soup_trl.scripts.train", "--config", "tiny_arithmetic", "--model_name_or_path", model_dir,
        "--output_dir", str(out), "--max_steps", str(STEPS), "--save_strategy", "steps", "--save_steps", str(STEPS),
        "--per_device_train_batch_size", "16", "--max_train_samples", "256", "--logging_steps", "1",
        "--num_threads", "1",
    ]  # fmt: skip


def test_two_nodes_on_localhost_train_as_one_run(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    port = free_loopback_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    nodes = []
    try:
        for rank in (0, 1):
            log = open(tmp_path / f"node{rank}.log", "w")  # closed below, once its process is done
            nodes.append((subprocess.Popen(
                node_command(rank, port, tiny_model_dir, out), cwd=tmp_path, env=env, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            ), log))  # fmt: skip
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:  # until both are done, or one failed (the other would wait for it)
            codes = [process.poll() for process, _ in nodes]
            if None not in codes or any(code not in (None, 0) for code in codes):
                break
            time.sleep(0.5)
    finally:
        for process, log in nodes:
            if process.poll() is None:  # the other node failed, or the time is up
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            log.close()
    logs = [(tmp_path / f"node{rank}.log").read_text() for rank in (0, 1)]
    assert codes == [0, 0], "\n\n".join(f"node {r} (exit code {c}):\n{t[-3000:]}" for r, (c, t) in
                                        enumerate(zip(codes, logs)))  # fmt: skip
    assert f"step {STEPS}/{STEPS}" in logs[0]  # the console is the main process's, on node 0

    # the run's outputs, written by node 0; the checkpoint holds each rank's state: one world of two processes
    assert (out / "trainer_state.json").is_file() and (out / "model.safetensors").is_file()
    checkpoint = out / f"checkpoint-{STEPS}"
    assert (checkpoint / "checkpoint_complete.json").is_file() and (checkpoint / "model.safetensors").is_file()
    for rank in (0, 1):
        assert (checkpoint / f"rng_state_{rank}.pth").is_file()
    cycles = [torch.load(checkpoint / f"soup_cycle_rank{rank}.pt", weights_only=False) for rank in (0, 1)]
    prompts = [{tuple(p) for p in cycle["prompt_ids"]} for cycle in cycles]
    assert prompts[0] and prompts[1] and not prompts[0] & prompts[1]  # the nodes shared out the prompts
