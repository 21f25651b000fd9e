"""Evaluation: the pass@k estimator, benchmark loading, grading, relay truncation and the backends' wiring.

End-to-end runs of the `soup-trl` subcommands are in tests/test_cli.py.
"""

import json
import math
import sys
import types
from math import comb
from types import SimpleNamespace

import pytest

from soup_trl.core.errors import UserError
from soup_trl.evaluation.arguments import BackendArguments, SamplingArguments
from soup_trl.evaluation.backends import Backend
from soup_trl.evaluation.benchmarks import (
    ARITHMETIC_MAX_NEW_TOKENS,
    PromptFormat,
    gold_text,
    load_benchmark,
    split_names,
)
from soup_trl.evaluation.relay import difference_curves, relay_continue, relay_prefix_lengths
from soup_trl.evaluation.runner import (
    ProblemResult,
    Sample,
    benchmark_summary,
    grade_problems,
    k_values,
    pass_at_k,
    run_eval,
    summarize,
)
from soup_trl.rewards.math_data import MATH_PROMPT_TEMPLATE

EOS = 0


class ScriptedBackend(Backend):
    """Characters as token ids (EOS = 0); `script(text)` gives the completions of a prompt (cycled to n)."""

    name = "scripted"

    def __init__(self, script):
        super().__init__("scripted", SimpleNamespace(eos_token_id=EOS))
        self.script = script
        self.calls = []

    def encode_prompt(self, prompt):
        text = prompt if isinstance(prompt, str) else "".join(m["content"] for m in prompt)
        return [ord(c) for c in text]

    def decode(self, ids):
        return "".join(chr(i) for i in ids if i != EOS)

    def _sample(self, rows, n, budgets, sampling, desc):
        self.calls.append({"rows": [list(r) for r in rows], "n": n, "budgets": list(budgets)})
        out = []
        for row in rows:
            completions = self.script(self.decode(row))
            out.append([[ord(c) for c in completions[i % len(completions)]] + [EOS] for i in range(n)])
        return out


def ids(text: str, eos: bool = True) -> list[int]:
    return [ord(c) for c in text] + ([EOS] if eos else [])


# ----------------------------------------------------------------------------------------------------------------------
# pass@k and avg@n
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, c, k, expected",
    [
        (4, 1, 1, 0.25),
        (4, 1, 2, 0.5),
        (4, 1, 4, 1.0),
        (5, 2, 2, 0.7),  # 1 - C(3,2)/C(5,2) = 1 - 3/10
        (5, 2, 4, 1.0),  # any 4 of 5 samples contain one of the 2 correct ones
        (5, 0, 1, 0.0),
        (5, 0, 5, 0.0),
        (5, 5, 1, 1.0),
        (5, 5, 5, 1.0),
        (10, 3, 3, 1 - comb(7, 3) / comb(10, 3)),
    ],
)
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_is_stable_for_large_n():
    # C(1024, 512) overflows a float; the product form does not.
    assert pass_at_k(1024, 1, 512) == pytest.approx(0.5, abs=1e-12)
    assert pass_at_k(1024, 3, 1) == pytest.approx(3 / 1024, abs=1e-15)
    exact = 1 - comb(1000, 300) / comb(1024, 300)  # Python ints: exact, then one rounding
    assert pass_at_k(1024, 24, 300) == pytest.approx(exact, rel=1e-12)


def test_pass_at_k_rejects_impossible_counts():
    for n, c, k in [(4, 5, 1), (4, -1, 1), (4, 1, 0), (4, 1, 5)]:
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)


def test_k_values():
    assert k_values(1) == [1]
    assert k_values(4) == [1, 2, 4]
    assert k_values(5) == [1, 2, 4, 5]
    assert k_values(32) == [1, 2, 4, 8, 16, 32]


