"""The `soup-trl` command: `train` (soup_trl.scripts.launch), and a thin dispatcher over the evaluation commands.

    soup-trl train --config tiny_arithmetic         # a shipped recipe through Accelerate; --list shows them all
    soup-trl eval                                   # offline: the tiny model on the built-in arithmetic set
    soup-trl eval --model builtin:tiny-chain        # a built-in model on its own task's held-out set (chain)
    soup-trl eval --config eval.yaml                # the same options from a YAML file (flags override it)
    soup-trl eval --model Qwen/Qwen2.5-Math-7B --benchmarks aime24,aime25,math500
    soup-trl relay --behavior-model RUN/checkpoint-400 --model RUN/checkpoint-450 --ratio 0.5
    soup-trl select RUN                             # best checkpoint by the AIME24+AIME25 average avg@32
    soup-trl plot RUN                               # training curves and the entropy / clip-ratio position bins

A command's options are the dataclasses of `soup_trl.evaluation.arguments`, parsed by TRL's `TrlParser` as the
training script's are: each option is a flag in both spellings (`--num_samples`, `--num-samples`) and a key of
`--config FILE.yaml`. Heavy libraries (torch, transformers, vLLM) are imported only by the command that runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass

from ..core.errors import UserError
from ..evaluation.suggest import did_you_mean


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default from the code; descriptions wrapped paragraph by paragraph."""

    def _fill_text(self, text, width, indent):
        return "\n\n".join(
            textwrap.fill(
                " ".join(p.split()), width, initial_indent=indent, subsequent_indent=indent, break_on_hyphens=False
            )
            for p in text.split("\n\n")
        )

    def _split_lines(self, text, width):
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _get_help_string(self, action):
        if isinstance(action, argparse._StoreFalseAction):  # the --no-X twin of a boolean option
            return f"Same as --{action.dest.replace('_', '-')} false."
        return super()._get_help_string(action)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _setup(backend) -> None:
    """Console and process settings of a command that loads models."""
    if not backend.progress:
        os.environ["TQDM_DISABLE"] = "1"
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # math-verify warns that its own timeouts are off (the project's grader enforces one)
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    if backend.threads is not None:
        from ..core.runtime import configure_threads

        configure_threads(backend.threads)


# ----------------------------------------------------------------------------------------------------------------------
# Commands: what each prints (the work is done in soup_trl.evaluation)
# ----------------------------------------------------------------------------------------------------------------------


def run_eval_command(model, benchmarks, sampling, backend, output) -> int:
    _setup(backend)
    from ..evaluation.runner import evaluate, results_table, unparseable_notes

    report, out = evaluate(model, benchmarks, sampling, backend, output, _log)
    print(results_table(report["benchmarks"], sampling.num_samples))
    for note in unparseable_notes(report["benchmarks"]):
        print(note)
    print(f"\nResults: {out / 'results.json'}\nTable:   {out / 'results.md'}")
    print(f"Samples: {', '.join(str(out / f'{name}.jsonl') for name in report['benchmarks'])}")
    print(f"Options: {out / 'config.yaml'}")
    return 0


def run_relay_command(relay, model, benchmarks, sampling, backend, output) -> int:
    _setup(backend)
    from ..evaluation.relay import run_relay

    result = run_relay(relay, model, benchmarks, sampling, backend, output, _log)
    print(result.table)
    print(f"\nResults: {result.output_dir / 'results.json'}\nTable:   {result.output_dir / 'relay.md'}")
    print(f"Figure 4 (relay minus B): {result.figure4}\nFigure 6 (pass@k curves): {result.figure6}")
    return 0


def run_select_command(select, benchmarks, sampling, backend, output) -> int:
    _setup(backend)
    from ..evaluation.outputs import RESULTS
    from ..evaluation.runner import pct
    from ..evaluation.selection import SELECTION, select_checkpoint

    result = select_checkpoint(select, benchmarks, sampling, backend, output, _log)
    best = result.record["best"]
    print(result.table)
    print(f"\nBest: {best['name']} ({best['path']}), {result.score_name} = {pct(best['score'])}")
    print(f"Table: {result.output_dir / 'selection.md'}\nResults: {result.output_dir / SELECTION}")
    print(f"Each model's evaluation: {result.output_dir / '<model>' / RESULTS}")
    return 0


def run_plot_command(plot) -> int:
    from ..evaluation.plots import plot_run

    state_path, files = plot_run(plot.run_dir, plot.output_dir, plot.phases)
    print(f"Read {state_path}")
    missing = {
        "prefix_vs_continuation.png": "no soup/prefix or soup/continuation metrics logged",
        "position_bins.png": "no soup/position_bin_* metrics logged",
    }
    for name, reason in missing.items():
        if not any(f.endswith(name) for f in files):
            print(f"Skipped {name}: {reason}")
    print("Wrote:")
    for f in files:
        print(f"  {f}")
    return 0


