"""Benchmarks (`soup_trl.evaluation.benchmarks`): the built-in held-out sets of the offline tasks, the default set of a
run trained by a recipe, local .jsonl/.json/.parquet files in the formats the paper's benchmarks ship, gold answers,
and the errors that name a bad name, file, row or field.
"""

import json
import types

import pytest

from soup_trl.core.errors import UserError
from soup_trl.evaluation.benchmarks import (
    ARITHMETIC_MAX_NEW_TOKENS,
    PromptFormat,
    gold_text,
    load_benchmark,
    split_names,
)
from soup_trl.rewards.math_data import MATH_PROMPT_TEMPLATE
from soup_trl.testing.evaluation import save_training_args


def test_arithmetic_benchmark_is_the_held_out_split():
    from soup_trl.toy.arithmetic import problem_split

    bench = load_benchmark("arithmetic", limit=30)
    assert bench.reward == "arithmetic" and bench.default_max_new_tokens == ARITHMETIC_MAX_NEW_TOKENS
    prompts = [p.prompt for p in bench.problems]
    assert len(prompts) == 30 == len(set(prompts))
    for p in bench.problems:
        a, b = map(int, p.prompt.rstrip("=").split("+"))
        # the task the built-in tiny model is warmed up on: operands zero-padded to 3 digits
        assert problem_split(a, b) == "test" and p.gold == str(a + b) and p.prompt == f"{a:03d}+{b:03d}="


def test_chain_benchmark_is_the_held_out_split_of_the_tiny_chain_model():
    from soup_trl.evaluation.benchmarks import CHAIN_EVAL_SIZE, CHAIN_MAX_NEW_TOKENS
    from soup_trl.evaluation.runner import grade_completions
    from soup_trl.rewards.chain import chain_target, parse_operands
    from soup_trl.toy.chain import ChainModelSettings, chain_split, chain_width, completion_tokens

    task = ChainModelSettings().task_kwargs()  # the task builtin:tiny-chain is warmed up on
    bench = load_benchmark("chain", limit=30)
    assert (bench.name, bench.source, bench.reward) == ("chain", "builtin:chain (test split)", "arithmetic")
    assert bench.default_max_new_tokens == CHAIN_MAX_NEW_TOKENS == completion_tokens(**task) + 4
    prompts = [p.prompt for p in bench.problems]
    assert len(prompts) == 30 == len(set(prompts)) and [p.id for p in bench.problems] == [str(i) for i in range(30)]
    width = chain_width(**task)
    for p in bench.problems:
        operands = parse_operands(p.prompt)
        assert len(operands) == task["num_operands"] and chain_split(operands) == "test"
        assert p.problem == p.prompt == "+".join(f"{x:0{width}d}" for x in operands) + "="
        assert p.gold == f"{sum(operands):0{width}d}"
    assert [p.prompt for p in load_benchmark("chain").problems[:30]] == prompts  # --limit keeps the first problems
    assert len(load_benchmark("chain").problems) == CHAIN_EVAL_SIZE

    first = bench.problems[0]
    right = chain_target(parse_operands(first.prompt), width)  # the worked solution, its total last
    wrong = right[: -len(first.gold)] + f"{(int(first.gold) + 1) % 10**width:0{width}d}"
    grades = grade_completions([right, wrong, right.replace("|", ",")], first.gold, bench.reward)
    assert [(g.reward, g.status) for g in grades] == [(1.0, "correct"), (0.0, "wrong"), (0.0, "no_answer")]


def test_word_problems_benchmark_is_the_held_out_split_of_the_real_model_task():
    from soup_trl.evaluation.benchmarks import WORD_PROBLEMS_EVAL_SIZE, WORD_PROBLEMS_MAX_NEW_TOKENS
    from soup_trl.evaluation.runner import grade_completions
    from soup_trl.toy.word_problems import ONE_SHOT_PROBLEM, problem_split

    bench = load_benchmark("word_problems", limit=20)
    assert (bench.name, bench.source) == ("word_problems", "builtin:word-problems (test split)")
    assert bench.reward == "accuracy" and len(bench.problems) == 20
    assert bench.default_max_new_tokens == WORD_PROBLEMS_MAX_NEW_TOKENS
    assert len({p.problem for p in bench.problems}) == 20
    assert all(isinstance(p.prompt, list) and p.prompt[0]["role"] == "user" for p in bench.problems)
    for p in bench.problems:
        assert problem_split(p.problem) == "test" and p.gold.isdigit()
        # the prompt of builtin:word-problems: one solved example, then the problem in the recipes' math template
        assert ONE_SHOT_PROBLEM in p.prompt[0]["content"] and p.prompt[1]["role"] == "assistant"
        assert p.prompt[-1]["content"] == MATH_PROMPT_TEMPLATE.replace("{problem}", p.problem)
    assert [p.problem for p in load_benchmark("word_problems").problems[:20]] == [p.problem for p in bench.problems]
    assert len(load_benchmark("word_problems").problems) == WORD_PROBLEMS_EVAL_SIZE

    gold = bench.problems[0].gold
    grades = grade_completions(
        [f"The answer is \\boxed{{{gold}}}.", f"The answer is \\boxed{{{int(gold) + 1}}}.", gold], gold, bench.reward
    )
    assert [(g.reward, g.status) for g in grades] == [(1.0, "correct"), (0.0, "wrong"), (0.0, "no_answer")]


