"""Checks on the training data made before training starts, so that a problem shows at once instead of as flat
rewards hours later."""

from __future__ import annotations

import inspect
import logging
import unicodedata
from collections.abc import Iterable
from typing import Any

from .errors import DataError
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


# ---------------------------------------------------------------------------------------------- checks that fail

#: Keyword arguments TRL gives every reward function besides the dataset columns.
TRAINER_REWARD_KWARGS = frozenset(
    {"prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric", "environments"}
)
NUM_LISTED_ROWS = 5


def _rows(indices: list[int]) -> str:
    shown = ", ".join(map(str, indices[:NUM_LISTED_ROWS]))
    return (
        f"row {shown}" if len(indices) == 1 else f"rows {shown}" + (", ..." if len(indices) > NUM_LISTED_ROWS else "")
    )


def reward_columns(reward_func) -> tuple[list[str], list[str]]:
    """(dataset columns `reward_func` requires, those of them it reads as text answers).

    Required: the parameters without a default that TRL does not supply. Text answers: the function's
    ``answer_columns`` attribute (set on the package's rewards, e.g. ``accuracy_reward.answer_columns = ("solution",)``).
    """
    try:
        parameters = inspect.signature(reward_func).parameters.values()  # follows __wrapped__ through wrappers
    except (TypeError, ValueError):
        return [], []
    required = [
        p.name
        for p in parameters
        if p.default is p.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and p.name not in TRAINER_REWARD_KWARGS
    ]
    return required, list(getattr(reward_func, "answer_columns", ()))


def is_empty_prompt(prompt: Any) -> bool:
    """A prompt with no text: None, blank text, no messages, or messages that are all blank."""
    if prompt is None:
        return True
    if isinstance(prompt, list) and not prompt:
        return True
    return not completion_text(prompt).strip()


def missing_columns(columns: list[str], reward_funcs, reward_names) -> list[str]:
    """Problems with the columns of a dataset: no 'prompt', or no column a reward function requires."""
    problems = []
    if "prompt" not in columns:
        problems.append(
            f"the training dataset has no 'prompt' column (columns: {sorted(columns)}). Put each prompt, as text or as "
            "chat messages, in a column named 'prompt' (the training script builds it from --problem_field)."
        )
    for func, name in zip(reward_funcs, reward_names):
        for column in reward_columns(func)[0]:
            if column not in columns:
                problems.append(
                    f"reward function {name!r} reads the dataset column {column!r}, which the training dataset lacks "
                    f"(columns: {sorted(columns)}). Add it (the training script maps --solution_field to 'solution'), "
                    "or pass a reward function that does not need it."
                )
    return problems


def bad_answers(values: list, column: str, reward_name: str) -> list[str]:
    """Problems with a text-answer column: rows whose answer is not a non-blank string."""
    empty = [i for i, v in enumerate(values) if v is None or (isinstance(v, str) and not v.strip())]
    other = [i for i, v in enumerate(values) if v is not None and not isinstance(v, str)]
    problems = []
    if empty:
        problems.append(
            f"{_rows(empty)} of the training dataset ({len(empty)} in all): column {column!r} is empty, so "
            f"{reward_name!r} has nothing to grade against. Fill in the answers or drop these rows."
        )
    if other:
        example = values[other[0]]
        problems.append(
            f"{_rows(other)} of the training dataset ({len(other)} in all): column {column!r} holds "
            f"{type(example).__name__} values such as {example!r}, not text. {reward_name!r} compares answers as text: "
            f"convert the column, e.g. dataset.map(lambda row: {{{column!r}: soup_trl.rewards.gold_text(row[{column!r}])}})"
            " (the training script does this)."
        )
    return problems


def empty_prompts(prompts: list) -> list[str]:
    rows = [i for i, prompt in enumerate(prompts) if is_empty_prompt(prompt)]
    if not rows:
        return []
    return [
        f"{_rows(rows)} of the training dataset ({len(rows)} in all): the prompt is empty. Drop these rows or fill in "
        "their prompts."
    ]


