"""The per-token data of the rollout history, flat: one array per field, rollouts appended one after another.

A stored rollout is a span (offset, length) of four arrays: token ids (int32), the log-probs its loss used (float32),
the step that sampled each token (int32) and, for the entropy cut, entropies (float16): 12 bytes a token, 14 with
entropies, and nothing per rollout but its span. `TokenStore` keeps them

- in memory (`folder=None`), in arrays that grow by doubling;
- or in files of a folder local to the node (one file per field), which one process of the node writes (`writer`)
  and every process of the node maps read-only: the page cache holds one copy per node, however many processes
  train on it, and the operating system may page it out to disk. Every process calls `append` and `compact` with the
  same arguments in the same order (the history is the same on every process), so every process knows every span;
  only the writer writes.

Rollouts that can no longer be served leave holes; `compact` rewrites the live spans into fresh arrays (files of the
next generation, which the other processes switch to after a barrier) and returns their new offsets. `save` and
`load_files` move the live data into and out of a checkpoint as one raw file per field, streamed (seconds for
gigabytes, and no copy in memory); `arrays` and `load` do the same through tensors, for small stores.
"""

from __future__ import annotations

import atexit
import os
import shutil
from collections.abc import Callable

import numpy as np
import torch

FIELDS = {"ids": np.int32, "logps": np.float32, "sampled_at": np.int32, "entropies": np.float16}


