"""Deprecated location of SOUP's truncation strategies (soup-trl 0.1); removed in 0.3.

`register_truncation` and `TruncationInputs` are in the package facade (`from soup_trl import register_truncation`),
the strategies in `soup_trl.soup.truncation`. A module written for 0.1 that imports from here keeps working for this
release, with a FutureWarning.
"""

import warnings

from .soup.truncation import *  # noqa: F403
from .soup.truncation import TRUNCATION_STRATEGIES, TruncationInputs, get_truncation_strategy, register_truncation

__all__ = ["TRUNCATION_STRATEGIES", "TruncationInputs", "get_truncation_strategy", "register_truncation"]

warnings.warn(
    "soup_trl.truncation moved: import register_truncation and TruncationInputs from soup_trl, and the strategies "
    "from soup_trl.soup.truncation. The old location is removed in soup-trl 0.3.",
    FutureWarning,
    stacklevel=2,
)
