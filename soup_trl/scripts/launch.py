"""`soup-trl train`: run a recipe through Accelerate, from a checkout or an installed package.

    soup-trl train                                        # the offline CPU demo (recipe tiny_arithmetic)
    soup-trl train --config qwen2.5_math_7b_soup_ratio --accelerate_config zero3
    soup-trl train --list                                 # the recipes shipped with the package

Everything but `--list` and `--accelerate_config` goes to the training script (`soup_trl/scripts/train.py`), whose
`--config` takes a shipped recipe's name or any YAML file; its other flags override the recipe's keys.
`--accelerate_config` takes the name of a config shipped in `soup_trl/accelerate_configs/` or any config file.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from .train import RECIPES_DIR, shipped_recipes

TRAIN_SCRIPT = Path(__file__).with_name("train.py")
ACCELERATE_CONFIGS_DIR = Path(__file__).resolve().parent.parent / "accelerate_configs"  # shipped inside the package
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


def shipped_accelerate_configs() -> list[str]:
    """Names of the Accelerate configs shipped with the package (``soup_trl/accelerate_configs/*.yaml``)."""
    return sorted(path.stem for path in ACCELERATE_CONFIGS_DIR.glob("*.yaml"))


def resolve_accelerate_config(config: str) -> str:
    """An Accelerate config file: a path as it is, or the file of a shipped config named `zero3`, `zero3.yaml` or
    `accelerate_configs/zero3.yaml` (the folder's place in a checkout before it moved into the package).

    Raises:
        ValueError: for anything else, naming the shipped configs.
    """
    if os.path.isfile(config):
        return config
    path = Path(config)
    name = path.name.removesuffix(".yaml").removesuffix(".yml")
    if path.parent.name in ("", "accelerate_configs") and (ACCELERATE_CONFIGS_DIR / f"{name}.yaml").is_file():
        return str(ACCELERATE_CONFIGS_DIR / f"{name}.yaml")
    raise ValueError(
        f"--accelerate_config {config!r} is neither a file nor a shipped config. Shipped configs: "
        f"{', '.join(shipped_accelerate_configs())} (in {ACCELERATE_CONFIGS_DIR}); or give the path of an Accelerate "
        "config file (`accelerate config` writes one)."
    )


def launch_command(accelerate_config: str | None, script_args: list[str]) -> list[str]:
    """The `accelerate launch` command line that runs the training script with `script_args`."""
    launcher = [sys.executable, "-m", "accelerate.commands.launch"]
    if accelerate_config:
        launcher += ["--config_file", resolve_accelerate_config(accelerate_config)]
    else:
        launcher += SINGLE_PROCESS
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
        "--accelerate_config", "--accelerate-config", metavar="NAME|FILE",
        help=f"Accelerate config: a shipped one ({', '.join(shipped_accelerate_configs())}) or a config file's "
        "path; default: one process.",
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
    try:
        command = launch_command(args.accelerate_config, script_args)
    except ValueError as e:
        parser.error(str(e))
    return subprocess.call(command)