class TokenStore:
    def __init__(self, folder: str | None = None, writer: bool = True, barrier: Callable[[], None] | None = None):
        self.folder, self.writer, self.barrier = folder, writer, barrier or (lambda: None)
        self.length = 0  # tokens appended in the current generation (live or not)
        self.generation = 0
        self._arrays = {name: np.zeros(0, dtype) for name, dtype in FIELDS.items()}  # in memory, or the read maps
        self._mapped = 0  # tokens the read maps cover
        if folder is not None and writer:
            os.makedirs(folder, exist_ok=True)
            for name in FIELDS:
                open(self._file(name), "wb").close()
            atexit.register(self.close)  # the files go with the run (leave_launch runs exit handlers too)

    def _file(self, name: str, generation: int | None = None) -> str:
        return os.path.join(self.folder, f"{name}.{self.generation if generation is None else generation}.bin")

    def append(self, rollouts: list[tuple]) -> list[int]:
        """Append rollouts, each (ids, logps, sampled_at, entropies or None: zeros are kept) of equal lengths (1-D
        arrays or tensors); their offsets."""
        lengths = [len(r[0]) for r in rollouts]
        offsets = [self.length + sum(lengths[:i]) for i in range(len(lengths))]
        total = sum(lengths)
        if not rollouts:
            return []
        values = {
            name: np.concatenate([
                np.zeros(n, dtype) if r[k] is None else np.asarray(r[k], dtype) for r, n in zip(rollouts, lengths)
            ])
            for k, (name, dtype) in enumerate(FIELDS.items())
        }  # fmt: skip
        if self.folder is None:
            self._grow(self.length + total)
            for name, value in values.items():
                self._arrays[name][self.length : self.length + total] = value
        elif self.writer:
            for name, value in values.items():
                with open(self._file(name), "ab") as f:
                    f.write(value.tobytes())
        self.length += total
        return offsets

    def _grow(self, needed: int) -> None:
        capacity = len(self._arrays["ids"])
        if needed <= capacity:
            return
        capacity = max(needed, 2 * capacity, 1024)
        for name, array in self._arrays.items():
            grown = np.zeros(capacity, array.dtype)
            grown[: len(array)] = array
            self._arrays[name] = grown

    def _map(self) -> None:
        """Map the files as far as they are written (the other processes' view of the writer's appends)."""
        self._arrays = {
            name: np.memmap(self._file(name), dtype=dtype, mode="r") if self.length else np.zeros(0, dtype)
            for name, dtype in FIELDS.items()
        }
        self._mapped = self.length

    def read(self, offset: int, length: int) -> dict[str, torch.Tensor]:
        """A rollout's fields, copied out of the store (CPU tensors)."""
        if self.folder is not None and self._mapped < offset + length:
            self._map()
        return {name: torch.from_numpy(np.array(array[offset : offset + length])) for name, array in self._arrays.items()}

    def compact(self, spans: list[tuple[int, int]]) -> list[int]:
        """Keep only `spans` (offset, length), in this order, in new arrays; their new offsets. Every process calls it
        at the same point (it ends with a barrier when the store is in files)."""
        offsets, position = [], 0
        for _, length in spans:
            offsets.append(position)
            position += length
        if self.folder is None:
            self._arrays = {name: _gather(array, spans) for name, array in self._arrays.items()}
        else:
            if self.writer:
                self._map()
                for name, array in self._arrays.items():
                    _gather(array, spans).tofile(self._file(name, self.generation + 1))
            self.barrier()  # the next generation is written before anyone reads it
            if self.writer:
                for name in FIELDS:
                    os.remove(self._file(name))
            self.generation += 1
            self._arrays, self._mapped = {name: np.zeros(0, dtype) for name, dtype in FIELDS.items()}, 0
        self.length = position
        return offsets

    def arrays(self, spans: list[tuple[int, int]]) -> dict[str, torch.Tensor]:
        """The fields of `spans`, one after another, as tensors (what a checkpoint keeps)."""
        if self.folder is not None:
            self._map()
        return {name: torch.from_numpy(_gather(array, spans)) for name, array in self._arrays.items()}

    def save(self, prefix: str, spans: list[tuple[int, int]]) -> None:
        """Write the fields of `spans`, one after another, to `{prefix}.{field}.bin` (raw arrays), span by span: no copy
        of the store is made in memory, whatever its size."""
        for name, dtype in FIELDS.items():
            size = np.dtype(dtype).itemsize
            with open(f"{prefix}.{name}.bin", "wb") as out:
                if self.folder is None:
                    for offset, length in spans:
                        out.write(self._arrays[name][offset : offset + length].tobytes())
                    continue
                with open(self._file(name), "rb") as source:
                    for offset, length in spans:
                        out.write(os.pread(source.fileno(), length * size, offset * size))

    def load_files(self, prefix: str) -> None:
        """Replace the store's data by the files `save` wrote; the writer copies them into the machine's folder (a
        file copy, which holds no array in memory), the others only learn the length."""
        self.length = os.path.getsize(f"{prefix}.ids.bin") // np.dtype(FIELDS["ids"]).itemsize
        if self.folder is None:
            self._arrays = {name: np.fromfile(f"{prefix}.{name}.bin", dtype) for name, dtype in FIELDS.items()}
            return
        if self.writer:
            for name in FIELDS:
                shutil.copyfile(f"{prefix}.{name}.bin", self._file(name))
        self.barrier()
        self._arrays, self._mapped = {name: np.zeros(0, dtype) for name, dtype in FIELDS.items()}, 0

    def load(self, arrays: dict[str, torch.Tensor]) -> None:
        """Replace the store's data by `arrays` (from `arrays`, in a checkpoint); the writer writes them."""
        self.length = int(arrays["ids"].numel())
        if self.folder is None:
            self._arrays = {name: arrays[name].numpy().astype(FIELDS[name]) for name in FIELDS}
            return
        if self.writer:
            for name in FIELDS:
                arrays[name].numpy().astype(FIELDS[name]).tofile(self._file(name))
        self.barrier()
        self._arrays, self._mapped = {name: np.zeros(0, dtype) for name, dtype in FIELDS.items()}, 0

    def nbytes(self) -> int:
        """Bytes of the store's data (in memory or in the node's files), holes included."""
        return self.length * sum(np.dtype(dtype).itemsize for dtype in FIELDS.values())

    def close(self) -> None:
        """Remove the node's files (the writer; the folder goes when it is empty)."""
        if self.folder is None or not self.writer:
            return
        for name in FIELDS:
            if os.path.exists(self._file(name)):
                os.remove(self._file(name))
        if os.path.isdir(self.folder) and not os.listdir(self.folder):
            os.rmdir(self.folder)


def _gather(array: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    if not spans:
        return np.zeros(0, array.dtype)
    return np.concatenate([array[offset : offset + length] for offset, length in spans])
