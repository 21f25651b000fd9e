"""The generated sections of the docs: rendered from the code and the shipped recipes, so a page cannot disagree with them.

    python -m soup_trl.scripts.docs            # rewrite every generated section (run it from a checkout)
    python -m soup_trl.scripts.docs --check    # only compare; exit status 1 and the stale sections' names if any

A generated section is the text between `<!-- NAME: start -->` and `<!-- NAME: end -->` on a docs page. The sections
this command owns are `SECTIONS`: the recipe table of docs/recipes.md (every `soup_trl/recipes/*.yaml`, read from the
folder, so a recipe added later appears when the command runs again), one table per method config in
docs/configuration.md (the fields each adds to or re-defaults in TRL's `GRPOConfig`, from the dataclass fields'
defaults and help), and the option tables of docs/evaluation.md (`soup_trl.evaluation.arguments.options_markdown`).
Other marked sections belong to the benchmark commands that measure them (`benchmarks/compare_methods.py`,
`benchmarks/default_run.py`); this command leaves them alone. `tests/scripts/test_docs.py` runs the check.

Everything but `main` is a pure function of its arguments (and of the code it renders).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent.parent  # the checkout (docs/ is not installed with the package)
RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"
FIX_COMMAND = "python -m soup_trl.scripts.docs"
MARKER = re.compile(r"<!-- ([\w.-]+): (start|end) -->")

# Fields every config shares with GRPOConfig under a different default only because of the Transformers rename of
# gradient to activation checkpointing (soup_trl.core.compat); which of them exists depends on the installed
# Transformers, so the tables leave them out and the page says it in prose.
COMPAT_FIELDS = frozenset({"gradient_checkpointing", "activation_checkpointing"})


# ----------------------------------------------------------------------------------------------------------------------
# Markers
# ----------------------------------------------------------------------------------------------------------------------


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}: start -->", f"<!-- {name}: end -->"


def marker_problems(text: str) -> list[str]:
    """What is wrong with a page's markers: a start without its end (or the reverse), nesting, a name used twice."""
    problems, open_name, seen = [], None, set()
    for match in MARKER.finditer(text):
        name, kind = match.groups()
        if kind == "start":
            if open_name is not None:
                problems.append(f"'{name}' starts inside '{open_name}', which has no end marker before it")
            if name in seen:
                problems.append(f"'{name}' has more than one section")
            open_name = name
            seen.add(name)
        elif open_name != name:
            problems.append(f"'{name}' ends without a start marker before it")
        else:
            open_name = None
    if open_name is not None:
        problems.append(f"'{open_name}' has no end marker ({markers(open_name)[1]})")
    return problems


def section_names(text: str) -> list[str]:
    return [m.group(1) for m in MARKER.finditer(text) if m.group(2) == "start"]


def read_section(text: str, name: str) -> str | None:
    """The body of a section (between its marker lines), or None when the page has no such section."""
    start, end = markers(name)
    if start not in text or end not in text.split(start, 1)[1]:
        return None
    return text.split(start, 1)[1].split(end, 1)[0].removeprefix("\n")


def replace_section(text: str, name: str, body: str) -> str:
    """`text` with the body of section `name` replaced by `body` (the marker lines stay; `body` ends with a newline)."""
    start, end = markers(name)
    if read_section(text, name) is None:
        raise ValueError(f"no section '{name}': the page needs the lines {start!r} and {end!r}")
    head, rest = text.split(start, 1)
    body = body if body.endswith("\n") else body + "\n"
    return f"{head}{start}\n{body}{end}{rest.split(end, 1)[1]}"


# ----------------------------------------------------------------------------------------------------------------------
# Markdown helpers
# ----------------------------------------------------------------------------------------------------------------------


