"""Activation checkpointing under both of its names, on every Transformers version the package accepts.

Transformers 5.20 renamed `gradient_checkpointing` to `activation_checkpointing`; the recipes use the new name. On
older versions (the vLLM environment of CI runs the floor, 5.17) the package's configs declare the new name as an
alias of the old one, so the same recipes and code run there.
"""

import pytest

from soup_trl import LUFFYConfig, M2POConfig, SOUPConfig
from soup_trl.core.compat import HAS_ACTIVATION_CHECKPOINTING, no_activation_checkpointing
from soup_trl.scripts import train

CONFIGS = [SOUPConfig, M2POConfig, LUFFYConfig]
CPU = ["--bf16", "false", "--use_cpu", "true"]


@pytest.mark.parametrize("config_cls", CONFIGS, ids=lambda c: c.__name__)
def test_on_by_default_and_either_name_sets_both(config_cls, tmp_path):
    args = config_cls(output_dir=str(tmp_path), use_cpu=True, bf16=False)
    assert (args.activation_checkpointing, args.gradient_checkpointing) == (True, True)
    for value in (False, True):
        args = config_cls(output_dir=str(tmp_path), use_cpu=True, bf16=False, activation_checkpointing=value)
        assert (args.activation_checkpointing, args.gradient_checkpointing) == (value, value)


@pytest.mark.parametrize("value", ["false", "true"])
def test_recipe_key_reaches_the_trainer_setting(tmp_path, value):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"activation_checkpointing: {value}\n")
    _, args, _ = train.parse_args(["--config", str(recipe), *CPU])
    assert args.gradient_checkpointing is (value == "true")


@pytest.mark.skipif(HAS_ACTIVATION_CHECKPOINTING, reason="Transformers >= 5.20 has both names (the alias is for older versions)")
def test_disagreeing_names_fail_where_one_is_an_alias(tmp_path):
    with pytest.raises(ValueError, match="activation_checkpointing=True and gradient_checkpointing=False disagree"):
        SOUPConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, activation_checkpointing=True, gradient_checkpointing=False)


def test_no_activation_checkpointing_names_only_existing_fields(tmp_path):
    from trl import SFTConfig

    args = SFTConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, **no_activation_checkpointing())
    assert args.gradient_checkpointing is False
    assert ("activation_checkpointing" in no_activation_checkpointing()) == HAS_ACTIVATION_CHECKPOINTING
