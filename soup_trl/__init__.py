"""soup-trl: SOUP (Single-sample Mix-pOlicy Unified Paradigm) as a TRL extension.

The package's rooms, each a folder whose `__init__` says what it holds and what it may import: `core/` (what every
trainer shares: `MethodTrainer`, `MethodConfig`, dynamic sampling, checkpoints and their extra state, console, data
checks, the reward guard); one folder per training method on it, the same shape for each (a config, a thin trainer,
its pure tensor functions, the modules its hooks call): `soup/`, `m2po/`, `luffy/`; `rewards/`; `toy/` (offline tasks
and built-in models); `evaluation/`; `scripts/` (the commands); `testing/` (what the tests and benchmarks share).
This module is the public facade: it names the classes users import, lazily.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"  # the package version (pyproject.toml reads it); CHANGELOG.md says what changed
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
    "SOUPConfig": ".soup.config",
    "SOUPTrainer": ".soup.trainer",
    "TRUNCATION_STRATEGIES": ".soup.truncation",
    "register_truncation": ".soup.truncation",
    "TruncationInputs": ".soup.truncation",
    "get_reward_func": ".rewards",
    "get_reward_funcs": ".rewards",
    "LUFFYConfig": ".luffy.config",
    "LUFFYTrainer": ".luffy.trainer",
    "M2POConfig": ".m2po.config",
    "M2POTrainer": ".m2po.trainer",
}

if TYPE_CHECKING:
    from .luffy.config import LUFFYConfig
    from .luffy.trainer import LUFFYTrainer
    from .m2po.config import M2POConfig
    from .m2po.trainer import M2POTrainer
    from .rewards import get_reward_func, get_reward_funcs
    from .soup.config import SOUPConfig
    from .soup.trainer import SOUPTrainer
    from .soup.truncation import TRUNCATION_STRATEGIES, TruncationInputs, register_truncation


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
