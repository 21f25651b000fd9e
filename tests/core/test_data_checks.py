"""Bad training data fails when the trainer is built, with the rows and the fix named (docs/reliability.md)."""

import pytest
from datasets import Dataset

from soup_trl import LUFFYConfig, LUFFYTrainer, M2POConfig, M2POTrainer, SOUPConfig, SOUPTrainer
from soup_trl.core.errors import DataError, UserError
from soup_trl.rewards import get_reward_funcs
from soup_trl.rewards.accuracy import accuracy_reward
from soup_trl.testing.rewards import shaped_reward

PROMPTS = [f"{a}+{b}=" for a in range(4) for b in range(4)]  # 16 prompts: two generation batches of the small run
LONG = "1+" * 40 + "1="  # 82 characters: more tokens than the tiny model's 64-token context leaves


def rows(**columns):
    return Dataset.from_dict({"prompt": PROMPTS, **columns})


def with_row(column, index, value, base):
    values = list(base)
    values[index] = value
    return values


SOLUTIONS = [str(a + b) for a in range(4) for b in range(4)]
TRACES = ["03|3"] * len(PROMPTS)
ACCURACY = [accuracy_reward]

# (id, trainer, reward functions, config overrides, dataset, patterns the message must contain)
CASES = [
    (
        "no prompt column",
        "soup",
        [shaped_reward],
        {},
        Dataset.from_dict({"question": PROMPTS}),
        ["no 'prompt' column", "columns: ['question']", "column named 'prompt'"],
    ),
    (
        "no answer column",
        "soup",
        ACCURACY,
        {},
        rows(answer=SOLUTIONS),
        ["'accuracy_reward' reads the dataset column 'solution'", "columns: ['answer', 'prompt']", "--solution_field"],
    ),
    (
        "no answer column, wrapped reward",
        "soup",
        get_reward_funcs("accuracy"),
        {},
        rows(),
        ["'accuracy_reward' reads the dataset column 'solution'"],
    ),
    (
        "empty prompt",
        "soup",
        [shaped_reward],
        {},
        Dataset.from_dict({"prompt": with_row("prompt", 5, "  ", PROMPTS)}),
        ["row 5 of the training dataset (1 in all): the prompt is empty", "Drop these rows"],
    ),
    (
        "empty chat prompt",
        "soup",
        [shaped_reward],
        {},
        Dataset.from_dict(
            {"prompt": [[{"role": "user", "content": "" if i in (2, 9) else p}] for i, p in enumerate(PROMPTS)]}
        ),
        ["rows 2, 9 of the training dataset (2 in all): the prompt is empty"],
    ),
    (
        "prompt longer than the context leaves",
        "soup",
        [shaped_reward],
        {},
        Dataset.from_dict({"prompt": with_row("prompt", 7, LONG, PROMPTS)}),
        [
            "row 7 of the training dataset (1 in all, the longest",
            "leaves after max_completion_length=10",
            "a model with a longer context",
        ],
    ),
    (
        "prompt that leaves too little of the context",
        "soup",
        [shaped_reward],
        {},
        Dataset.from_dict({"prompt": with_row("prompt", 0, "1+" * 28 + "1=", PROMPTS)}),
        [
            "row 0 of the training dataset (1 in all, the longest 59 tokens)",
            "lower max_completion_length to 5 or less",
        ],
    ),
    (
        "completion length that fills the context",
        "soup",
        [shaped_reward],
        {"max_completion_length": 64},
        rows(),
        [
            "max_completion_length=64 leaves no room for a prompt in the model's context (64 tokens)",
            "Lower max_completion_length to 59 or less (the longest prompt has 5 tokens)",
        ],
    ),
    (
        "non-string answer",
        "soup",
        ACCURACY,
        {},
        rows(solution=[a + b for a in range(4) for b in range(4)]),
        [
            "rows 0, 1, 2, 3, 4, ... of the training dataset (16 in all): column 'solution' holds int values such as 0",
            "gold_text",
        ],
    ),
    (
        "empty answer",
        "soup",
        ACCURACY,
        {},
        rows(solution=with_row("solution", 3, None, with_row("solution", 11, "", SOLUTIONS))),
        ["rows 3, 11 of the training dataset (2 in all): column 'solution' is empty", "Fill in the answers"],
    ),
    (
        "fewer prompts than one SOUP cycle",
        "soup",
        [shaped_reward],
        {"soup_behavior_steps": 4},
        Dataset.from_dict({"prompt": PROMPTS[:7]}),
        ["has 7 prompts, fewer than the 8 one SOUP cycle takes (soup_behavior_steps=4 steps x 2 prompts per step"],
    ),
    (
        "fewer prompts than one M2PO generation batch",
        "m2po",
        [shaped_reward],
        {"m2po_staleness": 0},
        Dataset.from_dict({"prompt": PROMPTS[:1]}),
        ["has 1 prompts, fewer than the 2 one generation batch takes"],
    ),
    (
        "no trace column",
        "luffy",
        [shaped_reward],
        {},
        rows(),
        ["luffy_trace_field='target': the training dataset has no column 'target'", "Set luffy_trace_field"],
    ),
    (
        "empty trace",
        "luffy",
        [shaped_reward],
        {},
        rows(target=with_row("target", 4, "", TRACES)),
        ["luffy_trace_field='target': 1 of 16 training rows have no usable trace", "row 4"],
    ),
    (
        "fewer prompts than one LUFFY generation batch",
        "luffy",
        [shaped_reward],
        {"per_device_train_batch_size": 8, "gradient_accumulation_steps": 2},
        Dataset.from_dict({"prompt": PROMPTS[:3], "target": TRACES[:3]}),
        ["has 3 prompts, fewer than the 4 one generation batch takes", "steps_per_generation=2"],
    ),
]
TRAINERS = {
    "soup": (SOUPConfig, SOUPTrainer),
    "m2po": (M2POConfig, M2POTrainer),
    "luffy": (LUFFYConfig, LUFFYTrainer),
}


