"""Truncation strategies: where a behavior completion is cut into an off-policy prefix.

A strategy is a plain function registered under a name. It receives a `TruncationInputs` describing a batch of
behavior completions and returns the proposed prefix length of every row (number of completion tokens kept). The
trainer always passes the proposal through `clamp_prefix_lengths`, so a strategy cannot break the invariants:

- the EOS token is never part of a prefix (at most `content_length` tokens are kept);
- at least one token of continuation budget is left (`prefix <= max_completion_length - 1`);
- padding is never kept.

Add a strategy with::

    from soup_trl.truncation import register_truncation

    @register_truncation("my_cut", needs_entropy=False)
    def my_cut(inputs, args, generator):
        return inputs.content_lengths // 3

and select it with `soup_truncation="my_cut"` once the module that registers it is imported, or, from a recipe or the
command line (where nothing imports it first), with `soup_truncation="my_package.my_module:my_cut"`: the config imports
`my_package.my_module`, which registers `my_cut`, then looks it up.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class TruncationStrategy:
    name: str
    fn: Callable[[TruncationInputs, Any, torch.Generator | None], torch.Tensor]
    needs_entropy: bool = False
    # False when the cut depends on the completions' lengths only: the trainer then computes the behavior log-probs
    # after cutting, over prefix positions only (a forward as wide as the longest prefix instead of the completion).
    needs_logps: bool = True
    # When set, behavior completions for steps 2..T are sampled with at most this many tokens (a function of the
    # config) instead of in full: only the prefix is ever decoded by the behavior policy.
    behavior_budget: Callable[[Any], int] | None = None
    # When set, the cut `fn` proposes is refined when a step is scored, by the policy that will continue it:
    # `refine(inputs, current_logps, proposed, args, generator) -> (B,) prefix lengths <= proposed`, where
    # `inputs.logps` and `current_logps` (B, W) are the behavior and the current policy's log-probs of the first
    # W = max(proposed) completion tokens. Costs one no-grad forward over those tokens per spliced step.
    refine: Callable[..., torch.Tensor] | None = None


TRUNCATION_STRATEGIES: dict[str, TruncationStrategy] = {}


def register_truncation(
    name: str,
    needs_entropy: bool = False,
    behavior_budget: Callable[[Any], int] | None = None,
    needs_logps: bool = True,
    refine: Callable[..., torch.Tensor] | None = None,
):
    """Register `fn(inputs, args, generator) -> (B,) prefix lengths` under `name`.

    `needs_logps=False` promises that `fn` reads neither `inputs.logps` nor `inputs.entropies` (they are None then).
    `refine`: see `TruncationStrategy.refine`.
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
        "Register a new one with `soup_trl.truncation.register_truncation` in a module of yours and select it as "
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
            f"registers with `soup_trl.truncation.register_truncation`, e.g. {MODULE_FORM}."
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
        f"`@soup_trl.truncation.register_truncation({strategy_name!r})`, or name a strategy the module registers."
    )


def content_lengths(completion_ids: torch.Tensor, completion_mask: torch.Tensor, eos_token_ids) -> torch.Tensor:
    """Number of tokens before a terminal EOS, per row: `length - 1` if the last real token is an EOS."""
    lengths = completion_mask.sum(dim=1).long()  # (B,)
    last = (lengths - 1).clamp(min=0)
    last_token = completion_ids.gather(1, last.unsqueeze(1)).squeeze(1)  # (B,)
    eos = torch.as_tensor(list(eos_token_ids), device=completion_ids.device)
    ends_with_eos = torch.isin(last_token, eos) & (lengths > 0)
    return lengths - ends_with_eos.long()


#: Where SOUPTrainer writes the tokens at its cuts, in the run's output_dir (one JSON line per cycle), and where
#: `soup-trl plot` reads them (the paper's Figure 3).
CUT_TOKENS_FILE = "soup_cut_tokens.jsonl"


