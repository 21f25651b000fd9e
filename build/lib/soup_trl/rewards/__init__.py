"""Reward functions for SOUP and GRPO training: math answer grading, the arithmetic task's rewards, the registry.

`accuracy_reward` grades `\\boxed{}` answers against gold answers with math-verify; `get_reward_func` resolves a
registry name (`accuracy`, `arithmetic`, `scratchpad`) or a dotted import path.
"""

from .arithmetic import arithmetic_reward, scratchpad_reward
from .grading import *  # noqa: F403
from .grading import (  # noqa: F401
    REWARD_FUNCS,
    Grade,
    accuracy_reward,
    get_reward_func,
    get_reward_funcs,
    grade,
    grade_safely,
    last_boxed_content,
    normalize_answer,
    per_sample_fallback,
)

__all__ = [
    "REWARD_FUNCS",
    "Grade",
    "accuracy_reward",
    "arithmetic_reward",
    "get_reward_func",
    "get_reward_funcs",
    "grade",
    "grade_safely",
    "last_boxed_content",
    "normalize_answer",
    "per_sample_fallback",
    "scratchpad_reward",
]
