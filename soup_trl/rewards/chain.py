"""Grading of the chained-addition task: its target completion and its two rewards.

The task (problem generation, splits, the tiny model) lives in `soup_trl.toy.chain`. A prompt adds n operands, all
written zero-padded to the same width W; the completion adds them one at a time, left to right, each stage written
as W column entries (the column sum with the carry, 2 digits, right to left, as in the addition task) followed by
``|`` and the running total zero-padded to W digits; stages are separated by ``|``::

    0347+0258+0116=  ->  15,10,06,00|0605|11,02,07,00|0721

The answer is the text after the last ``|`` (here ``0721``): it is written last and is right only if every stage
before it carried correctly. A stage may also skip its columns and write the running total at once
(``|0605|11,02,07,00|0721``): a tiny model adds far better column by column, and reinforcement learning has to
discover that at every stage.
"""

from __future__ import annotations

from ..text import completion_text
from .arithmetic import ALPHABET, extract_answer, scratchpad

__all__ = ["ALPHABET", "chain_reward", "chain_steps_reward", "chain_target", "parse_operands"]


def chain_target(operands: list[int], width: int, shortcuts: list[bool] | None = None) -> str:
    """Target completion adding `operands` left to right, every number `width` digits wide.

    ``chain_target([347, 258, 116], 4) == "15,10,06,00|0605|11,02,07,00|0721"``. A stage i with ``shortcuts[i]`` true
    skips its columns and writes the running total at once: ``chain_target([347, 258, 116], 4, [True, False]) ==
    "|0605|11,02,07,00|0721"``. Raises ValueError when a running total does not fit `width` digits or fewer than 2
    operands are given.
    """
    if len(operands) < 2:
        raise ValueError(f"a chain needs at least 2 operands, got {operands!r}")
    shortcuts = shortcuts or [False] * (len(operands) - 1)
    total, stages = operands[0], []
    for operand, shortcut in zip(operands[1:], shortcuts, strict=True):
        columns = "" if shortcut else scratchpad(total, operand, width).split("|")[0]
        total += operand
        if total >= 10**width:
            raise ValueError(f"running total {total} of {operands!r} does not fit width={width}; raise the width")
        stages.append(f"{columns}|{total:0{width}d}")
    return "|".join(stages)


def parse_operands(prompt) -> list[int] | None:
    """The operands of a prompt ``"0347+0258+0116="`` (text or chat messages), or None if it is not one."""
    text = completion_text(prompt).strip()
    if not text.endswith("="):
        return None
    parts = text[:-1].split("+")
    if len(parts) < 2 or not all(p.isdigit() for p in parts):
        return None
    return [int(p) for p in parts]


def chain_reward(completions: list, solution: list, **kwargs) -> list[float]:
    """TRL reward function: 1.0 iff the text after the last ``|`` (stripped) equals the solution, else 0.0."""
    rewards = []
    for completion, target in zip(completions, solution):
        answer = extract_answer(completion)
        rewards.append(1.0 if answer and target is not None and answer == str(target).strip() else 0.0)
    return rewards


def chain_steps_reward(completions: list, prompts: list, **kwargs) -> list[float]:
    """TRL reward function: the share of running totals written correctly, stage by stage, in [0, 1].

    Stage i's total is the (2i+1)-th ``|``-separated field of the completion. Compared position by position over
    the longer of the written and the target list of totals, so missing and extra stages both cost. A prompt that
    is not a chain scores 0.
    """
    rewards = []
    for completion, prompt in zip(completions, prompts):
        operands = parse_operands(prompt)
        if operands is None:
            rewards.append(0.0)
            continue
        width = len(completion_text(prompt).split("+")[0].strip())
        target = chain_target(operands, width).split("|")[1::2]
        written = completion_text(completion).split("|")[1::2]
        hits = sum(w.strip() == t for w, t in zip(written, target))
        rewards.append(hits / max(len(target), len(written)))
    return rewards