def test_a_run_defaults_to_the_task_of_the_recipe_that_trained_it(tmp_path):
    from soup_trl.evaluation.arguments import ModelArguments
    from soup_trl.evaluation.benchmarks import PAPER_BENCHMARKS, own_benchmark

    recipes = {"tiny_chain_dapo": "chain", "smollm2_soup_ratio": "word_problems",
               "recipes/tiny_arithmetic.yaml": "arithmetic", "qwen2.5_math_7b_dapo": None}  # fmt: skip
    for recipe, expected in recipes.items():
        run = tmp_path / recipe.replace("/", "_")
        save_training_args(run / "checkpoint-4", recipe=recipe)  # a run whose final model is not saved yet
        save_training_args(run, recipe=recipe)
        for model in (run, run / "checkpoint-4"):
            assert own_benchmark(str(model)) == expected, (recipe, model)
        assert ModelArguments(model=str(run)).default_benchmarks() == ((expected,) if expected else PAPER_BENCHMARKS)
    own_file = tmp_path / "my_recipe.yaml"  # a recipe file of the user's: its dataset decides
    own_file.write_text("model_name_or_path: builtin:tiny-chain\ndataset_name: builtin:chain\n")
    save_training_args(tmp_path / "mine", recipe=str(own_file))
    assert own_benchmark(str(tmp_path / "mine")) == "chain"
    # nothing to read: today's default
    save_training_args(tmp_path / "no_recipe")
    (tmp_path / "no_config").mkdir()
    save_training_args(tmp_path / "gone", recipe=str(tmp_path / "deleted.yaml"))
    import torch

    old = tmp_path / "trained_by_0.1"  # soup-trl 0.1 saved the recipe as soup_recipe, in a class that moved since
    old.mkdir()
    torch.save(types.SimpleNamespace(soup_recipe="tiny_chain"), old / "training_args.bin")
    assert own_benchmark(str(old)) == "chain"
    for model in ("no_recipe", "no_config", "gone", "missing"):
        assert own_benchmark(str(tmp_path / model)) is None, model
        assert ModelArguments(model=str(tmp_path / model)).default_benchmarks() == PAPER_BENCHMARKS


def test_local_jsonl_uses_the_recipes_prompt_template(tmp_path):
    path = tmp_path / "mini.jsonl"
    path.write_text('{"q": "What is 1+1?", "sol": {"final": 2}}\n\n{"q": "Half of 3?", "sol": {"final": 1.5}}\n')
    bench = load_benchmark(str(path), problem_field="q", answer_field="sol.final")
    assert bench.name == "mini" and bench.reward == "accuracy"
    assert [p.gold for p in bench.problems] == ["2", "1.5"]
    assert bench.problems[0].prompt == [
        {"role": "user", "content": MATH_PROMPT_TEMPLATE.replace("{problem}", "What is 1+1?")}
    ]
    plain = load_benchmark(
        str(path), PromptFormat("Q: {problem}", "Be brief.", conversational=False), "q", "sol.final"
    )
    assert plain.problems[1].prompt == "Be brief.\n\nQ: Half of 3?"


def test_gold_answers_read_as_datasets_ship_them():
    assert gold_text(["$2^{1009}$"]) == "$2^{1009}$"
    assert gold_text("['$2^{1009}$']") == "$2^{1009}$"  # stringified list
    assert gold_text(["1", "2"]) == "1, 2"
    assert gold_text("[0, 1]") == "[0, 1]"  # an interval, not a list of strings
    assert gold_text(27.0) == "27"
    assert gold_text(0.5) == "0.5"
    assert gold_text("so we get \\boxed{\\frac{1}{2}}.") == "\\frac{1}{2}"
    assert gold_text("  \\frac43 ") == "\\frac43"


