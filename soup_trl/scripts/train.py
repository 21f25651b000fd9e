"""Train with SOUP (or its on-policy DAPO twin, soup_behavior_steps=1), or with a baseline method.

    accelerate launch recipes/soup_dapo.py                                   # offline CPU demo (tiny_arithmetic.yaml)
    accelerate launch recipes/soup_dapo.py --config recipes/qwen2.5_math_7b_soup_ratio.yaml
    accelerate launch recipes/soup_dapo.py --config recipes/X.yaml --learning_rate 5e-7 --soup_behavior_steps 4
    accelerate launch recipes/soup_dapo.py --config tiny_arithmetic_m2po     # M2PO (the recipe says `method: m2po`)

YAML keys are the fields of SOUPScriptArguments, the method's config (SOUPConfig: every GRPOConfig field plus soup_*;
M2POConfig: plus m2po_*; LUFFYConfig: plus luffy_*) and TRL's ModelConfig; command-line flags override them. A
recipe's `method:` key (or `--method`) picks the method's config and trainer.
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
from soup_trl.core.runtime import leave_launch
from soup_trl.rewards import get_reward_funcs
from soup_trl.rewards.math_data import MATH_PROMPT_TEMPLATE, prepare_math_dataset
from soup_trl.toy.builtin import builtin_task, resolve_model

logger = logging.getLogger("soup_dapo")

RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"  # shipped inside the package
DEFAULT_RECIPE = "tiny_arithmetic"
METHODS = {  # method -> config, trainer
    "soup": ("SOUPConfig", "SOUPTrainer"),
    "m2po": ("M2POConfig", "M2POTrainer"),
    "luffy": ("LUFFYConfig", "LUFFYTrainer"),
}


def method_classes(method: str):
    """The (config, trainer) classes of a training method."""
    if method not in METHODS:
        raise ValueError(f"method={method!r} is unknown. Methods: {', '.join(METHODS)}.")
    return tuple(getattr(soup_trl, name) for name in METHODS[method])


@dataclass
class SOUPScriptArguments(ScriptArguments):
    method: str = field(
        default="soup",
        metadata={"help": f"Training method ({', '.join(METHODS)}); soup with soup_behavior_steps=1 is DAPO."},
    )
    prompts_per_step: int | None = field(
        default=None,
        metadata={
            "help": "Global batch: prompts per optimizer step, kept on any number of processes. When set, "
            "gradient_accumulation_steps = prompts_per_step * num_generations / (per_device_train_batch_size * "
            "processes); a process count that does not divide it fails before training, naming counts that work."
        },
    )
    reward_funcs: list[str] = field(
        default_factory=lambda: ["accuracy"],
        metadata={"help": "Reward functions: registry names (see soup_trl.rewards) or dotted paths pkg.module.func."},
    )
    reward_timeout: float | None = field(
        default=None,
        metadata={"help": "Seconds a reward function given by dotted path may spend on one sample (killed after)."},
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
    trainable_top_layers: int | None = field(
        default=None,
        metadata={
            "help": "Train only the top N decoder layers and the final norm (embeddings, LM head and lower layers "
            "frozen): a step's backward then covers those layers only. Default: the whole model (or LoRA with use_peft)."
        },
    )
    num_threads: int | None = field(
        default=None, metadata={"help": "torch threads per process on CPU (default: cores / processes)."}
    )


def load_datasets(script_args: SOUPScriptArguments, training_args: SOUPConfig):
    trace_field = getattr(training_args, "luffy_trace_field", None)  # methods trained with off-policy traces
    traces = trace_field is not None
    builtin = builtin_task(
        script_args.dataset_name,
        max_digits=script_args.arithmetic_max_digits,
        fixed_width=script_args.arithmetic_fixed_width,
    )
    if builtin is not None:
        make_dataset, task = builtin
        size = script_args.max_train_samples or 20_000
        train = make_dataset(size, seed=script_args.dataset_seed, split="train", with_target=traces, **task)
        if traces:  # the task's worked solutions are the traces
            train = train.rename_column("completion", trace_field)
        evaluation = (
            make_dataset(script_args.eval_samples, split="test", **task) if script_args.eval_samples else None
        )
        return train, evaluation

    from datasets import concatenate_datasets, load_dataset

    if script_args.dataset_name is None:
        raise ValueError("dataset_name is required (a Hub dataset id, a local path, or 'builtin:arithmetic').")
    dataset = load_dataset(script_args.dataset_name, name=script_args.dataset_config)
    train = dataset[script_args.dataset_train_split]
    if script_args.max_train_samples is not None and script_args.max_train_samples < len(train):
        train = train.shuffle(seed=script_args.dataset_seed).select(range(script_args.max_train_samples))
    raw = train
    with training_args.main_process_first(desc="dataset formatting"):
        train = prepare_math_dataset(
            train,
            problem_field=script_args.problem_field,
            solution_field=script_args.solution_field,
            template=script_args.prompt_template,
            system_prompt=script_args.system_prompt,
            conversational=script_args.conversational,
        )
    if traces and trace_field in raw.column_names:
        train = concatenate_datasets([train, raw.select_columns([trace_field])], axis=1)
    evaluation = None
    if script_args.eval_samples:
        split = train.train_test_split(test_size=script_args.eval_samples, seed=script_args.dataset_seed)
        train, evaluation = split["train"], split["test"]
    return train, evaluation


def hub_dataset_name(name: str | None) -> str | None:
    """The dataset as the model card links it: a Hub id, or None for the built-in task and local files."""
    if name is None or name.startswith("builtin:") or os.path.exists(name):
        return None
    return name


def main(script_args: SOUPScriptArguments, training_args: SOUPConfig, model_args: ModelConfig):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if training_args.use_cpu:
        from soup_trl.core.runtime import configure_threads

        configure_threads(script_args.num_threads)

    model_path = resolve_model(model_args.model_name_or_path)
    init_kwargs = {
        "revision": model_args.model_revision,
        "attn_implementation": model_args.attn_implementation,
        "dtype": model_args.dtype,
    }
    # ModelConfig's fields are added to the recipe's own model_init_kwargs, never replace them
    training_args.model_init_kwargs = {
        **(training_args.model_init_kwargs or {}),
        **{k: v for k, v in init_kwargs.items() if v is not None},
    }
    train_dataset, eval_dataset = load_datasets(script_args, training_args)
    trainer = method_classes(script_args.method)[1](
        model=model_path,
        reward_funcs=get_reward_funcs(script_args.reward_funcs, timeout=script_args.reward_timeout),
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        peft_config=get_peft_config(model_args),
    )
    if script_args.trainable_top_layers is not None:
        from soup_trl.core.freezing import train_top_layers_only

        trainable, total = train_top_layers_only(trainer.model, script_args.trainable_top_layers)
        logger.info("Training the top %d decoder layers: %d of %d parameters", script_args.trainable_top_layers,
                    trainable, total)  # fmt: skip
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
        trainer.push_to_hub(dataset_name=hub_dataset_name(script_args.dataset_name))
    # in a launch of several processes, every rank leaves together and exits here, without finalizing the interpreter
    # (where one of gloo's threads could abort it and fail the launch): see leave_launch
    leave_launch(trainer.accelerator.state)


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


def recipe_method(argv: list[str]) -> str:
    """The `method` of a run: `--method` on the command line, else the recipe's `method:` key, else soup."""
    for i, arg in enumerate(argv):
        if arg == "--method" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--method="):
            return arg.split("=", 1)[1]
    with open(argv[argv.index("--config") + 1]) as recipe:
        return (yaml.safe_load(recipe) or {}).get("method", "soup")


