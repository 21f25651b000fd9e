"""The rollout history at the paper's sizes: memory per process, checkpoint save and load, and resume memory.

    python benchmarks/history_store.py                         # 17,398 prompts x 8 samples x 1,536 tokens, and
                                                               # x 16 x 8,192 at 1/16 of the prompts, extrapolated
    python benchmarks/history_store.py --prompts 2000 --shapes 8x1536   # a quick look
    python benchmarks/history_store.py --docs docs/history.md  # also fill its `history-store` section

A synthetic store is filled as training fills it (one optimizer step of 32 prompts x G rows at a time, every row a
full-length rollout, the worst case), in the flat format of `soup_trl.soup.history_store` (tokens in files of a
machine-local folder that one process writes and every process maps). Measured for each shape:

- the store's data on the machine (the files, one copy for every process of the machine) and the writing process's
  resident memory after filling it: the index (a few dozen bytes a rollout) plus what it holds of the data;
- a checkpoint: `torch.save` of the state the trainer saves, and the same through the store's predecessor's format
  (a tensor per field of every rollout, as soup-trl 0.1 saved it) for the first rows, extrapolated;
- resume: `torch.load` (mapped) and `load_state_dict` in a fresh process that writes the machine's files (the
  machine's first process) and in one that only reads the index (every other process), with the peak resident memory
  of each.

Sizes beyond what this machine holds are run at a fraction of the prompts and scaled linearly (every quantity is
linear in the number of rows); the table says which.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
PAPER_PROMPTS = 17_398  # DAPO-Math-17k (English)
PROMPTS_PER_STEP = 32
MARKERS = ("<!-- history-store: start -->", "<!-- history-store: end -->")


def rss_mib() -> float:
    """This process's resident memory now, MiB (VmRSS)."""
    return _status_kib("VmRSS") / 1024


def peak_rss_mib() -> float:
    return _status_kib("VmHWM") / 1024


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def fill(history, prompts: int, samples: int, tokens: int) -> float:
    """Add `prompts` groups of `samples` full-length rollouts, 32 prompts a step; seconds."""
    from soup_trl.soup.history import Record, Rollout, prompt_key

    began = time.perf_counter()
    ids = torch.randint(0, 150_000, (tokens,), dtype=torch.int32)
    logps = -torch.rand(tokens)
    for step, first in enumerate(range(0, prompts, PROMPTS_PER_STEP)):
        rollout = Rollout.of(ids, logps, torch.full((tokens,), step))
        history.add(
            Record(prompt_key([p]), s, i * samples + s, step, rollout)
            for i, p in enumerate(range(first, min(first + PROMPTS_PER_STEP, prompts)))
            for s in range(samples)
        )
    return time.perf_counter() - began


def legacy_state(prompts: int, samples: int, tokens: int) -> dict:
    """The history of `prompts` prompts as soup-trl 0.1 kept and saved it: a tensor per field of every rollout."""
    from soup_trl.soup.history import prompt_key

    fields = (torch.zeros(tokens, dtype=torch.int32), torch.zeros(tokens), torch.zeros(tokens, dtype=torch.int32), None)
    return {
        "group_size": samples,
        "pool": 1,
        "groups": {
            prompt_key([p]): [[(0, tuple(f.clone() if f is not None else None for f in fields))] for _ in range(samples)]
            for p in range(prompts)
        },
    }


def resume(checkpoint: str, samples: int, writer: bool) -> dict:
    """Load a saved history in this process as the machine's writer or as a reader: seconds and peak memory."""
    from soup_trl.soup.history import RolloutHistory
    from soup_trl.soup.history_store import TokenStore

    folder = tempfile.mkdtemp(prefix="soup-history-resume-")
    began = time.perf_counter()
    history = RolloutHistory(samples, store=TokenStore(folder, writer=writer))
    history.load(checkpoint)  # as a resumed run does: the index, and (the writer) a copy of the token files
    seconds = time.perf_counter() - began
    result = {"seconds": seconds, "peak_rss_mib": peak_rss_mib(), "rollouts": len(history) * samples}
    history.store.close()
    shutil.rmtree(folder, ignore_errors=True)
    return result


