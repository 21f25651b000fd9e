"""The chained-addition task's targets and rewards (`soup_trl.rewards.chain`): the target of a chain, shortcut
stages, the final-answer reward and the running-totals reward, and their registry names."""

import pytest

from soup_trl.rewards import get_reward_funcs
from soup_trl.rewards.chain import chain_reward, chain_steps_reward, chain_target


@pytest.mark.parametrize(
    "operands, width, expected",
    [
        ([347, 258, 116], 4, "15,10,06,00|0605|11,02,07,00|0721"),
        ([999, 999, 999], 4, "18,19,19,01|1998|17,19,19,02|2997"),
        ([0, 0], 2, "00,00|00"),
        ([5, 7, 9, 1], 2, "12,01|12|11,02|21|02,02|22"),
    ],
)
def test_chain_target(operands, width, expected):
    assert chain_target(operands, width) == expected


@pytest.mark.parametrize(
    "shortcuts, expected",
    [
        ([True, False], "|0605|11,02,07,00|0721"),
        ([False, True], "15,10,06,00|0605||0721"),
        ([True, True], "|0605||0721"),
    ],
)
def test_chain_target_with_shortcut_stages(shortcuts, expected):
    assert chain_target([347, 258, 116], 4, shortcuts) == expected


def test_chain_target_rejects_overflow_and_single_operand():
    with pytest.raises(ValueError, match="width"):
        chain_target([99, 1], 2)
    with pytest.raises(ValueError, match="at least 2"):
        chain_target([5], 2)


def test_chain_reward_reads_the_last_field():
    completions = ["15,10,06,00|0605|11,02,07,00|0721", "x|0721", "0721", "11|0720", ""]
    assert chain_reward(completions, ["0721"] * 5) == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_chain_steps_reward_counts_running_totals():
    prompt = "0347+0258+0116="
    completions = [
        "15,10,06,00|0605|11,02,07,00|0721",
        "15|0605|11|0722",
        "15|0604|11|0721",
        "15|0605",
        "",
        "a|b|c|d|e|f",
    ]
    assert chain_steps_reward(completions, [prompt] * 6) == [1.0, 0.5, 0.5, 0.5, 0.0, 0.0]
    assert chain_steps_reward(["1|2"], ["not a chain"]) == [0.0]


def test_rewards_are_registered():
    assert [f.__name__ for f in get_reward_funcs("chain,chain_steps")] == ["chain_reward", "chain_steps_reward"]
