"""A truncation strategy of the user's own, chosen from a recipe or the command line: `soup_truncation: "module:name"`.

Each test writes a module that registers a strategy with `register_truncation` into a temporary folder put on
sys.path (as an installed package or PYTHONPATH would), under a name no other test uses; nothing imports it before the
config does. The module and its strategies are removed again afterwards.
"""

import itertools
import json
import sys
from pathlib import Path

import pytest

from soup_trl.evaluation.runs import training_setting
from soup_trl.scripts import train
from soup_trl.soup.truncation import TRUNCATION_STRATEGIES, get_truncation_strategy

RECIPES = Path(__file__).resolve().parent.parent.parent / "soup_trl" / "recipes"
MODULE = """\
from soup_trl import register_truncation

CALLS = []  # the content lengths of every batch the strategy cut


@register_truncation({name!r}, needs_logps=False)
def first_third(inputs):
    CALLS.append(inputs.content_lengths.tolist())
    return inputs.content_lengths // 3
"""
_ids = itertools.count()


class UserModule:
    """A module `name` in `folder` that registers the strategy `strategy` (its function is `first_third`)."""

    def __init__(self, folder: Path, source: str = MODULE):
        number = next(_ids)
        self.name, self.strategy = f"user_cuts_{number}", f"one_third_{number}"
        (folder / f"{self.name}.py").write_text(source.format(name=self.strategy))

    @property
    def spec(self) -> str:
        return f"{self.name}:{self.strategy}"

    @property
    def module(self):
        return sys.modules[self.name]

    def remove(self):
        sys.modules.pop(self.name, None)
        for name in [n for n, s in TRUNCATION_STRATEGIES.items() if s.fn.__module__ == self.name]:
            del TRUNCATION_STRATEGIES[name]


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    made = []

    def make(source: str = MODULE) -> UserModule:
        made.append(UserModule(tmp_path, source))
        assert made[-1].name not in sys.modules
        return made[-1]

    yield make
    for module in made:
        module.remove()


def recipe_with(tmp_path: Path, truncation: str) -> Path:
    """The tiny recipe with `soup_truncation` replaced."""
    text = (RECIPES / "tiny_arithmetic.yaml").read_text()
    assert "\nsoup_truncation: ratio\n" in text
    recipe = tmp_path / "my_recipe.yaml"
    recipe.write_text(text.replace("\nsoup_truncation: ratio\n", f'\nsoup_truncation: "{truncation}"\n'))
    return recipe


def test_a_recipe_selects_a_strategy_that_a_module_registers(tmp_path, user_module):
    mine = user_module()
    _, args, _ = train.parse_args(["--config", str(recipe_with(tmp_path, mine.spec))])
    assert args.soup_truncation == mine.spec  # kept as written: every process of a launch imports it the same way
    strategy = get_truncation_strategy(args.soup_truncation)
    assert strategy.fn is mine.module.first_third and strategy.name == mine.strategy and not strategy.needs_logps


def test_the_command_line_selects_it_over_the_recipe(user_module):
    mine = user_module()
    _, args, _ = train.parse_args(["--soup_truncation", mine.spec])  # the default recipe says `ratio`
    assert args.soup_truncation == mine.spec and mine.name in sys.modules


def test_a_strategy_by_its_function_name(make_config, user_module):
    mine = user_module()
    config = make_config(soup_truncation=f"{mine.name}:first_third", soup_behavior_steps=2)
    assert get_truncation_strategy(config.soup_truncation).name == mine.strategy


def test_a_module_in_the_working_directory_is_found_off_sys_path(tmp_path, monkeypatch, make_config):
    """`soup-trl train` runs the training script by path: its sys.path starts with the script's folder, not the
    working directory, where a user's module usually is (TRL's scripts handle reward functions the same way)."""
    monkeypatch.setattr(sys, "path", list(sys.path))  # restored afterwards
    here = tmp_path / "project"
    here.mkdir()
    mine = UserModule(here)
    monkeypatch.chdir(here)
    try:
        assert str(here) not in sys.path
        config = make_config(soup_truncation=mine.spec, soup_behavior_steps=2)
        assert get_truncation_strategy(config.soup_truncation).fn is mine.module.first_third
    finally:
        mine.remove()


def errors_of(tmp_path: Path, truncation: str) -> str:
    with pytest.raises(ValueError) as error:
        train.parse_args(["--config", str(recipe_with(tmp_path, truncation))])
    return " ".join(str(error.value).split())


def test_a_missing_module_names_the_field_the_module_and_the_fix(tmp_path):
    message = errors_of(tmp_path, "no_such_cuts_module:first_third")
    assert "soup_truncation='no_such_cuts_module:first_third': module 'no_such_cuts_module' was not found" in message
    assert "put it in the working directory, pip install its package, or add its folder to PYTHONPATH" in message


def test_a_module_without_the_strategy_says_what_it_registers(tmp_path, user_module):
    mine = user_module()
    message = errors_of(tmp_path, f"{mine.name}:middle")
    assert (
        f"soup_truncation='{mine.name}:middle': module '{mine.name}' was imported but registers no truncation "
        f"strategy named 'middle' (it registers '{mine.strategy}')"
    ) in message
    assert "`@soup_trl.register_truncation('middle')`" in message


def test_a_module_that_fails_on_import_says_why(tmp_path, user_module):
    broken = user_module("raise RuntimeError('no GPU here')\n")
    message = errors_of(tmp_path, f"{broken.name}:cut")
    assert f"importing module '{broken.name}' failed with RuntimeError('no GPU here'). Fix the module." in message
    missing_dependency = user_module("import no_such_dependency_xyz\n")
    message = errors_of(tmp_path, f"{missing_dependency.name}:cut")
    assert "ModuleNotFoundError" in message and "no_such_dependency_xyz" in message
    assert "install what it imports" in message


@pytest.mark.parametrize("truncation", [":first_third", "user_cuts:", "a:b:c"])
def test_a_malformed_name_shows_the_form(tmp_path, truncation):
    message = errors_of(tmp_path, truncation)
    assert f"soup_truncation={truncation!r} is not of the form 'module:strategy'" in message
    assert "e.g. 'my_package.my_module:my_cut'" in message


def test_a_dotted_name_suggests_the_module_form(tmp_path):
    message = errors_of(tmp_path, "my_package.cuts.first_third")
    assert "soup_truncation='my_package.cuts.first_third' is not a registered truncation strategy" in message
    assert "soup_truncation='my_package.cuts:first_third'" in message
    assert "Valid values: 'drift', 'entropy', 'prefix_budget', 'ratio'" in message


def test_the_training_script_trains_with_the_recipes_strategy(tmp_path, tiny_model_dir, user_module):
    mine = user_module()
    run = tmp_path / "run"
    args = train.parse_args(
        ["--config", str(recipe_with(tmp_path, mine.spec)), "--model_name_or_path", tiny_model_dir,
         "--output_dir", str(run), "--max_steps", "2", "--soup_behavior_steps", "2", "--logging_steps", "1",
         "--per_device_train_batch_size", "8", "--num_generations", "4", "--max_completion_length", "8",
         "--max_train_samples", "32", "--num_threads", "1"]
    )  # fmt: skip
    train.main(*args)
    (lengths,) = mine.module.CALLS  # step 2 of the cycle: the 8 behavior completions were cut by the strategy
    assert len(lengths) == 8
    history = json.loads((run / "trainer_state.json").read_text())["log_history"]
    assert sum("loss" in h for h in history) == 2
    assert training_setting(run, "soup_truncation") == (mine.spec, run / "training_args.bin")  # saved as selected
