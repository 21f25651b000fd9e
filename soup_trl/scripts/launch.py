"""`soup-trl train`: run a recipe through Accelerate, from a checkout or an installed package.

    soup-trl train                                        # the offline CPU demo (recipe tiny_arithmetic)
    soup-trl train --config qwen2.5_math_7b_soup_ratio --accelerate_config zero3.yaml
    soup-trl train --list                                 # the recipes shipped with the package

Everything but `--list` and `--accelerate_config` goes to the training script (`soup_trl/scripts/train.py`), whose
`--config` takes a shipped recipe's name or any YAML file; its other flags override the recipe's keys.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from .train import RECIPES_DIR, shipped_recipes

TRAIN_SCRIPT = Path(__file__).with_name("train.py")
# What `accelerate launch` assumes without a config file, said explicitly so that it does not warn about each value
SINGLE_PROCESS = ["--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]


def recipe_summary(name: str, width: int = 100) -> str:
    """The first sentence of a shipped recipe's leading comment, cut to `width` characters."""
    lines = []
    for line in (RECIPES_DIR / f"{name}.yaml").read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    text = " ".join(lines)
    sentence = text.split(". ")[0].rstrip(".")
    return sentence if len(sentence) <= width else sentence[: width - 3].rstrip() + "..."


def launch_command(accelerate_config: str | None, script_args: list[str]) -> list[str]:
    """The `accelerate launch` command line that runs the training script with `script_args`."""
    launcher = [sys.executable, "-m", "accelerate.commands.launch"]
    launcher += ["--config_file", accelerate_config] if accelerate_config else SINGLE_PROCESS
    return [*launcher, str(TRAIN_SCRIPT), *script_args]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="soup-trl train",
        description=__doc__.split("\n\n")[0] + " Any other option is the training script's (soup-trl train "
        "--config NAME --help lists them).",
        add_help=False,
    )
    parser.add_argument("--list", action="store_true", help="List the shipped recipes and exit.")
    parser.add_argument(
        "--accelerate_config", "--accelerate-config", metavar="FILE",
        help="Accelerate config file (e.g. accelerate_configs/zero3.yaml); default: one process.",
    )  # fmt: skip
    parser.add_argument("-h", "--help", action="store_true", help="Show this help and the training script's options.")
    return parser


def train_main(argv: list[str]) -> int:
    parser = build_parser()
    args, script_args = parser.parse_known_args(argv)
    if args.list:
        width = max(len(name) for name in shipped_recipes())
        for name in shipped_recipes():
            print(f"{name:<{width}}  {recipe_summary(name)}")
        return 0
    if args.help:
        parser.print_help()
        print("\nThe training script's options (recipe keys):\n")
        return subprocess.call([sys.executable, str(TRAIN_SCRIPT), "--help"])
    return subprocess.call(launch_command(args.accelerate_config, script_args))