def cut_tokens(completion_ids: torch.Tensor, completion_mask: torch.Tensor, prefix_lengths: torch.Tensor) -> list:
    """The behavior token at each row's cut, the first one the current policy writes anew (the prefix keeps the
    tokens before it), as a token id; None where the behavior completion ends at the cut (nothing was cut away: an
    empty completion, or a row that the prefix budget sampled only up to its budget)."""
    lengths = completion_mask.sum(dim=1).long()  # (B,)
    at = prefix_lengths.long().clamp(max=max(completion_ids.size(1) - 1, 0))  # (B,)
    tokens = completion_ids.gather(1, at.unsqueeze(1)).squeeze(1) if completion_ids.size(1) else at  # (B,)
    return [int(t) if k < n else None for t, k, n in zip(tokens.tolist(), prefix_lengths.tolist(), lengths.tolist())]


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
def ratio_truncation(inputs: TruncationInputs, args, generator=None) -> torch.Tensor:
    """Keep the first round(len(s) * soup_prefix_ratio) tokens, len(s) counting the tokens before the EOS."""
    return round_half_even(inputs.content_lengths.double() * args.soup_prefix_ratio).long()


@register_truncation("entropy", needs_entropy=True)
def entropy_truncation(inputs: TruncationInputs, args, generator=None) -> torch.Tensor:
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
    candidate = inputs.completion_mask.bool() & (positions < args.max_completion_length)
    scores = entropies.float().masked_fill(~candidate, float("-inf"))  # padding never ranks
    k = min(args.soup_entropy_top_k, width)
    top_values, top_positions = scores.topk(k, dim=1)  # (B, k)
    valid = torch.isfinite(top_values)  # rows shorter than k have fewer candidates
    num_valid = valid.sum(dim=1).clamp(min=1)  # (B,)
    draw = torch.rand(num_rows, generator=generator, device=entropies.device)
    pick = (draw * num_valid).long().clamp(max=k - 1)  # uniform index among the valid candidates
    cut = top_positions.gather(1, pick.unsqueeze(1)).squeeze(1)
    return torch.where(valid.any(dim=1), cut, torch.zeros_like(cut))


def prefix_budget_tokens(args) -> int:
    """`soup_prefix_budget` in tokens: a fraction of max_completion_length below 1, a token count from 1 on."""
    budget = args.soup_prefix_budget
    tokens = round(budget * args.max_completion_length) if budget < 1 else int(budget)
    return max(1, min(tokens, args.max_completion_length - 1))


@register_truncation("prefix_budget", behavior_budget=prefix_budget_tokens, needs_logps=False)
def prefix_budget_truncation(inputs: TruncationInputs, args, generator=None) -> torch.Tensor:
    """Keep everything the behavior policy wrote within its budget (its EOS, if it stopped early, excluded).

    Unlike "ratio", the cut is a fixed token budget, not a fraction of each completion's own length: the behavior
    policy never decodes the suffix that would be thrown away, so a cycle decodes about as many tokens as on-policy
    training. Completions shorter than the budget are continued from their EOS decision. Longer completions (stored
    rollouts of `soup_behavior_source="history"`, decoded in full) keep their first budget tokens.
    """
    return inputs.content_lengths.clamp(max=prefix_budget_tokens(args))


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


def step_generator(args, step: int, process_index: int) -> torch.Generator:
    """Random numbers of a `refine` call: a function of the seed, the optimizer step and the process, so that the
    refinement draws nothing from the global generator (sampling stays as it is) and a resumed run draws the same."""
    return torch.Generator().manual_seed((args.seed * 1_000_003 + step) * 1_009 + process_index)


def drift_refine(inputs: TruncationInputs, current_logps, proposed, args, generator=None) -> torch.Tensor:
    """Shorten ratio cuts to the tokens the current policy still accepts (`accepted_prefix_lengths`)."""
    uniform = torch.rand(current_logps.shape, generator=generator).to(current_logps.device)
    return accepted_prefix_lengths(inputs.logps, current_logps, proposed, args.soup_drift_lenience, uniform)


@register_truncation("drift", needs_logps=False, refine=drift_refine)
def drift_truncation(inputs: TruncationInputs, args, generator=None) -> torch.Tensor:
    """The ratio cut, at most `soup_prefix_ratio` of the completion, then shortened when a step is scored: the prefix
    keeps behavior tokens while the policy that continues it accepts them (a lenient likelihood-ratio test,
    `soup_drift_lenience`) and ends at the first rejection. With no drift (the cycle's first steps) it is the ratio
    cut; the more the current policy has moved from the behavior policy, the shorter the off-policy prefix."""
    return ratio_truncation(inputs, args, generator)