def accumulation_steps(prompts_per_step: int, num_generations: int, per_device_batch: int, processes: int) -> int:
    """Gradient accumulation steps that give `prompts_per_step` prompts per optimizer step on `processes` processes."""
    rows = prompts_per_step * num_generations
    if rows % (per_device_batch * processes) == 0:
        return rows // (per_device_batch * processes)
    working = [n for n in range(1, rows // per_device_batch + 1) if rows % (per_device_batch * n) == 0]
    raise ValueError(
        f"prompts_per_step={prompts_per_step} x num_generations={num_generations} = {rows} rows per optimizer step "
        f"cannot be split over {processes} processes of per_device_train_batch_size={per_device_batch}. Process "
        f"counts that work with this batch size: {', '.join(map(str, working))}; or change "
        "per_device_train_batch_size."
    )


def parse_args(argv: list[str] | None = None, num_processes: int | None = None):
    """Script, config and model arguments of a run; `num_processes` defaults to the launch's WORLD_SIZE."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" not in argv:
        argv = ["--config", DEFAULT_RECIPE, *argv]
    at = argv.index("--config") + 1
    recipe_name = argv[at]
    argv[at] = resolve_recipe(recipe_name)
    parser = TrlParser((SOUPScriptArguments, method_classes(recipe_method(argv))[0], ModelConfig))
    script_args, training_args, model_args = parser.parse_args_and_config(argv)
    if script_args.prompts_per_step is not None:
        processes = num_processes or int(os.environ.get("WORLD_SIZE", "1"))
        accumulation = accumulation_steps(
            script_args.prompts_per_step, training_args.num_generations, training_args.per_device_train_batch_size,
            processes,
        )
        if accumulation != training_args.gradient_accumulation_steps:  # the config derives fields from it: parse again
            argv = [*argv, "--gradient_accumulation_steps", str(accumulation)]
            script_args, training_args, model_args = parser.parse_args_and_config(argv)
    if training_args.recipe is None:
        training_args.recipe = recipe_name
    return script_args, training_args, model_args


if __name__ == "__main__":
    main(*parse_args())
