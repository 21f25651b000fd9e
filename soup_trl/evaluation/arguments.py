"""Options of the `soup-trl` evaluation commands: dataclasses parsed by TRL's `TrlParser`, as training's are.

Every command composes the option groups it needs (`EVAL_ARGUMENTS`, `RELAY_ARGUMENTS`, `SELECT_ARGUMENTS`,
`PLOT_ARGUMENTS`); a group is defined once and shared. A field name is at once a flag (`--num_samples` or
`--num-samples`) and a key of a `--config FILE.yaml`. The record of a run (results.json's "settings", and the
config.yaml written beside it) is `run_record(*arguments)`: the `asdict()` of every group, merged.

Checks run in `__post_init__` and raise `UserError`, which the command prints as one line.
"""

from collections.abc import Callable, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any, Literal

from ..core.errors import UserError
from ..rewards.math_data import MATH_PROMPT_TEMPLATE
from ..toy.builtin import BUILTIN_MODELS, BUILTIN_TINY_MODEL
from .benchmarks import (
    ARITHMETIC,
    ARITHMETIC_MAX_NEW_TOKENS,
    BUILTIN_BENCHMARKS,
    CHAIN,
    CHAIN_MAX_NEW_TOKENS,
    HUB_BENCHMARKS,
    MATH_MAX_NEW_TOKENS,
    MODEL_BENCHMARKS,
    PAPER_BENCHMARKS,
    SELECTION_BENCHMARKS,
    WORD_PROBLEMS,
    WORD_PROBLEMS_MAX_NEW_TOKENS,
    Benchmark,
    PromptFormat,
    check_names,
    load_benchmark,
    own_benchmark,
    split_names,
    valid_names,
)


@dataclass
class ModelArguments:
    """The model to evaluate (eval) or to continue with (relay's model B)."""

    _argument_group_name = "model"

    model: str = field(
        default=BUILTIN_TINY_MODEL,
        metadata={
            "help": f"Model path or Hub id. '{BUILTIN_TINY_MODEL}' is the recipes' warmed-up tiny model, built and "
            "cached in ~/.cache/soup_trl on first use (about a minute of SFT on CPU); the other built-in models are "
            f"{', '.join(name for name in BUILTIN_MODELS if name != BUILTIN_TINY_MODEL)}. relay: model B, which "
            "continues."
        },
    )
    tokenizer: str | None = field(
        default=None, metadata={"help": "Tokenizer path or Hub id, when the model directory has none."}
    )

    def default_benchmarks(self) -> tuple[str, ...]:
        """The built-in set of the model's own task (offline: 'arithmetic' for the built-in tiny model, and see
        `own_benchmark`), else the paper's six benchmarks."""
        own = own_benchmark(self.model)
        return (own,) if own is not None else PAPER_BENCHMARKS


@dataclass
class BenchmarkArguments:
    """Which problems, and how a problem becomes a prompt."""

    _argument_group_name = "benchmarks"

    benchmarks: list[str] | None = field(
        default=None,
        metadata={
            "help": f"Benchmark names ({', '.join(valid_names())}) and/or local .jsonl/.json/.parquet files, comma- "
            f"or space-separated; {', '.join(BUILTIN_BENCHMARKS)} are built in (offline): held-out problems of the "
            "built-in training tasks. None: the set of the model's own task ("
            + ", ".join(f"'{benchmark}' for {model}" for model, benchmark in MODEL_BENCHMARKS.items())
            + "; for a run or checkpoint directory trained by a recipe on a built-in task, tiny_arithmetic*, "
            "tiny_chain* or smollm2_*, that task's: the recipe is read from its training_args.bin), for any other "
            f"model the paper's six ({','.join(PAPER_BENCHMARKS)}); name the benchmarks to choose (e.g. --benchmarks "
            f"{CHAIN} for a chain model saved without training_args.bin). For select, "
            f"{','.join(SELECTION_BENCHMARKS)}."
        },
    )
    limit: int | None = field(
        default=None, metadata={"help": "Evaluate only the first N problems of each benchmark (None: all)."}
    )
    problem_field: str | None = field(
        default=None,
        metadata={
            "help": "Local files: the field holding the problem (dotted paths such as data.question work); default: "
            "the first of problem, question, Problem, Question that a row has (the six benchmarks' own names)."
        },
    )
    answer_field: str | None = field(
        default=None,
        metadata={
            "help": "Local files: the field holding the gold answer; default: the first of final_answer, answer, "
            "Answer that a row has."
        },
    )
    prompt_template: str = field(
        default=MATH_PROMPT_TEMPLATE,
        metadata={
            "help": "Prompt text, '{problem}' replaced by the problem: the training recipes' template by default. "
            f"Not used for the built-in sets ({', '.join(BUILTIN_BENCHMARKS)}), whose prompts are their training "
            "tasks' own."
        },
    )
    system_prompt: str | None = field(default=None, metadata={"help": "Optional system message."})
    chat_template: bool = field(
        default=True,
        metadata={
            "help": "Send prompts as chat messages through the tokenizer's chat template (--no-chat-template: as "
            "plain text)."
        },
    )

    def __post_init__(self):
        self.benchmarks = split_names(self.benchmarks) or None  # a YAML string, or flags "a,b" "c"
        if self.benchmarks:
            check_names(self.benchmarks)
        if self.limit is not None and self.limit < 1:
            raise UserError(f"--limit must be >= 1, got {self.limit}.")
        self.prompt_format()  # checks the template

    def names(self, default: Sequence[str]) -> list[str]:
        return list(self.benchmarks or default)

    def prompt_format(self) -> PromptFormat:
        return PromptFormat(self.prompt_template, self.system_prompt, self.chat_template)

    def load(self, names: Sequence[str], log: Callable[[str], None]) -> list[Benchmark]:
        """Load the benchmarks `names` (Hub benchmarks are downloaded, or read from the `datasets` cache)."""
        if any(name in HUB_BENCHMARKS for name in names):
            import datasets
            import huggingface_hub

            # one summarising error instead of a warning per retry when the Hub cannot be reached
            huggingface_hub.utils.logging.set_verbosity_error()
            datasets.utils.logging.set_verbosity_error()
        benchmarks = []
        for name in names:
            if name in HUB_BENCHMARKS:
                log(f"Loading benchmark {name} from the Hub ({HUB_BENCHMARKS[name].hub_id})")
            benchmarks.append(
                load_benchmark(name, self.prompt_format(), self.problem_field, self.answer_field, self.limit)
            )
        return benchmarks


