"""The scratchpad-addition task's format and rewards (`soup_trl.rewards.arithmetic`): the scratchpad of a + b, the
answer reward and the per-column reward."""

import random

import pytest

from soup_trl.rewards.arithmetic import arithmetic_reward, extract_answer, scratchpad


@pytest.mark.parametrize(
    "a, b, expected",
    [
        (347, 258, "15,10,06|605"),
        (999, 1, "10,10,10|1000"),
        (5, 3, "08|8"),
        (0, 0, "00|0"),
        (1, 9999, "10,10,10,10|10000"),
        (1234, 56, "10,09,02,01|1290"),
    ],
)
def test_scratchpad_format(a, b, expected):
    assert scratchpad(a, b) == expected


@pytest.mark.parametrize(
    "a, b, width, expected",
    [
        (1, 2, 3, "03,00,00|3"),
        (999, 1, 3, "10,10,10|1000"),
        (81, 208, 3, "09,08,02|289"),
        (1234, 5, 2, "09,03,02,01|1239"),  # width never drops digits
    ],
)
def test_scratchpad_with_leading_zero_columns(a, b, width, expected):
    assert scratchpad(a, b, width) == expected


def test_reward_exact_wrong_garbage():
    solution = ["605"] * 6
    completions = ["15,10,06|605", "15,10,06|604", "605", "", "|||", "15,10,06|6055"]
    assert arithmetic_reward(completions, solution) == [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]


def test_reward_odd_inputs_never_raise():
    completions = [
        " junk | 605 \n",  # stripped text after the last '|'
        "1|2|605",  # last '|' counts
        "605|",  # empty answer
        [{"role": "assistant", "content": "15,10,06|605"}],
        [{"role": "assistant", "content": [{"type": "text", "text": "x|605"}]}],
        [{"role": "assistant"}],
        [],
        None,
        12345,
        {"content": "|605"},
    ]
    rewards = arithmetic_reward(completions, ["605"] * len(completions), prompts=["347+258="] * len(completions))
    assert rewards == [1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    assert arithmetic_reward(["1|5"], [None]) == [0.0]
    assert extract_answer("no bar") is None


def test_reward_with_scratchpad_mistake_but_right_answer():
    # Only the answer is checked.
    assert arithmetic_reward(["99,99|605"], ["605"]) == [1.0]


def test_random_problems_are_solvable_by_the_format():
    # The scratchpad is a pure function of (A, B): re-deriving it column by column reproduces A + B.
    rng = random.Random(0)
    for _ in range(1000):
        a, b = rng.randint(0, 9999), rng.randint(0, 9999)
        assert extract_answer(scratchpad(a, b)) == str(a + b)


def test_scratchpad_reward_counts_correct_columns():
    from soup_trl.rewards.arithmetic import scratchpad_reward

    completions = ["15,10,06|605", "15,11,06|615", "15|605", "", "15,10,06,01|1605", [{"content": "15,10,06|6"}]]
    assert scratchpad_reward(completions, ["347+258="] * 6) == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0, 0.75, 1.0])
    assert scratchpad_reward(["08|8"], ["not a prompt"]) == [0.0]
    # zero-padded operands: every written column counts, including the leading-zero ones
    assert scratchpad_reward(["03,00,00|3", "03|3"], ["001+002="] * 2) == pytest.approx([1.0, 1 / 3])
