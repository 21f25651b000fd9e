"""Datasets for SOUP recipes: the math prompt template (shared by training and evaluation) and column mapping."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .answers import gold_text

MATH_PROMPT_TEMPLATE = "{problem}\nPlease reason step by step, and put your final answer within \\boxed{}."
BUILTIN_ARITHMETIC = "builtin:arithmetic"


def get_field(example: dict, path: str) -> Any:
    """Read `path` from a dataset row: dotted keys into structs, integers (negative too) into lists.

    `get_field(row, "reward_model.ground_truth")`, `get_field(row, "prompt.-1.content")`.
    """
    value: Any = example
    for part in path.split("."):
        if isinstance(value, Mapping) and part in value:  # datasets.map passes rows as a Mapping, not a dict
            value = value[part]
        elif isinstance(value, list | tuple) and _is_int(part) and -len(value) <= int(part) < len(value):
            value = value[int(part)]
        else:
            raise KeyError(part)
    return value


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit()


def check_field(columns: list[str], example: dict, path: str, argument: str) -> None:
    """Fail early, naming the argument, the missing path and the columns the dataset has."""
    try:
        get_field(example, path)
    except KeyError as missing:
        raise ValueError(
            f"{argument}={path!r}: the dataset has no field {missing.args[0]!r} on that path. Available columns: "
            f"{sorted(columns)}. Set --{argument} to the column holding it (dotted paths reach nested fields, e.g. "
            "'reward_model.ground_truth' or 'prompt.-1.content')."
        ) from None


def format_prompt(
    problem: str, template: str = MATH_PROMPT_TEMPLATE, system_prompt: str | None = None, conversational: bool = True
):
    """The prompt for one problem: chat messages (the trainer applies the chat template) or plain text."""
    if "{problem}" not in template:
        raise ValueError(f"prompt_template must contain '{{problem}}', got {template!r}.")
    text = template.replace("{problem}", problem)
    if not conversational:
        return text if system_prompt is None else f"{system_prompt}\n\n{text}"
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return messages + [{"role": "user", "content": text}]


def prepare_math_dataset(
    dataset,
    problem_field: str = "problem",
    solution_field: str = "solution",
    template: str = MATH_PROMPT_TEMPLATE,
    system_prompt: str | None = None,
    conversational: bool = True,
    num_proc: int | None = None,
):
    """Map a math dataset to the columns SOUP trains on: `prompt` and `solution` (the gold answer).

    The gold answer is read with `answers.gold_text` (lists, numbers and worked solutions become one string), as
    evaluation benchmarks read theirs.
    """
    if len(dataset) == 0:
        raise ValueError("The training dataset is empty.")
    first = dataset[0]
    check_field(dataset.column_names, first, problem_field, "problem_field")
    check_field(dataset.column_names, first, solution_field, "solution_field")

    def to_prompt(example):
        problem = get_field(example, problem_field)
        return {
            "prompt": format_prompt(str(problem), template, system_prompt, conversational),
            "solution": gold_text(get_field(example, solution_field)),
        }

    return dataset.map(to_prompt, remove_columns=dataset.column_names, num_proc=num_proc)


GSM8K = "openai/gsm8k"


def load_gsm8k(
    split: str = "train",
    path: str = GSM8K,
    template: str = MATH_PROMPT_TEMPLATE,
    system_prompt: str | None = None,
    conversational: bool = True,
):
    """GSM8K as SOUP trains on it: `prompt` (the question in `template`) and `solution` (the number after ``####``).

    `path` is the Hub id (``openai/gsm8k``, config ``main``; needs network) or a local JSON / JSON Lines file of rows
    in that format (``{"question": ..., "answer": "...\\n#### 72"}``).
    """
    import os

    from datasets import load_dataset

    if os.path.isfile(path):
        raw = load_dataset("json", data_files=path, split="train")
    else:
        raw = load_dataset(path, "main", split=split)
    return prepare_math_dataset(raw, "question", "answer", template, system_prompt, conversational)
