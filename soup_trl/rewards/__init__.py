"""Reward functions for SOUP and GRPO training: math answer grading, the arithmetic task's rewards, the registry.

One module per concept:

- `answers`: the last ``\\boxed{}`` of a completion, gold answers as datasets ship them (`gold_text`) and their
  normalisation (`normalize_answer`): the one place gold answers are read, for training, grading and evaluation;
- `grading`: `grade` one completion with math-verify; `grade_batch` many, each under a time limit;
- `deadline`: the pool of killable worker processes that enforces that limit;
- `accuracy`: `accuracy_reward`, TRL's reward-function form of the above;
- `arithmetic`: the built-in addition task's rewards; `math_data`: the math prompt template and dataset columns;
- `registry`: `get_reward_funcs` (registry names or dotted paths) and `per_sample_fallback`.

May import: `soup_trl.core` (completion text, the reward guard) only; the trainers never import rewards, and
rewards never import a trainer.
"""

from .accuracy import ACCURACY_STATS, accuracy_reward
from .answers import gold_text, last_boxed_content, normalize_answer
from .arithmetic import arithmetic_reward, scratchpad_reward
from .grading import Grade, grade, grade_batch, grade_safely
from .registry import REWARD_FUNCS, get_reward_func, get_reward_funcs, per_sample_fallback

__all__ = [
    "ACCURACY_STATS",
    "REWARD_FUNCS",
    "Grade",
    "accuracy_reward",
    "arithmetic_reward",
    "get_reward_func",
    "get_reward_funcs",
    "gold_text",
    "grade",
    "grade_batch",
    "grade_safely",
    "last_boxed_content",
    "normalize_answer",
    "per_sample_fallback",
    "scratchpad_reward",
]