@dataclass
class SamplingArguments:
    """How completions are sampled: n per problem, temperature, nucleus, budget, seed."""

    _argument_group_name = "sampling"

    num_samples: int = field(default=32, metadata={"aliases": ["-n"], "help": "Samples per problem: n of avg@n."})
    temperature: float = field(
        default=0.6,
        metadata={"help": "Sampling temperature (0: greedy). The paper does not state its evaluation temperature."},
    )
    top_p: float = field(default=0.95, metadata={"help": "Nucleus sampling threshold, in (0, 1]."})
    top_k: int = field(default=0, metadata={"help": "Top-k filtering (0: off)."})
    max_new_tokens: int | None = field(
        default=None,
        metadata={
            "help": f"Completion budget in tokens. None: {ARITHMETIC_MAX_NEW_TOKENS} for '{ARITHMETIC}' (the tiny "
            f"recipes' max_completion_length), {CHAIN_MAX_NEW_TOKENS} for '{CHAIN}' and "
            f"{WORD_PROBLEMS_MAX_NEW_TOKENS} for '{WORD_PROBLEMS}' (the method comparison's budgets) and "
            f"{MATH_MAX_NEW_TOKENS} for math benchmarks (the Qwen2.5-Math-7B recipes'); for select, the run's "
            "max_completion_length (read from its training_args.bin). Models of the DeepSeek-R1-Distill-Qwen-1.5B "
            "recipes train with 8192: pass --max-new-tokens 8192."
        },
    )
    seed: int = field(default=0, metadata={"help": "Random seed of sampling."})

    def __post_init__(self):
        if self.num_samples < 1:
            raise UserError(f"--num-samples must be >= 1, got {self.num_samples}.")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise UserError(f"--max-new-tokens must be >= 1, got {self.max_new_tokens}.")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise UserError("--temperature must be >= 0 and --top-p in (0, 1].")
        if self.top_k < 0:
            raise UserError(f"--top-k must be >= 0, got {self.top_k}.")

    def budget(self, benchmark: Benchmark) -> int:
        return self.max_new_tokens or benchmark.default_max_new_tokens


@dataclass
class BackendArguments:
    """What generates: Transformers `generate` or vLLM, and where."""

    _argument_group_name = "backend"

    backend: Literal["auto", "hf", "vllm"] = field(
        default="auto",
        metadata={
            "help": "'vllm' (GPU, needs vllm installed), 'hf' (Transformers generate, CPU or GPU), or 'auto': vLLM "
            "when it is installed and a GPU is visible, else hf."
        },
    )
    batch_size: int = field(default=64, metadata={"help": "hf: sequences per generate call."})
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = field(default="auto", metadata={"help": "Model dtype."})
    device: str | None = field(
        default=None, metadata={"help": "hf: torch device (None: cuda if available, else cpu)."}
    )
    tensor_parallel_size: int = field(default=1, metadata={"help": "vllm: GPUs per model."})
    gpu_memory_utilization: float = field(default=0.9, metadata={"help": "vllm: fraction of GPU memory to use."})
    max_model_len: int | None = field(default=None, metadata={"help": "vllm: context length (None: the model's)."})
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads (None: torch's choice)."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars (--no-progress hides them)."})

    def __post_init__(self):
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {self.batch_size}.")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"--threads must be >= 1, got {self.threads}.")


@dataclass
class OutputArguments:
    """Where results go; results of one run never replace another's unless asked."""

    _argument_group_name = "output"

    output_dir: str | None = field(
        default=None,
        metadata={
            "help": "Where to write the results. None: eval and relay create a new directory per run (run-1, run-2, "
            "... under eval_results/MODEL or relay_results/B_from_A); select writes to RUN_DIR/eval."
        },
    )
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "Replace the results an existing --output-dir holds (their files are removed first); select: "
            "re-evaluate checkpoints whose evaluation exists. Without it, such a directory is refused."
        },
    )