def test_summarize_avg_at_n_and_pass_at_k():
    summary = summarize([1, 4, 2], 4)
    assert summary["avg@n"] == pytest.approx((0.25 + 1.0 + 0.5) / 3)
    assert summary["pass@k"]["1"] == pytest.approx(summary["avg@n"])
    assert summary["pass@k"]["2"] == pytest.approx((0.5 + 1.0 + (1 - 1 / 6)) / 3)
    assert summary["pass@k"]["4"] == 1.0
    assert summarize([0, 0], 2) == {"avg@n": 0.0, "pass@k": {"1": 0.0, "2": 0.0}}


# ----------------------------------------------------------------------------------------------------------------------
# Benchmarks
# ----------------------------------------------------------------------------------------------------------------------


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


@pytest.mark.parametrize(
    "model, expected",
    [
        ("builtin:tiny-arithmetic", "arithmetic"),
        ("builtin:tiny-chain", "chain"),
        ("builtin:smollm2-135m-instruct", "word_problems"),
        ("Qwen/Qwen2.5-Math-7B", None),
    ],
)
def test_a_builtin_model_defaults_to_its_own_task(model, expected):
    from soup_trl.evaluation.arguments import ModelArguments
    from soup_trl.evaluation.benchmarks import PAPER_BENCHMARKS

    assert ModelArguments(model=model).default_benchmarks() == ((expected,) if expected else PAPER_BENCHMARKS)


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


# ----------------------------------------------------------------------------------------------------------------------
# Sampling + grading with a scripted backend: exact metrics
# ----------------------------------------------------------------------------------------------------------------------

MATH_FILE = [
    {"problem": "What is 1+1?", "answer": "2"},
    {"problem": "Compute 3/4 + 1/4.", "answer": "1"},
    {"problem": "Simplify 8/6.", "answer": "\\frac{4}{3}"},
]
MATH_SCRIPT = {
    "What is 1+1?": ["\\boxed{2}", "\\boxed{3}", "so \\boxed{5}.", "no idea"],  # 1 correct, 1 unparseable
    "Compute 3/4 + 1/4.": ["The answer is \\boxed{1}."] * 4,  # 4 correct
    "Simplify 8/6.": ["\\boxed{\\dfrac{4}{3}}", "\\boxed{\\frac{8}{6}}", "\\boxed{7}", "\\boxed{}"],  # 2 correct
}


def math_script(text):
    return next(completions for problem, completions in MATH_SCRIPT.items() if problem in text)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_run_eval_exact_metrics_and_files(tmp_path):
    bench = load_benchmark(write_jsonl(tmp_path / "math.jsonl", MATH_FILE))
    backend = ScriptedBackend(math_script)
    report = run_eval(
        backend,
        [bench],
        SamplingArguments(num_samples=4, max_new_tokens=50),
        tmp_path / "out",
        "m",
        log=lambda m: None,
    )
    s = report["benchmarks"]["math"]
    assert s["num_problems"] == 3 and s["num_samples"] == 4
    assert s["avg@n"] == pytest.approx(7 / 12)
    assert s["pass@k"] == pytest.approx({"1": 7 / 12, "2": (0.5 + 1 + 5 / 6) / 3, "4": 1.0})
    assert s["unparseable_answers"] == 2
    assert s["grade_statuses"] == {"correct": 7, "no_answer": 2, "wrong": 3}
    assert s["truncated_samples"] == 0 and s["unparseable_gold_problems"] == 0
    assert backend.calls[0]["n"] == 4 and backend.calls[0]["budgets"] == [50, 50, 50]
    # the prompt sent is the recipes' template
    assert backend.calls[0]["rows"][0] == ids(MATH_PROMPT_TEMPLATE.replace("{problem}", "What is 1+1?"), eos=False)

    records = [json.loads(line) for line in (tmp_path / "out" / "math.jsonl").read_text().splitlines()]
    assert len(records) == 12
    assert records[3] == {
        "problem_id": "0",
        "sample": 3,
        "problem": "What is 1+1?",
        "gold": "2",
        "completion": "no idea",
        "answer": "",
        "reward": 0.0,
        "status": "no_answer",
        "num_tokens": 8,
        "finished": True,
    }
    assert [r["reward"] for r in records] == [1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0]
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["benchmarks"]["math"]["pass@k"] == s["pass@k"]
    assert saved["files"] == ["results.md", "math.jsonl", "config.yaml"]  # what --overwrite removes
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| math      | 3        | 58.3  | 58.3   | 77.8   | 100.0  | 2/12        | 0/12      |" in table


