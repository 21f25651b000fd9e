"""The docs' generated sections agree with the code and the shipped recipes (`python -m soup_trl.scripts.docs`).

Also: the recipe renderer on a hand-made recipe folder, the config tables against the dataclasses, every marked
section of every page closed, and benchmarks/default_run.py's table on hand-made results. No training.
"""

import dataclasses
import importlib.util
import sys
from pathlib import Path

import pytest
from trl import GRPOConfig

from soup_trl.scripts import docs

ROOT = Path(__file__).resolve().parent.parent.parent
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]


def test_every_generated_section_is_up_to_date():
    stale = docs.stale_sections(ROOT / "docs", docs.sections())
    assert not stale, (
        f"stale generated sections: {', '.join(stale)}. Regenerate them with: {docs.FIX_COMMAND} "
        "(then review the diff and commit the pages)"
    )


def test_every_shipped_recipe_is_on_the_recipes_page():
    body = docs.read_section((ROOT / "docs" / "recipes.md").read_text(), "recipes")
    assert body is not None, "docs/recipes.md has no 'recipes' section"
    missing = [p.stem for p in sorted(docs.RECIPES_DIR.glob("*.yaml")) if f"| `{p.stem}`" not in body]
    assert not missing, f"recipes missing from docs/recipes.md: {', '.join(missing)}. Run: {docs.FIX_COMMAND}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_section_marker_has_its_end(page):
    assert docs.marker_problems(page.read_text()) == [], page


def test_marker_problems_are_found():
    assert docs.marker_problems("<!-- a: start -->\nx\n<!-- a: end -->\n") == []
    assert docs.marker_problems("<!-- a: start -->\n") == ["'a' has no end marker (<!-- a: end -->)"]
    assert docs.marker_problems("<!-- a: end -->") == ["'a' ends without a start marker before it"]
    nested = docs.marker_problems("<!-- a: start --><!-- b: start --><!-- b: end --><!-- a: end -->")
    assert any("starts inside 'a'" in p for p in nested)


def test_replace_section_keeps_the_text_around_it():
    text = "head\n<!-- s: start -->\nold\n<!-- s: end -->\ntail\n"
    new = docs.replace_section(text, "s", "new line")
    assert new == "head\n<!-- s: start -->\nnew line\n<!-- s: end -->\ntail\n"
    assert docs.read_section(new, "s") == "new line\n"
    assert docs.replace_section(new, "s", "new line\n") == new  # rewriting is idempotent
    with pytest.raises(ValueError, match="no section 'other'"):
        docs.replace_section(text, "other", "x")


RECIPE_SOUP = """\
# A hand-made SOUP recipe. Its second sentence is not part of the description.
# More comment.

model_name_or_path: some/model
dataset_name: some/data
dataset_config: main
soup_behavior_steps: 4
soup_truncation: entropy
max_steps: 12
learning_rate: 2.0e-5
"""
RECIPE_M2PO = """\
# M2PO on the same data, with LoRA
method: m2po
model_name_or_path: some/model
dataset_name: some/data
m2po_staleness: 3
use_peft: true
prompts_per_step: 16
"""


def test_recipe_table_of_a_hand_made_folder(tmp_path):
    (tmp_path / "b_soup.yaml").write_text(RECIPE_SOUP)
    (tmp_path / "a_m2po.yaml").write_text(RECIPE_M2PO)
    (tmp_path / "notes.txt").write_text("not a recipe")
    lines = docs.recipes_table(tmp_path, default_recipe="b_soup").splitlines()
    assert lines[0].startswith("| recipe | method | model | data |")
    assert len(lines) == 4  # header, rule, one row per YAML file, in name order
    m2po, soup = lines[2], lines[3]
    # keys the recipe leaves out take the method config's defaults (entropy k = 32; tau 0.04; 8 generations; 3 epochs)
    assert soup.startswith("| `b_soup` (default) | SOUP, entropy k=32, T=4 | `some/model` | `some/data` (main) |")
    assert "| 1 x 8 per process | 512 | 2.0e-5 | 12 steps | A hand-made SOUP recipe |" in soup  # GRPOConfig: 8 rows
    assert m2po.startswith("| `a_m2po` | M2PO, staleness 3, tau 0.04, LoRA r=16 | `some/model` |")
    assert "| 16 x 8 | 512 | 1.0e-6 | 3 epochs | M2PO on the same data, with LoRA |" in m2po
    # a recipe added later appears when the table is rendered again
    (tmp_path / "c_dapo.yaml").write_text("# DAPO.\nsoup_behavior_steps: 1\ndynamic_sampling: true\n")
    again = docs.recipes_table(tmp_path).splitlines()
    assert len(again) == 5 and again[4].startswith("| `c_dapo` | DAPO + dynamic sampling (T=1, up to 10 refill")


