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

from ..core.text import completion_text
from .arithmetic import ALPHABET, arithmetic_reward, scratchpad

__all__ = ["ALPHABET", "chain_reward", "chain_steps_reward", "chain_target", "parse_operands", "stage_share"]


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
    """TRL reward function: 1.0 iff the text after the last ``|`` (stripped) equals the solution, else 0.0.

    The addition task's rule (`arithmetic_reward`), under this task's name so that its metrics are named after it.
    """
    return arithmetic_reward(completions, solution)


def stage_share(completion, prompt) -> float:
    """Share of the prompt's running totals that `completion` writes right, position by position, over the longer of
    the written and the target list (missing and extra stages both cost); 0 when the prompt is not a chain."""
    operands = parse_operands(prompt)
    if operands is None:
        return 0.0
    width = len(completion_text(prompt).split("+")[0].strip())
    target = chain_target(operands, width).split("|")[1::2]  # stage i's total is the (2i+1)-th field
    written = [w.strip() for w in completion_text(completion).split("|")[1::2]]
    return sum(map(str.__eq__, written, target)) / max(len(target), len(written))


def chain_steps_reward(completions: list, prompts: list, **kwargs) -> list[float]:
    """TRL reward function: `stage_share` of every completion, in [0, 1]; denser than `chain_reward`."""
    return [stage_share(c, p) for c, p in zip(completions, prompts)]