def test_prose_gold_is_graded_by_string_match_and_reported():
    from soup_trl.evaluation.runner import grade_completions

    gold = "f(x)=ax+b, where b is an arbitrary integer"
    grades = grade_completions([f"\\boxed{{{gold}}}", "\\boxed{f(x)=x}", "no box"], gold, "accuracy")
    assert [(g.reward, g.status, g.gold_parseable) for g in grades] == [
        (1.0, "correct", False),
        (0.0, "wrong", False),
        (0.0, "no_answer", False),
    ]
    results = [ProblemResult("0", "p", gold, [Sample([1], "x", True, g) for g in grades])]
    assert benchmark_summary(results, 3)["unparseable_gold_problems"] == 1


def test_arithmetic_grading_counts_missing_answers():
    results = [
        ProblemResult("0", "2+3=", "5", [Sample([], t, True) for t in ("05|5", "05|6", "05,", "|5 ")]),
    ]
    grade_problems(results, "arithmetic")
    assert [(s.grade.reward, s.grade.status, s.grade.answer) for s in results[0].samples] == [
        (1.0, "correct", "5"),
        (0.0, "wrong", "6"),
        (0.0, "no_answer", ""),
        (1.0, "correct", "5"),
    ]
    summary = benchmark_summary(results, 4)
    assert summary["unparseable_answers"] == 1 and summary["avg@n"] == 0.5


# ----------------------------------------------------------------------------------------------------------------------
# Relay sampling
# ----------------------------------------------------------------------------------------------------------------------


def test_relay_prefix_lengths_follow_the_trainer_truncation():
    completions = [ids("abcdefghij"), ids("abcdefgh", eos=False), [EOS], [], ids("abcdefghijkl", eos=False)]
    # round half to even: 10 * 0.25 = 2.5 -> 2; the EOS is never counted nor kept
    assert relay_prefix_lengths(completions, {EOS}, 0.25, 12) == [2, 2, 0, 0, 3]
    assert relay_prefix_lengths(completions, {EOS}, 0.5, 12) == [5, 4, 0, 0, 6]
    assert relay_prefix_lengths([ids("abcdefg")], {EOS}, 0.5, 12) == [4]  # 3.5 -> 4
    # at least one token of budget is left: 12 * 0.99 = 11.88 -> 12, clamped to 12 - 1
    assert relay_prefix_lengths(completions, {EOS}, 0.99, 12) == [10, 8, 0, 0, 11]
    assert relay_prefix_lengths([], {EOS}, 0.5, 12) == []


def test_relay_continue_splices_prefix_and_continuation_at_token_level():
    behavior = [ProblemResult("0", "Q", "g", [Sample(ids("abcdefghij"), "abcdefghij", True), Sample([EOS], "", True)])]
    behavior.append(ProblemResult("1", "R", "g", [Sample(ids("wxyz", eos=False), "wxyz", False)] * 2))
    target = ScriptedBackend(lambda text: ["0123456789"])
    prompt_ids = [ids("Q:", eos=False), ids("R:", eos=False)]
    relay = relay_continue(target, prompt_ids, behavior, 0.5, 8, SamplingArguments(seed=3))

    call = target.calls[0]
    assert call["n"] == 1
    assert call["rows"] == [
        ids("Q:abcde", eos=False),
        ids("Q:", eos=False),
        ids("R:wx", eos=False),
        ids("R:wx", eos=False),
    ]
    assert call["budgets"] == [3, 8, 6, 6]
    assert [s.text for s in relay[0].samples] == ["abcde012", "01234567"]
    assert relay[0].samples[0].token_ids == ids("abcde012", eos=False) and not relay[0].samples[0].finished
    assert [s.text for s in relay[1].samples] == ["wx012345", "wx012345"]
    assert relay[0].extra[0]["prefix_tokens"] == 5 and relay[0].extra[0]["prefix"] == "abcde"
    assert relay[0].extra[1]["prefix_tokens"] == 0 and relay[0].extra[1]["behavior_tokens"] == 1


