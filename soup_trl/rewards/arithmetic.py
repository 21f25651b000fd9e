"""Grading of the scratchpad-addition task: its answer format, its target scratchpad and its two rewards.

The task itself (problem generation, splits, the tiny model) lives in `soup_trl.toy`; see
`soup_trl.toy.arithmetic` for the format: ``"347+258="`` -> ``"15,10,06|605"``.
"""

from __future__ import annotations

from typing import Any

from ..core.text import completion_text as _completion_text

ALPHABET = "0123456789+=,|"


def scratchpad(a: int, b: int, width: int = 0) -> str:
    """Target completion for ``a+b=``, e.g. ``scratchpad(347, 258) == "15,10,06|605"``.

    Writes ``max(width, len(str(a)), len(str(b)))`` columns: pass the number of digits the operands are written
    with when they carry leading zeros (``scratchpad(1, 2, width=3) == "03,00,00|3"``).
    """
    if a < 0 or b < 0:
        raise ValueError("operands must be non-negative")
    da, db = str(a)[::-1], str(b)[::-1]
    carry = 0
    columns = []
    for i in range(max(width, len(da), len(db))):
        s = (int(da[i]) if i < len(da) else 0) + (int(db[i]) if i < len(db) else 0) + carry
        columns.append(f"{s:02d}")
        carry = s // 10
    return ",".join(columns) + "|" + str(a + b)


def extract_answer(completion: Any) -> str | None:
    """The text after the last ``|`` (stripped), or None when there is no ``|``."""
    text = _completion_text(completion)
    if "|" not in text:
        return None
    return text.rsplit("|", 1)[1].strip()


def arithmetic_reward(completions: list, solution: list, **kwargs) -> list[float]:
    """TRL reward function: 1.0 iff the text after the last ``|`` (stripped) equals the solution, else 0.0.

    Accepts plain-text completions and chat-message lists; never raises on malformed completions.
    """
    rewards = []
    for completion, target in zip(completions, solution):
        try:
            answer = extract_answer(completion)
            ok = answer is not None and target is not None and answer != "" and answer == str(target).strip()
        except Exception:  # a reward function must not stop training
            ok = False
        rewards.append(1.0 if ok else 0.0)
    return rewards


arithmetic_reward.answer_columns = ("solution",)  # read as text; checked before training


def _operands(prompt: Any) -> tuple[int, int, int] | None:
    """(A, B, digits the longer operand is written with) of a prompt ``"A+B="`` (text or chat messages), or None."""
    text = _completion_text(prompt).strip()
    left, plus, right = text.rstrip("=").partition("+")
    if not plus or not left.isdigit() or not right.isdigit():
        return None
    return int(left), int(right), max(len(left), len(right))


def scratchpad_reward(completions: list, prompts: list, **kwargs) -> list[float]:
    """TRL reward function: the share of scratchpad columns written correctly, in [0, 1].

    Compares the entries before the ``|`` with the target scratchpad of the prompt, position by position, over the
    longer of the two lists (so missing and extra entries both cost). Denser than `arithmetic_reward`: most groups
    of samples get different scores, which gives a tiny model a learning signal on problems it cannot solve yet.
    """
    rewards = []
    for completion, prompt in zip(completions, prompts):
        operands = _operands(prompt)
        if operands is None:
            rewards.append(0.0)
            continue
        target = scratchpad(*operands).split("|")[0].split(",")
        written = _completion_text(completion).split("|")[0].split(",")
        hits = sum(w.strip() == t for w, t in zip(written, target))
        rewards.append(hits / max(len(target), len(written)))
    return rewards