def test_method_summaries():
    def summary(method, **values):
        return docs.method_summary(method, lambda key: {"use_peft": False, **values}[key])

    assert summary("soup", soup_behavior_steps=8, soup_truncation="ratio", soup_prefix_ratio=0.5,
                   dynamic_sampling=False, dynamic_sampling_max_rounds=10) == "SOUP, ratio 0.5, T=8"  # fmt: skip
    assert summary("soup", soup_behavior_steps=4, soup_truncation="prefix_budget", soup_prefix_budget=0.25,
                   dynamic_sampling=True, dynamic_sampling_max_rounds=3) == (
        "SOUP, prefix budget 0.25, T=4, dynamic sampling (up to 3 refill rounds)"
    )  # fmt: skip
    assert summary("luffy", luffy_num_traces=2, num_generations=8, luffy_trace_field="target",
                   luffy_shaping_gamma=0.1) == "LUFFY, 2 traces of 8 (`target`), gamma 0.1"  # fmt: skip
    dapo = dict(soup_behavior_steps=1, soup_truncation="ratio", dynamic_sampling=False, dynamic_sampling_max_rounds=10,
                prompts_per_step=None, gradient_accumulation_steps=2, steps_per_generation=None,
                generation_batch_size=None)  # fmt: skip
    assert summary("soup", **dapo) == "DAPO, on-policy (T=1)"
    assert summary("soup", **{**dapo, "steps_per_generation": 8}) == (
        "DAPO, mini-batch updates, 4 steps per rollout batch (T=1)"
    )
    assert summary("soup", **{**dapo, "generation_batch_size": 4096, "prompts_per_step": 32, "num_generations": 8,
                              "dynamic_sampling": True}) == (
        "DAPO + dynamic sampling (T=1, up to 10 refill rounds), mini-batch updates, 16 steps per rollout batch"
    )  # fmt: skip


def test_recipe_description_is_the_first_sentence_of_the_leading_comment():
    assert docs.recipe_description("# One. Two.\n# Three\nkey: 1\n# later comment") == "One"
    assert docs.recipe_description("# Wrapped over\n# two lines.\n") == "Wrapped over two lines"
    assert docs.recipe_description("key: 1\n") == ""


def test_config_tables_list_the_fields_each_config_adds_or_redefaults():
    from soup_trl import LUFFYConfig, M2POConfig, SOUPConfig
    from soup_trl.core.config import RENAMED_FIELDS, MethodConfig

    grpo = {f.name for f in dataclasses.fields(GRPOConfig)}
    deprecated = {old for old, _ in RENAMED_FIELDS}
    shared = {f.name for f in dataclasses.fields(MethodConfig)}
    shared_rows = docs.config_table(MethodConfig, GRPOConfig, frozenset(deprecated)).splitlines()[2:]
    assert [row.split("`")[1] for row in shared_rows] == sorted(shared - grpo - deprecated - docs.COMPAT_FIELDS,
                                                                key=[f.name for f in dataclasses.fields(MethodConfig)].index)
    assert {"console", "compact_generation", "recipe", "dynamic_sampling"} <= shared
    for config, own in [(SOUPConfig, ("soup_",)), (M2POConfig, ("m2po_",)), (LUFFYConfig, ("luffy_",))]:
        rows = docs.config_table(config, GRPOConfig, frozenset(shared)).splitlines()[2:]
        names = [row.split("`")[1] for row in rows]
        added = [f.name for f in dataclasses.fields(config) if f.name not in grpo | shared | docs.COMPAT_FIELDS]
        assert set(added) <= set(names) and all(n.startswith(own) or n == "epsilon_high" for n in names)
        assert not set(names) & shared  # the shared fields have their own table
        for f in dataclasses.fields(config):
            if f.name in names:  # each row shows the code's default and help text
                row = rows[names.index(f.name)]
                assert docs.code(docs.field_default(f)) in row and docs.cell(f.metadata["help"]) in row
    assert "| `epsilon_high` | `0.28` (GRPOConfig: `None`) |" in docs.config_table(SOUPConfig, GRPOConfig)
    assert "epsilon_high" not in docs.config_table(M2POConfig, GRPOConfig)  # M2PO keeps GRPOConfig's
    for name in ("loss_type", "epsilon", "beta"):  # GRPOConfig's own defaults, not re-defaulted
        assert f"| `{name}` |" not in docs.config_table(SOUPConfig, GRPOConfig)


