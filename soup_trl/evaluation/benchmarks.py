"""Evaluation sets: the paper's six math benchmarks on the Hub, the built-in sets, and local files.

The built-in sets are the held-out ("test") splits of the built-in training tasks (`soup_trl.toy`), offline:
`arithmetic` (3-digit addition, the tiny model's task), `chain` (chained addition, `builtin:tiny-chain`'s) and
`word_problems` (English word problems, `builtin:smollm2-135m-instruct`'s). Their prompts are the tasks' own, as in
training; `chain` and `word_problems` are also the held-out problems of the method comparison
(benchmarks/compare_methods.py). Every other problem is turned into a prompt with the training recipes' own definition
(`soup_trl.rewards.math_data.format_prompt` with `MATH_PROMPT_TEMPLATE` by default). Gold answers are read the way the
datasets ship them, by the same `soup_trl.rewards.gold_text` that prepares training data: a one-element list is
unwrapped (OlympiadBench's ``final_answer``), a longer list is joined with ", ", a whole number stored as a float
(``27.0``) is written as an integer, and a full worked solution is reduced to its last ``\\boxed{}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import UserError
from ..rewards.answers import gold_text
from ..rewards.math_data import BUILTIN_ARITHMETIC, MATH_PROMPT_TEMPLATE, format_prompt, get_field
from ..toy.builtin import (
    BUILTIN_CHAIN,
    BUILTIN_SMOLLM2,
    BUILTIN_TINY_CHAIN,
    BUILTIN_TINY_MODEL,
    BUILTIN_WORD_PROBLEMS,
)
from .suggest import did_you_mean


@dataclass(frozen=True)
class HubBenchmark:
    """Where a named benchmark lives on the Hub and which fields hold the problem and the gold answer.

    The first field of `problem_fields` / `answer_fields` that a row has is used.
    """

    hub_id: str
    split: str
    problem_fields: tuple[str, ...]
    answer_fields: tuple[str, ...]
    description: str
    config: str | None = None


HUB_BENCHMARKS: dict[str, HubBenchmark] = {
    "aime24": HubBenchmark(
        "HuggingFaceH4/aime_2024", "train", ("problem",), ("answer",), "AIME 2024 I+II, 30 problems"
    ),
    "aime25": HubBenchmark("math-ai/aime25", "test", ("problem",), ("answer",), "AIME 2025 I+II, 30 problems"),
    "math500": HubBenchmark("HuggingFaceH4/MATH-500", "test", ("problem",), ("answer",), "MATH-500, 500 problems"),
    "amc23": HubBenchmark("math-ai/amc23", "test", ("question",), ("answer",), "AMC 2023, 40 problems"),
    "minerva": HubBenchmark("math-ai/minervamath", "test", ("question",), ("answer",), "Minerva Math, 272 problems"),
    "olympiadbench": HubBenchmark(
        "math-ai/olympiadbench",
        "test",
        ("question",),
        ("final_answer", "answer"),
        "OlympiadBench (English, text-only math), 675 problems",
    ),
}
ARITHMETIC = "arithmetic"
CHAIN = "chain"
WORD_PROBLEMS = "word_problems"
#: The built-in offline sets, each the held-out split of a built-in training task.
BUILTIN_BENCHMARKS = (ARITHMETIC, CHAIN, WORD_PROBLEMS)
#: The set of each built-in model's own task: what `soup-trl eval` scores it on when no benchmark is named.
MODEL_BENCHMARKS = {BUILTIN_TINY_MODEL: ARITHMETIC, BUILTIN_TINY_CHAIN: CHAIN, BUILTIN_SMOLLM2: WORD_PROBLEMS}
#: The set of each built-in training task (a recipe's `dataset_name`).
TASK_BENCHMARKS = {BUILTIN_ARITHMETIC: ARITHMETIC, BUILTIN_CHAIN: CHAIN, BUILTIN_WORD_PROBLEMS: WORD_PROBLEMS}
#: The benchmarks of the paper's tables, in their order.
PAPER_BENCHMARKS = ("aime24", "aime25", "math500", "amc23", "minerva", "olympiadbench")
#: The benchmarks `soup-trl select` ranks checkpoints by (the paper's model selection).
SELECTION_BENCHMARKS = ("aime24", "aime25")
LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")
#: Where a local file's problem and gold answer are looked for when no field is named: the six benchmarks' own
#: field names (MATH-500 and AIME `problem`/`answer`, AMC, Minerva and OlympiadBench `question`, OlympiadBench's
#: `final_answer` lists, the capitalised columns of the original AIME exports).
#: A worked `solution` is not guessed at: a file with no answer field names it with --answer-field.
LOCAL_PROBLEM_FIELDS = ("problem", "question", "Problem", "Question")
LOCAL_ANSWER_FIELDS = ("final_answer", "answer", "Answer")

#: Problems in the built-in sets (the first distinct ones of the held-out "test" split of the task's dataset maker):
#: 100 additions; the method comparison's full sets for chain (300) and word problems (60).
ARITHMETIC_EVAL_SIZE = 100
CHAIN_EVAL_SIZE = 300
WORD_PROBLEMS_EVAL_SIZE = 60
#: Default completion budgets: the tiny recipe's `max_completion_length` for arithmetic; the method comparison's for
#: chain (the 34-token worked solution with its EOS, `toy.chain.completion_tokens()`, + 4) and word problems (twice
#: the smollm2 recipes' 64); the Qwen2.5-Math recipe's for math (R1-style models need more: pass --max-new-tokens
#: 8192).
ARITHMETIC_MAX_NEW_TOKENS = 16
CHAIN_MAX_NEW_TOKENS = 38
WORD_PROBLEMS_MAX_NEW_TOKENS = 128
MATH_MAX_NEW_TOKENS = 3072


def valid_names() -> list[str]:
    return sorted([*HUB_BENCHMARKS, *BUILTIN_BENCHMARKS])


@dataclass
class Problem:
    id: str
    problem: str  # the problem text, before the prompt template
    prompt: str | list[dict[str, str]]  # plain text, or chat messages for the tokenizer's chat template
    gold: str


@dataclass
class Benchmark:
    name: str
    source: str  # Hub id, file path or "builtin"
    reward: str  # "accuracy" (math-verify) or "arithmetic"
    default_max_new_tokens: int
    problems: list[Problem] = field(default_factory=list)


@dataclass(frozen=True)
class PromptFormat:
    """How a problem becomes a prompt; the defaults are the training recipes' (`soup_trl.rewards.math_data`)."""

    template: str = MATH_PROMPT_TEMPLATE
    system_prompt: str | None = None
    conversational: bool = True

    def __post_init__(self):
        if "{problem}" not in self.template:
            raise UserError(f"--prompt-template must contain '{{problem}}', got {self.template!r}.")

    def __call__(self, problem: str):
        return format_prompt(problem, self.template, self.system_prompt, self.conversational)


