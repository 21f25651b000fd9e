"""Truncation strategies: where a behavior completion is cut into an off-policy prefix.

A strategy is a plain function registered under a name. It receives a `TruncationInputs` describing a batch of
behavior completions, and the settings it reads as keyword parameters, and returns the proposed prefix length of every
row (number of completion tokens kept). The trainer always passes the proposal through `clamp_prefix_lengths`, so a
strategy cannot break the invariants:

- the EOS token is never part of a prefix (at most `content_length` tokens are kept);
- at least one token of continuation budget is left (`prefix <= max_completion_length - 1`);
- padding is never kept.

A strategy's parameters are bound from the config by name (`TruncationStrategy.bind`): `prefix_ratio` reads
`soup_prefix_ratio`, `max_completion_length` reads `max_completion_length` (a parameter `p` reads the field `soup_p`
when the config has one, else the field `p`); `generator` is the random generator of the call. Add a strategy with::

    from soup_trl import register_truncation

    @register_truncation("my_cut", needs_logps=False)
    def my_cut(inputs, prefix_ratio):
        return (inputs.content_lengths * prefix_ratio / 2).long()

and select it with `soup_truncation="my_cut"` once the module that registers it is imported, or, from a recipe or the
command line (where nothing imports it first), with `soup_truncation="my_package.my_module:my_cut"`: the config imports
`my_package.my_module`, which registers `my_cut`, then looks it up. A strategy written for the first release,
`fn(inputs, args, generator)` with the whole config as `args`, still works for this release, with a FutureWarning.
"""

from __future__ import annotations

import importlib
import inspect
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


@dataclass
class TruncationInputs:
    """A batch of behavior completions, right-padded to a common length C."""

    completion_ids: torch.Tensor  # (B, C) behavior tokens
    completion_mask: torch.Tensor  # (B, C) 1 on real tokens (EOS included), 0 on padding
    content_lengths: torch.Tensor  # (B,) tokens before the EOS (== length when the completion has no EOS)
    logps: torch.Tensor | None = None  # (B, C) behavior log-probs at the trainer's temperature (None unless needs_logps)
    entropies: torch.Tensor | None = None  # (B, C) behavior entropies, when the strategy needs them


#: How many leading positional parameters a strategy's functions receive from the call, not from the config
#: (`fn(inputs, ...)`, `refine(inputs, current_logps, proposed, ...)`); `generator` is the call's too.
CALL_ARGUMENTS = {"fn": 1, "behavior_budget": 0, "refine": 3}
LEGACY_PARAMETER = "args"  # the whole config, as the first release passed it