def test_check_command_names_the_stale_section_and_the_fix(tmp_path, capsys):
    for page, name in docs.sections():
        path = tmp_path / page
        text = path.read_text() if path.exists() else ""
        path.write_text(text + f"intro\n<!-- {name}: start -->\nstale\n<!-- {name}: end -->\n")
    assert docs.main(["--check", "--docs", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "stale: recipes.md: recipes" in out and f"Regenerate with: {docs.FIX_COMMAND}" in out
    assert docs.main(["--docs", str(tmp_path)]) == 0  # rewrite, then the check passes
    assert docs.main(["--check", "--docs", str(tmp_path)]) == 0
    assert (tmp_path / "recipes.md").read_text().startswith("intro\n<!-- recipes: start -->\n| recipe |")
    (tmp_path / "other.md").write_text("<!-- half: start -->\n")  # a section without its end stops both modes
    assert docs.main(["--docs", str(tmp_path)]) == 1
    assert "broken markers: other.md: 'half' has no end marker" in capsys.readouterr().out


def _default_run():
    spec = importlib.util.spec_from_file_location("default_run", ROOT / "benchmarks" / "default_run.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_default_run_table_from_hand_made_results():
    dr = _default_run()
    assert dr.window_labels(240) == ["1-40", "41-80", "81-120", "121-160", "161-200", "201-240"]
    history = [{"step": s, "reward": 0.1 if s <= 40 else 0.2} for s in range(5, 241, 5)] + [{"train_runtime": 1.0}]
    assert dr.reward_windows(history, 240) == pytest.approx([0.1, 0.2, 0.2, 0.2, 0.2, 0.2])

    def result(shift):
        return {"steps": 240, "reward_windows": [0.1 + shift, 0.12, 0.14, 0.16, 0.18, 0.2 + shift],
                "greedy_accuracy": 0.5 + shift, "greedy_direct_share": 0.0, "sampled_accuracy": 0.2,
                "sampled_direct_share": 0.02, "sampled_scratchpad_accuracy": 0.2, "seconds_per_step": 0.5,
                "train_cpu_seconds": 60.0}  # fmt: skip

    results = {"soup": {s: result(0.01 * s) for s in (1, 2, 3)}, "dapo": {s: result(0.0) for s in (1, 2, 3)}}
    base = {"greedy_accuracy": 0.42, "greedy_direct_share": 0.5, "sampled_accuracy": 0.1, "sampled_direct_share": 0.5,
            "sampled_direct_accuracy": 0.03, "sampled_scratchpad_accuracy": 0.15}  # fmt: skip
    text = dr.summary_markdown(results, base, "Command: `x`.")
    assert text.startswith("Command: `x`.\n\nBase model (before RL): held-out greedy accuracy 42.0%")
    # paired differences: SOUP - DAPO = 0.01 * seed on the shifted metrics, mean 2 points, t(2) interval 2.5
    assert (
        "| held-out greedy accuracy (500 problems) | 52.0 ± 2.5 | 50.0 ± 0.0 | +2.0 ± 2.5 | no difference measured |"
    ) in text
    assert "| training reward, steps 41-80 | 12.0 ± 0.0 | 12.0 ± 0.0 | +0.0 ± 0.0 | no difference measured |" in text
    assert "| SOUP, seed 3 | 13.0 | 12.0 | 14.0 | 16.0 | 18.0 | 23.0 | 53.0 | 0 | 0.50 | 0.25 |" in text
    assert text.index("| SOUP, seed 1 |") < text.index("| SOUP, seed 2 |") < text.index("| DAPO twin, seed 1 |")


def test_the_readme_stays_a_front_door():
    """README.md: what SOUP is, the set-up commands, switching, methods, recipes, one results table, the docs index;
    the rest lives in docs/ (at most 130 lines)."""
    readme = (Path(__file__).resolve().parent.parent.parent / "README.md").read_text()
    assert len(readme.splitlines()) <= 130
    for heading in ("## Quick start", "## Switching from GRPOTrainer", "## Methods", "## Recipes", "## Results on CPU"):
        assert heading in readme, heading