def split_names(values: list[str] | str | None) -> list[str]:
    """`["aime24,aime25", "x.jsonl"]` -> `["aime24", "aime25", "x.jsonl"]` (empty entries dropped)."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


def is_local_file(name: str) -> bool:
    """A benchmark name is a file path unless it is one of the built-in names."""
    if name in HUB_BENCHMARKS or name in BUILTIN_BENCHMARKS:
        return False
    return name.lower().endswith(LOCAL_SUFFIXES) or "/" in name or Path(name).exists()


def benchmark_name(name: str) -> str:
    """The name a benchmark is reported under: its own, or a local file's stem (`data/test.jsonl` -> `test`)."""
    return Path(name).stem if is_local_file(name) else name


def check_names(names: list[str]) -> None:
    """Fail before any model is loaded if a name is neither a known benchmark nor an existing data file."""
    if not names:
        raise UserError(
            f"no benchmark given. Valid names: {', '.join(valid_names())}; or a .jsonl/.json/.parquet file."
        )
    for name in names:
        if is_local_file(name):
            path = Path(name)
            if not path.is_file():
                raise UserError(f"benchmark file {name} does not exist.")
            if path.suffix.lower() not in LOCAL_SUFFIXES:
                raise UserError(f"{name}: unsupported file type {path.suffix!r}; use .jsonl, .json or .parquet.")
        elif name not in HUB_BENCHMARKS and name not in BUILTIN_BENCHMARKS:
            raise UserError(
                f"unknown benchmark {name!r}{did_you_mean(name, valid_names())}. Valid names: "
                f"{', '.join(valid_names())}; or the path of a .jsonl/.json/.parquet file (with --problem-field/"
                "--answer-field)."
            )


def load_benchmark(
    name: str,
    prompt_format: PromptFormat | None = None,
    problem_field: str | None = None,
    answer_field: str | None = None,
    limit: int | None = None,
) -> Benchmark:
    """Load one benchmark by name ("aime24", "arithmetic", "chain", ...) or from a local .jsonl/.json/.parquet file.

    `limit` keeps the first `limit` problems (a built-in set draws `limit` distinct problems of its split instead of
    its default size). `problem_field`/`answer_field` (dotted paths allowed) apply to local
    files only; left as None, the first of `LOCAL_PROBLEM_FIELDS` / `LOCAL_ANSWER_FIELDS` that a row has is used, so
    a file in any of the six benchmarks' formats needs no option. Named benchmarks use their own field mapping
    (`HUB_BENCHMARKS`).
    """
    prompt_format = prompt_format or PromptFormat()
    check_names([name])
    if name in BUILTIN_BENCHMARKS:
        return builtin_benchmark(name, limit)
    if is_local_file(name):
        return _local_benchmark(Path(name), prompt_format, problem_field, answer_field, limit)
    return _hub_benchmark(name, HUB_BENCHMARKS[name], prompt_format, limit)


