"""Reward functions by name, each wrapped in the per-sample fallback that keeps one odd sample from stopping training::

from soup_trl.rewards import get_reward_funcs

reward_funcs = get_reward_funcs(["accuracy", "my_pkg.my_module.my_reward"])
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable

from ..core.reward_guard import CALLING_CONVENTION, is_async_callable, per_sample_fallback
from .accuracy import accuracy_reward
from .arithmetic import arithmetic_reward, scratchpad_reward
from .chain import chain_reward, chain_steps_reward
from .deadline import time_limited

#: Reward functions selectable by name (e.g. ``--reward_funcs accuracy``). Anything else is a dotted import path.
REWARD_FUNCS: dict[str, Callable] = {
    "accuracy": accuracy_reward,
    "arithmetic": arithmetic_reward,
    "chain": chain_reward,
    "chain_steps": chain_steps_reward,
    "scratchpad": scratchpad_reward,
}

__all__ = ["REWARD_FUNCS", "get_reward_func", "get_reward_funcs", "is_async_callable", "per_sample_fallback"]


def _unknown_reward_error(name: str, reason: str) -> ValueError:
    return ValueError(
        f"Unknown reward function {name!r}: {reason}. Use a registered name ({', '.join(sorted(REWARD_FUNCS))}) or "
        "the dotted import path of a callable, e.g. 'my_pkg.my_module.my_reward' or 'my_pkg.my_module:Class.method' "
        f"(the module must be importable; the function is called as {CALLING_CONVENTION})."
    )


def _import_failure(name: str) -> str | None:
    """Why the module part of `name` fails to import, if it exists but breaks on import.

    `pkgutil.resolve_name` stops at the first submodule that fails to import and then reports a missing attribute.
    """
    module_name = name.partition(":")[0] if ":" in name else name.rpartition(".")[0]
    try:
        importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name is not None and (module_name == e.name or module_name.startswith(e.name + ".")):
            return None  # the module itself does not exist: the attribute error is the right message
        return f"importing {module_name!r} failed with {e!r}"
    except Exception as e:
        return f"importing {module_name!r} failed with {e!r}"
    return None


def get_reward_func(name: str) -> Callable:
    """One reward function from a registry name or a dotted import path (``pkg.module.attr``, ``pkg.module:attr``)."""
    name = name.strip()
    if name in REWARD_FUNCS:
        return REWARD_FUNCS[name]
    if "." not in name and ":" not in name:
        raise _unknown_reward_error(name, "not a registered name, nor a dotted path 'module.function'")
    try:
        func = pkgutil.resolve_name(name)
    except AttributeError as e:
        raise _unknown_reward_error(name, _import_failure(name) or f"AttributeError: {e}") from e
    except Exception as e:
        raise _unknown_reward_error(name, f"{type(e).__name__}: {e}") from e
    if not callable(func):
        raise _unknown_reward_error(name, f"{name!r} is a {type(func).__name__}, not a callable")
    return func


def get_reward_funcs(names: list[str] | str, timeout: float | None = None) -> list[Callable]:
    """Reward functions from registry names and/or dotted paths, each wrapped in `per_sample_fallback`.

    A string may hold several names, comma-separated. With `timeout`, each function given by a dotted path scores
    every sample in a worker process that is killed after `timeout` seconds (`deadline.time_limited`: the function
    must be picklable); the registered functions are quick or bound their own time (`accuracy`).

    Raises:
        ValueError: for an unknown name or a failed import, listing the valid names and the dotted-path form.
    """
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    if not names:
        raise ValueError(f"No reward function given. Registered names: {', '.join(sorted(REWARD_FUNCS))}.")
    funcs = []
    for name in names:
        func = get_reward_func(name)
        if timeout is not None and name.strip() not in REWARD_FUNCS:
            func = time_limited(func, timeout)
        funcs.append(per_sample_fallback(func))
    return funcs