@dataclass
class RelayArguments:
    """Relay sampling: model A writes a prefix, model B continues."""

    _argument_group_name = "relay"

    behavior_model: str = field(metadata={"help": "Model A, which writes the prefixes (path or Hub id)."})
    ratio: float = field(default=0.5, metadata={"help": "Fraction of A's answer kept as prefix, in [0, 1)."})

    def __post_init__(self):
        if not 0.0 <= self.ratio < 1.0:
            raise UserError(f"--ratio must be in [0, 1), got {self.ratio}.")


@dataclass
class SelectArguments:
    """Checkpoint selection over a training run."""

    _argument_group_name = "selection"

    run_dir: str | None = field(
        default=None,
        metadata={
            "help": "A training output_dir holding checkpoint-N directories (or the first positional argument)."
        },
    )
    select_by: list[str] | None = field(
        default=None,
        metadata={"help": "Benchmarks whose mean avg@n ranks the checkpoints (None: every evaluated benchmark)."},
    )
    tokenizer: str | None = field(
        default=None, metadata={"help": "Tokenizer for checkpoints that have none (None: the run directory's)."}
    )

    def __post_init__(self):
        if not self.run_dir:
            raise UserError("no run directory: soup-trl select RUN_DIR (or --run_dir, or run_dir in --config).")
        self.select_by = split_names(self.select_by) or None


@dataclass
class PlotArguments:
    """Training plots of a run."""

    _argument_group_name = "plot"

    run_dir: str | None = field(
        default=None,
        metadata={"help": "A training output_dir or a trainer_state.json file (or the first positional argument)."},
    )
    output_dir: str | None = field(default=None, metadata={"help": "Where to write the PNGs (None: RUN_DIR/plots)."})
    phases: int = field(default=3, metadata={"help": "Training phases (lines) of the position-bin plot: thirds."})

    def __post_init__(self):
        if not self.run_dir:
            raise UserError("no run directory: soup-trl plot RUN_DIR (or --run_dir, or run_dir in --config).")
        if self.phases < 1:
            raise UserError(f"--phases must be >= 1, got {self.phases}.")


SHARED = (BenchmarkArguments, SamplingArguments, BackendArguments, OutputArguments)
EVAL_ARGUMENTS = (ModelArguments, *SHARED)
RELAY_ARGUMENTS = (RelayArguments, ModelArguments, *SHARED)
SELECT_ARGUMENTS = (SelectArguments, *SHARED)
PLOT_ARGUMENTS = (PlotArguments,)
COMMAND_ARGUMENTS = {
    "eval": EVAL_ARGUMENTS,
    "relay": RELAY_ARGUMENTS,
    "select": SELECT_ARGUMENTS,
    "plot": PLOT_ARGUMENTS,
}

#: The options that determine an evaluation's results: `soup-trl select` reuses an evaluation when they match.
RESULT_FIELDS = tuple(f.name for group in (BenchmarkArguments, SamplingArguments) for f in fields(group))


def run_record(*arguments) -> dict[str, Any]:
    """Every option of a run, one flat mapping (the keys a `--config` file takes)."""
    return {name: value for group in arguments for name, value in asdict(group).items()}


def result_settings(record: dict[str, Any]) -> dict[str, Any]:
    return {name: record.get(name) for name in RESULT_FIELDS}


def _markdown_default(value: Any) -> str:
    if isinstance(value, str):
        value = value.replace("\n", "\\n")
    return f"`{value}`"


def options_markdown() -> str:
    """The option tables of docs/evaluation.md, generated from the dataclasses (a test keeps the docs equal)."""
    sections = []
    groups = dict.fromkeys(group for composed in COMMAND_ARGUMENTS.values() for group in composed)
    for group in groups:
        commands = ", ".join(f"`{name}`" for name, composed in COMMAND_ARGUMENTS.items() if group in composed)
        rows = ["| option | default | meaning |", "|---|---|---|"]
        for f in fields(group):
            flags = ", ".join(
                f"`{flag}`" for flag in [f"--{f.name.replace('_', '-')}", *f.metadata.get("aliases", [])]
            )
            default = "required" if f.default is MISSING else _markdown_default(f.default)
            text = f.metadata["help"].replace("|", "\\|")
            rows.append(f"| {flags} | {default} | {text} |")
        sections.append(f"### {group._argument_group_name} ({commands})\n\n" + "\n".join(rows))
    return "\n\n".join(sections)