def builtin_benchmark(name: str, limit: int | None = None) -> Benchmark:
    """A built-in set by name (`BUILTIN_BENCHMARKS`): `limit` distinct held-out problems, else its default size."""
    loaders = {ARITHMETIC: arithmetic_benchmark, CHAIN: chain_benchmark, WORD_PROBLEMS: word_problems_benchmark}
    return loaders[name](limit)


def _distinct_problems(rows: Iterable[tuple[str, str | list[dict[str, str]], str]], size: int) -> list[Problem]:
    """The first `size` distinct problems of `(problem, prompt, gold)` rows: the task generators draw with
    replacement, so small problems repeat."""
    problems: list[Problem] = []
    seen: set[str] = set()
    for problem, prompt, gold in rows:
        if len(problems) == size:
            break
        if problem in seen:
            continue
        seen.add(problem)
        problems.append(Problem(id=str(len(problems)), problem=problem, prompt=prompt, gold=gold))
    return problems


def arithmetic_benchmark(limit: int | None = None) -> Benchmark:
    """Distinct held-out addition problems (`make_arithmetic_dataset(split="test")`), graded by `arithmetic_reward`."""
    from ..toy.arithmetic import make_arithmetic_dataset

    size = ARITHMETIC_EVAL_SIZE if limit is None else limit
    data = make_arithmetic_dataset(4 * size, seed=0, split="test")
    problems = _distinct_problems(zip(data["prompt"], data["prompt"], data["solution"]), size)
    source = f"{BUILTIN_ARITHMETIC} (test split)"
    return Benchmark(ARITHMETIC, source, "arithmetic", ARITHMETIC_MAX_NEW_TOKENS, problems)


def chain_benchmark(limit: int | None = None) -> Benchmark:
    """Distinct held-out chained-addition problems (`make_chain_dataset(split="test")` with the settings
    `builtin:tiny-chain` was warmed up on), graded by `arithmetic_reward` (the answer after the last `|`)."""
    from ..toy.chain import ChainModelSettings, make_chain_dataset

    size = CHAIN_EVAL_SIZE if limit is None else limit
    data = make_chain_dataset(4 * size + 16, seed=0, split="test", **ChainModelSettings().task_kwargs())
    problems = _distinct_problems(zip(data["prompt"], data["prompt"], data["solution"]), size)
    return Benchmark(CHAIN, f"{BUILTIN_CHAIN} (test split)", "arithmetic", CHAIN_MAX_NEW_TOKENS, problems)


def word_problems_benchmark(limit: int | None = None) -> Benchmark:
    """Distinct held-out word problems (`make_word_problem_dataset(split="test")` of the task `builtin:word-problems`
    trains on: chat prompts with one solved example), graded by math-verify (`accuracy`) on the last `\\boxed{}`."""
    from ..toy.word_problems import TASK, make_word_problem_dataset

    size = WORD_PROBLEMS_EVAL_SIZE if limit is None else limit
    data = make_word_problem_dataset(2 * size + 16, seed=0, split="test", **TASK)
    problems = _distinct_problems(zip(data["problem"], data["prompt"], data["solution"]), size)
    return Benchmark(
        WORD_PROBLEMS, f"{BUILTIN_WORD_PROBLEMS} (test split)", "accuracy", WORD_PROBLEMS_MAX_NEW_TOKENS, problems
    )


def own_benchmark(model: str) -> str | None:
    """The built-in set of a model's own task: a built-in model's (`MODEL_BENCHMARKS`), or for a model directory (a
    run or a checkpoint) trained by a recipe on a built-in task, that task's (`TASK_BENCHMARKS` of the recipe's
    `dataset_name`; the recipe is the one its training_args.bin names). None for any other model."""
    if model in MODEL_BENCHMARKS:
        return MODEL_BENCHMARKS[model]
    from .runs import run_recipe

    recipe = run_recipe(model)
    dataset = recipe[1].get("dataset_name") if recipe is not None else None
    return TASK_BENCHMARKS.get(dataset) if isinstance(dataset, str) else None


def _problem_id(row: dict, index: int) -> str:
    for key in ("id", "unique_id", "problem_idx", "idx"):
        if isinstance(row.get(key), str | int) and not isinstance(row.get(key), bool):
            return str(row[key])
    return str(index)


