"""Reading answers (`soup_trl.rewards.answers`): the last box of a completion, gold answers as datasets ship them,
and their normalisation. All gold strings are hand-written."""

from soup_trl.rewards import accuracy_reward, last_boxed_content, normalize_answer
from soup_trl.rewards.answers import gold_text


def test_last_box_wins_and_adjacent_boxes_form_a_list():
    assert accuracy_reward([r"First \boxed{3}, but actually \boxed{4}."], ["4"]) == [1.0]
    assert accuracy_reward([r"First \boxed{3}, but actually \boxed{4}."], ["3"]) == [0.0]
    assert accuracy_reward([r"$x = \boxed{1}$ or $x = \boxed{2}$"], ["1, 2"]) == [0.0]  # far apart: last box only
    assert accuracy_reward([r"$\boxed{1}, \boxed{2}$"], ["1, 2"]) == [1.0]
    assert last_boxed_content(r"a \boxed{\frac{1}{2}} b") == r"\frac{1}{2}"
    assert last_boxed_content(r"\boxed{1} and \boxed{2}") == "1,2"
    assert last_boxed_content(r"\boxed{\{1\}}") == r"\{1\}"
    assert last_boxed_content("no box") is None


def test_normalize_answer():
    assert normalize_answer(27.0) == "27"
    assert normalize_answer("['$2^{1009}$']") == "2^{1009}"  # a stringified list, as gold_text reads it
    assert normalize_answer(" $\\frac{1}{2}$. ") == "\\frac{1}{2}"
    assert normalize_answer("\\boxed{5}") == "5"
    assert normalize_answer("\\$18.90") == "\\$18.90"
    assert normalize_answer("3e8") == "3\\times 10^{8}"
    assert normalize_answer(["$1$", "$2$"]) == "1, 2"
    assert normalize_answer(None) == ""


def test_gsm8k_gold_answers():
    assert gold_text("step\n#### 18") == "18"
    assert gold_text("#### -4") == "-4"
    assert gold_text("a #### b") == "a #### b"  # not a final line: kept as written
