"""The options of the evaluation commands (`soup_trl.evaluation.arguments`): the default benchmarks of a built-in
model, and the --max-new-tokens help that names each paper model's training budget.

Parsing (both flag spellings, --config files) and the generated option tables are tested through the command, in
tests/scripts/test_cli.py.
"""

import pytest

from soup_trl.evaluation.benchmarks import ARITHMETIC_MAX_NEW_TOKENS


@pytest.mark.parametrize(
    "model, expected",
    [
        ("builtin:tiny-arithmetic", "arithmetic"),
        ("builtin:tiny-chain", "chain"),
        ("builtin:smollm2-135m-instruct", "word_problems"),
        ("Qwen/Qwen2.5-Math-7B", None),
    ],
)
def test_a_builtin_model_defaults_to_its_own_task(model, expected):
    from soup_trl.evaluation.arguments import ModelArguments
    from soup_trl.evaluation.benchmarks import PAPER_BENCHMARKS

    assert ModelArguments(model=model).default_benchmarks() == ((expected,) if expected else PAPER_BENCHMARKS)


def test_eval_budget_help_names_each_paper_models_recipe_length():
    """The --max-new-tokens help and docs/evaluation.md tell eval users the budget each paper model trained with."""
    from pathlib import Path

    import yaml

    from soup_trl.evaluation.arguments import SamplingArguments as Sampling
    from soup_trl.evaluation.benchmarks import MATH_MAX_NEW_TOKENS

    root = Path(__file__).resolve().parent.parent.parent
    recipes = root / "soup_trl" / "recipes"

    def lengths(pattern):
        return {yaml.safe_load(p.read_text())["max_completion_length"] for p in recipes.glob(pattern)}

    assert lengths("qwen2.5_math_7b_*.yaml") == {MATH_MAX_NEW_TOKENS}
    assert lengths("tiny_arithmetic*.yaml") == {ARITHMETIC_MAX_NEW_TOKENS}
    (r1,) = lengths("r1_distill_qwen_1.5b_*.yaml")
    help_text = Sampling.__dataclass_fields__["max_new_tokens"].metadata["help"]
    assert f"DeepSeek-R1-Distill-Qwen-1.5B recipes train with {r1}: pass --max-new-tokens {r1}" in help_text
    docs = (root / "docs" / "evaluation.md").read_text()
    assert f"| `r1_distill_qwen_1.5b_*` | {r1} | `--max-new-tokens {r1}` |" in docs
    assert f"| `qwen2.5_math_7b_*` | {MATH_MAX_NEW_TOKENS} (4k context" in docs