def measure(prompts: int, samples: int, tokens: int, scale: float, work: Path) -> dict:
    from soup_trl.soup.history import RolloutHistory
    from soup_trl.soup.history_store import TokenStore

    folder = work / f"store-{samples}x{tokens}"
    base_rss = rss_mib()
    history = RolloutHistory(samples, store=TokenStore(str(folder), writer=True))
    fill_seconds = fill(history, prompts, samples, tokens)
    store_bytes = sum(f.stat().st_size for f in folder.iterdir())
    index_mib = rss_mib() - base_rss
    checkpoint = work / "checkpoint" / "soup_history"
    checkpoint.parent.mkdir()
    began = time.perf_counter()
    history.save(str(checkpoint))  # as every checkpoint saves it
    save_seconds = time.perf_counter() - began
    checkpoint_bytes = sum(f.stat().st_size for f in checkpoint.parent.iterdir())
    history.store.close()
    loads = {}
    for role in ("writer", "reader"):
        done = subprocess.run(
            [sys.executable, __file__, "--resume", str(checkpoint), "--samples", str(samples), "--role", role],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        loads[role] = json.loads(done.stdout.strip().splitlines()[-1])
    legacy_prompts = max(1, min(prompts, 100))
    legacy = legacy_state(legacy_prompts, samples, tokens)
    began = time.perf_counter()
    torch.save(legacy, work / "legacy.pt")
    legacy_save = (time.perf_counter() - began) * prompts / legacy_prompts
    began = time.perf_counter()
    torch.load(work / "legacy.pt", weights_only=False)
    legacy_load = (time.perf_counter() - began) * prompts / legacy_prompts
    shutil.rmtree(checkpoint.parent)
    (work / "legacy.pt").unlink()
    return {
        "prompts": prompts, "samples": samples, "tokens": tokens, "scale": scale,
        "store_gib": store_bytes / 2**30 * scale, "index_mib": index_mib * scale,
        "fill_seconds": fill_seconds * scale, "checkpoint_gib": checkpoint_bytes / 2**30 * scale,
        "save_seconds": save_seconds * scale, "load_writer_seconds": loads["writer"]["seconds"] * scale,
        "load_reader_seconds": loads["reader"]["seconds"] * scale,
        "peak_writer_mib": loads["writer"]["peak_rss_mib"], "peak_reader_mib": loads["reader"]["peak_rss_mib"],
        "legacy_save_seconds": legacy_save * scale, "legacy_load_seconds": legacy_load * scale,
        "legacy_per_process_gib": prompts * samples * tokens * 12 / 2**30 * scale,
    }  # fmt: skip


def table(results: list[dict]) -> str:
    rows = [
        "| rollouts | store on the machine | index, per process | checkpoint | save | load: first process of a "
        "machine | load: the others | peak memory at load: first / others | 0.1's format: memory per process, "
        "save, load |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        total = round(r["prompts"] * r["scale"])
        scaled = f" (measured with {r['prompts']:,} prompts, scaled)" if r["scale"] != 1 else ""
        rows.append(
            f"| {total:,} x {r['samples']} x {r['tokens']:,} tokens{scaled} | {r['store_gib']:.1f} GiB | "
            f"{r['index_mib']:.0f} MiB | {r['checkpoint_gib']:.1f} GiB | {r['save_seconds']:.0f} s | "
            f"{r['load_writer_seconds']:.0f} s | {r['load_reader_seconds']:.1f} s | "
            f"{r['peak_writer_mib']:,.0f} / {r['peak_reader_mib']:,.0f} MiB | {r['legacy_per_process_gib']:.1f} GiB, "
            f"{r['legacy_save_seconds']:.0f} s, {r['legacy_load_seconds']:.0f} s |"
        )
    return "\n".join(rows) + "\n"


def fill_docs(path: Path, body: str) -> None:
    text = path.read_text()
    start, end = MARKERS
    before, rest = text.split(start, 1)
    _, after = rest.split(end, 1)
    path.write_text(f"{before}{start}\n{body}{end}{after}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=PAPER_PROMPTS)
    parser.add_argument("--shapes", default="8x1536,16x8192", help="samples x tokens, comma-separated")
    parser.add_argument("--max-gib", type=float, default=6.0, help="largest store built here; larger ones are scaled")
    parser.add_argument("--docs", type=Path, default=None, help="a page with a history-store section to fill")
    parser.add_argument("--resume", help=argparse.SUPPRESS)
    parser.add_argument("--samples", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--role", choices=["writer", "reader"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.resume:  # a fresh process resuming (see `resume`)
        print(json.dumps(resume(args.resume, args.samples, args.role == "writer")))
        return 0
    results = []
    with tempfile.TemporaryDirectory(prefix="soup-history-bench-", dir=os.environ.get("SOUP_BENCH_DIR")) as work:
        for shape in args.shapes.split(","):
            samples, tokens = map(int, shape.split("x"))
            full_gib = args.prompts * samples * tokens * 12 / 2**30
            prompts = args.prompts if full_gib <= args.max_gib else max(PROMPTS_PER_STEP, int(args.prompts * args.max_gib / full_gib))
            result = measure(prompts, samples, tokens, args.prompts / prompts, Path(work))
            print(json.dumps(result), flush=True)
            results.append(result)
    body = table(results)
    print(body)
    if args.docs:
        fill_docs(args.docs, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
