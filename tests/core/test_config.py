"""MethodConfig: the fields every method's config shares, their renamed spellings, and the group-size check."""

import warnings

import pytest

from soup_trl import LUFFYConfig, M2POConfig, SOUPConfig
from soup_trl.core.config import RENAMED_FIELDS, MethodConfig

CONFIGS = [SOUPConfig, M2POConfig, LUFFYConfig]


@pytest.mark.parametrize("config_cls", CONFIGS, ids=lambda c: c.__name__)
@pytest.mark.parametrize(("old", "new", "value"), [
    ("soup_console", "console", "full"),
    ("soup_compact_generation", "compact_generation", False),
    ("soup_recipe", "recipe", "my_recipe.yaml"),
])  # fmt: skip
def test_a_renamed_field_still_works_for_one_release_with_a_warning(make_config, config_cls, old, new, value):
    with pytest.warns(FutureWarning, match=rf"{old} is deprecated and will be removed in soup-trl 0.3; set {new}"):
        config = make_config(config_cls, **{old: value})
    assert getattr(config, new) == value and getattr(config, old) is None  # one spelling is read from here on
    assert (old, new) in RENAMED_FIELDS


def test_both_spellings_with_different_values_is_an_error(make_config):
    with pytest.raises(ValueError, match="soup_recipe='a.yaml' and recipe='b.yaml' are both set; soup_recipe is the"):
        make_config(soup_recipe="a.yaml", recipe="b.yaml")
    with pytest.warns(FutureWarning):  # the same value twice is no contradiction
        assert make_config(soup_recipe="a.yaml", recipe="a.yaml").recipe == "a.yaml"


def test_the_new_spellings_warn_nothing(make_config):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = make_config(M2POConfig, console="full", compact_generation=False, recipe="r.yaml", m2po_staleness=1)
    assert (config.console, config.compact_generation, config.recipe) == ("full", False, "r.yaml")


@pytest.mark.parametrize("config_cls", CONFIGS, ids=lambda c: c.__name__)
def test_dynamic_sampling_is_a_field_of_every_config(make_config, config_cls):
    config = make_config(config_cls, dynamic_sampling=True, dynamic_sampling_max_rounds=3)
    assert config.dynamic_sampling and config.dynamic_sampling_max_rounds == 3
    with pytest.raises(ValueError, match="dynamic_sampling_max_rounds must be an integer >= 0, got -1"):
        make_config(config_cls, dynamic_sampling_max_rounds=-1)
    assert issubclass(config_cls, MethodConfig)


def test_max_rounds_without_dynamic_sampling_is_named(make_config):
    with pytest.warns(UserWarning, match="dynamic_sampling_max_rounds is set but does nothing without dynamic_sampling"):
        make_config(M2POConfig, dynamic_sampling_max_rounds=3)


def test_the_group_size_check_is_shared(make_config):
    config = make_config()
    assert config.group_size_error(8, "rows", "groups stay whole") is None
    assert config.group_size_error(6, "rows", "groups stay whole") == (
        "rows (6) must be a multiple of num_generations (4), so that groups stay whole."
    )