# ----------------------------------------------------------------------------------------------------------------------
# The command table
# ----------------------------------------------------------------------------------------------------------------------

OFFLINE_NOTE = (
    "Offline by default: the model defaults to the warmed-up tiny model of the recipes (builtin:tiny-arithmetic) and "
    "the benchmarks to 'arithmetic', a built-in held-out addition set. The other built-in models default to their "
    "own task's built-in set too (builtin:tiny-chain: 'chain', builtin:smollm2-135m-instruct: 'word_problems'), and "
    "so does a run or checkpoint directory trained by one of their recipes (tiny_arithmetic*, tiny_chain*, "
    "smollm2_*)."
)
CONFIG_NOTE = (
    "Every option can also come from a YAML file: --config FILE.yaml with keys named as the options (underscores: "
    "num_samples: 4); flags given beside it override the file. Results never replace another run's: see --output_dir."
)


def _arguments(command: str) -> Callable[[], tuple[type, ...]]:
    def load():
        from ..evaluation.arguments import COMMAND_ARGUMENTS

        return COMMAND_ARGUMENTS[command]

    return load


@dataclass(frozen=True)
class Command:
    summary: str  # one line in `soup-trl --help`
    description: str
    arguments: Callable[[], tuple[type, ...]]  # the dataclass types parsed, imported when the command runs
    run: Callable[..., int]  # called with one instance of each dataclass type, in order
    positional: str | None = None  # a field also taken as the first positional argument


