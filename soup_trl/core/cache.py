"""The package's on-disk cache of built models: one directory per model, built once, never half-written.

`cache_root()` is `$SOUP_TRL_CACHE` or `~/.cache/soup_trl`. `build_once` builds a model directory in a temporary
sibling and renames it into place when complete, under a file lock, so that concurrent callers (the ranks of one
launch) build it once and an interrupted build is never reused.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from filelock import FileLock

logger = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path("~/.cache/soup_trl")
CACHE_ENV = "SOUP_TRL_CACHE"


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache directory (created): `cache_dir`, else `$SOUP_TRL_CACHE`, else `~/.cache/soup_trl`."""
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR
    root = Path(cache_dir).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def is_complete(path: Path, marker: str) -> bool:
    """Whether `path` is a finished build: its marker file and a model config are there."""
    return (path / marker).is_file() and (path / "config.json").is_file()


def build_once(
    target: Path,
    marker: str,
    build: Callable[[Path], dict[str, Any]],
    *,
    force: bool = False,
    what: str = "model",
) -> dict[str, Any] | None:
    """Build `target` with `build(tmp)` unless it is complete; returns the build's record, or None if none ran.

    `build` writes the model into the empty directory it is given and returns a JSON-able record of the build, which is
    saved as `marker` (the proof of completeness). Callers waiting on the lock reuse what the first one built.
    """
    if is_complete(target, marker) and not force:
        logger.info("Using cached %s %s", what, target)
        return None
    with FileLock(target.parent / f"{target.name}.lock"):
        if is_complete(target, marker) and not force:  # built by another process while we waited
            logger.info("Using %s %s built by another process", what, target)
            return None
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp creates 0700
        try:
            record = build(tmp)
            (tmp / marker).write_text(json.dumps(record, indent=2))
            if target.exists():  # stale or forced: replace
                shutil.rmtree(target)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return record