def long_prompts(lengths: list[int], limit: int, context: int, max_completion_length: int) -> list[str]:
    """Problems with prompts longer than the context leaves for the completion (`limit` tokens)."""
    rows = [i for i, n in enumerate(lengths) if n > limit]
    if not rows:
        return []
    longest = max(lengths)
    if limit < 1:  # a setting, not the data
        return [
            f"max_completion_length={max_completion_length} leaves no room for a prompt in the model's context "
            f"({context} tokens). Lower max_completion_length to {max(context - longest, 0)} or less (the longest "
            f"prompt has {longest} tokens)."
        ]
    return [
        f"{_rows(rows)} of the training dataset ({len(rows)} in all, the longest {longest} tokens): the prompt is "
        f"longer than the {limit} tokens the model's context ({context}) leaves after max_completion_length="
        f"{max_completion_length}. Drop these rows or shorten their prompts"
        + (
            f", or lower max_completion_length to {context - longest} or less."
            if context - longest >= 1
            else " (they fill the whole context: a model with a longer context is the other fix)."
        )
    ]


def too_few_prompts(num_prompts: int, needed: int, what: str) -> list[str]:
    if num_prompts >= needed:
        return []
    return [
        f"the training dataset has {num_prompts} prompts, fewer than the {needed} {what}. Use at least {needed} "
        "prompts, or fewer prompts per generation batch."
    ]


def generation_batch_description(args) -> tuple[int, str]:
    """Prompts one generation batch draws (all processes), and how to say it in an error."""
    prompts = args.generation_batch_size // args.num_generations
    steps = getattr(args, "soup_behavior_steps", 1)
    if steps > 1:
        return prompts, (
            f"one SOUP cycle takes (soup_behavior_steps={steps} steps x {prompts // steps} prompts per step; prompts "
            "per step = per_device_train_batch_size x gradient_accumulation_steps x processes / num_generations, the "
            "training script's prompts_per_step)"
        )
    return prompts, (
        f"one generation batch takes (per_device_train_batch_size={args.per_device_train_batch_size} x "
        f"steps_per_generation={args.steps_per_generation} x processes / num_generations={args.num_generations})"
    )


def prompt_token_lengths(tokenize_prompts, prompts: list, chunk: int = 512) -> list[int]:
    """Token count of every prompt as the trainer feeds it to the model (chat template included)."""
    lengths = []
    for start in range(0, len(prompts), chunk):
        ids, _, _ = tokenize_prompts(prompts[start : start + chunk])
        lengths.extend(len(row) for row in ids)
    return lengths


def check_training_data(trainer) -> None:
    """Fail before training, naming the rows and the fix, when the trainer's training data cannot be trained on.

    Checks: a 'prompt' column and every column the reward functions require; answers that the package's rewards read
    as text (``answer_columns``) are non-blank strings; no prompt is empty; every prompt leaves room for
    `max_completion_length` tokens in the model's context (``max_position_embeddings``); the dataset holds at least one
    generation batch (one SOUP cycle) of prompts. Prompts that are too long fail instead of being dropped: which
    problems a run trains on is part of the experiment, and the fix is one line. Map-style datasets only (a
    streaming dataset is not read ahead). Raises `DataError` listing every problem found.
    """
    dataset = trainer.train_dataset
    if dataset is None or not hasattr(dataset, "column_names") or not hasattr(dataset, "__len__"):
        return
    columns = list(dataset.column_names or [])
    funcs, names = trainer.reward_funcs, trainer.reward_func_names
    problems = missing_columns(columns, funcs, names)
    for func, name in zip(funcs, names):
        for column in reward_columns(func)[1]:
            if column in columns:
                problems += bad_answers(dataset[column], column, name)
    if "prompt" in columns:
        prompts = dataset["prompt"]
        empty = empty_prompts(prompts)
        problems += empty
        context = getattr(trainer.model.config.get_text_config(), "max_position_embeddings", None)
        if context is not None and not empty:
            limit = context - trainer.max_completion_length
            lengths = prompt_token_lengths(trainer._tokenize_prompts, prompts)
            problems += long_prompts(lengths, limit, context, trainer.max_completion_length)
    needed, what = generation_batch_description(trainer.args)
    problems += too_few_prompts(len(dataset), needed, what)
    if problems:
        raise DataError(
            f"{type(trainer).__name__}: the training data cannot be trained on:\n- " + "\n- ".join(problems)
        )