def test_benchmark_names_and_errors(tmp_path):
    assert split_names(["aime24,aime25", "x.jsonl", " ,math500"]) == ["aime24", "aime25", "x.jsonl", "math500"]
    with pytest.raises(UserError) as err:
        load_benchmark("aime2024")
    assert str(err.value).startswith(
        "unknown benchmark 'aime2024' (did you mean 'aime24'?). Valid names: aime24, aime25, amc23, arithmetic, "
    )
    assert "math500, minerva, olympiadbench" in str(err.value)
    with pytest.raises(UserError, match="does not exist"):
        load_benchmark(str(tmp_path / "missing.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"problem": "1+1", "answer": "2"}\n{"problem": "2+2", "answer": "4"}\n{"problem": "3+3", answer: 6}\n'
    )
    with pytest.raises(UserError) as err:
        load_benchmark(str(bad))
    assert str(err.value).startswith(f"{bad}, line 3: invalid JSON (Expecting property name enclosed in double quotes")
    missing = tmp_path / "missing_field.jsonl"
    missing.write_text('{"problem": "1+1", "answer": "2"}\n{"problem": "2+2", "solution": "4"}\n')
    with pytest.raises(UserError) as err:
        load_benchmark(str(missing))
    assert str(err.value) == (
        f"{missing}, line 2: no gold answer: none of the fields final_answer, answer, Answer (name it with "
        "--answer-field); the row has fields ['problem', 'solution']."
    )
    with pytest.raises(UserError, match=r"line 2: missing field 'answer' \(set with --answer-field\)"):
        load_benchmark(str(missing), answer_field="answer")
    with pytest.raises(UserError, match=r"line 1: missing field 'question' \(set with --problem-field\)"):
        load_benchmark(str(missing), problem_field="question")
    not_object = tmp_path / "list.jsonl"
    not_object.write_text("[1, 2]\n")
    with pytest.raises(UserError, match=r"list.jsonl, line 1: expected a JSON object, got list"):
        load_benchmark(str(not_object))
    empty_gold = tmp_path / "empty.jsonl"
    empty_gold.write_text('{"problem": "1+1", "answer": ""}\n')
    with pytest.raises(UserError, match="line 1: field 'answer' is empty"):
        load_benchmark(str(empty_gold))
    with pytest.raises(UserError, match="must contain '{problem}'"):
        PromptFormat("no placeholder")


def test_parquet_rows_are_named(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "set.parquet"
    pq.write_table(pa.table({"problem": ["1+1", "2+2"], "final_answer": [["2"], ["4"]]}), path)
    bench = load_benchmark(str(path), answer_field="final_answer")
    assert [p.gold for p in bench.problems] == ["2", "4"]
    assert [p.gold for p in load_benchmark(str(path)).problems] == ["2", "4"]  # found without the option
    with pytest.raises(UserError, match=r"set.parquet, row 0: missing field 'answer'"):
        load_benchmark(str(path), answer_field="answer")
    as_json = tmp_path / "set.json"
    as_json.write_text(json.dumps([{"problem": "1+1", "answer": 2}, {"problem": "2+2"}]))
    with pytest.raises(UserError, match=r"set.json, item 1: no gold answer: none of the fields"):
        load_benchmark(str(as_json))
    assert [p.gold for p in load_benchmark(str(as_json), limit=1).problems] == ["2"]


def test_local_files_in_the_six_benchmarks_formats_need_no_field_options(tmp_path):
    """Rows as MATH-500, AIME 2024/2025, AMC 2023, Minerva and OlympiadBench ship them load with the default options:
    the first of the benchmarks' own problem and answer fields that a row has is used."""
    rows = {
        "math500": {"problem": "What is $1+1$?", "solution": "It is $\\boxed{2}$.", "answer": "2",
                    "subject": "Algebra", "level": 1, "unique_id": "test/algebra/1.json"},
        "aime24": {"ID": "2024-I-1", "Problem": "Find 3 + 4.", "Solution": "7", "Answer": 7},
        "aime25": {"id": "0", "problem": "Find 5 + 5.", "answer": "10"},
        "amc23": {"id": 0, "question": "What is 2 * 3?", "answer": 6.0, "url": "https://example.org"},
        "minerva": {"question": "Compute 9 - 4.", "answer": "5"},
        "olympiadbench": {"id": 1606, "question": "Find $x$ with $x+1=3$.", "final_answer": ["$2$"],
                          "solution": ["$x=2$"], "is_multiple_answer": False, "unit": None},
    }  # fmt: skip
    expected = {"math500": "2", "aime24": "7", "aime25": "10", "amc23": "6", "minerva": "5", "olympiadbench": "$2$"}
    for name, row in rows.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text(json.dumps(row) + "\n")
        (problem,) = load_benchmark(str(path)).problems
        assert problem.gold == expected[name], name
        assert problem.problem == row.get("problem", row.get("question", row.get("Problem"))), name
