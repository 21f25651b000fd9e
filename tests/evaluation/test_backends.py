"""The sampling backends (`soup_trl.evaluation.backends`): the HF backend's prompts, budgets and seeds on the tiny
model, its greedy completions against the tiny model's own evaluation, the vLLM backend's wiring against a stub
module, and the choice of a backend.
"""

import json
import sys
import types
from types import SimpleNamespace

import pytest

from soup_trl.core.errors import UserError
from soup_trl.evaluation.arguments import BackendArguments, SamplingArguments
from soup_trl.evaluation.benchmarks import load_benchmark
from soup_trl.evaluation.runner import run_eval
from soup_trl.testing.evaluation import EOS


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
