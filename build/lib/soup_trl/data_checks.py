"""Checks on the training data made before training starts, so that a problem shows at once instead of as flat
rewards hours later."""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Iterable
from typing import Any

from .text import completion_text

logger = logging.getLogger(__name__)

NUM_CHECKED_ROWS = 32


def _visible(text: str) -> str:
    """Text without white space, NFKC-normalised: what a tokenizer round trip must keep."""
    return "".join(unicodedata.normalize("NFKC", text).split())


def lossy_prompt(tokenizer, prompts: Iterable[Any]) -> tuple[int, str, str] | None:
    """The first prompt whose text the tokenizer does not keep: (index, text, text after encode + decode), or None.

    White space and Unicode compatibility forms are ignored (tokenizers may normalise them); a character that is
    dropped or replaced is a loss. Chat prompts are checked message by message.
    """
    for index, prompt in enumerate(prompts):
        messages = prompt if isinstance(prompt, list) else [prompt]
        for message in messages:
            text = completion_text(message) if isinstance(message, dict) else str(message)
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            decoded = tokenizer.decode(ids, skip_special_tokens=False)
            if _visible(decoded) != _visible(text):
                return index, text, decoded
    return None


def warn_if_tokenizer_drops_characters(tokenizer, dataset, column: str = "prompt") -> bool:
    """Warn once when the tokenizer loses characters of the first training prompts; return whether it did."""
    if tokenizer is None or dataset is None or not hasattr(dataset, "__len__") or column not in dataset.column_names:
        return False
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a processor wraps its tokenizer
    rows = dataset.select(range(min(NUM_CHECKED_ROWS, len(dataset))))[column]
    found = lossy_prompt(tokenizer, rows)
    if found is None:
        return False
    index, text, decoded = found
    logger.warning(
        "The tokenizer loses characters of the training prompts: row %d %r reaches the model as %r. The model never "
        "sees what is lost, so rewards that depend on it cannot be learned. The built-in tiny model only knows the "
        "addition task's symbols '0123456789+=,|': train it on soup_trl.toy.make_arithmetic_dataset, or use a model "
        "whose tokenizer covers your prompts.",
        index,
        text[:200],
        decoded[:200],
    )
    return True