@dataclass(frozen=True)
class TruncationStrategy:
    name: str
    fn: Callable[..., torch.Tensor]
    needs_entropy: bool = False
    # False when the cut depends on the completions' lengths only: the trainer then computes the behavior log-probs
    # after cutting, over prefix positions only (a forward as wide as the longest prefix instead of the completion).
    needs_logps: bool = True
    # When set, behavior completions for steps 2..T are sampled with at most `behavior_budget(**parameters)` tokens
    # instead of in full: only the prefix is ever decoded by the behavior policy.
    behavior_budget: Callable[..., int] | None = None
    # When set, the cut `fn` proposes is refined when a step is scored, by the policy that will continue it:
    # `refine(inputs, current_logps, proposed, ..., generator) -> (B,) prefix lengths <= proposed`, where
    # `inputs.logps` and `current_logps` (B, W) are the behavior and the current policy's log-probs of the first
    # W = max(proposed) completion tokens. Costs one no-grad forward over those tokens per spliced step.
    refine: Callable[..., torch.Tensor] | None = None

    def _functions(self) -> dict[str, Callable]:
        named = {"fn": self.fn, "behavior_budget": self.behavior_budget, "refine": self.refine}
        return {role: fn for role, fn in named.items() if fn is not None}

    @property
    def parameters(self) -> tuple[str, ...]:
        """The settings its functions read from the config (`args`: the whole config, the first release's form)."""
        names = []
        for role, fn in self._functions().items():
            for name in list(inspect.signature(fn).parameters)[CALL_ARGUMENTS[role] :]:
                if name != "generator" and name not in names:
                    names.append(name)
        return tuple(names)

    def setting_errors(self, config) -> list[str]:
        """Messages for the parameters `config` has no field for (see the module docstring)."""
        return [
            f"soup_truncation={self.name!r}: the strategy reads a setting {name!r}, but the config has neither a field "
            f"soup_{name} nor {name}. Name the strategy's parameters after config fields (prefix_ratio reads "
            "soup_prefix_ratio, max_completion_length reads max_completion_length)."
            for name in self.parameters
            if name != LEGACY_PARAMETER and not hasattr(config, f"soup_{name}") and not hasattr(config, name)
        ]

    def bind(self, config) -> BoundTruncation:
        """This strategy with its parameters read from `config` (see the module docstring).

        Raises:
            ValueError: naming a parameter the config has no field for.
        """
        errors = self.setting_errors(config)
        if errors:
            raise ValueError(" ".join(errors))
        values = {}
        for name in self.parameters:
            if name == LEGACY_PARAMETER:
                values[name] = config
            else:
                values[name] = getattr(config, f"soup_{name}") if hasattr(config, f"soup_{name}") else getattr(config, name)
        if LEGACY_PARAMETER in values:
            warnings.warn(
                f"truncation strategy {self.name!r} takes the whole config as `args`; declare the settings it reads as "
                "keyword parameters instead (prefix_ratio for soup_prefix_ratio, ...). The `args` form is removed in "
                "soup-trl 0.3.",
                FutureWarning,
                stacklevel=3,
            )
        return BoundTruncation(self, values)


