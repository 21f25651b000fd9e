"""The guard around reward functions that keeps one odd sample from stopping or skewing training.

`per_sample_fallback` wraps a reward function: when it raises on a batch, or returns something other than one number
or None per completion, it is called again sample by sample. A sample on which it still fails gets no reward from it
and is logged with the function's name; NaN counts as a failure (a grader that could not decide, or a numeric bug).
None stays what TRL makes of it: "this function does not score this sample". If every sample of a call fails, the
function itself is broken and the error names it.

The package's trainers wrap every plain reward function they are given (`guard_reward_funcs`) and, after TRL has
gathered the rewards of all processes, make every row on which some function failed unscorable (`fail_rows`): all
its rewards become NaN, so TRL gives it advantage 0 and leaves it out of its group's mean and std, instead of
summing the other functions' rewards as if the failed one had said 0.

Metrics (TRL's ``log_metric``, averaged over the processes): ``rewards/<name>/failed_frac`` (samples the function
failed on) and ``rewards/<name>/none_frac`` (samples it returned None for).
"""

from __future__ import annotations

import functools
import inspect
import logging
import math
from collections.abc import Callable
from typing import Any

import torch

from .text import completion_text

logger = logging.getLogger(__name__)

CALLING_CONVENTION = "f(prompts=..., completions=..., completion_ids=..., **dataset_columns, **kwargs)"


def is_async_callable(func: Callable) -> bool:
    """Whether calling `func` returns a coroutine (functions, partials and instances with an async ``__call__``)."""
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(type(func).__call__)


class _Invalid(ValueError):
    """A reward function's return value is not one number or None per completion."""


def _checked(name: str, rewards: Any, expected: int) -> list[float | None]:
    """`rewards` as a list of `expected` floats (NaN kept) or Nones; else `_Invalid`."""
    try:
        values = list(rewards)
    except TypeError:
        raise _Invalid(f"reward function {name!r} returned {type(rewards).__name__}, not a list") from None
    if len(values) != expected:
        raise _Invalid(f"reward function {name!r} returned {len(values)} values for {expected} completions")
    checked = []
    for value in values:
        try:
            if isinstance(value, str | bytes):
                raise TypeError
            checked.append(None if value is None else float(value))
        except (TypeError, ValueError):
            raise _Invalid(f"reward function {name!r} returned {value!r}, not a number or None") from None
    return checked


def sample_kwargs(kwargs: dict[str, Any], index: int, size: int) -> dict[str, Any]:
    """The keyword arguments of sample `index`: per-sample lists sliced to one element, everything else as is."""
    return {k: [v[index]] if isinstance(v, list) and len(v) == size else v for k, v in kwargs.items()}


class _Call:
    """One call of a guarded reward function: its rewards, which samples failed and why."""

    def __init__(self, name: str, kwargs: dict[str, Any]):
        self.name, self.kwargs = name, kwargs
        self.size = len(kwargs["completions"])
        self.rewards: list[float | None] = []
        self.errors: list[BaseException | None] = []

    def samples(self):
        return (sample_kwargs(self.kwargs, i, self.size) for i in range(self.size))

    def add(self, values: list[float | None]) -> None:
        for value in values:
            failed = value is not None and math.isnan(value)
            self.rewards.append(value)
            self.errors.append(_Invalid(f"reward function {self.name!r} returned NaN") if failed else None)

    def add_sample(self, returned: Any = None, error: BaseException | None = None) -> None:
        if error is None:
            try:
                self.add(_checked(self.name, returned, 1))
                return
            except _Invalid as invalid:
                error = invalid
        self.rewards.append(None)
        self.errors.append(error)

    def result(self, wrapper: Callable) -> list[float | None]:
        failed = [e is not None for e in self.errors]
        for index, error in enumerate(self.errors):
            if error is not None:
                text = completion_text(self.kwargs["completions"][index])[:200]
                logger.warning("reward function %r failed on sample %d (%r): %r", self.name, index, text, error)
        wrapper.last_failed = failed  # read (and reset) by `fail_rows`
        wrapper.last_error = next((e for e in self.errors if e is not None), None)
        if self.size and all(failed) and wrapper.stop_when_every_sample_fails:
            raise every_sample_failed(self.name, "of the batch", wrapper.last_error) from wrapper.last_error
        log_metric = self.kwargs.get("log_metric")
        if log_metric is not None and self.size:
            log_metric(f"rewards/{self.name}/failed_frac", sum(failed) / self.size)
            log_metric(
                f"rewards/{self.name}/none_frac",
                sum(r is None and not f for r, f in zip(self.rewards, failed)) / self.size,
            )
        return [None if f else r for r, f in zip(self.rewards, failed)]