# `train` launches the training script in its own processes (soup_trl.scripts.launch); these run in this one.
TRAIN = "train"
COMMANDS: dict[str, Command] = {
    "eval": Command(
        "avg@n and pass@k of a model on math benchmarks or local files.",
        "Sample n completions per problem, grade them (math-verify accuracy reward; the arithmetic reward for "
        "'arithmetic' and 'chain'), and report avg@n and unbiased pass@k for k = 1, 2, 4, ..., n.\n\nWrites "
        "results.json, results.md, config.yaml (the run's options) and one <benchmark>.jsonl of graded samples to "
        f"OUTPUT_DIR, by default a new eval_results/<model>/run-N per run.\n\n{OFFLINE_NOTE}\n\n{CONFIG_NOTE}\n\n"
        "Example (offline): soup-trl eval --benchmarks arithmetic --num-samples 8",
        _arguments("eval"),
        run_eval_command,
    ),
    "relay": Command(
        "Relay sampling (model A writes a prefix, B continues) vs B alone: pass@k curves (Figure 4).",
        "Relay sampling of the paper's section 5.1. The behavior model A samples n full answers per problem; each is "
        "cut to its first round(len * ratio) tokens (SOUP's length-ratio truncation: len counts the tokens before the "
        "EOS, which is never kept) and model B continues prompt + prefix. B also samples n answers alone. Reports "
        "pass@k of relay sampling, of B alone and of A alone, and plots relay minus B against k (log2 axis).\n\n"
        "Writes results.json, relay.md, config.yaml, relay_pass_at_k_difference.png (Figure 4), relay_pass_at_k.png "
        "(Figure 6) and graded samples per benchmark and sampler to OUTPUT_DIR, by default a new "
        f"relay_results/<B>_from_<A>/run-N per run.\n\n{OFFLINE_NOTE}\n\n{CONFIG_NOTE}\n\nExample (offline): "
        "soup-trl relay --behavior-model RUN/checkpoint-100 --benchmarks arithmetic",
        _arguments("relay"),
        run_relay_command,
    ),
    "select": Command(
        "Evaluate every checkpoint of a training run and report the best.",
        "Evaluate every RUN_DIR/checkpoint-N (and the final model saved in RUN_DIR, if any) and rank them by the "
        "mean avg@n over the selection benchmarks: AIME24 + AIME25 by default (the paper's model selection), else the "
        "--benchmarks given (or --select-by). Ties go to the earliest checkpoint.\n\nWrites RUN_DIR/eval/<model>/ "
        "(each model's eval outputs, reused by a later select with the same benchmark and sampling options) and "
        "RUN_DIR/eval/selection.{md,json} (or to --output-dir); results made with other options are replaced only "
        "with --overwrite.\n\nOffline: pass --benchmarks arithmetic (the default benchmarks are downloaded from the Hub)."
        f"\n\n{CONFIG_NOTE}"
        "\n\nExample (offline): soup-trl select outputs/tiny-arithmetic-soup --benchmarks arithmetic",
        _arguments("select"),
        run_select_command,
        positional="run_dir",
    ),
    "plot": Command(
        "PNG training curves and entropy / clip ratio by token position (Figure 5) of a run.",
        "Read RUN_DIR/trainer_state.json (or the newest RUN_DIR/checkpoint-N/trainer_state.json) and write: "
        "training_curves.png (reward, entropy, clip ratio, response length, and SOUP's prefix share and cut position "
        "when logged), reward.png, prefix_vs_continuation.png (clip ratio and entropy of off-policy prefix vs "
        "on-policy continuation tokens, when logged), position_bins.png (entropy and clip ratio by relative token "
        "position in 10% bins, one line per training phase: the paper's Figure 5) and cut_tokens.png (how often each "
        "token sits at SOUP's cuts, the paper's Figure 3, when the run wrote soup_cut_tokens.jsonl).\n\nWorks offline "
        "on any run, e.g. "
        "the tiny recipe's: soup-trl plot outputs/tiny-arithmetic-soup",
        _arguments("plot"),
        run_plot_command,
        positional="run_dir",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: the list of commands (each command parses its own options)."""
    parser = argparse.ArgumentParser(
        prog="soup-trl",
        description="Train with SOUP and its baselines; evaluate models (avg@n, pass@k), relay sampling, checkpoint "
        "selection and training plots.",
        epilog=f"Run 'soup-trl COMMAND --help' for the options of a command.\n\n{OFFLINE_NOTE}\n\n{CONFIG_NOTE}",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=version_line())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser(TRAIN, help="Train with a recipe through Accelerate (--list shows the shipped recipes).")
    for name, command in COMMANDS.items():
        sub.add_parser(name, help=command.summary, add_help=False)
    return parser


def build_command_parser(name: str):
    """The `TrlParser` of one command: its dataclasses, `--config FILE.yaml`, and its positional argument."""
    from trl import TrlParser

    command = COMMANDS[name]
    parser = TrlParser(
        command.arguments(),
        prog=f"soup-trl {name}",
        description=command.description,
        formatter_class=_HelpFormatter,
        allow_abbrev=False,
    )
    # TrlParser reads --config itself; this entry only documents it in --help.
    parser.add_argument("--config", metavar="FILE.yaml", default=argparse.SUPPRESS, help="YAML file of options.")
    if command.positional:
        parser.add_argument(
            command.positional, nargs="?", default=argparse.SUPPRESS, metavar=command.positional.upper(),
            help=f"Same as --{command.positional.replace('_', '-')}.",
        )  # fmt: skip
    return parser


def _unknown(parser, config: str | None, from_config: list[str], from_flags: list[str]) -> None:
    """Fail on options the command does not have, with the closest real one."""
    if from_config:
        keys = {action.dest for action in parser._actions} - {"help", "config"}
        unknown = from_config[::2]  # TrlParser returns them as ["--key", "value", ...]
        parser.error(
            f"{config}: unknown keys: "
            + ", ".join(f"{k[2:]}{did_you_mean(k[2:], keys)}" for k in unknown)
        )  # fmt: skip
    if from_flags:
        options = list(parser._option_string_actions)
        hints = "".join(did_you_mean(a.split("=")[0], options) for a in from_flags if a.startswith("-"))
        parser.error(f"unrecognized arguments: {' '.join(from_flags)}{hints}")


def parse_command(name: str, argv: list[str]) -> list:
    """One instance of each of the command's dataclasses, from `--config FILE.yaml` and flags."""
    import yaml

    parser = build_command_parser(name)
    argv = [part for arg in argv for part in (arg.split("=", 1) if arg.startswith("--config=") else [arg])]
    config = None
    if "--config" in argv:
        at = argv.index("--config") + 1
        if at == len(argv):
            parser.error("argument --config: expected a YAML file")
        config = argv[at]
        if not os.path.isfile(config):
            raise UserError(f"config file {config} does not exist.")
    try:
        *arguments, from_config, from_flags = parser.parse_args_and_config(
            argv, return_remaining_strings=True, separate_remaining_strings=True
        )
    except (ValueError, yaml.YAMLError) as e:  # TrlParser: not a YAML mapping, a malformed file
        message = " ".join(str(e).split())
        raise UserError(message if str(config) in message else f"{config}: {message}") from None
    _unknown(parser, config, from_config, from_flags)
    return arguments


def version_line() -> str:
    """The package's version and those of the libraries it trains with (read from their metadata, not imported)."""
    from importlib.metadata import PackageNotFoundError, version

    from .. import __version__

    def installed(name: str) -> str:
        try:
            return f"{name} {version(name)}"
        except PackageNotFoundError:
            return f"{name} not installed"

    return f"soup-trl {__version__} ({', '.join(installed(n) for n in ('trl', 'transformers', 'torch', 'vllm'))})"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        build_parser().print_help()
        return 0 if argv else 2
    if argv[0] == "--version":
        print(version_line())
        return 0
    name = argv[0]
    if name == TRAIN:
        from .launch import train_main

        return train_main(argv[1:])
    if name not in COMMANDS:
        build_parser().error(
            f"unknown command {name!r}{did_you_mean(name, [TRAIN, *COMMANDS])}; choose from "
            f"{', '.join([TRAIN, *COMMANDS])}."
        )
    try:
        return COMMANDS[name].run(*parse_command(name, argv[1:]))
    except UserError as e:
        print(f"soup-trl {name}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"soup-trl {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
