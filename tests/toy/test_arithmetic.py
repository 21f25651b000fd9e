"""The scratchpad-addition datasets (`soup_trl.toy.arithmetic`): columns, determinism, targets the reward scores
fully, the share of direct answers, and train and test splits that never share a problem."""

import pytest

from soup_trl.rewards.arithmetic import ALPHABET, arithmetic_reward
from soup_trl.toy.arithmetic import make_arithmetic_dataset, problem_split


@pytest.mark.parametrize("fixed_width, max_digits", [(True, 3), (False, 4)])
def test_target_scratchpad_gets_full_reward(fixed_width, max_digits):
    data = make_arithmetic_dataset(2000, seed=123, with_target=True, fixed_width=fixed_width, max_digits=max_digits)
    assert arithmetic_reward(data["completion"], data["solution"]) == [1.0] * len(data)
    for prompt, completion, solution in zip(data["prompt"], data["completion"], data["solution"]):
        a_str, b_str = prompt.rstrip("=").split("+")
        a, b = int(a_str), int(b_str)
        assert int(solution) == a + b
        columns, answer = completion.split("|")
        columns = columns.split(",")
        assert len(columns) == max(len(a_str), len(b_str))
        # column i holds a_i + b_i + carry_in in 2 digits; the answer's digits are the columns' unit digits plus the
        # last column's carry
        assert all(len(c) == 2 for c in columns)
        digits = "".join(c[1] for c in reversed(columns))
        assert answer == str(int(columns[-1][0] + digits))


def test_dataset_columns_and_determinism():
    a = make_arithmetic_dataset(200, seed=7, with_target=True)
    b = make_arithmetic_dataset(200, seed=7, with_target=True)
    c = make_arithmetic_dataset(200, seed=8, with_target=True)
    assert set(a.column_names) == {"prompt", "solution", "num_digits", "completion"}
    assert a.to_dict() == b.to_dict()
    assert a["prompt"] != c["prompt"]
    assert "completion" not in make_arithmetic_dataset(5, seed=7).column_names
    assert make_arithmetic_dataset(50, seed=7)["prompt"] == a["prompt"][:50]
    for prompt in a["prompt"]:  # default task: both operands written with exactly 3 digits
        assert set(prompt) <= set(ALPHABET) and prompt.endswith("=")
        assert [len(operand) for operand in prompt[:-1].split("+")] == [3, 3]
    for prompt, digits in zip(a["prompt"], a["num_digits"]):  # leading zeros do not count
        assert digits == max(len(operand.lstrip("0") or "0") for operand in prompt[:-1].split("+"))
    assert all(len(p) == 6 for p in make_arithmetic_dataset(100, seed=1, max_digits=2)["prompt"])
    variable = make_arithmetic_dataset(500, seed=7, max_digits=4, fixed_width=False)
    for prompt in variable["prompt"]:
        for operand in prompt[:-1].split("+"):
            assert 1 <= len(operand) <= 4 and (len(operand) == 1 or operand[0] != "0")
    assert set(variable["num_digits"]) == {1, 2, 3, 4}


def test_direct_answer_share_of_targets():
    scratch = make_arithmetic_dataset(2000, seed=5, with_target=True)
    mixed = make_arithmetic_dataset(2000, seed=5, with_target=True, direct_fraction=0.5)
    assert mixed["prompt"] == scratch["prompt"]  # the style draw does not change the problems
    direct = [c.startswith("|") for c in mixed["completion"]]
    assert 0.45 < sum(direct) / len(direct) < 0.55
    assert not any(c.startswith("|") for c in scratch["completion"])
    for is_direct, completion, target, solution in zip(
        direct, mixed["completion"], scratch["completion"], mixed["solution"]
    ):
        assert completion == ("|" + solution if is_direct else target)
    assert arithmetic_reward(mixed["completion"], mixed["solution"]) == [1.0] * len(mixed)
    all_direct = make_arithmetic_dataset(50, seed=5, with_target=True, direct_fraction=1.0)
    assert all(c == "|" + s for c, s in zip(all_direct["completion"], all_direct["solution"]))
    with pytest.raises(ValueError, match="direct_fraction"):
        make_arithmetic_dataset(5, with_target=True, direct_fraction=1.5)


def test_train_and_test_splits_do_not_overlap():
    train = set(make_arithmetic_dataset(10000, seed=0, split="train")["prompt"])
    test = make_arithmetic_dataset(2000, seed=0, split="test")["prompt"]
    assert not train & set(test)
    assert not set(make_arithmetic_dataset(2000, seed=0, split="train")["prompt"]) & set(test)
    for prompt in test[:200]:
        a, b = (int(x) for x in prompt[:-1].split("+"))
        assert problem_split(a, b) == "test"
    with pytest.raises(ValueError):
        make_arithmetic_dataset(1, split="validation")
