"""LUFFYConfig: its checks, each error naming the field and the fix, and its defaults."""

import pytest

from soup_trl import LUFFYConfig

from .test_trainer import B, G


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"luffy_num_traces": 4}, "luffy_num_traces \\(4\\) must be below num_generations"),
        ({"luffy_num_traces": 0}, "luffy_num_traces must be an integer >= 1"),
        ({"luffy_shaping_gamma": 0.0}, "luffy_shaping_gamma must be > 0"),
        ({"loss_type": "grpo"}, "loss_type='grpo' is not supported"),
        ({"remove_unused_columns": True}, "remove_unused_columns=True would drop the trace column 'target'"),
    ],
)
def test_config_rejects(tmp_path, overrides, message):
    kwargs = {"output_dir": str(tmp_path), "num_generations": G, "per_device_train_batch_size": B, **overrides}
    with pytest.raises(ValueError, match=message):
        LUFFYConfig(**kwargs, use_cpu=True, bf16=False, report_to="none")


def test_config_defaults(tmp_path):
    args = LUFFYConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none")
    assert (args.luffy_trace_field, args.luffy_num_traces, args.luffy_shaping_gamma) == ("target", 1, 0.1)
    assert (args.loss_type, args.epsilon_high, args.beta) == ("dapo", 0.28, 0.0)
