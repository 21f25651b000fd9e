"""Rewards for tests on tiny random models, deterministic.

`shaped_reward` varies within groups, so advantages are non-zero. `mixed_reward` gives every completion of a
'0+b=' prompt the same reward (zero-variance groups, for dynamic sampling) and shapes the others.
"""

CONSTANT_PREFIX = "0+"


def shaped_reward(completions, **kwargs):
    return [len(set(c)) / 10 + len(c) / 100 for c in completions]


def mixed_reward(completions, prompts, **kwargs):
    return [1.0 if p.startswith(CONSTANT_PREFIX) else len(set(c)) / 10 + len(c) / 100
            for c, p in zip(completions, prompts)]
