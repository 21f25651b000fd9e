"""Rewards for tests on tiny random models, deterministic.

`shaped_reward` varies within groups, so advantages are non-zero. `mixed_reward` gives every completion of a
'0+b=' prompt the same reward (zero-variance groups, for dynamic sampling) and shapes the others.
`distinct_characters_reward` does what `shaped_reward` does for a real model's completions (text or chat messages).
"""

from ..core.text import completion_text

CONSTANT_PREFIX = "0+"


def shaped_reward(completions, **kwargs):
    return [len(set(c)) / 10 + len(c) / 100 for c in completions]


def mixed_reward(completions, prompts, **kwargs):
    return [1.0 if p.startswith(CONSTANT_PREFIX) else len(set(c)) / 10 + len(c) / 100
            for c, p in zip(completions, prompts)]


def distinct_characters_reward(completions, **kwargs):
    """Distinct characters of each completion's text / 10: varies within every group of a real model's samples, so
    that a short run's loss and gradients are not zero (a small model rarely answers right in a few tokens)."""
    return [len(set(completion_text(c))) / 10 for c in completions]