def per_sample_fallback(func: Callable) -> Callable:
    """Wrap a reward function so that one odd sample cannot stop training (see the module docstring).

    The wrapper keeps the function's name (TRL names reward metrics after ``__name__``), its signature (through
    ``__wrapped__``) and its attributes; an ``async def`` function stays async (TRL awaits it on its own event loop).
    After each call, ``wrapper.last_failed`` lists per sample whether the function failed on it.
    """
    if getattr(func, "per_sample_fallback", False):
        return func
    name = getattr(func, "__name__", type(func).__name__)

    if is_async_callable(func):

        @functools.wraps(func)
        async def async_wrapper(*, completions, **kwargs):
            call = _Call(name, {**kwargs, "completions": completions})
            try:
                call.add(_checked(name, await func(completions=completions, **kwargs), call.size))
            except Exception:  # retried per sample below
                for sample in call.samples():
                    try:
                        call.add_sample(await func(**sample))
                    except Exception as error:
                        call.add_sample(error=error)
            return call.result(async_wrapper)

        return _named(async_wrapper, name)

    @functools.wraps(func)
    def wrapper(*, completions, **kwargs):
        call = _Call(name, {**kwargs, "completions": completions})
        try:
            call.add(_checked(name, func(completions=completions, **kwargs), call.size))
        except Exception:  # retried per sample below
            for sample in call.samples():
                try:
                    call.add_sample(func(**sample))
                except Exception as error:
                    call.add_sample(error=error)
        return call.result(wrapper)

    return _named(wrapper, name)


def _named(wrapper: Callable, name: str) -> Callable:
    """TRL names a reward's metrics after ``__name__``: keep the wrapped function's (a callable instance has none)."""
    wrapper.__name__ = wrapper.__qualname__ = name
    wrapper.per_sample_fallback = True
    wrapper.stop_when_every_sample_fails = True  # the package's trainers decide on the whole step instead
    wrapper.last_failed = wrapper.last_error = None
    return wrapper


def every_sample_failed(name: str, where: str, error: BaseException | None) -> RuntimeError:
    return RuntimeError(
        f"Reward function {name!r} failed on every sample {where}" + (f" with {error!r}" if error else "") + ". Fix "
        f"the function (it is called as {CALLING_CONVENTION} and must return one number or None per completion) or "
        "remove it from reward_funcs."
    )


def guard_reward_funcs(trainer) -> None:
    """Wrap each of the trainer's reward functions in `per_sample_fallback` (reward models are left as they are).

    Whether a function failed on every sample is then decided by `fail_rows` on the rows of all processes, so that
    every process stops together.
    """
    trainer.reward_funcs = [
        f if isinstance(f, torch.nn.Module) else per_sample_fallback(f) for f in trainer.reward_funcs
    ]
    for func in trainer.reward_funcs:
        if getattr(func, "per_sample_fallback", False):
            func.stop_when_every_sample_fails = False


def fail_rows(trainer, rewards_per_func: torch.Tensor) -> torch.Tensor:
    """Rewards of all processes (N, F) with every row on which a guarded function failed set to NaN (unscorable).

    Call it on every process after TRL's `_calculate_rewards` (it gathers, like TRL does there). Raises, on every
    process, when a function failed on every row of all processes.
    """
    num_local = rewards_per_func.size(0) // trainer.accelerator.num_processes
    failed = torch.zeros(num_local, len(trainer.reward_funcs), dtype=torch.bool, device=rewards_per_func.device)
    for column, func in enumerate(trainer.reward_funcs):
        if not getattr(func, "per_sample_fallback", False):
            continue
        flags, func.last_failed = func.last_failed, None
        if flags is not None and len(flags) == num_local:
            failed[:, column] = torch.tensor(flags, dtype=torch.bool)
    failed = trainer.accelerator.gather(failed.long()).bool()  # (N, F)
    for column, name in enumerate(trainer.reward_func_names):
        if failed.size(0) and failed[:, column].all():
            error = getattr(trainer.reward_funcs[column], "last_error", None)
            where = f"of the step ({failed.size(0)} on {trainer.accelerator.num_processes} process(es))"
            raise every_sample_failed(name, where, error) from error
    rows = failed.any(dim=1)  # (N,)
    if rows.any():
        rewards_per_func = rewards_per_func.clone()
        rewards_per_func[rows] = torch.nan
    return rewards_per_func