@pytest.mark.parametrize(
    ("case", "method", "rewards", "overrides", "dataset", "patterns"), CASES, ids=[c[0] for c in CASES]
)
def test_bad_data_fails_at_construction_naming_rows_and_fix(
    tiny_model_dir, make_config, case, method, rewards, overrides, dataset, patterns
):
    config_cls, trainer_cls = TRAINERS[method]
    with pytest.raises(ValueError) as failure:
        trainer_cls(tiny_model_dir, rewards, args=make_config(config_cls, **overrides), train_dataset=dataset)
    message = str(failure.value)
    for pattern in patterns:
        assert pattern in message, f"{pattern!r} not in {message!r}"


@pytest.mark.parametrize("method", TRAINERS)
def test_every_trainer_checks_and_reports_every_problem(tiny_model_dir, make_config, method):
    config_cls, trainer_cls = TRAINERS[method]
    bad = Dataset.from_dict({"prompt": with_row("prompt", 1, "", PROMPTS), "target": TRACES})
    with pytest.raises(DataError) as failure:
        trainer_cls(tiny_model_dir, ACCURACY, args=make_config(config_cls), train_dataset=bad)
    message = str(failure.value)
    assert message.startswith(f"{trainer_cls.__name__}: the training data cannot be trained on:")
    assert "reads the dataset column 'solution'" in message and "row 1 of the training dataset" in message
    assert isinstance(failure.value, UserError)  # the command line prints it as one line


def test_good_data_passes(tiny_model_dir, make_config):
    trainer = SOUPTrainer(
        tiny_model_dir, ACCURACY, args=make_config(soup_behavior_steps=2), train_dataset=rows(solution=SOLUTIONS)
    )
    assert len(trainer.train_dataset) == len(PROMPTS)