def cell(text: Any) -> str:
    """A table cell: one line, `|` escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def code(value: Any) -> str:
    """A default in backticks, as it would be written in Python: `"ratio"`, `None`, `0.28`, `['accuracy']`
    (a string's newlines as \\n, nothing else escaped)."""
    if isinstance(value, str):
        return '`"' + value.replace("\n", "\\n") + '"`'
    return f"`{value!r}`"


def field_default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


# ----------------------------------------------------------------------------------------------------------------------
# docs/configuration.md: what each method config adds to GRPOConfig
# ----------------------------------------------------------------------------------------------------------------------


def config_fields(config_class: type, base: type, skip=frozenset()) -> list[tuple[dataclasses.Field, Any]]:
    """The fields `config_class` adds to `base`, and those it re-defaults, each with `base`'s default (or MISSING);
    the fields named in `skip` left out."""
    base_fields = {f.name: f for f in dataclasses.fields(base)}
    added, redefaulted = [], []
    for f in dataclasses.fields(config_class):
        if f.name in COMPAT_FIELDS or f.name in skip:
            continue
        if f.name not in base_fields:
            added.append((f, dataclasses.MISSING))
        elif field_default(f) != field_default(base_fields[f.name]):
            redefaulted.append((f, field_default(base_fields[f.name])))
    return added + redefaulted


def config_table(config_class: type, base: type, skip=frozenset()) -> str:
    """One row per field `config_class` adds to or re-defaults in `base` (but those in `skip`): name, default, the
    field's help text."""
    rows = []
    for f, base_default in config_fields(config_class, base, skip):
        default = code(field_default(f))
        if base_default is not dataclasses.MISSING:
            default += f" ({base.__name__}: {code(base_default)})"
        rows.append([f"`{f.name}`", default, f.metadata.get("help", "")])
    return table(["field", "default", "meaning"], rows)


def config_sections() -> dict[str, Callable[[], str]]:
    """docs/configuration.md's sections: what every method config shares (`MethodConfig`), then each method config
    against GRPOConfig without those, the script's keys against TRL's. The deprecated spellings of shared fields are
    named in the page's text, not in the tables."""
    from trl import GRPOConfig, ScriptArguments

    from soup_trl import LUFFYConfig, M2POConfig, SOUPConfig
    from soup_trl.core.config import RENAMED_FIELDS, MethodConfig

    from .train import SOUPScriptArguments

    deprecated = frozenset(old for old, _ in RENAMED_FIELDS)
    shared = frozenset(f.name for f in dataclasses.fields(MethodConfig)) | deprecated
    return {
        "method-config": lambda: config_table(MethodConfig, GRPOConfig, deprecated),
        "soup-config": lambda: config_table(SOUPConfig, GRPOConfig, shared),
        "m2po-config": lambda: config_table(M2POConfig, GRPOConfig, shared),
        "luffy-config": lambda: config_table(LUFFYConfig, GRPOConfig, shared),
        "script-arguments": lambda: config_table(SOUPScriptArguments, ScriptArguments),
    }


# ----------------------------------------------------------------------------------------------------------------------
# docs/recipes.md: every shipped recipe
# ----------------------------------------------------------------------------------------------------------------------


def recipe_description(text: str) -> str:
    """The first sentence of a recipe's leading comment (the rule `soup-trl train --list` uses)."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return " ".join(lines).split(". ")[0].rstrip(".")


class _Defaults:
    """A recipe's value for a key, else the default of the class that declares the key (method config, ModelConfig,
    script arguments)."""

    def __init__(self, recipe: dict[str, Any], classes: list[type]):
        self.recipe, self.classes = recipe, classes

    def __getitem__(self, key: str) -> Any:
        if key in self.recipe:
            return self.recipe[key]
        for cls in self.classes:
            fields = {f.name: f for f in dataclasses.fields(cls)}
            if key in fields:
                return field_default(fields[key])
        raise KeyError(key)


def _number(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else f"{value:g}"


def _rate(value: float) -> str:
    """A learning rate as the recipes write it: 1.0e-6, 5.0e-5."""
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def method_summary(method: str, value: Callable[[str], Any]) -> str:
    """The method and its own settings, as the recipe sets them (`value(key)` gives the recipe's or the default)."""
    if method == "m2po":
        text = f"M2PO, staleness {_number(value('m2po_staleness'))}, tau {_number(value('m2po_tau'))}"
    elif method == "luffy":
        traces = value("luffy_num_traces")
        text = (
            f"LUFFY, {traces} trace{'s' if traces != 1 else ''} of {value('num_generations')} "
            f"(`{value('luffy_trace_field')}`), gamma {_number(value('luffy_shaping_gamma'))}"
        )
    elif method == "soup":
        steps, truncation = value("soup_behavior_steps"), value("soup_truncation")
        rounds = f"up to {value('dynamic_sampling_max_rounds')} refill rounds"
        if steps == 1:
            from .budget import rollout_steps

            updates = rollout_steps(lambda key: method if key == "method" else value(key))
            minibatch = f"mini-batch updates, {updates} steps per rollout batch"
            if value("dynamic_sampling"):
                text = f"DAPO + dynamic sampling (T=1, {rounds})" + (f", {minibatch}" if updates > 1 else "")
            else:
                text = f"DAPO, {minibatch} (T=1)" if updates > 1 else "DAPO, on-policy (T=1)"
        elif truncation == "ratio":
            text = f"SOUP, ratio {_number(value('soup_prefix_ratio'))}, T={steps}"
        elif truncation == "entropy":
            text = f"SOUP, entropy k={value('soup_entropy_top_k')}, T={steps}"
        elif truncation == "prefix_budget":
            text = f"SOUP, prefix budget {_number(value('soup_prefix_budget'))}, T={steps}"
        else:
            text = f"SOUP, `{truncation}` truncation, T={steps}"
        if steps != 1 and value("dynamic_sampling"):
            text += f", dynamic sampling ({rounds})"
    else:
        text = f"`{method}`"
    if value("use_peft"):
        text += f", LoRA r={value('lora_r')}"
    return text


def recipe_row(name: str, text: str, default_recipe: str | None = None) -> list[str]:
    """The table row of one recipe file's text."""
    from trl import ModelConfig

    from .train import SOUPScriptArguments, method_classes

    recipe = yaml.safe_load(text) or {}
    method = recipe.get("method", "soup")
    try:
        config_class = method_classes(method)[0]
    except ValueError:  # an unknown method still gets its row (training it fails, naming the methods)
        config_class = method_classes("soup")[0]
    values = _Defaults(recipe, [config_class, ModelConfig, SOUPScriptArguments])

    def value(key: str) -> Any:
        return values[key]

    generations = value("num_generations")
    if recipe.get("prompts_per_step") is not None:
        per_step = f"{recipe['prompts_per_step']} x {generations}"
    else:
        rows = value("per_device_train_batch_size") * value("gradient_accumulation_steps")
        per_step = f"{rows // generations} x {generations} per process"
    data = f"`{value('dataset_name')}`"
    if recipe.get("dataset_config"):
        data += f" ({recipe['dataset_config']})"
    if recipe.get("max_train_samples"):
        data += f", {_number(recipe['max_train_samples'])} examples"
    steps = value("max_steps")
    epochs = value("num_train_epochs")
    length = (
        f"{_number(steps)} steps" if steps and steps > 0 else f"{_number(epochs)} epoch{'s' if epochs != 1 else ''}"
    )
    label = f"`{name}`" + (" (default)" if name == default_recipe else "")
    return [
        label,
        method_summary(method, value),
        f"`{value('model_name_or_path')}`",
        data,
        per_step,
        _number(value("max_completion_length")),
        _rate(value("learning_rate")),
        length,
        recipe_description(text),
    ]


def recipes_table(folder: Path = RECIPES_DIR, default_recipe: str | None = None) -> str:
    """A table of every `*.yaml` recipe in `folder`, in name order."""
    headers = ["recipe", "method", "model", "data", "prompts x samples per step", "completion tokens", "lr",
               "length", "description"]  # fmt: skip
    rows = [recipe_row(p.stem, p.read_text(), default_recipe) for p in sorted(folder.glob("*.yaml"))]
    return table(headers, rows)


# ----------------------------------------------------------------------------------------------------------------------
# docs/memory.md: the GPU memory of every paper recipe
# ----------------------------------------------------------------------------------------------------------------------


def memory_table(folder: Path) -> str:
    """A row per recipe of a model in `budget.MODEL_SHAPES`: its memory on 8 x 80 GB (`budget.memory_budget`)."""
    from .budget import MODEL_SHAPES, memory_budget

    headers = ["recipe", "ZeRO-3 states", "activations", "vLLM (weights)", "KV cache", "rows it holds",
               "rows a cycle samples", "peak: generation", "peak: training", "vLLM context", "checkpoint"]  # fmt: skip
    rows = []
    for path in sorted(folder.glob("*.yaml")):
        recipe = yaml.safe_load(path.read_text())
        if recipe.get("model_name_or_path") not in MODEL_SHAPES:
            continue
        b = memory_budget(recipe)
        sleep = "; sleeps" if recipe.get("vllm_enable_sleep_mode") else ""
        rows.append([
            f"`{path.stem}`", f"{b.model_states_gib:.1f}", f"{b.activations_gib:.1f}",
            f"{b.vllm_gib:.0f} ({b.vllm_weights_gib:.1f}){sleep}", f"{b.kv_cache_gib:.1f}", f"{b.kv_sequences}",
            f"{b.cycle_rows}", f"{b.generation_peak_gib:.1f}", f"{b.training_peak_gib:.1f}",
            f"{b.model_length:,}", f"{b.checkpoint_gib:.0f}",
        ])  # fmt: skip
    return table(headers, rows)


# ----------------------------------------------------------------------------------------------------------------------
# Every generated section
# ----------------------------------------------------------------------------------------------------------------------


def sections() -> dict[tuple[str, str], Callable[[], str]]:
    """(page under docs/, section name) -> the function that renders the section's body."""
    from ..evaluation.arguments import options_markdown
    from .train import DEFAULT_RECIPE

    generated = {("recipes.md", "recipes"): lambda: recipes_table(RECIPES_DIR, DEFAULT_RECIPE)}
    generated.update({("configuration.md", name): render for name, render in config_sections().items()})
    generated[("evaluation.md", "eval-options")] = lambda: options_markdown() + "\n"
    generated[("memory.md", "memory-budget")] = lambda: memory_table(RECIPES_DIR)
    return generated


def stale_sections(docs: Path, generated: dict[tuple[str, str], Callable[[], str]]) -> list[str]:
    """'page: section' for each section whose body differs from its rendering (or that the page lacks)."""
    stale = []
    for (page, name), render in generated.items():
        path = docs / page
        text = path.read_text() if path.is_file() else ""
        if read_section(text, name) != render():
            stale.append(f"{page}: {name}")
    return stale


def write_sections(docs: Path, generated: dict[tuple[str, str], Callable[[], str]]) -> list[str]:
    """Rewrite every section; returns 'page: section' for those that changed."""
    changed = []
    for (page, name), render in generated.items():
        path = docs / page
        text = path.read_text()
        new = replace_section(text, name, render())
        if new != text:
            path.write_text(new)
            changed.append(f"{page}: {name}")
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m soup_trl.scripts.docs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare only; exit status 1 when a section is stale")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs", help="the docs folder (default: the checkout's)")
    args = parser.parse_args(argv)
    if not args.docs.is_dir():
        parser.error(f"{args.docs} is not a folder: run this from a checkout, or pass --docs")
    generated = sections()
    broken = [
        f"{page.name}: {problem}"
        for page in sorted(args.docs.glob("*.md"))
        for problem in marker_problems(page.read_text())
    ]
    for entry in broken:
        print(f"broken markers: {entry}")
    if broken:
        return 1
    if args.check:
        stale = stale_sections(args.docs, generated)
        for entry in stale:
            print(f"stale: {entry}")
        if stale:
            print(f"Regenerate with: {FIX_COMMAND}")
            return 1
        print(f"{len(generated)} generated sections up to date")
        return 0
    changed = write_sections(args.docs, generated)
    print(f"{len(changed)} of {len(generated)} generated sections rewritten" + "".join(f"\n  {c}" for c in changed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
