"""SOUP in TRL's vLLM server mode, two training processes against a real vLLM server.

Skipped unless `vllm` imports; CI runs it in its vLLM environment (the CPU build, `.ci/vllm`), where a skip fails
the run. The server is vLLM's OpenAI API server (soup_trl/testing/vllm_server.py); only TRL's NCCL weight transfer to
it is switched off (it needs CUDA), and the runs train at learning rate 0, so the server's weights stay the trainer's.
Everything else is server mode as TRL runs it: each process's prompts gathered into one request, sent by process 0
with one `max_tokens`, the token ids and log-probs sliced back to each process.

What it checks (tests/integration/workers/vllm_server_worker.py launches the runs): spliced steps whose
continuation budgets differ by process (process 0's rows: 1 token each; process 1's: 10, 9, 8, 7; the server never
samples EOS, so every row can only stop at a limit) send one request per step whose `max_tokens` is the largest
budget of any process, and every spliced row is continued up to its own budget. The same run with the limit taken
from each process's own rows (as before `call_budgets` agreed on it across processes) sends `max_tokens` 1, and the
server cuts every row of process 1 short: the test sees the defect.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm")

from soup_trl.testing.vllm_server import VLLMServer, free_port, subprocess_env  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent.parent
WORKER = Path(__file__).parent / "workers" / "vllm_server_worker.py"
CPU_2PROC = ROOT / "soup_trl" / "accelerate_configs" / "cpu_2proc.yaml"
# the worker's run: 2 processes, 8 rows of 4 generations each per step, one cycle of 3 steps, 10 completion tokens
PROCESSES, B, G, STEPS, MAX_LEN = 2, 8, 4, 3, 10
SPLICED_STEPS = [1, 2]


@pytest.fixture(scope="module")
def server_runs(tiny_model_dir, tmp_path_factory):
    """{"agreed": [rank 0, rank 1], "local": [...]}: the worker's records of both runs, against one server."""
    out = tmp_path_factory.mktemp("server_runs")
    server = VLLMServer(tiny_model_dir, out / "server.log")
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CPU_2PROC),
        "--main_process_port", str(free_port()), str(WORKER),
        "--model", tiny_model_dir, "--out", str(out), "--server-url", server.base_url,
    ]  # fmt: skip
    env = subprocess_env(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    # The training processes start while the server does (both spend most of it importing vLLM, the server's three
    # processes one after another): TRL's client on process 0 polls the server's /health until it is up.
    server.start(wait=False)
    try:
        with open(out / "launch.log", "w") as log:
            launch = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            server.wait_healthy()  # fails, with the server's log, if the server exits or never comes up
            code = launch.wait(timeout=600)
        finally:
            if launch.poll() is None:  # the launch's session: accelerate and the two training processes
                os.killpg(launch.pid, signal.SIGKILL)
                launch.wait()
    finally:
        server.stop()
    launch_log = (out / "launch.log").read_text(errors="replace")
    assert code == 0, f"{launch_log[-4000:]}\n--- server log:\n{server.log_tail()}"
    return {
        name: [json.loads((out / name / f"rank{r}.json").read_text()) for r in range(PROCESSES)]
        for name in ("agreed", "local")
    }


def continuation_requests(ranks):
    """The requests process 0 sent for spliced steps (one prompt, one completion per row)."""
    requests = [r for r in ranks[0]["requests"] if r["step"] in SPLICED_STEPS]
    assert [r["step"] for r in requests] == SPLICED_STEPS and all(r["n"] == 1 for r in requests)
    return requests


def budgets_at(ranks, step):
    """Each process's row budgets (filler rows included) for its continuation call at `step`."""
    return [[c["budgets"] for c in rank["calls"] if c["step"] == step] for rank in ranks]


def spliced_rows(rank):
    """(prefix length, completion length, ends with EOS) of every row a spliced step trained on."""
    return [
        row
        for batch in rank["rows"]
        if batch["cycle_position"] > 0
        for row in zip(batch["prefix_lengths"], batch["completion_lengths"], batch["ends_with_eos"])
    ]


def cut_short(rows):
    """Rows whose continuation stopped before its budget (`MAX_LEN - prefix`) without an EOS."""
    return [(k, n) for k, n, eos in rows if n < MAX_LEN and not eos]


def test_every_process_gets_token_ids_and_logprobs_from_the_server(server_runs):
    ranks = server_runs["agreed"]
    behavior, *rest = ranks[0]["requests"]
    # the cycle's behavior sampling: every process's rows of every step, in one request of unique prompts
    assert behavior["step"] == 0 and behavior["n"] == G and behavior["prompts"] * G == PROCESSES * STEPS * B
    assert rest == continuation_requests(ranks)  # then one request per spliced step, of both processes' rows
    for request in ranks[0]["requests"]:
        assert request["lengths"] == request["logprob_lengths"]  # a sampler log-prob per token
    assert ranks[1]["requests"] == []  # only process 0 talks to the server


def test_max_tokens_is_the_largest_budget_of_any_process(server_runs):
    ranks = server_runs["agreed"]
    for request in continuation_requests(ranks):
        (own,), (other,) = budgets_at(ranks, request["step"])
        assert request["prompts"] == len(own) + len(other) == PROCESSES * B
        assert max(own) == 1 and sorted(set(other)) == [7, 8, 9, 10]  # the setup: process 0's budgets are smaller
        assert request["max_tokens"] == max(own + other) == MAX_LEN
        # every process's continuation call took that limit (the same on every process)
        assert [c["limit"] for rank in ranks for c in rank["calls"] if c["step"] == request["step"]] == [MAX_LEN] * 2


def test_every_spliced_row_reaches_its_budget_or_eos(server_runs):
    for rank, prefixes in zip(server_runs["agreed"], ({9}, {0, 1, 2, 3})):
        rows = spliced_rows(rank)
        assert len(rows) == len(SPLICED_STEPS) * B and {k for k, _, _ in rows} == prefixes
        assert cut_short(rows) == []
        assert all(n == MAX_LEN for _, n, _ in rows)  # no EOS here: every continuation writes its whole budget


def test_without_agreement_the_sender_s_limit_cuts_other_processes_rows_short(server_runs):
    """The defect the agreement fixes: process 0 sends the request with the limit of its own rows (1 token), and the
    server stops every row of process 1 there, long before its budget (7 to 10 tokens)."""
    ranks = server_runs["local"]
    for request in continuation_requests(ranks):
        (own,), (other,) = budgets_at(ranks, request["step"])
        assert request["max_tokens"] == max(own) == 1 < max(other)
        assert request["lengths"] == [1] * PROCESSES * B
    sender, other = (spliced_rows(rank) for rank in ranks)
    assert cut_short(sender) == []  # process 0's own rows are not affected
    short = cut_short(other)
    assert len(short) == len(other) == len(SPLICED_STEPS) * B  # every row of process 1 ...
    assert all(n == k + 1 for k, n in short)  # ... continued by one token only
