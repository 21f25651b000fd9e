"""Train with SOUP (or its on-policy DAPO twin, soup_behavior_steps=1), or with a baseline method.

    accelerate launch recipes/soup_dapo.py                                   # offline CPU demo (tiny_arithmetic.yaml)
    accelerate launch recipes/soup_dapo.py --config recipes/qwen2.5_math_7b_soup_ratio.yaml
    accelerate launch recipes/soup_dapo.py --config recipes/X.yaml --learning_rate 5e-7 --soup_behavior_steps 4
    accelerate launch recipes/soup_dapo.py --config tiny_arithmetic_m2po     # M2PO (the recipe says `method: m2po`)

YAML keys are the fields of SOUPScriptArguments, the method's config (SOUPConfig: every GRPOConfig field plus soup_*;
M2POConfig: every GRPOConfig field plus m2po_*) and TRL's ModelConfig; command-line flags override them.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from trl import ModelConfig, ScriptArguments, TrlParser, get_peft_config

import soup_trl
from soup_trl import SOUPConfig
from soup_trl.rewards import get_reward_funcs
from soup_trl.rewards.math_data import BUILTIN_ARITHMETIC, MATH_PROMPT_TEMPLATE, prepare_math_dataset

logger = logging.getLogger("soup_dapo")

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"  # shipped inside the package
DEFAULT_RECIPE = "tiny_arithmetic"
BUILTIN_TINY_MODEL = "builtin:tiny-arithmetic"
METHODS = {"soup": ("SOUPConfig", "SOUPTrainer"), "m2po": ("M2POConfig", "M2POTrainer")}  # method -> config, trainer


@dataclass
class SOUPScriptArguments(ScriptArguments):
    method: str = field(
        default="soup",
        metadata={"help": f"Training method: {' | '.join(METHODS)} (soup also runs DAPO, with soup_behavior_steps: 1)."},
    )
    reward_funcs: list[str] = field(
        default_factory=lambda: ["accuracy"],
        metadata={"help": "Reward functions: registry names (see soup_trl.rewards) or dotted paths pkg.module.func."},
    )
    problem_field: str = field(
        default="problem",
        metadata={"help": "Dataset field with the problem text (dotted paths reach nested fields)."},
    )
    solution_field: str = field(
        default="solution", metadata={"help": "Dataset field with the gold answer (e.g. reward_model.ground_truth)."}
    )
    prompt_template: str = field(
        default=MATH_PROMPT_TEMPLATE, metadata={"help": "Prompt text; '{problem}' is replaced by the problem."}
    )
    system_prompt: str | None = field(default=None, metadata={"help": "Optional system message."})
    conversational: bool = field(
        default=True, metadata={"help": "Send prompts as chat messages (the model's chat template is applied)."}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Train on a random subset of this many examples (seeded by dataset_seed)."}
    )
    dataset_seed: int = field(default=42, metadata={"help": "Seed for max_train_samples subsampling."})
    eval_samples: int = field(
        default=0, metadata={"help": "Hold out this many training examples as an eval set (0: no evaluation)."}
    )
    arithmetic_max_digits: int = field(
        default=3, metadata={"help": "builtin:arithmetic only: operands have up to this many digits."}
    )
    arithmetic_fixed_width: bool = field(
        default=True,
        metadata={
            "help": "builtin:arithmetic only: write operands zero-padded to arithmetic_max_digits digits (the task the "
            "built-in tiny model is warmed up on); false: 1 to arithmetic_max_digits digits, no leading zeros."
        },
    )
    num_threads: int | None = field(
        default=None, metadata={"help": "torch threads per process on CPU (default: cores / processes)."}
    )


def load_datasets(script_args: SOUPScriptArguments, training_args: SOUPConfig):
    if script_args.dataset_name == BUILTIN_ARITHMETIC:
        from soup_trl.toy.arithmetic import make_arithmetic_dataset

        size = script_args.max_train_samples or 20_000
        task = {"max_digits": script_args.arithmetic_max_digits, "fixed_width": script_args.arithmetic_fixed_width}
        train = make_arithmetic_dataset(size, seed=script_args.dataset_seed, split="train", **task)
        evaluation = (
            make_arithmetic_dataset(script_args.eval_samples, split="test", **task)
            if script_args.eval_samples
            else None
        )
        return train, evaluation

    from datasets import load_dataset

    if script_args.dataset_name is None:
        raise ValueError("dataset_name is required (a Hub dataset id, a local path, or 'builtin:arithmetic').")
    dataset = load_dataset(script_args.dataset_name, name=script_args.dataset_config)
    train = dataset[script_args.dataset_train_split]
    if script_args.max_train_samples is not None and script_args.max_train_samples < len(train):
        train = train.shuffle(seed=script_args.dataset_seed).select(range(script_args.max_train_samples))
    with training_args.main_process_first(desc="dataset formatting"):
        train = prepare_math_dataset(
            train,
            problem_field=script_args.problem_field,
            solution_field=script_args.solution_field,
            template=script_args.prompt_template,
            system_prompt=script_args.system_prompt,
            conversational=script_args.conversational,
        )
    evaluation = None
    if script_args.eval_samples:
        split = train.train_test_split(test_size=script_args.eval_samples, seed=script_args.dataset_seed)
        train, evaluation = split["train"], split["test"]
    return train, evaluation


def resolve_model(model_args: ModelConfig) -> str:
    if model_args.model_name_or_path in (None, BUILTIN_TINY_MODEL):
        from soup_trl.toy.tiny_model import ensure_tiny_base_model

        return ensure_tiny_base_model()
    return model_args.model_name_or_path


def main(script_args: SOUPScriptArguments, training_args: SOUPConfig, model_args: ModelConfig):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if training_args.use_cpu:
        from soup_trl.runtime import configure_threads

        configure_threads(script_args.num_threads)

    model_path = resolve_model(model_args)
    init_kwargs = {
        "revision": model_args.model_revision,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
    }
    training_args.model_init_kwargs = {k: v for k, v in init_kwargs.items() if v is not None}
    train_dataset, eval_dataset = load_datasets(script_args, training_args)
    trainer_class = method_classes(script_args.method)[1]
    trainer = trainer_class(
        model=model_path,
        reward_funcs=get_reward_funcs(script_args.reward_funcs),
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        peft_config=get_peft_config(model_args),
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)

    trainer.save_model(training_args.output_dir)
    trainer.save_state()  # trainer_state.json with the log history
    if trainer.accelerator.is_main_process:
        from soup_trl.evaluation.plots import plot_reward_curve

        output = os.path.abspath(training_args.output_dir)
        curve = plot_reward_curve(trainer.state.log_history, os.path.join(output, "reward.png"))
        print(f"\nCheckpoint:   {output}\nLogs:         {os.path.join(output, 'trainer_state.json')}")
        print(f"Reward curve: {curve}")
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)


def shipped_recipes() -> list[str]:
    """Names of the recipes shipped with the package (``soup_trl/recipes/*.yaml``)."""
    return sorted(path.stem for path in RECIPES_DIR.glob("*.yaml"))


def resolve_recipe(config: str) -> str:
    """A recipe file path, or the name of a shipped recipe (``tiny_arithmetic``, ``recipes/tiny_arithmetic.yaml``)."""
    if os.path.isfile(config):
        return config
    name = Path(config).name.removesuffix(".yaml").removesuffix(".yml")
    shipped = RECIPES_DIR / f"{name}.yaml"
    if shipped.is_file():
        return str(shipped)
    raise FileNotFoundError(
        f"Recipe {config!r} is neither a file nor a shipped recipe. Shipped recipes: {', '.join(shipped_recipes())}."
    )


def method_classes(method: str) -> tuple[type, type]:
    """The (config, trainer) classes of a training method."""
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}. Methods: {', '.join(METHODS)}.")
    return tuple(getattr(soup_trl, name) for name in METHODS[method])


def recipe_method(argv: list[str], recipe: str) -> str:
    """The run's method: `--method` on the command line, else the recipe's `method:` key, else soup."""
    for i, arg in enumerate(argv):
        if arg == "--method" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--method="):
            return arg.split("=", 1)[1]
    with open(recipe) as f:
        return (yaml.safe_load(f) or {}).get("method", "soup")


def parse_args(argv: list[str] | None = None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" not in argv:
        argv = ["--config", DEFAULT_RECIPE, *argv]
    at = argv.index("--config") + 1
    recipe_name = argv[at]
    argv[at] = resolve_recipe(recipe_name)
    config_class = method_classes(recipe_method(argv, argv[at]))[0]
    parser = TrlParser((SOUPScriptArguments, config_class, ModelConfig))
    script_args, training_args, model_args = parser.parse_args_and_config(argv)
    if getattr(training_args, "soup_recipe", "") is None:
        training_args.soup_recipe = recipe_name
    return script_args, training_args, model_args


if __name__ == "__main__":
    main(*parse_args())
