"""Reward functions by name, and the per-sample fallback that keeps one odd sample from stopping training::

    from soup_trl.rewards import get_reward_funcs

    reward_funcs = get_reward_funcs(["accuracy", "my_pkg.my_module.my_reward"])
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import math
import pkgutil
from collections.abc import Callable
from typing import Any

from ..text import completion_text
from .accuracy import accuracy_reward
from .arithmetic import arithmetic_reward, scratchpad_reward
from .chain import chain_reward, chain_steps_reward

logger = logging.getLogger(__name__)

#: Reward functions selectable by name (e.g. ``--reward_funcs accuracy``). Anything else is a dotted import path.
REWARD_FUNCS: dict[str, Callable] = {
    "accuracy": accuracy_reward,
    "arithmetic": arithmetic_reward,
    "chain": chain_reward,
    "chain_steps": chain_steps_reward,
    "scratchpad": scratchpad_reward,
}

_CALLING_CONVENTION = "f(prompts=..., completions=..., completion_ids=..., **dataset_columns, **kwargs)"


def _unknown_reward_error(name: str, reason: str) -> ValueError:
    return ValueError(
        f"Unknown reward function {name!r}: {reason}. Use a registered name ({', '.join(sorted(REWARD_FUNCS))}) or "
        "the dotted import path of a callable, e.g. 'my_pkg.my_module.my_reward' or 'my_pkg.my_module:Class.method' "
        f"(the module must be importable; the function is called as {_CALLING_CONVENTION})."
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


def is_async_callable(func: Callable) -> bool:
    """Whether calling `func` returns a coroutine (functions, partials and instances with an async ``__call__``)."""
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(type(func).__call__)


def _checked(name: str, rewards: Any, expected: int) -> list[float | None]:
    """`rewards` as a list, if it holds `expected` numbers or Nones (NaN counts as None); else a ValueError."""
    try:
        values = list(rewards)
    except TypeError:
        raise ValueError(f"reward function {name!r} returned {type(rewards).__name__}, not a list") from None
    if len(values) != expected:
        raise ValueError(f"reward function {name!r} returned {len(values)} values for {expected} completions")
    checked = []
    for value in values:
        try:
            if isinstance(value, str | bytes):
                raise TypeError
            number = None if value is None else float(value)
        except (TypeError, ValueError):
            raise ValueError(f"reward function {name!r} returned {value!r}, not a number or None") from None
        checked.append(None if number is None or math.isnan(number) else number)
    return checked


def _one_sample(kwargs: dict[str, Any], index: int, size: int) -> dict[str, Any]:
    """The keyword arguments of sample `index`: per-sample lists sliced to one element, everything else as is."""
    return {k: [v[index]] if isinstance(v, list) and len(v) == size else v for k, v in kwargs.items()}


class _Fallback:
    """Bookkeeping of one batch retried sample by sample."""

    def __init__(self, name: str, kwargs: dict[str, Any], first_error: Exception):
        self.name, self.kwargs, self.first_error = name, kwargs, first_error
        self.size = len(kwargs["completions"])
        self.rewards: list[float | None] = []
        self.failed = 0

    def samples(self):
        return (_one_sample(self.kwargs, i, self.size) for i in range(self.size))

    def add(self, rewards: Any = None, error: Exception | None = None) -> None:
        if error is None:
            try:
                self.rewards.extend(_checked(self.name, rewards, 1))
                return
            except ValueError as bad:
                error = bad
        index = len(self.rewards)
        self.failed += 1
        self.rewards.append(None)
        completion = self.kwargs["completions"][index]
        logger.warning(
            "reward function %r failed on sample %d (%r): %r; reward None.",
            self.name,
            index,
            completion_text(completion)[:200],
            error,
        )

    def result(self) -> list[float | None]:
        if self.failed == self.size:
            raise RuntimeError(
                f"Reward function {self.name!r} failed on every sample of the batch with {self.first_error!r}. Fix "
                f"the function (it is called as {_CALLING_CONVENTION} and must return one number or None per "
                "completion) or remove it from reward_funcs."
            ) from self.first_error
        if self.kwargs.get("log_metric") is not None:
            self.kwargs["log_metric"](f"{self.name}/failed_frac", self.failed / self.size)
        return self.rewards


def per_sample_fallback(func: Callable) -> Callable:
    """Wrap a reward function so that one odd sample cannot stop training.

    When the function raises on a batch, or returns something other than one number or None per completion, it is
    called again sample by sample; samples that still fail get ``None`` (TRL gives them no reward from this
    function), each failure is logged with the function's name and the error, and counted in the
    ``<name>/failed_frac`` metric. If every sample fails the function itself is broken, and the error is raised
    with its name. NaN is returned as None. An ``async def`` function stays async (TRL awaits it on its own event
    loop).
    """
    name = getattr(func, "__name__", type(func).__name__)

    if is_async_callable(func):

        @functools.wraps(func)
        async def async_wrapper(*, completions, **kwargs):
            kwargs["completions"] = completions
            try:
                return _checked(name, await func(**kwargs), len(completions))
            except Exception as batch_error:  # retried per sample below
                fallback = _Fallback(name, kwargs, batch_error)
            for sample in fallback.samples():
                try:
                    fallback.add(await func(**sample))
                except Exception as error:
                    fallback.add(error=error)
            return fallback.result()

        return _named(async_wrapper, name)

    @functools.wraps(func)
    def wrapper(*, completions, **kwargs):
        kwargs["completions"] = completions
        try:
            return _checked(name, func(**kwargs), len(completions))
        except Exception as batch_error:  # retried per sample below
            fallback = _Fallback(name, kwargs, batch_error)
        for sample in fallback.samples():
            try:
                fallback.add(func(**sample))
            except Exception as error:
                fallback.add(error=error)
        return fallback.result()

    return _named(wrapper, name)


def _named(wrapper: Callable, name: str) -> Callable:
    """TRL names a reward's metrics after ``__name__``: keep the wrapped function's (a callable instance has none)."""
    wrapper.__name__ = wrapper.__qualname__ = name
    return wrapper


def get_reward_funcs(names: list[str] | str) -> list[Callable]:
    """Reward functions from registry names and/or dotted paths, each wrapped in `per_sample_fallback`.

    A string may hold several names, comma-separated.

    Raises:
        ValueError: for an unknown name or a failed import, listing the valid names and the dotted-path form.
    """
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    if not names:
        raise ValueError(f"No reward function given. Registered names: {', '.join(sorted(REWARD_FUNCS))}.")
    return [per_sample_fallback(get_reward_func(name)) for name in names]
