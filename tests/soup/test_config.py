"""SOUPConfig: defaults, derived fields and the messages of rejected values."""

import dataclasses
import re
import warnings

import pytest
import yaml
from transformers import HfArgumentParser

from soup_trl import SOUPConfig


def test_paper_dapo_defaults():
    config = SOUPConfig(output_dir="unused", use_cpu=True, report_to="none")  # SOUPConfig's own defaults, no others
    assert (config.loss_type, config.epsilon, config.epsilon_high, config.beta) == ("dapo", 0.2, 0.28, 0.0)
    assert (config.soup_behavior_steps, config.soup_truncation) == (8, "ratio")
    assert (config.soup_prefix_ratio, config.soup_entropy_top_k) == (0.5, 32)


@pytest.mark.parametrize("steps, accumulation", [(1, 1), (1, 4), (8, 1), (8, 2), (3, 4)])
def test_cycle_sizes_steps_per_generation(make_config, steps, accumulation):
    config = make_config(
        per_device_train_batch_size=4, soup_behavior_steps=steps, gradient_accumulation_steps=accumulation
    )
    assert config.steps_per_generation == steps * accumulation
    assert config.generation_batch_size == 4 * steps * accumulation


def test_t1_leaves_grpo_batching_alone(make_config):
    config = make_config(per_device_train_batch_size=4, soup_behavior_steps=1, steps_per_generation=4)
    assert config.steps_per_generation == 4 and config.generation_batch_size == 16


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"soup_behavior_steps": 0}, "soup_behavior_steps"),
        ({"soup_behavior_steps": -3}, "soup_behavior_steps"),
        ({"soup_prefix_ratio": 1.0}, "soup_prefix_ratio"),
        ({"soup_prefix_ratio": -0.1}, "soup_prefix_ratio"),
        ({"soup_entropy_top_k": 0}, "soup_entropy_top_k"),
        ({"soup_prefix_budget": 0}, "soup_prefix_budget"),
        ({"soup_prefix_budget": 2.5}, "soup_prefix_budget"),
        ({"soup_truncation": "middle"}, "soup_truncation"),
        ({"soup_behavior_steps": 2, "num_iterations": 2}, "num_iterations"),
        ({"soup_behavior_steps": 2, "steps_per_generation": 3}, "steps_per_generation"),
        ({"soup_behavior_steps": 2, "generation_batch_size": 32}, "generation_batch_size"),
        ({"soup_behavior_steps": 2, "num_generations": 8}, "num_generations"),
        ({"soup_behavior_steps": 2, "max_completion_length": 1}, "max_completion_length"),
        ({"soup_behavior_steps": 2, "use_transformers_continuous_batching": True}, "use_transformers_continuous_batching"),
    ],
)
def test_bad_values_are_rejected_by_name(make_config, kwargs, field):
    with pytest.raises(ValueError, match=field):
        make_config(per_device_train_batch_size=4, **kwargs)


def test_unknown_truncation_lists_valid_names(make_config):
    with pytest.raises(ValueError, match="Valid values: 'drift', 'entropy', 'prefix_budget', 'ratio'"):
        make_config(soup_truncation="middle")


def test_config_survives_reinitialisation(make_config):
    config = make_config(per_device_train_batch_size=4, soup_behavior_steps=4, gradient_accumulation_steps=2)
    again = dataclasses.replace(config)
    assert again.steps_per_generation == 8 and again.generation_batch_size == 32


def test_help_text_renders():
    text = HfArgumentParser(SOUPConfig).format_help()
    for name in ("soup_behavior_steps", "soup_truncation", "soup_prefix_ratio", "soup_entropy_top_k"):
        assert f"--{name}" in text


# ---------------------------------------------------------------------------------------------- inert fields


@pytest.mark.parametrize(("settings", "message"), [
    (dict(soup_history_pool=2), "soup_history_pool is set but does nothing without soup_behavior_source='history'"),
    (dict(soup_history_max_age=10), "soup_history_max_age is set but does nothing without soup_behavior_source='history'"),
    (dict(soup_entropy_top_k=4), "soup_entropy_top_k is set but soup_truncation='ratio' does not read it (it reads prefix_ratio); choose a strategy that does, e.g. soup_truncation='entropy'"),
    (dict(soup_truncation="entropy", soup_prefix_ratio=0.3), "soup_prefix_ratio is set but soup_truncation='entropy' does not read it"),
    (dict(soup_prefix_budget=0.5), "soup_prefix_budget is set but soup_truncation='ratio' does not read it"),
    (dict(soup_drift_lenience=0.9), "soup_drift_lenience is set but soup_truncation='ratio' does not read it"),
    (dict(soup_refresh_min_steps=3), "soup_refresh_min_steps is set but does nothing without soup_refresh_drift"),
    (dict(soup_behavior_steps=1, soup_prefix_ratio=0.3), "soup_prefix_ratio is set but does nothing with soup_behavior_steps=1 and soup_behavior_source='fresh'"),
    (dict(soup_behavior_steps=1, soup_truncation="entropy"), "soup_truncation is set but does nothing with soup_behavior_steps=1"),
])  # fmt: skip
def test_a_field_that_does_nothing_with_the_settings_is_named(make_config, settings, message):
    with pytest.warns(UserWarning, match=re.escape(message)):
        make_config(**settings)


@pytest.mark.parametrize("settings", [
    dict(soup_truncation="entropy", soup_entropy_top_k=4),
    dict(soup_truncation="drift", soup_prefix_ratio=0.3, soup_drift_lenience=0.9),
    dict(soup_truncation="prefix_budget", soup_prefix_budget=0.5),
    dict(soup_behavior_source="history", soup_history_pool=2, soup_history_max_age=10),
    dict(soup_refresh_drift=0.1, soup_refresh_min_steps=3),
    dict(soup_behavior_steps=1, soup_behavior_source="history", soup_prefix_ratio=0.3),
])  # fmt: skip
def test_fields_the_settings_read_warn_nothing(make_config, settings):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        make_config(**settings)


def test_no_shipped_recipe_sets_a_field_that_does_nothing():
    from soup_trl.scripts.train import RECIPES_DIR, method_classes

    for path in sorted(RECIPES_DIR.glob("*.yaml")):
        recipe = yaml.safe_load(path.read_text())
        config_cls, _ = method_classes(recipe.get("method", "soup"))
        fields = {k: v for k, v in recipe.items() if k in config_cls.__dataclass_fields__}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            config_cls(**{**fields, "output_dir": "unused", "use_cpu": True, "bf16": False})
        inert = [str(w.message) for w in caught if "does nothing" in str(w.message) or "does not read" in str(w.message)]
        assert not inert, f"{path.name}: {inert}"