def _find_field(row: dict, fields: tuple[str, ...]) -> tuple[str, Any] | None:
    """(name, value) of the first of `fields` that `row` has, or None."""
    for name in fields:
        try:
            return name, get_field(row, name)
        except KeyError:
            continue
    return None


def _first_field(row: dict, fields: tuple[str, ...]) -> Any:
    found = _find_field(row, fields)
    if found is None:
        raise KeyError(fields[0])
    return found[1]


def _hub_benchmark(name: str, spec: HubBenchmark, prompt_format: PromptFormat, limit: int | None) -> Benchmark:
    import datasets

    try:
        data = datasets.load_dataset(spec.hub_id, spec.config, split=spec.split)
    except Exception as e:  # noqa: BLE001 - offline, gated, renamed...: one clear line instead of a traceback
        first_line = (str(e).strip().splitlines() or [""])[0][:300]
        raise UserError(
            f"could not load benchmark {name!r} ({spec.hub_id}, split {spec.split!r}) from the Hub: "
            f"{type(e).__name__}: {first_line}. Without network access use --benchmarks arithmetic or a local "
            ".jsonl/.parquet file."
        ) from None
    problems = []
    for index, row in enumerate(data):
        if limit is not None and len(problems) >= limit:
            break
        try:
            problem, gold = _first_field(row, spec.problem_fields), _first_field(row, spec.answer_fields)
        except KeyError as missing:
            raise UserError(
                f"benchmark {name!r} ({spec.hub_id}), row {index}: no field {missing.args[0]!r}; the dataset has "
                f"fields {sorted(row)}. The Hub dataset changed: pass it as a local file with --problem-field/"
                "--answer-field."
            ) from None
        problems.append(Problem(_problem_id(row, index), str(problem), prompt_format(str(problem)), gold_text(gold)))
    return Benchmark(name, spec.hub_id, "accuracy", MATH_MAX_NEW_TOKENS, problems)


def _local_rows(path: Path) -> Iterator[tuple[str, dict]]:
    """(location, row) for every row of a .jsonl, .json or .parquet file; malformed input names its line."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as e:  # noqa: BLE001
            raise UserError(f"{path}: cannot read the parquet file ({type(e).__name__}: {e}).") from None
        for index, row in enumerate(rows):
            yield f"{path}, row {index}", row
        return
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}).") from None
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}, line {e.lineno}: invalid JSON ({e.msg}, column {e.colno}).") from None
        if isinstance(data, dict):
            data = next((v for v in data.values() if isinstance(v, list)), [data])
        if not isinstance(data, list):
            raise UserError(f"{path}: expected a JSON list of objects, got {type(data).__name__}.")
        for index, row in enumerate(data):
            if not isinstance(row, dict):
                raise UserError(f"{path}, item {index}: expected a JSON object, got {type(row).__name__}.")
            yield f"{path}, item {index}", row
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}, line {lineno}: invalid JSON ({e.msg}, column {e.colno}).") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}, line {lineno}: expected a JSON object, got {type(row).__name__}.")
        yield f"{path}, line {lineno}", row


def _local_benchmark(
    path: Path, prompt_format: PromptFormat, problem_field: str | None, answer_field: str | None, limit: int | None
) -> Benchmark:
    fields = {
        ("problem", "--problem-field"): (problem_field,) if problem_field else LOCAL_PROBLEM_FIELDS,
        ("gold answer", "--answer-field"): (answer_field,) if answer_field else LOCAL_ANSWER_FIELDS,
    }
    problems = []
    for index, (where, row) in enumerate(_local_rows(path)):
        if limit is not None and len(problems) >= limit:
            break
        found = {}
        for (what, option), names in fields.items():
            hit = _find_field(row, names)
            if hit is None:
                missing = (
                    f"missing field {names[0]!r} (set with {option})" if len(names) == 1
                    else f"no {what}: none of the fields {', '.join(names)} (name it with {option})"
                )  # fmt: skip
                raise UserError(f"{where}: {missing}; the row has fields {sorted(row)}.")
            found[what] = hit
        (problem_name, problem), (answer_name, answer) = found["problem"], found["gold answer"]
        gold = gold_text(answer)
        if not isinstance(problem, str) or not problem.strip():
            raise UserError(f"{where}: field {problem_name!r} must be a non-empty string, got {problem!r}.")
        if not gold:
            raise UserError(f"{where}: field {answer_name!r} is empty: there is no gold answer to grade against.")
        problems.append(Problem(_problem_id(row, index), problem, prompt_format(problem), gold))
    if not problems:
        raise UserError(f"{path}: no problems in the file.")
    return Benchmark(path.stem, str(path), "accuracy", MATH_MAX_NEW_TOKENS, problems)
