"""Scratchpad-addition task, its reward, the character tokenizer, the tiny model and the base-model cache."""

import json
import os
import random

import pytest
import torch

from soup_trl.core.runtime import configure_threads
from soup_trl.rewards.arithmetic import ALPHABET, arithmetic_reward, extract_answer, scratchpad
from soup_trl.toy import tiny_model
from soup_trl.toy.arithmetic import make_arithmetic_dataset, problem_split
from soup_trl.toy.tiny_model import (
    MARKER_FILE,
    TinyModelSettings,
    build_tiny_model,
    build_tokenizer,
    ensure_tiny_base_model,
    evaluate_greedy,
    greedy_accuracy,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ----------------------------------------------------------------------------------------------------------------------
# Task format and reward
# ----------------------------------------------------------------------------------------------------------------------


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


def test_reward_with_scratchpad_mistake_but_right_answer():
    # Only the answer is checked.
    assert arithmetic_reward(["99,99|605"], ["605"]) == [1.0]


# ----------------------------------------------------------------------------------------------------------------------
# Datasets
# ----------------------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------------------
# Tokenizer and model
# ----------------------------------------------------------------------------------------------------------------------


def test_tokenizer_round_trip(tmp_path):
    from transformers import AutoTokenizer

    build_tokenizer(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert len(tokenizer) == 17
    data = make_arithmetic_dataset(500, seed=3, with_target=True)
    for text in [p + c for p, c in zip(data["prompt"], data["completion"])] + [ALPHABET]:
        ids = tokenizer(text)["input_ids"]
        assert ids[0] == tokenizer.bos_token_id and len(ids) == len(text) + 1  # one token per character
        assert tokenizer.decode(ids, skip_special_tokens=True) == text
    # conversational prompts render to the same tokens as plain ones
    chat = tokenizer.apply_chat_template(
        [{"role": "user", "content": "347+258="}], add_generation_prompt=True, tokenize=True, return_dict=True
    )
    assert list(chat["input_ids"]) == tokenizer("347+258=")["input_ids"]
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "1+2="}, {"role": "assistant", "content": "03|3"}], tokenize=False
    )
    assert rendered == "<bos>1+2=03|3<eos>"


def test_build_tiny_model_loads_and_generates(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)  # built by conftest with build_tiny_model's defaults
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)  # loads as Qwen2Tokenizer next to a Qwen2 config
    assert model.config.model_type == "qwen2"
    assert 300_000 < sum(p.numel() for p in model.parameters()) < 450_000
    # the tokenizer loaded next to the model tokenizes like the freshly built one
    fresh = build_tokenizer()
    text = "9876+543=09,12,14,10|10419"
    assert tokenizer(text)["input_ids"] == fresh(text)["input_ids"]
    inputs = tokenizer(["12+34="], return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    prompt_len = inputs["input_ids"].shape[1]
    assert out.shape[0] == 1 and prompt_len < out.shape[1] <= prompt_len + 5
    # seeded: a second build with the same settings gives the same weights
    other = AutoModelForCausalLM.from_pretrained(build_tiny_model(tmp_path / "again"))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), other.parameters()))


def test_evaluate_greedy_on_random_model(tiny_model_dir):
    data = make_arithmetic_dataset(24, seed=0, split="test")
    result = evaluate_greedy(tiny_model_dir, dataset=data)
    assert 0.0 <= result["accuracy"] <= 1.0 and result["num_examples"] == 24
    direct = sum(c.startswith("|") for c in result["completions"]) / 24
    assert result["direct_answer_share"] == direct
    assert set(result["accuracy_by_digits"]) <= {1, 2, 3, 4}
    assert 1 <= result["mean_completion_tokens"] <= 4 * 4 + 4
    assert greedy_accuracy(tiny_model_dir, dataset=data) == result["accuracy"]


def test_configure_threads(monkeypatch):
    previous = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert configure_threads() == 1 and torch.get_num_threads() == 1
        monkeypatch.delenv("OMP_NUM_THREADS")
        assert configure_threads() >= 1
        assert configure_threads(1) == 1
    finally:
        torch.set_num_threads(previous)


# ----------------------------------------------------------------------------------------------------------------------
# Warmed-up base model cache
# ----------------------------------------------------------------------------------------------------------------------

TINY = {"warmup_steps": 2, "warmup_batch_size": 8, "hidden_size": 32, "num_heads": 1, "intermediate_size": 64}


def test_cache_key_depends_on_settings():
    base = TinyModelSettings()
    assert base.cache_key() == TinyModelSettings().cache_key()
    assert base.cache_key() != TinyModelSettings(warmup_steps=base.warmup_steps + 1).cache_key()


def test_ensure_tiny_base_model_builds_once_and_reuses(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = ensure_tiny_base_model(tmp_path, **TINY)
    assert os.path.isdir(path) and os.path.dirname(path) == str(tmp_path)
    meta = json.loads(open(os.path.join(path, MARKER_FILE)).read())
    assert meta["build"]["warmup_steps_done"] == 2
    assert meta["settings"]["warmup_steps"] == 2
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no leftover temporary directories
    AutoModelForCausalLM.from_pretrained(path)
    AutoTokenizer.from_pretrained(path)

    def fail(*args, **kwargs):
        raise AssertionError("a cached model must not be rebuilt")

    monkeypatch.setattr(tiny_model, "_warm_up", fail)
    assert ensure_tiny_base_model(tmp_path, **TINY) == path
    assert ensure_tiny_base_model(tmp_path, TinyModelSettings(**TINY)) == path


def test_interrupted_build_is_not_reused(tmp_path, monkeypatch):
    def interrupted(settings, out_dir):
        (out_dir / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(tiny_model, "_warm_up", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ensure_tiny_base_model(tmp_path, **TINY)
    assert [p for p in os.listdir(tmp_path) if not p.endswith(".lock")] == []


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
