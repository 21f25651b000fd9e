"""The tiny model (`soup_trl.toy.tiny_model`): the character tokenizer, the model it builds and evaluates greedily, and
the cache of warmed-up base models. The task's datasets: tests/toy/test_arithmetic.py; its rewards:
tests/rewards/test_arithmetic.py."""

import json
import os

import pytest
import torch

from soup_trl.rewards.arithmetic import ALPHABET
from soup_trl.toy import tiny_model
from soup_trl.toy.arithmetic import make_arithmetic_dataset
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


