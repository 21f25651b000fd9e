"""What a person sees in the console: short log lines, a labelled warm-up, no warnings from the project's code."""

import logging
import warnings
from contextlib import nullcontext

import pytest
from datasets import Dataset

from soup_trl import SOUPConfig, SOUPTrainer
from soup_trl.core.compat import HAS_ACTIVATION_CHECKPOINTING
from soup_trl.core.console import format_log_line
from soup_trl.core.data_checks import lossy_prompt
from soup_trl.testing.rewards import shaped_reward
from soup_trl.testing.runs import prompt_dataset, small_config

MAX_LINE = 400


def soup_args(tmp_path, **overrides):
    return small_config(tmp_path, soup_behavior_steps=2, max_completion_length=8, max_steps=2, **overrides)


PROMPTS = prompt_dataset(16)


def test_log_line_keeps_the_main_numbers_short():
    logs = {"loss": -0.0213, "grad_norm": 0.97, "learning_rate": 1e-4, "reward": 0.1523, "reward_std": 0.33,
            "completions/mean_length": 9.61, "entropy": 0.6107, "clip_ratio/region_mean": 0.00035,
            "soup/prefix_token_frac": 0.1701, "step_time": 0.31, "epoch": 0.004}
    logs.update({f"soup/position_bin_{b}/entropy": 0.5 for b in range(10)})
    line = format_log_line(logs, 40, 240, extra=SOUPTrainer.console_fields)
    assert line == ("step 40/240 | loss -0.0213 | reward 0.152 ± 0.33 | len 9.61 | entropy 0.611 | clip 3.5e-04 | "
                    "lr 1.0e-04 | prefix 17% | 0.31 s/step")
    assert format_log_line({"train_runtime": 3.702, "train_steps_per_second": 2.701, "train_loss": -0.0278}) == (
        "training done | runtime s 3.702 | steps/s 2.7 | mean loss -0.0278"
    )
    assert format_log_line({"eval_loss": 0.5, "eval_reward": 0.25}, 10).startswith("eval step 10 | loss 0.5")
    assert format_log_line({"m2po/masked_token_frac": 0.125}, extra=(("m2po/masked_token_frac", "masked", "%"),)) == (
        "masked 12%"
    )


@pytest.mark.parametrize("disable_tqdm", [False, True])
def test_training_console_lines_are_short_and_the_trackers_keep_everything(tiny_model_dir, tmp_path, capsys,
                                                                           disable_tqdm):
    trainer = SOUPTrainer(tiny_model_dir, shaped_reward, args=soup_args(tmp_path, disable_tqdm=disable_tqdm),
                          train_dataset=PROMPTS)
    trainer.train()
    printed = capsys.readouterr()
    lines = [line for text in (printed.out, printed.err) for line in text.replace("\r", "\n").splitlines()]
    logged = [line for line in lines if "reward" in line]
    assert len(logged) == 2 and all(line.startswith(("step 1/2", "step 2/2")) for line in logged), logged
    assert all(len(line) < MAX_LINE for line in logged)
    assert any(line.startswith("training done") for line in lines)
    assert not any("position_bin" in line for line in lines)
    history = [h for h in trainer.state.log_history if "loss" in h]
    assert all("soup/position_bin_0/entropy" in h and "soup/prefix/ratio_mean" in h for h in history[1:])


def test_full_console_prints_the_whole_dict(tiny_model_dir, tmp_path, capsys):
    args = soup_args(tmp_path, console="full", disable_tqdm=True)
    SOUPTrainer(tiny_model_dir, shaped_reward, args=args, train_dataset=PROMPTS).train()
    assert "'soup/position_bin_0/entropy'" in capsys.readouterr().out


def test_bad_console_value_is_named():
    with pytest.raises(ValueError, match="console must be 'compact' or 'full'"):
        SOUPConfig(output_dir="x", console="short")


def test_config_prints_no_deprecation_warning_and_keeps_trls_default():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        args = SOUPConfig(output_dir="x", use_cpu=True, bf16=False)
    assert not [w for w in caught if "deprecated" in str(w.message)], [str(w.message) for w in caught]
    assert args.activation_checkpointing is True and args.gradient_checkpointing is True
    # the user's own use of the old name warns where Transformers deprecates it (>= 5.20)
    with pytest.warns(FutureWarning, match="gradient_checkpointing") if HAS_ACTIVATION_CHECKPOINTING else nullcontext():
        args = SOUPConfig(output_dir="x", gradient_checkpointing=False, use_cpu=True, bf16=False)
    assert args.activation_checkpointing is False


def test_lossy_prompt_finds_dropped_characters(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert lossy_prompt(tokenizer, ["12+34=", [{"role": "user", "content": "5+6="}]]) is None
    index, text, decoded = lossy_prompt(tokenizer, ["1+1=", "What is 1+2?"])
    assert (index, text, decoded) == (1, "What is 1+2?", "1+2")


def test_trainer_warns_once_when_the_tokenizer_drops_prompt_characters(tiny_model_dir, tmp_path, caplog):
    math_prompts = Dataset.from_dict({"prompt": [f"What is {a}+{b}?" for a in range(4) for b in range(4)]})
    with caplog.at_level(logging.WARNING, logger="soup_trl.core.data_checks"):
        SOUPTrainer(tiny_model_dir, shaped_reward, args=soup_args(tmp_path), train_dataset=math_prompts)
    warned = [r for r in caplog.records if "loses characters" in r.getMessage()]
    assert len(warned) == 1 and "'What is 0+0?'" in warned[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="soup_trl.core.data_checks"):
        SOUPTrainer(tiny_model_dir, shaped_reward, args=soup_args(tmp_path), train_dataset=PROMPTS)
    assert not [r for r in caplog.records if "loses characters" in r.getMessage()]


def test_warm_up_is_one_labelled_bar(tmp_path, capfd):
    from soup_trl.toy.tiny_model import WARMUP_DESCRIPTION, ensure_tiny_base_model

    ensure_tiny_base_model(tmp_path, warmup_steps=3, warmup_batch_size=4, isolate=False)
    printed = capfd.readouterr()
    text = printed.out + printed.err
    assert WARMUP_DESCRIPTION in text
    assert "'loss'" not in text and "train_runtime" not in text


def test_plot_panels_follow_the_metrics_a_run_logged():
    from soup_trl.evaluation.plots import training_panels

    titles = lambda history: [title for title, _ in training_panels(history)]  # noqa: E731
    grpo = titles([{"reward": 0.1}])
    assert "Reward" in grpo and not any(t.startswith(("Dynamic", "M2PO", "LUFFY", "Off-policy")) for t in grpo)
    with_methods = titles([{"dynamic_sampling/rounds": 1.0, "luffy/off_policy_token_frac": 0.2,
                            "m2po/masked_token_frac": 0.01, "soup/prefix_token_frac": 0.1}])
    for title in ("Dynamic sampling: refill rounds per step", "M2PO: share of tokens masked by the trust region",
                  "LUFFY: off-policy trace tokens", "Off-policy prefix share of loss tokens"):
        assert title in with_methods


def test_recipes_use_no_deprecated_arguments():
    from soup_trl.scripts.train import parse_args, shipped_recipes

    for recipe in shipped_recipes():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _, args, _ = parse_args(["--config", recipe, "--bf16", "false", "--use_cpu", "true"], num_processes=8)
        deprecated = [str(w.message) for w in caught if "deprecated" in str(w.message)]
        assert not deprecated, (recipe, deprecated)
        if args.warmup_steps:  # a warm-up needs a schedule that has one
            assert args.lr_scheduler_type != "constant", recipe
