"""The reward registry (`soup_trl.rewards.registry`): registered names, dotted paths, and errors that name the
problem and list the valid names."""

import pytest

from soup_trl.rewards import REWARD_FUNCS, accuracy_reward, get_reward_funcs


def test_registry_names():
    assert {"accuracy", "arithmetic"} <= set(REWARD_FUNCS)
    # get_reward_funcs wraps each function in the per-sample fallback (tests/core/test_reward_guard.py)
    assert [f.__wrapped__ for f in get_reward_funcs("accuracy")] == [accuracy_reward]
    assert [f.__wrapped__ for f in get_reward_funcs(["accuracy"])] == [accuracy_reward]


def test_dotted_paths(tmp_path, monkeypatch):
    (tmp_path / "my_rewards_pkg").mkdir()
    (tmp_path / "my_rewards_pkg" / "__init__.py").write_text("")
    (tmp_path / "my_rewards_pkg" / "mod.py").write_text(
        "def my_reward(completions, **kwargs):\n    return [1.0] * len(completions)\n"
        "class Holder:\n    @staticmethod\n    def nested(completions, **kwargs):\n        return [2.0]\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    funcs = get_reward_funcs("accuracy, my_rewards_pkg.mod.my_reward,my_rewards_pkg.mod:Holder.nested")
    assert funcs[0].__wrapped__ is accuracy_reward
    assert funcs[1].__name__ == "my_reward" and funcs[1](completions=["x"]) == [1.0]
    assert funcs[2](completions=["x"]) == [2.0]
    assert get_reward_funcs(["trl.rewards.accuracy_reward"])[0].__module__.startswith("trl.rewards")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("acuracy", "not a registered name"),
        ("no_such_pkg_xyz.mod.fn", "ModuleNotFoundError"),
        ("soup_trl.rewards.no_such_function", "AttributeError"),
        ("soup_trl.rewards.REWARD_FUNCS", "not a callable"),
    ],
)
def test_unknown_names_list_valid_names(name, expected):
    with pytest.raises(ValueError) as info:
        get_reward_funcs([name])
    message = str(info.value)
    assert repr(name) in message
    assert expected in message
    assert "accuracy" in message and "arithmetic" in message
    assert "my_pkg.my_module.my_reward" in message


@pytest.mark.parametrize("name", ["broken_reward_mod.f", "broken_reward_pkg.broken.f"])
def test_broken_module_import_is_reported(name, tmp_path, monkeypatch):
    broken = "import no_such_dependency_xyz\ndef f(**kw):\n    return []\n"
    (tmp_path / "broken_reward_mod.py").write_text(broken)
    (tmp_path / "broken_reward_pkg").mkdir()
    (tmp_path / "broken_reward_pkg" / "__init__.py").write_text("")
    (tmp_path / "broken_reward_pkg" / "broken.py").write_text(broken)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="no_such_dependency_xyz") as info:
        get_reward_funcs(name)
    assert "ModuleNotFoundError" in str(info.value)


def test_empty_name_list_raises():
    with pytest.raises(ValueError, match="accuracy"):
        get_reward_funcs([])
