"""Output directories of the evaluation commands: one run's results never replace another's.

- Without `--output-dir`, every run gets a new directory `<parent>/run-N` (the first free N, created atomically, so
  two concurrent runs never share one).
- An explicit `--output-dir` that already holds results (a results.json) is refused, unless `--overwrite`: then the
  files that run listed in its results.json ("files") are removed first, so no stale file of it stays beside the new
  ones.
- Beside results.json, `config.yaml` holds every option of the run: `soup-trl <command> --config config.yaml` runs it
  again.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..core.errors import UserError

RESULTS = "results.json"
CONFIG = "config.yaml"
_RUN_RE = re.compile(r"run-(\d+)")


def model_slug(model: str) -> str:
    """A directory name for a model: its last path part (`RUN_checkpoint-N` for a checkpoint)."""
    path = Path(model.rstrip("/"))
    name = path.name
    if re.match(r"checkpoint-\d+$", name) and path.parent.name:
        name = f"{path.parent.name}_{name}"
    if name.startswith("tiny-addition-"):  # the cached warmed-up tiny model
        name = "tiny-arithmetic"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "model"


def new_run_dir(parent: Path) -> Path:
    """Create and return `parent/run-N`, N one more than the highest existing run."""
    parent.mkdir(parents=True, exist_ok=True)
    taken = [int(m.group(1)) for p in parent.iterdir() if (m := _RUN_RE.fullmatch(p.name))]
    number = max(taken, default=0) + 1
    while True:
        path = parent / f"run-{number}"
        try:
            path.mkdir()
            return path
        except FileExistsError:  # another run took it meanwhile
            number += 1


def previous_results(directory: Path) -> dict[str, Any] | None:
    """The results.json a directory holds (None if none; `{}` if it cannot be read)."""
    path = directory / RESULTS
    if not path.is_file():
        return None
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return report if isinstance(report, dict) else {}


def remove_results(directory: Path) -> None:
    """Remove results.json and the files it lists (plain names inside `directory` only)."""
    listed = (previous_results(directory) or {}).get("files", [])
    for name in [*(n for n in listed if isinstance(n, str)), RESULTS]:
        if Path(name).name == name and (directory / name).is_file():
            (directory / name).unlink()


def claim_output_dir(output_dir: str | None, default_parent: Path, overwrite: bool) -> Path:
    """The directory a run writes to: a new `default_parent/run-N`, or `output_dir` if it holds no other results."""
    if output_dir is None:
        return new_run_dir(default_parent)
    path = Path(output_dir)
    if previous_results(path) is not None:
        if not overwrite:
            raise UserError(
                f"{path} already holds the results of another run ({path / RESULTS}): pass --overwrite to replace "
                "them, or another --output-dir (without --output-dir every run gets a new directory)."
            )
        remove_results(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_results(directory: Path, report: dict[str, Any], files: list[str]) -> None:
    """Write results.json (listing `files`, the run's other outputs) and config.yaml (`report["settings"]`)."""
    import yaml

    (directory / CONFIG).write_text(yaml.safe_dump(report.get("settings", {}), sort_keys=False))
    report["files"] = [*files, CONFIG]
    (directory / RESULTS).write_text(json.dumps(report, indent=2, default=str) + "\n")
