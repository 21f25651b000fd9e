"""Chained addition: the longer offline task, where late tokens decide the answer.

    from soup_trl.toy.chain import ChainModelSettings, make_chain_dataset
    model_path = ensure_tiny_base_model(settings=ChainModelSettings())   # ~2.5 min SFT warm-up on 2 cores, then cached
    dataset = make_chain_dataset(2000)   # prompt "0347+0258+0116=", solution "0721", num_operands

Prompt: ``num_operands`` operands, each uniform in ``0 .. 10**operand_digits - 1``, written zero-padded to
``width = operand_digits + 1`` digits (room for the running total). Target completion
(`soup_trl.rewards.chain.chain_target`): one stage per ``+``, left to right, each stage the ``width`` column entries of
the addition task's scratchpad (column sum with carry, 2 digits, right to left), ``|`` and the running total written
with ``width`` digits, stages joined by ``|``::

    0347+0258+0116=  ->  15,10,06,00|0605|11,02,07,00|0721

With the defaults (3 operands of 3 digits) a completion is 33 characters + EOS, every character one token. The answer
(after the last ``|``) is the last thing written and depends on every carry before it. The reward is
`soup_trl.rewards.chain.chain_reward`; the tokenizer is the addition task's (same alphabet).

What RL has to learn: the base model's warm-up targets skip the last stage's columns 30% of the time (``...|0605||0721``,
the total guessed at once). The model samples that shortcut about as often, and it is almost always wrong, so a sampled
answer is right ~60% of the time although greedy decoding (which works the columns) is right ~94% of the time. The
choice is made at the position right after the first running total, about 40% into the completion; the answer comes
last. RL raises sampled accuracy by making the model work the columns at that position (measured in
docs/results-cpu.md).

Splits: a problem is held out ("test") by a fixed hash of its prompt (about 1 in 10), whatever the seed or size.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from typing import Any, ClassVar

from datasets import Dataset

from ..rewards.chain import chain_target
from .tiny_model import TinyModelSettings

SPLITS = ("train", "test")
HELD_OUT_FRACTION_DENOMINATOR = 10


def chain_split(operands: list[int]) -> str:
    """``"test"`` for about 1 problem in 10 (fixed hash of the operands), ``"train"`` for the rest."""
    digest = hashlib.blake2b("+".join(map(str, operands)).encode(), digest_size=8).digest()
    return "test" if int.from_bytes(digest, "little") % HELD_OUT_FRACTION_DENOMINATOR == 0 else "train"


def chain_width(num_operands: int, operand_digits: int) -> int:
    """Digits every number of a chain is written with: enough for the largest possible total."""
    return len(str(num_operands * (10**operand_digits - 1)))


def make_chain_dataset(
    num_examples: int,
    seed: int = 0,
    num_operands: int = 3,
    operand_digits: int = 3,
    with_target: bool = False,
    split: str = "train",
    shortcut_fraction: float = 0.0,
    shortcut_from_stage: int = 0,
) -> Dataset:
    """Random chained-addition problems from one split, deterministic for its arguments (drawn with replacement).

    Columns: ``prompt``, ``solution`` (the final total, zero-padded like the completion writes it),
    ``num_operands`` and, with ``with_target=True``, ``completion`` (the target, `chain_target`), in which each
    stage from ``shortcut_from_stage`` on (0-based; negative counts from the end, -1 is the last) independently skips its columns with probability
    ``shortcut_fraction`` (drawn apart from the problems); earlier stages always write them.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if num_operands < 2:
        raise ValueError(f"num_operands must be >= 2, got {num_operands}")
    if operand_digits < 1:
        raise ValueError(f"operand_digits must be >= 1, got {operand_digits}")
    if num_examples < 0:
        raise ValueError("num_examples must be >= 0")
    if not 0.0 <= shortcut_fraction <= 1.0:
        raise ValueError(f"shortcut_fraction must be in [0, 1], got {shortcut_fraction}")
    stages = num_operands - 1
    if not -stages <= shortcut_from_stage < stages:
        raise ValueError(
            f"shortcut_from_stage must be in [{-stages}, {stages - 1}] for {num_operands} operands "
            f"(negative counts from the end), got {shortcut_from_stage}"
        )
    first_shortcut_stage = shortcut_from_stage % stages
    width = chain_width(num_operands, operand_digits)
    rng = random.Random(f"soup_trl.chain/{seed}/{num_operands}/{operand_digits}/{split}")
    style_rng = random.Random(f"soup_trl.chain/{seed}/{num_operands}/{operand_digits}/{split}/style")
    rows: dict[str, list] = {"prompt": [], "solution": [], "num_operands": []}
    if with_target:
        rows["completion"] = []
    while len(rows["prompt"]) < num_examples:
        operands = [rng.randrange(10**operand_digits) for _ in range(num_operands)]
        if chain_split(operands) != split:
            continue
        rows["prompt"].append("+".join(f"{x:0{width}d}" for x in operands) + "=")
        rows["solution"].append(f"{sum(operands):0{width}d}")
        rows["num_operands"].append(num_operands)
        if with_target:
            draws = [style_rng.random() < shortcut_fraction for _ in operands[1:]]
            shortcuts = [draw and stage >= first_shortcut_stage for stage, draw in enumerate(draws)]
            rows["completion"].append(chain_target(operands, width, shortcuts))
    return Dataset.from_dict(rows)


def completion_tokens(num_operands: int = 3, operand_digits: int = 3) -> int:
    """Tokens of a target completion, EOS included (every character is one token)."""
    width = chain_width(num_operands, operand_digits)
    return (num_operands - 1) * (3 * width - 1 + 1 + width + 1)  # columns, "|", total, "|" or EOS


@dataclasses.dataclass(frozen=True)
class ChainModelSettings(TinyModelSettings):
    """The tiny base model warmed up on chained addition: worked solutions, the last stage of 30% without columns.

    Measured on 300 held-out problems (1000 warm-up steps, seed 0): greedy 94.3% (0.3% of greedy answers take the
    shortcut), 60% sampled at temperature 1 (29% take the shortcut, ~1% of those are right). Earlier settings, for the
    record: all targets worked out in full left nothing for RL to find (greedy 0.70 after 600 steps, and no method
    raised it); half the last stages as shortcuts left the columns unlearned at 600 and 1000 steps (greedy 0.05-0.06);
    half of every stage as shortcuts, 0.003 after 600 steps. Warm-up results also depend on CPU arithmetic: the
    cache key covers the settings, not the machine.
    """

    CACHE_PREFIX: ClassVar[str] = "tiny-chain"

    num_operands: int = 3
    operand_digits: int = 3
    direct_fraction: float = 0.0  # not used by this task
    max_position_embeddings: int = 96
    warmup_steps: int = 1000
    shortcut_fraction: float = 0.3
    shortcut_from_stage: int = -1  # the last stage only

    def warmup_dataset(self, num_examples: int) -> Dataset:
        return make_chain_dataset(
            num_examples,
            seed=self.seed,
            num_operands=self.num_operands,
            operand_digits=self.operand_digits,
            with_target=True,
            split="train",
            shortcut_fraction=self.shortcut_fraction,
            shortcut_from_stage=self.shortcut_from_stage,
        )

    def task_kwargs(self) -> dict[str, Any]:
        return {"num_operands": self.num_operands, "operand_digits": self.operand_digits}
