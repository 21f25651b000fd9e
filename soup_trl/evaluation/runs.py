"""Training run directories: their checkpoints, their trainer_state.json, and the models they saved."""

from __future__ import annotations

import io
import json
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import UserError

_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every `checkpoint-N` directory of a run, by step."""
    found = []
    for child in run_dir.iterdir():
        match = _CHECKPOINT_RE.match(child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
    return sorted(found)


def check_run_dir(run: Path) -> None:
    if not run.exists():
        raise UserError(f"run directory {run} does not exist.")
    if not run.is_dir():
        raise UserError(f"{run} is not a directory.")


def find_trainer_state(run: str | Path) -> Path:
    """`RUN/trainer_state.json`, else the newest `RUN/checkpoint-N/trainer_state.json` (RUN may be the file)."""
    run = Path(run)
    if run.is_file():
        return run
    check_run_dir(run)
    if (run / "trainer_state.json").is_file():
        return run / "trainer_state.json"
    for _, checkpoint in reversed(checkpoint_dirs(run)):
        if (checkpoint / "trainer_state.json").is_file():
            return checkpoint / "trainer_state.json"
    raise UserError(
        f"no trainer_state.json in {run} nor in its checkpoint-* directories. It is written when the trainer saves "
        "(trainer.save_state() at the end of the recipe, or with each checkpoint): pass a training output_dir."
    )


def load_log_history(run: str | Path) -> tuple[Path, list[dict]]:
    """(trainer_state.json path, its log history) of a run."""
    path = find_trainer_state(run)
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a valid trainer_state.json ({e}).") from None
    history = state.get("log_history") if isinstance(state, dict) else None
    if not isinstance(history, list):
        raise UserError(f"{path}: no 'log_history' list in it; is it a Trainer's trainer_state.json?")
    return path, [h for h in history if isinstance(h, dict)]


@dataclass
class SavedModel:
    name: str  # "checkpoint-N" or "final"
    path: Path
    step: int | None  # None: the final model of a run without trainer_state.json
    tokenizer: str | None  # where to load its tokenizer from (None: its own directory)


def _has_model(path: Path) -> bool:
    return (path / "config.json").is_file() or (path / "adapter_config.json").is_file()


def _has_tokenizer(path: Path) -> bool:
    return (path / "tokenizer_config.json").is_file()


def _final_step(run: Path) -> int | None:
    try:
        step = json.loads((run / "trainer_state.json").read_text()).get("global_step")
    except (OSError, json.JSONDecodeError, AttributeError):
        return None
    return step if isinstance(step, int) else None


def saved_models(run: Path, tokenizer: str | None = None) -> list[SavedModel]:
    """The checkpoints of a run (by step) and its final model, each with the tokenizer to load it with.

    A checkpoint without tokenizer files uses `tokenizer`, else the run directory's.
    """
    check_run_dir(run)
    models = [SavedModel(p.name, p, step, None) for step, p in checkpoint_dirs(run) if _has_model(p)]
    if _has_model(run):
        models.append(SavedModel("final", run, _final_step(run), None))
    if not models:
        raise UserError(
            f"no model in {run}: no checkpoint-N directory with a saved model (config.json) and no final model. "
            "Train with save_strategy='steps' to keep checkpoints."
        )
    fallback = tokenizer or (str(run) if _has_tokenizer(run) else None)
    for model in models:
        if not _has_tokenizer(model.path):
            if fallback is None:
                raise UserError(f"{model.path} has no tokenizer and neither has {run}: pass --tokenizer.")
            model.tokenizer = fallback
    return models


TRAINING_ARGS = "training_args.bin"  # what Trainer saves beside every checkpoint: torch.save of its config


class _Opaque:
    """Stands in for every class a pickled config names, so that reading its values runs none of its code."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        state, slots = state if isinstance(state, tuple) and len(state) == 2 else (state, None)
        for part in (state, slots):
            if isinstance(part, dict):
                self.__dict__.update({k: v for k, v in part.items() if isinstance(k, str)})

    def __setitem__(self, key, value):  # a pickled mapping class: its items are not needed
        pass


class _ValuesOnly(pickle.Unpickler):
    def find_class(self, module, name):
        return _Opaque

    def persistent_load(self, pid):  # tensor storages: a config holds none that matter here
        return None


# what a file that is not a torch.save archive of a config raises when read as one
_UNREADABLE = (OSError, zipfile.BadZipFile, StopIteration, EOFError, pickle.UnpicklingError, AttributeError, IndexError,
               KeyError, TypeError, ValueError)  # fmt: skip


def _pickled_config(path: Path) -> dict:
    """The attributes of the object `torch.save` wrote to `path`, read without running any code from the file."""
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl")
        loaded = _ValuesOnly(io.BytesIO(archive.read(name))).load()
    return vars(loaded) if isinstance(loaded, _Opaque) else {}


def training_setting(run: Path, name: str) -> tuple[object, Path] | None:
    """(value, file) of a training config field as the run saved it (`training_args.bin` of the run directory, else of
    its newest checkpoint); None when the run saved no config, or not this field."""
    candidates = [run / TRAINING_ARGS] + [p / TRAINING_ARGS for _, p in reversed(checkpoint_dirs(run))]
    for path in candidates:
        if path.is_file():
            try:
                value = _pickled_config(path).get(name)
            except _UNREADABLE:
                return None
            return (value, path) if value is not None else None
    return None


RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"  # the shipped recipes, soup_trl/recipes/*.yaml


def run_recipe(model: str | Path) -> tuple[str, dict] | None:
    """(recipe, its settings) of the recipe that trained a model directory (a run or one of its checkpoints): the
    `recipe` its training_args.bin records (`soup_recipe` in runs of soup-trl 0.1), read as training resolved it (a recipe file, else the shipped recipe
    of that name). None for anything else: no directory, no saved config, a config without a recipe, a recipe file
    that cannot be read."""
    import yaml

    path = Path(model)
    if not path.is_dir():
        return None
    found = training_setting(path, "recipe") or training_setting(path, "soup_recipe")
    if found is None or not isinstance(found[0], str):
        return None
    recipe = found[0]
    file = Path(recipe)
    if not file.is_file():
        file = RECIPES_DIR / f"{file.name.removesuffix('.yaml').removesuffix('.yml')}.yaml"
    try:
        settings = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    return (recipe, settings) if isinstance(settings, dict) else None