def test_difference_curves():
    relay = {"a": {"pass@k": {"1": 0.5, "2": 0.75}}}
    target = {"a": {"pass@k": {"1": 0.25, "2": 0.75}}}
    assert difference_curves(relay, target) == {"a": {"1": 0.25, "2": 0.0}}


# ----------------------------------------------------------------------------------------------------------------------
# Backends
# ----------------------------------------------------------------------------------------------------------------------


def test_hf_backend_matches_the_trainer_prompt_and_respects_budgets(tiny_model_dir):
    from transformers import AutoTokenizer

    from soup_trl.evaluation.backends import load_backend

    backend = load_backend(BackendArguments(backend="hf", batch_size=4), tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert backend.encode_prompt("12+3=") == tokenizer("12+3=")["input_ids"]  # GRPOTrainer: processing_class(text=)
    chat = [{"role": "user", "content": "12+3="}]
    assert backend.encode_prompt(chat) == tokenizer.apply_chat_template(chat, add_generation_prompt=True)["input_ids"]
    rows = [backend.encode_prompt("1+2="), backend.encode_prompt("345+6789=")]
    first = backend.generate(rows, 3, [5, 2], SamplingArguments(temperature=1.0, top_p=1.0, seed=7))
    again = backend.generate(rows, 3, [5, 2], SamplingArguments(temperature=1.0, top_p=1.0, seed=7))
    assert first == again  # seeded
    assert [len(c) for c in first] == [3, 3]
    for completions, budget in zip(first, [5, 2]):
        for c in completions:
            assert 1 <= len(c) <= budget
            assert EOS not in c[:-1] and backend.tokenizer.eos_token_id not in c[:-1]  # cut after the first EOS
    greedy = backend.generate(rows, 3, [5, 5], SamplingArguments(temperature=0.0))
    assert all(c == completions[0] for completions in greedy for c in completions)
    backend.close()


def test_greedy_eval_matches_the_tiny_model_evaluation(tiny_model_dir, tmp_path):
    """Left-padded batches give the completions of `tiny_model.evaluate_greedy` (unpadded, batched by length)."""
    from soup_trl.evaluation.backends import load_backend
    from soup_trl.toy.tiny_model import evaluate_greedy

    bench = load_benchmark("arithmetic", limit=12)
    backend = load_backend(BackendArguments(backend="hf", batch_size=5), tiny_model_dir)
    run_eval(
        backend,
        [bench],
        SamplingArguments(num_samples=1, max_new_tokens=8, temperature=0.0),
        tmp_path,
        "tiny",
        log=lambda m: None,
    )
    ours = [json.loads(line)["completion"] for line in (tmp_path / "arithmetic.jsonl").read_text().splitlines()]
    from datasets import Dataset

    data = Dataset.from_dict(
        {"prompt": [p.prompt for p in bench.problems], "solution": [p.gold for p in bench.problems]}
    )
    assert ours == evaluate_greedy(tiny_model_dir, dataset=data, max_new_tokens=8)["completions"]


def test_vllm_backend_wiring_with_a_stub_module(tiny_model_dir, monkeypatch):
    """vLLM is not installed here: a stub checks the calls (LLM(...), SamplingParams(n=...), token-id prompts)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    seen = {}

    class SamplingParams:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    class LLM:
        def __init__(self, **kwargs):
            seen["llm"] = kwargs
            self.llm_engine = SimpleNamespace(model_config=SimpleNamespace(hf_config=SimpleNamespace(eos_token_id=2)))

        def get_tokenizer(self):
            return tokenizer

        def generate(self, prompts, params, use_tqdm=True):
            seen["prompts"], seen["params"] = prompts, params
            outputs = []
            for p in params:
                n, budget = p.kwargs["n"], p.kwargs["max_tokens"]
                outputs.append(
                    SimpleNamespace(
                        outputs=[
                            SimpleNamespace(index=i, token_ids=[5 + i] * budget + [2]) for i in reversed(range(n))
                        ]
                    )
                )
            return outputs

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams))
    from soup_trl.evaluation.backends import VLLMBackend

    backend = VLLMBackend("some/model", seed=5, gpu_memory_utilization=0.5)
    assert seen["llm"] == {
        "model": "some/model",
        "dtype": "auto",
        "seed": 5,
        "tensor_parallel_size": 1,
        "gpu_memory_utilization": 0.5,
    }
    rows = [backend.encode_prompt([{"role": "user", "content": "1+2="}])]
    out = backend.generate(rows, 2, [3], SamplingArguments(temperature=0.6, top_p=0.95, seed=5))
    assert seen["prompts"] == [{"prompt_token_ids": rows[0]}]
    assert seen["params"][0].kwargs == {
        "n": 2,
        "temperature": 0.6,
        "top_p": 0.95,
        "max_tokens": 3,
        "stop_token_ids": [2],
    }
    assert out == [[[5, 5, 5], [6, 6, 6]]]  # ordered by index, cut at the budget (the stub overruns it)


def test_unknown_or_missing_backend():
    from soup_trl.evaluation.backends import resolve_backend

    with pytest.raises(UserError, match="unknown backend 'tgi'"):
        resolve_backend("tgi")
    if "vllm" not in sys.modules:
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            with pytest.raises(UserError, match="vLLM is not installed"):
                resolve_backend("vllm")
            assert resolve_backend("auto") == "hf"


def test_no_nan_in_summary_of_empty_benchmark():
    summary = benchmark_summary([], 4)
    assert summary["avg@n"] == 0.0 and not any(math.isnan(v) for v in summary["pass@k"].values())


# ----------------------------------------------------------------------------------------------------------------------
# Suggestions, output directories, run directories, ranking
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "typed, expected",
    [
        ("math-500", "math500"),  # equal up to punctuation
        ("AIME24", "aime24"),
        ("aime2025", "aime25"),  # close by similarity
        ("olympiad", "olympiadbench"),
        ("word-problems", "word_problems"),
        ("gsm8k", None),  # nothing close
    ],
)
def test_closest_benchmark_name(typed, expected):
    from soup_trl.evaluation.benchmarks import valid_names
    from soup_trl.evaluation.suggest import closest, did_you_mean

    assert closest(typed, valid_names()) == expected
    assert did_you_mean(typed, valid_names()) == ("" if expected is None else f" (did you mean {expected!r}?)")


def test_new_run_dirs_never_reuse_a_directory(tmp_path):
    from soup_trl.evaluation.outputs import new_run_dir

    assert new_run_dir(tmp_path / "m") == tmp_path / "m" / "run-1"
    (tmp_path / "m" / "run-7").mkdir()
    (tmp_path / "m" / "notes").mkdir()
    assert new_run_dir(tmp_path / "m") == tmp_path / "m" / "run-8"
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["notes", "run-1", "run-7", "run-8"]


def test_claim_output_dir_refuses_or_clears_a_previous_run(tmp_path):
    from soup_trl.evaluation.outputs import claim_output_dir, write_results

    out = tmp_path / "out"
    assert claim_output_dir(str(out), tmp_path / "unused", overwrite=False) == out
    for name in ("a.jsonl", "b.jsonl", "mine.txt"):
        (out / name).write_text("x")
    write_results(out, {"settings": {"num_samples": 4}}, ["a.jsonl", "b.jsonl", "../outside.txt"])
    (tmp_path / "outside.txt").write_text("kept")
    assert (out / "config.yaml").read_text() == "num_samples: 4\n"
    with pytest.raises(UserError, match="already holds the results of another run"):
        claim_output_dir(str(out), tmp_path / "unused", overwrite=False)
    assert claim_output_dir(str(out), tmp_path / "unused", overwrite=True) == out
    # the previous run's files are gone; files it did not list, and files outside the directory, stay
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]
    assert (tmp_path / "outside.txt").read_text() == "kept"
    assert not (tmp_path / "unused").exists()


def test_saved_models_of_a_run(tmp_path):
    from soup_trl.evaluation.runs import saved_models

    run = tmp_path / "run"
    for name in ("checkpoint-10", "checkpoint-2", "checkpoint-5", "final-ish"):
        (run / name).mkdir(parents=True)
        (run / name / "config.json").write_text("{}")
    (run / "checkpoint-5" / "config.json").unlink()  # no model saved: skipped
    (run / "checkpoint-10" / "tokenizer_config.json").write_text("{}")
    with pytest.raises(UserError, match="checkpoint-2 has no tokenizer and neither has"):
        saved_models(run)
    models = saved_models(run, tokenizer="tok")
    assert [(m.name, m.step, m.tokenizer) for m in models] == [("checkpoint-2", 2, "tok"), ("checkpoint-10", 10, None)]
    (run / "config.json").write_text("{}")  # a final model in the run directory, its step from trainer_state.json
    (run / "tokenizer_config.json").write_text("{}")
    (run / "trainer_state.json").write_text(json.dumps({"global_step": 12}))
    assert [(m.name, m.step, m.tokenizer) for m in saved_models(run)] == [
        ("checkpoint-2", 2, str(run)),
        ("checkpoint-10", 10, None),
        ("final", 12, None),
    ]


def test_rank_prefers_the_earliest_of_equal_scores():
    from soup_trl.evaluation.selection import rank

    assert rank([0.3, 0.4, 0.35]) == 1
    assert rank([0.5, 0.1, 0.5]) == 0
    assert rank([0.0]) == 0


# ---------------------------------------------------------------------------------------- completion budget of a run


def save_training_args(directory, **fields):
    """What Trainer writes beside a saved model: `torch.save` of the run's config."""
    import torch

    from soup_trl import SOUPConfig

    directory.mkdir(parents=True, exist_ok=True)
    config = SOUPConfig(output_dir=str(directory), use_cpu=True, bf16=False, report_to="none", **fields)
    torch.save(config, directory / "training_args.bin")


def test_training_setting_reads_the_run_config_without_running_code_from_it(tmp_path):
    import torch

    from soup_trl.evaluation.runs import training_setting

    run = tmp_path / "run"
    save_training_args(run / "checkpoint-2", max_completion_length=77)
    save_training_args(run / "checkpoint-10", max_completion_length=99)
    assert training_setting(run, "max_completion_length") == (99, run / "checkpoint-10" / "training_args.bin")
    save_training_args(run, max_completion_length=55)  # the final model's config comes first
    assert training_setting(run, "max_completion_length") == (55, run / "training_args.bin")
    assert training_setting(run, "no_such_field") is None
    (tmp_path / "empty").mkdir()
    assert training_setting(tmp_path / "empty", "max_completion_length") is None

    marker = tmp_path / "code-ran"
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    torch.save(types.SimpleNamespace(max_completion_length=MarkerOnUnpickle(marker)), hostile / "training_args.bin")
    value, _ = training_setting(hostile, "max_completion_length")
    assert not marker.exists()  # the callable the file names was not called ...
    torch.load(hostile / "training_args.bin", weights_only=False)
    assert marker.read_text() == "ran"  # ... as plain unpickling would have
    (hostile / "training_args.bin").write_text("not an archive")
    assert training_setting(hostile, "max_completion_length") is None


class MarkerOnUnpickle:
    """Unpickling this object writes a file (as any callable a pickle names would run)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (write_marker, (str(self.path),))


def write_marker(path):
    from pathlib import Path

    Path(path).write_text("ran")
    return 0


@pytest.fixture
def tiny_run(tiny_model_dir, tmp_path):
    """A run directory as the training script leaves it: a checkpoint, the tokenizer, training_args.bin."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = tmp_path / "run"
    AutoModelForCausalLM.from_pretrained(tiny_model_dir).save_pretrained(run / "checkpoint-1")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(run)
    save_training_args(run, max_completion_length=3)
    return run


SELECT = ["--benchmarks", "arithmetic", "--limit", "2", "-n", "2", "--backend", "hf", "--no-progress", "--threads", "1"]


def test_select_samples_with_the_runs_completion_length(tiny_run, capsys):
    from soup_trl.scripts.cli import main

    assert ARITHMETIC_MAX_NEW_TOKENS != 3
    assert main(["select", str(tiny_run), *SELECT]) == 0
    err = capsys.readouterr().err
    assert f"max_new_tokens = 3: the run's max_completion_length ({tiny_run / 'training_args.bin'})" in err
    assert "max 3 new tokens" in err
    results = json.loads((tiny_run / "eval" / "checkpoint-1" / "results.json").read_text())
    assert results["settings"]["max_new_tokens"] == 3
    samples = [json.loads(line) for line in (tiny_run / "eval" / "checkpoint-1" / "arithmetic.jsonl").open()]
    assert len(samples) == 4 and all(s["num_tokens"] <= 3 for s in samples)


def test_select_max_new_tokens_flag_wins_over_the_run(tiny_run, capsys):
    from soup_trl.scripts.cli import main

    assert main(["select", str(tiny_run), *SELECT, "--max-new-tokens", "5"]) == 0
    err = capsys.readouterr().err
    assert "the run's max_completion_length" not in err and "max 5 new tokens" in err
    results = json.loads((tiny_run / "eval" / "checkpoint-1" / "results.json").read_text())
    assert results["settings"]["max_new_tokens"] == 5


def test_eval_budget_help_names_each_paper_models_recipe_length():
    """The --max-new-tokens help and docs/evaluation.md tell eval users the budget each paper model trained with."""
    from pathlib import Path

    import yaml

    from soup_trl.evaluation.arguments import SamplingArguments as Sampling
    from soup_trl.evaluation.benchmarks import MATH_MAX_NEW_TOKENS

    root = Path(__file__).resolve().parent.parent
    recipes = root / "soup_trl" / "recipes"

    def lengths(pattern):
        return {yaml.safe_load(p.read_text())["max_completion_length"] for p in recipes.glob(pattern)}

    assert lengths("qwen2.5_math_7b_*.yaml") == {MATH_MAX_NEW_TOKENS}
    assert lengths("tiny_arithmetic*.yaml") == {ARITHMETIC_MAX_NEW_TOKENS}
    (r1,) = lengths("r1_distill_qwen_1.5b_*.yaml")
    help_text = Sampling.__dataclass_fields__["max_new_tokens"].metadata["help"]
    assert f"DeepSeek-R1-Distill-Qwen-1.5B recipes train with {r1}: pass --max-new-tokens {r1}" in help_text
    docs = (root / "docs" / "evaluation.md").read_text()
    assert f"| `r1_distill_qwen_1.5b_*` | {r1} | `--max-new-tokens {r1}` |" in docs
    assert f"| `qwen2.5_math_7b_*` | {MATH_MAX_NEW_TOKENS} (4k context" in docs


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
