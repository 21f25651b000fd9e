"""The real-language task of the built-in real model (`soup_trl.toy.word_problems`): template word problems, their
splits and one-shot prompts. GSM8K in its own format: tests/rewards/test_math_data.py."""

import random

import pytest

from soup_trl.rewards import accuracy_reward
from soup_trl.rewards.answers import gold_text
from soup_trl.rewards.math_data import MATH_PROMPT_TEMPLATE
from soup_trl.toy.builtin import builtin_task
from soup_trl.toy.word_problems import TEMPLATES, make_word_problem, make_word_problem_dataset, problem_split


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_every_template_has_whole_positive_answers_and_a_solution_that_grades_right(template):
    rng = random.Random(0)
    problems = [make_word_problem(rng, template) for _ in range(200)]
    assert all(p.answer > 0 and p.steps == TEMPLATES[template][0] for p in problems)
    rewards = accuracy_reward(
        completions=[[{"role": "assistant", "content": p.solution}] for p in problems[:20]],
        solution=[str(p.answer) for p in problems[:20]],
    )
    assert rewards == [1.0] * 20


def test_a_worked_answer_that_is_wrong_grades_zero():
    problem = make_word_problem(random.Random(3), "wage")
    wrong = problem.solution.replace(f"\\boxed{{{problem.answer}}}", f"\\boxed{{{problem.answer + 1}}}")
    assert accuracy_reward(completions=[[{"role": "assistant", "content": wrong}]], solution=[str(problem.answer)]) == [0.0]


def test_dataset_columns_prompt_and_determinism():
    rows = make_word_problem_dataset(50, seed=1, with_target=True)
    assert set(rows.column_names) == {"prompt", "solution", "problem", "steps", "template", "completion"}
    first = rows[0]
    assert first["prompt"] == [{"role": "user", "content": MATH_PROMPT_TEMPLATE.replace("{problem}", first["problem"])}]
    assert gold_text(first["completion"]) == first["solution"]
    assert make_word_problem_dataset(50, seed=1, with_target=True).to_dict() == rows.to_dict()
    assert make_word_problem_dataset(50, seed=2)["problem"] != rows["problem"]
    assert set(make_word_problem_dataset(200, max_steps=1)["steps"]) == {1}


def test_splits_never_share_a_problem():
    train = set(make_word_problem_dataset(3000, split="train")["problem"])
    test = set(make_word_problem_dataset(300, split="test")["problem"])
    assert not train & test
    assert all(problem_split(text) == "test" for text in test)


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="split must be one of"):
        make_word_problem_dataset(3, split="dev")
    with pytest.raises(ValueError, match="template 'nope' is unknown"):
        make_word_problem(random.Random(0), "nope")


def test_the_training_script_knows_the_task():
    maker, task = builtin_task("builtin:word-problems")
    assert maker is make_word_problem_dataset and task == {"max_steps": 1, "one_shot": True}


def test_one_shot_puts_a_solved_example_before_the_problem():
    from soup_trl.toy.word_problems import ONE_SHOT_PROBLEM, ONE_SHOT_SOLUTION

    row = make_word_problem_dataset(1, one_shot=True, system_prompt="Be brief.")[0]
    assert [m["role"] for m in row["prompt"]] == ["system", "user", "assistant", "user"]
    assert row["prompt"][1]["content"].startswith(ONE_SHOT_PROBLEM) and row["prompt"][2]["content"] == ONE_SHOT_SOLUTION
    assert row["prompt"][3]["content"].startswith(row["problem"])
    assert gold_text(ONE_SHOT_SOLUTION) == "12"
    with pytest.raises(ValueError, match="one_shot=True needs conversational=True"):
        make_word_problem_dataset(1, one_shot=True, conversational=False)


