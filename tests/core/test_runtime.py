"""The process's thread count (`soup_trl.core.runtime.configure_threads`): OMP_NUM_THREADS, the machine's cores, or
what the caller asks for; and the end of a launched process (`leave_launch`) in a run of one process, which returns.

`leave_launch` in two processes over gloo, where it ends the process, is tested in
tests/integration/test_process_exit.py.
"""

import types

import pytest
import torch

from soup_trl.core.runtime import configure_threads, leave_launch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_configure_threads(monkeypatch):
    previous = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert configure_threads() == 1 and torch.get_num_threads() == 1
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert configure_threads() >= 1
        assert configure_threads(1) == 1
    finally:
        torch.set_num_threads(previous)


def test_leave_launch_returns_in_a_run_of_one_process():
    assert leave_launch(types.SimpleNamespace(num_processes=1)) is None  # in-process callers (tests) live on