@dataclass(frozen=True)
class BoundTruncation:
    """A truncation strategy with its settings: what the trainer calls."""

    strategy: TruncationStrategy
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.strategy.name

    @property
    def needs_entropy(self) -> bool:
        return self.strategy.needs_entropy

    @property
    def needs_logps(self) -> bool:
        return self.strategy.needs_logps

    @property
    def refines(self) -> bool:
        return self.strategy.refine is not None

    def _call(self, fn: Callable, *args, generator: torch.Generator | None = None):
        accepted = inspect.signature(fn).parameters
        if LEGACY_PARAMETER in accepted:  # fn(inputs, args, generator), positionally, as the first release called it
            legacy = (self.values[LEGACY_PARAMETER],) + ((generator,) if len(accepted) > len(args) + 1 else ())
            return fn(*args, *legacy)
        kwargs = {name: value for name, value in self.values.items() if name in accepted}
        if "generator" in accepted:
            kwargs["generator"] = generator
        return fn(*args, **kwargs)

    def cut(self, inputs: TruncationInputs, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B,) proposed prefix lengths (before `clamp_prefix_lengths`)."""
        return self._call(self.strategy.fn, inputs, generator=generator)

    def refine(self, inputs: TruncationInputs, current_logps, proposed, generator=None) -> torch.Tensor:
        """(B,) refined prefix lengths of a strategy with `refine` (see `TruncationStrategy.refine`)."""
        return self._call(self.strategy.refine, inputs, current_logps, proposed, generator=generator)

    @property
    def behavior_budget(self) -> int | None:
        """Behavior tokens sampled for steps 2..T (None: whole completions)."""
        if self.strategy.behavior_budget is None:
            return None
        return self._call(self.strategy.behavior_budget)


TRUNCATION_STRATEGIES: dict[str, TruncationStrategy] = {}


def register_truncation(
    name: str,
    needs_entropy: bool = False,
    behavior_budget: Callable[..., int] | None = None,
    needs_logps: bool = True,
    refine: Callable[..., torch.Tensor] | None = None,
):
    """Register `fn(inputs, <settings>, generator=None) -> (B,) prefix lengths` under `name`.

    `needs_logps=False` promises that `fn` reads neither `inputs.logps` nor `inputs.entropies` (they are None then).
    `behavior_budget(<settings>) -> int` and `refine`: see `TruncationStrategy`. Settings are keyword parameters named
    after config fields (the module docstring).
    """

    def decorator(fn):
        TRUNCATION_STRATEGIES[name] = TruncationStrategy(name, fn, needs_entropy, needs_logps, behavior_budget, refine)
        return fn

    return decorator


MODULE_FORM = "'my_package.my_module:my_cut'"  # how a strategy registered by a module is named in a config


def get_truncation_strategy(name: str) -> TruncationStrategy:
    """The strategy registered under `name`, or, for `"module:strategy"`, the one that `module` registers on import.

    `"my_package.my_module:my_cut"` imports `my_package.my_module` (its `@register_truncation("my_cut")` runs then)
    and returns `my_cut`; `my_cut` may also be the name of the decorated function in that module.

    Raises:
        ValueError: naming `soup_truncation`, the module and the fix, when the name is unknown, the module cannot be
            imported, or it registers no such strategy.
    """
    if name in TRUNCATION_STRATEGIES:
        return TRUNCATION_STRATEGIES[name]
    if ":" in name:
        return _strategy_from_module(name)
    valid = ", ".join(repr(n) for n in sorted(TRUNCATION_STRATEGIES))
    module, dot, strategy = name.rpartition(".")
    hint = f" (a strategy registered by module {module!r}: soup_truncation='{module}:{strategy}')" if dot else ""
    raise ValueError(
        f"soup_truncation={name!r} is not a registered truncation strategy{hint}. Valid values: {valid}. "
        "Register a new one with `soup_trl.register_truncation` in a module of yours and select it as "
        f"soup_truncation={MODULE_FORM} (the module is imported first), or import that module before building the "
        "config and use the registered name."
    )


def _missing(error: ModuleNotFoundError, module_name: str) -> bool:
    """Whether `error` says that `module_name` itself (or a package above it) does not exist, rather than something
    the module imports."""
    return error.name is not None and (module_name == error.name or module_name.startswith(error.name + "."))


def _import_user_module(module_name: str):
    """Import `module_name`; one found in the working directory only is imported from there (the working directory
    is added to the end of sys.path, as TRL's scripts do for reward functions given by import path: the training
    script's own folder, not the working directory, starts its sys.path)."""
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        relative = Path(*module_name.split(".")[:1])
        here = Path.cwd()
        in_working_dir = (here / relative.with_suffix(".py")).is_file() or (here / relative).is_dir()
        if not (_missing(e, module_name) and in_working_dir and str(here) not in sys.path):
            raise
    sys.path.append(str(here))
    importlib.invalidate_caches()
    return importlib.import_module(module_name)


def _strategy_from_module(spec: str) -> TruncationStrategy:
    """The strategy of `soup_truncation="module:strategy"`: import `module`, then look `strategy` up."""
    module_name, _, strategy_name = (part.strip() for part in spec.partition(":"))
    if not module_name or not strategy_name or ":" in strategy_name:
        raise ValueError(
            f"soup_truncation={spec!r} is not of the form 'module:strategy': a module to import and the name it "
            f"registers with `soup_trl.register_truncation`, e.g. {MODULE_FORM}."
        )
    try:
        module = _import_user_module(module_name)
    except ModuleNotFoundError as e:
        if _missing(e, module_name):
            raise ValueError(
                f"soup_truncation={spec!r}: module {module_name!r} was not found. It must be importable in every "
                "training process: put it in the working directory, pip install its package, or add its folder to "
                "PYTHONPATH (PYTHONPATH=path/to/folder soup-trl train ...)."
            ) from None
        raise ValueError(
            f"soup_truncation={spec!r}: importing module {module_name!r} failed with {e!r}. Fix the module (or "
            "install what it imports)."
        ) from e
    except Exception as e:
        raise ValueError(
            f"soup_truncation={spec!r}: importing module {module_name!r} failed with {e!r}. Fix the module."
        ) from e
    if strategy_name in TRUNCATION_STRATEGIES:
        return TRUNCATION_STRATEGIES[strategy_name]
    attribute = getattr(module, strategy_name, None)
    for strategy in TRUNCATION_STRATEGIES.values():
        if attribute is not None and strategy.fn is attribute:  # the function's name, registered under another
            return strategy
    own = sorted(n for n, s in TRUNCATION_STRATEGIES.items() if getattr(s.fn, "__module__", None) == module.__name__)
    registers = f"it registers {', '.join(map(repr, own))}" if own else "it registers none"
    raise ValueError(
        f"soup_truncation={spec!r}: module {module_name!r} was imported but registers no truncation strategy "
        f"named {strategy_name!r} ({registers}). Decorate the function at the module's top level with "
        f"`@soup_trl.register_truncation({strategy_name!r})`, or name a strategy the module registers."
    )


def content_lengths(completion_ids: torch.Tensor, completion_mask: torch.Tensor, eos_token_ids) -> torch.Tensor:
    """Number of tokens before a terminal EOS, per row: `length - 1` if the last real token is an EOS."""
    lengths = completion_mask.sum(dim=1).long()  # (B,)
    last = (lengths - 1).clamp(min=0)
    last_token = completion_ids.gather(1, last.unsqueeze(1)).squeeze(1)  # (B,)
    eos = torch.as_tensor(list(eos_token_ids), device=completion_ids.device)
    ends_with_eos = torch.isin(last_token, eos) & (lengths > 0)
    return lengths - ends_with_eos.long()


def clamp_prefix_lengths(
    prefix_lengths: torch.Tensor, content_lengths: torch.Tensor, max_completion_length: int
) -> torch.Tensor:
    """Clamp proposed prefix lengths to `[0, min(content_length, max_completion_length - 1)]`."""
    upper = content_lengths.clamp(max=max_completion_length - 1)
    return torch.minimum(prefix_lengths.long().clamp(min=0), upper)


def round_half_even(x: torch.Tensor) -> torch.Tensor:
    """Python's `round`: halves go to the nearest even integer (round(2.5) == 2, round(3.5) == 4)."""
    return torch.round(x)


@register_truncation("ratio", needs_logps=False)
def ratio_truncation(inputs: TruncationInputs, prefix_ratio: float) -> torch.Tensor:
    """Keep the first round(len(s) * soup_prefix_ratio) tokens, len(s) counting the tokens before the EOS."""
    return round_half_even(inputs.content_lengths.double() * prefix_ratio).long()


@register_truncation("entropy", needs_entropy=True)
def entropy_truncation(
    inputs: TruncationInputs, entropy_top_k: int, max_completion_length: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Cut at a position drawn uniformly among the `soup_entropy_top_k` highest-entropy positions.

    Cutting at position j keeps tokens [0, j) as the prefix; the high-entropy token j itself is resampled by the
    current policy. Candidates are the real (non-padding) positions that leave at least one token of budget; the
    EOS position is a candidate (cutting there keeps the whole content and resamples the decision to stop).
    """
    entropies = inputs.entropies
    if entropies is None:
        raise ValueError("entropy truncation needs behavior entropies; none were computed.")
    num_rows, width = entropies.shape
    positions = torch.arange(width, device=entropies.device).expand(num_rows, -1)  # (B, C)
    candidate = inputs.completion_mask.bool() & (positions < max_completion_length)
    scores = entropies.float().masked_fill(~candidate, float("-inf"))  # padding never ranks
    k = min(entropy_top_k, width)
    top_values, top_positions = scores.topk(k, dim=1)  # (B, k)
    valid = torch.isfinite(top_values)  # rows shorter than k have fewer candidates
    num_valid = valid.sum(dim=1).clamp(min=1)  # (B,)
    draw = torch.rand(num_rows, generator=generator, device=entropies.device)
    pick = (draw * num_valid).long().clamp(max=k - 1)  # uniform index among the valid candidates
    cut = top_positions.gather(1, pick.unsqueeze(1)).squeeze(1)
    return torch.where(valid.any(dim=1), cut, torch.zeros_like(cut))


def prefix_budget_tokens(prefix_budget: float, max_completion_length: int) -> int:
    """`soup_prefix_budget` in tokens: a fraction of max_completion_length below 1, a token count from 1 on."""
    tokens = round(prefix_budget * max_completion_length) if prefix_budget < 1 else int(prefix_budget)
    return max(1, min(tokens, max_completion_length - 1))


@register_truncation("prefix_budget", behavior_budget=prefix_budget_tokens, needs_logps=False)
def prefix_budget_truncation(inputs: TruncationInputs, prefix_budget: float, max_completion_length: int) -> torch.Tensor:
    """Keep everything the behavior policy wrote within its budget (its EOS, if it stopped early, excluded).

    Unlike "ratio", the cut is a fixed token budget, not a fraction of each completion's own length: the behavior
    policy never decodes the suffix that would be thrown away, so a cycle decodes about as many tokens as on-policy
    training. Completions shorter than the budget are continued from their EOS decision. Longer completions (stored
    rollouts of `soup_behavior_source="history"`, decoded in full) keep their first budget tokens.
    """
    return inputs.content_lengths.clamp(max=prefix_budget_tokens(prefix_budget, max_completion_length))


def accepted_prefix_lengths(
    behavior_logps: torch.Tensor,
    current_logps: torch.Tensor,
    caps: torch.Tensor,
    lenience: float,
    uniform: torch.Tensor,
) -> torch.Tensor:
    """Per row, how many leading behavior tokens the current policy accepts, at most `caps` (B,).

    Token j is accepted when `uniform[j] < min(1, exp(current - behavior) / lenience)`: speculative decoding's test
    with `lenience=1` (a token the current policy finds as likely as the behavior policy did is always kept), more
    lenient below 1 (a token keeps while its probability has not fallen below `lenience` times the behavior's, and
    with a chance beyond that). The prefix ends before the first rejected token. All (B, W) but `caps`.
    """
    width = behavior_logps.size(1)
    positions = torch.arange(width, device=behavior_logps.device).unsqueeze(0)
    accept = torch.clamp(torch.exp(current_logps - behavior_logps) / lenience, max=1.0)
    rejected = (uniform >= accept) & (positions < caps.unsqueeze(1))
    first = torch.where(rejected.any(dim=1), rejected.float().argmax(dim=1), caps)
    return torch.minimum(first, caps)


def step_generator(seed: int, step: int, process_index: int) -> torch.Generator:
    """Random numbers of a `refine` call: a function of the seed, the optimizer step and the process, so that the
    refinement draws nothing from the global generator (sampling stays as it is) and a resumed run draws the same."""
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 1_009 + process_index)


def drift_refine(
    inputs: TruncationInputs, current_logps, proposed, drift_lenience: float, generator=None
) -> torch.Tensor:
    """Shorten ratio cuts to the tokens the current policy still accepts (`accepted_prefix_lengths`)."""
    uniform = torch.rand(current_logps.shape, generator=generator).to(current_logps.device)
    return accepted_prefix_lengths(inputs.logps, current_logps, proposed, drift_lenience, uniform)


@register_truncation("drift", needs_logps=False, refine=drift_refine)
def drift_truncation(inputs: TruncationInputs, prefix_ratio: float) -> torch.Tensor:
    """The ratio cut, at most `soup_prefix_ratio` of the completion, then shortened when a step is scored: the prefix
    keeps behavior tokens while the policy that continues it accepts them (a lenient likelihood-ratio test,
    `soup_drift_lenience`) and ends at the first rejection. With no drift (the cycle's first steps) it is the ratio
    cut; the more the current policy has moved from the behavior policy, the shorter the off-policy prefix."""
    return ratio_truncation(inputs, prefix_ratio)
