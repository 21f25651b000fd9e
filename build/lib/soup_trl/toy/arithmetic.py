"""Scratchpad addition: the built-in task of the offline default run.

Prompt: ``"A+B="``. By default (``fixed_width=True``) both operands are uniform in ``0 .. 10**max_digits - 1`` and
written with leading zeros to exactly ``max_digits`` digits (``"081+208="``), so column i of each operand sits at a
fixed position; with ``fixed_width=False`` operands have 1..``max_digits`` digits and no leading zeros (``"81+208="``).

Target completion: one entry per column, right to left, over as many columns as the longer operand is written with
(the shorter operand counts as 0 in its missing columns). Each entry is the column sum ``a_i + b_i + carry_in``
written as exactly 2 digits; its tens digit is the carry into the next column. Entries are joined by ``,``, followed
by ``|`` and ``A+B`` in decimal without leading zeros. The final carry is the tens digit of the last entry and appears
in the answer only as its leading digit (no extra column is written)::

    347+258=  ->  15,10,06|605        7+8=15, 4+5+1=10, 3+2+1=06
    999+001=  ->  10,10,10|1000
    5+3=      ->  08|8

The reward (`arithmetic_reward`) checks only the text after the last ``|``, so a completion may also skip the
scratchpad and answer directly (``"|605"``). The SFT warm-up of the built-in tiny model is taught both ways
(``direct_fraction`` of its targets are direct answers): a tiny model adds far better column by column than in one
go, and reinforcement learning has to discover that.

Splits: every problem ``(A, B)`` is assigned to ``"train"`` or ``"test"`` by a fixed hash of ``"A+B"`` (about 1 in
10 problems is held out), so the two splits never share a problem, whatever the seeds or sizes.
"""

from __future__ import annotations

import hashlib
import random

from datasets import Dataset

from ..rewards.arithmetic import scratchpad

SPLITS = ("train", "test")
HELD_OUT_FRACTION_DENOMINATOR = 10  # one problem in 10 belongs to "test"


def problem_split(a: int, b: int) -> str:
    """``"test"`` for the held-out problems (about 1 in 10), ``"train"`` for the rest. Fixed, seed-independent."""
    digest = hashlib.blake2b(f"{a}+{b}".encode(), digest_size=8).digest()
    return "test" if int.from_bytes(digest, "little") % HELD_OUT_FRACTION_DENOMINATOR == 0 else "train"


def _sample_operand(rng: random.Random, num_digits: int) -> int:
    if num_digits == 1:
        return rng.randint(0, 9)
    return rng.randint(10 ** (num_digits - 1), 10**num_digits - 1)


def _sample_problem(rng: random.Random, max_digits: int, fixed_width: bool) -> tuple[int, int]:
    if fixed_width:
        return rng.randrange(10**max_digits), rng.randrange(10**max_digits)
    n = rng.randint(1, max_digits)  # number of columns
    a, b = _sample_operand(rng, n), _sample_operand(rng, rng.randint(1, n))
    return (a, b) if rng.random() < 0.5 else (b, a)


def make_arithmetic_dataset(
    num_examples: int,
    seed: int = 0,
    max_digits: int = 3,
    with_target: bool = False,
    split: str = "train",
    fixed_width: bool = True,
    direct_fraction: float = 0.0,
) -> Dataset:
    """Random addition problems from one split, deterministic for its arguments.

    With ``fixed_width=True`` (the default task) both operands are uniform in ``0 .. 10**max_digits - 1`` and written
    zero-padded to ``max_digits`` digits. With ``fixed_width=False`` the number of columns n (digits of the longer
    operand) is uniform in 1..``max_digits``, the other operand has a uniform 1..n digits, the two are in random
    order, and each operand is uniform among numbers of its length. Problems are drawn with replacement inside a
    split, and only from that split, so ``split="train"`` and ``split="test"`` never overlap.

    Columns: ``prompt`` (``"A+B="``), ``solution`` (``str(A+B)``), ``num_digits`` (digits of the larger operand,
    leading zeros not counted) and, with ``with_target=True``, ``completion``: the scratchpad target, or for a
    ``direct_fraction`` share of rows (drawn independently of the problems) the direct answer ``"|" + str(A+B)``.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if max_digits < 1:
        raise ValueError("max_digits must be >= 1")
    if num_examples < 0:
        raise ValueError("num_examples must be >= 0")
    if not 0.0 <= direct_fraction <= 1.0:
        raise ValueError(f"direct_fraction must be in [0, 1], got {direct_fraction}")
    # Mixing the split into the seed keeps the two splits' draw sequences unrelated.
    layout = "fixed" if fixed_width else "variable"
    rng = random.Random(f"soup_trl.arithmetic/{seed}/{max_digits}/{split}/{layout}")
    style_rng = random.Random(f"soup_trl.arithmetic/{seed}/{max_digits}/{split}/{layout}/style")
    width = max_digits if fixed_width else 0
    rows: dict[str, list] = {"prompt": [], "solution": [], "num_digits": []}
    if with_target:
        rows["completion"] = []
    while len(rows["prompt"]) < num_examples:
        a, b = _sample_problem(rng, max_digits, fixed_width)
        if problem_split(a, b) != split:
            continue
        rows["prompt"].append(f"{a:0{width}d}+{b:0{width}d}=")
        rows["solution"].append(str(a + b))
        rows["num_digits"].append(len(str(max(a, b))))
        if with_target:
            direct = style_rng.random() < direct_fraction
            rows["completion"].append(f"|{a + b}" if direct else scratchpad(a, b, width))
    return Dataset.from_dict(rows)
