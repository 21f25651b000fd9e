"""Two processes whose rank 0 ends while one of gloo's worker threads still has a tensor made in Python to release;
launched by tests/integration/test_process_exit.py.

    RANK=R LOCAL_RANK=R WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=P python exit_worker.py END GO DONE

END is how rank 0 ends: `leave` with `soup_trl.core.runtime.leave_launch` (what every launched process does), `return`
as launched processes did before it (wait for everyone, close the process group, return from the script). GO and
DONE are the two ends of two pipes the test opened: rank 0 writes GO when rank 1 may join its last collective, rank 1
writes DONE when it has.

The state every launch could end in, made certain here instead of left to the scheduler: a gloo worker thread of rank
0 asks for the GIL, to release a tensor whose last reference was its collective's, while the main thread, holding
the GIL, heads for the interpreter's finalization. Rank 0 keeps a second gloo group referenced (as a DDP model keeps
the default one: closing the process group leaves its threads running) and starts an all-reduce on it of a tensor it
then drops. Its last exit handlers (registered first, so they run last; C functions, so the GIL stays with the main
thread between them) let rank 1 join that all-reduce, wait with the GIL held until rank 1 has, then hold it one second
more: gloo's worker thread completes the all-reduce and waits for the GIL. A plain return then finalizes the
interpreter, which hands the GIL over while finalizing (flushing stdout is enough) and ends the waiting thread inside
its destructor: "terminate called without an active exception", SIGABRT. `leave_launch` runs the same handlers while
the interpreter is whole and exits without finalizing it.
"""

import atexit
import ctypes
import os
import sys

END, GO, DONE = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
RANK = int(os.environ["RANK"])
if RANK == 0:
    libc = ctypes.PyDLL(None)  # a PyDLL function keeps the GIL while it runs
    atexit.register(libc.sleep, 1)
    atexit.register(libc.read, DONE, ctypes.create_string_buffer(1), 1)
    atexit.register(libc.write, GO, b"x", 1)

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from accelerate import PartialState  # noqa: E402

from soup_trl.core.runtime import leave_launch  # noqa: E402

state = PartialState(cpu=True, backend="gloo")
other_group = dist.new_group([0, 1], backend="gloo")  # referenced until the interpreter ends

if RANK == 0:
    dist.all_reduce(torch.ones(1), group=other_group, async_op=True)  # work and tensor dropped at once
    print("rank 0 done")  # left in stdout's buffer: the exit flushes it
    if END == "leave":
        leave_launch(state)
    else:
        state.wait_for_everyone()
        state.destroy_process_group()
else:
    state.wait_for_everyone()
    os.read(GO, 1)
    dist.all_reduce(torch.ones(1), group=other_group)
    os.write(DONE, b"x")
    os._exit(0)  # rank 1 only completes rank 0's all-reduce
