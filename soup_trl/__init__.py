"""soup-trl: SOUP (Single-sample Mix-pOlicy Unified Paradigm) as a TRL extension.

The package's rooms: `core/` (what every trainer shares: `MethodTrainer`, `MethodConfig`, checkpoints, console, data
checks, the reward guard); SOUP itself at the top level, as TRL keeps grpo_config / grpo_trainer (`config`,
`trainer`, its pure tensor functions `ops` and `truncation`, `budgets`, `dynamic_sampling`, `model_card`);
`baselines/` (M2PO, LUFFY); `rewards/`; `toy/` (offline tasks and built-in models); `evaluation/`; `scripts/` (the
commands). This module is the public facade: it names the classes users import, lazily.

SOUP's top-level modules may import: `soup_trl.core` only.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = [
    "LUFFYConfig",
    "LUFFYTrainer",
    "M2POConfig",
    "M2POTrainer",
    "SOUPConfig",
    "SOUPTrainer",
    "TRUNCATION_STRATEGIES",
    "TruncationInputs",
    "get_reward_func",
    "get_reward_funcs",
    "register_truncation",
]

# Imported on first access, so that `import soup_trl.<module>` (e.g. the `soup-trl` command) does not pay for TRL.
_LAZY = {
    "SOUPConfig": ".config",
    "SOUPTrainer": ".trainer",
    "TRUNCATION_STRATEGIES": ".truncation",
    "register_truncation": ".truncation",
    "TruncationInputs": ".truncation",
    "get_reward_func": ".rewards",
    "get_reward_funcs": ".rewards",
    "LUFFYConfig": ".baselines.luffy",
    "LUFFYTrainer": ".baselines.luffy",
    "M2POConfig": ".baselines.m2po",
    "M2POTrainer": ".baselines.m2po",
}

if TYPE_CHECKING:
    from .baselines.luffy import LUFFYConfig, LUFFYTrainer
    from .baselines.m2po import M2POConfig, M2POTrainer
    from .config import SOUPConfig
    from .rewards import get_reward_func, get_reward_funcs
    from .trainer import SOUPTrainer
    from .truncation import TRUNCATION_STRATEGIES, TruncationInputs, register_truncation


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
