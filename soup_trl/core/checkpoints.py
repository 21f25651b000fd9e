"""Complete checkpoints: a run killed while it writes a checkpoint never resumes from the half-written directory.

Transformers' `Trainer` writes a checkpoint file by file (model, optimizer, RNG states, `trainer_state.json`; the
trainers of this package add their per-process state with the optimizer) and `resume_from_checkpoint=True` takes the
`checkpoint-N` directory with the largest N, complete or not. Here every process finishes its files, then the main
process lists them with their sizes in `checkpoint_complete.json`, written last and atomically (a temporary file
renamed over it). A directory is complete when that list is there and every file in it has its listed size.

- `resume_from_checkpoint=True` resumes from the newest complete checkpoint and says which incomplete ones it passed.
- A checkpoint path that is not complete is refused with an error that names the directory, what is missing, and the
  newest complete checkpoint of the run.
- `save_total_limit` deletes old checkpoints only once the new one is complete (Transformers deletes them right after
  its `trainer_state.json`, before the other processes are done and before the marker).

What it guards against: a process killed (SIGKILL, out of memory, preemption) at any point of a save. Not against a
machine losing its page cache (power loss): files are not fsync'ed.

Transformers also pickles the whole training config into `training_args.bin` (in every checkpoint, in the output
directory, and in what `push_to_hub` uploads); `HubTokenNotPickled` keeps `hub_token` out of that pickle.
"""

from __future__ import annotations

import json
import logging
import os
import re

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

logger = logging.getLogger(__name__)

COMPLETE_MARKER = "checkpoint_complete.json"
_CHECKPOINT_RE = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def checkpoint_files(folder: str) -> dict[str, int]:
    """Every file under `folder` (paths relative to it, `/`-separated) and its size in bytes, the marker excluded."""
    files = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            relative = os.path.relpath(path, folder).replace(os.sep, "/")
            if relative not in (COMPLETE_MARKER, COMPLETE_MARKER + ".tmp"):
                files[relative] = os.path.getsize(path)
    return files


def mark_complete(folder: str, step: int) -> None:
    """Write `folder`'s marker: its files and their sizes (call once every process has written its files)."""
    marker = os.path.join(folder, COMPLETE_MARKER)
    temporary = marker + ".tmp"
    with open(temporary, "w") as f:
        json.dump({"global_step": step, "files": checkpoint_files(folder)}, f, indent=1, sort_keys=True)
    os.replace(temporary, marker)  # atomic: the marker is either absent or whole


def unmark(folder: str) -> None:
    """Remove `folder`'s marker before its files are written again (a step saved a second time)."""
    if os.path.exists(os.path.join(folder, COMPLETE_MARKER)):
        os.remove(os.path.join(folder, COMPLETE_MARKER))


def incomplete_reason(folder: str) -> str | None:
    """Why `folder` is not a complete checkpoint, or None when it is."""
    marker = os.path.join(folder, COMPLETE_MARKER)
    if not os.path.isfile(marker):
        return f"it has no {COMPLETE_MARKER} (its write was interrupted, or another trainer wrote it)"
    try:
        with open(marker) as f:
            listed = json.load(f)["files"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        return f"its {COMPLETE_MARKER} cannot be read ({error})"
    for name, size in sorted(listed.items()):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            return f"{name} is missing"
        if os.path.getsize(path) != size:
            return f"{name} has {os.path.getsize(path)} bytes, not the {size} written"
    return None


def checkpoint_dirs(output_dir: str) -> list[tuple[int, str]]:
    """(step, path) of the `checkpoint-N` directories under `output_dir`, newest first."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        match = _CHECKPOINT_RE.match(name)
        if match and os.path.isdir(os.path.join(output_dir, name)):
            found.append((int(match.group(1)), os.path.join(output_dir, name)))
    return sorted(found, reverse=True)


def last_complete_checkpoint(output_dir: str) -> str | None:
    """The newest complete checkpoint under `output_dir`; logs each newer incomplete one it passes over."""
    for _, path in checkpoint_dirs(output_dir):
        reason = incomplete_reason(path)
        if reason is None:
            return path
        logger.warning("Not resuming from %s: %s.", path, reason)
    return None


def resolve_resume(resume_from_checkpoint: str | bool | None, output_dir: str) -> str | None:
    """The checkpoint directory a run resumes from, or None to start from scratch.

    `True` (or the string "true", as `--resume_from_checkpoint true` arrives from the command line) means the newest
    complete checkpoint in `output_dir`. A directory must be complete; a path that is not a directory is passed on
    as it is (Transformers reports it). Raises ValueError naming the directory otherwise.
    """
    if resume_from_checkpoint is None or resume_from_checkpoint is False:
        return None
    wants_last = resume_from_checkpoint is True or (
        isinstance(resume_from_checkpoint, str)
        and resume_from_checkpoint.lower() == "true"
        and not os.path.exists(resume_from_checkpoint)
    )
    if wants_last:
        path = last_complete_checkpoint(output_dir)
        if path is None:
            found = ", ".join(os.path.basename(p) for _, p in checkpoint_dirs(output_dir)) or "none"
            raise ValueError(
                f"resume_from_checkpoint=True: no complete checkpoint in {output_dir} (checkpoint directories: "
                f"{found}). Start without resume_from_checkpoint, or set output_dir to the directory of the run to resume."
            )
        return path
    path = str(resume_from_checkpoint)
    if not os.path.isdir(path):
        return path
    reason = incomplete_reason(path)
    if reason is not None:
        newest = last_complete_checkpoint(os.path.dirname(os.path.abspath(path)))
        fix = f"resume from {newest} (the newest complete checkpoint of this run)" if newest else "start over"
        raise ValueError(f"Cannot resume from {path}: {reason}. It is not a complete checkpoint; {fix}.")
    return path


class CompleteCheckpoints:
    """Trainer mixin (put it before the Trainer class in the bases): complete-checkpoint markers, resume and rotation.

    Overrides `_save_checkpoint` (wraps Transformers' save: marker last, old checkpoints deleted after it) and `train`
    (`resume_from_checkpoint` resolved by `resolve_resume`). A subclass that saves state of its own must write it
    inside Transformers' save, e.g. in `_save_optimizer_and_scheduler(output_dir)`, so that the marker lists it.
    """

    def _save_checkpoint(self, model, trial):
        folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        if self.args.should_save:
            unmark(folder)
        self.accelerator.wait_for_everyone()
        limit = self.args.save_total_limit
        self.args.save_total_limit = None  # Transformers would delete old checkpoints before this one is complete
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit
        self.accelerator.wait_for_everyone()  # every process has written its files
        if self.args.should_save:
            mark_complete(folder, self.state.global_step)
            rotate_checkpoints(
                output_dir=self._get_output_dir(trial=trial),
                save_total_limit=limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=True,
            )

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        checkpoint = resolve_resume(resume_from_checkpoint, self.args.output_dir)
        if checkpoint is not None:
            logger.info("Resuming from %s", checkpoint)
        return super().train(checkpoint, *args, **kwargs)


class HubTokenNotPickled:
    """Config mixin (put it before the TrainingArguments class in the bases): `hub_token` is left out of the pickle.

    `Trainer` saves its config with `torch.save` as `training_args.bin` next to every checkpoint and model it writes and
    pushes; its `to_dict` (logs, trackers) already masks the token, the pickle does not. The unpickled config has
    `hub_token=None`: the Hub then authenticates through `HF_TOKEN` or `hf auth login`.
    """

    def __getstate__(self):
        state = dict(self.__dict__)
        if state.get("hub_token") is not None:
            state["hub_token"] = None
        return state
