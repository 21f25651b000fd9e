"""The drift-aware cut (`soup_truncation="drift"`): the acceptance test on hand-made tensors, then a real tiny-model
run whose every refined cut is recomputed from fresh models rebuilt from parameter snapshots."""

import json
from functools import partial
from pathlib import Path

import pytest
import torch

from soup_trl import SOUPConfig, SOUPTrainer
from soup_trl.soup.metrics import CUT_TOKENS_FILE
from soup_trl.soup.truncation import accepted_prefix_lengths, step_generator
from soup_trl.testing.contract import ContractRecorder
from soup_trl.testing.rewards import shaped_reward
from soup_trl.testing.snapshots import SnapshotPolicy

TEMPERATURE = 0.8
T = 3


def test_every_token_is_accepted_without_drift():
    logps = torch.log(torch.tensor([[0.5, 0.2, 0.9, 0.4], [0.1, 0.1, 0.1, 0.1]]))
    uniform = torch.full((2, 4), 0.999)
    assert accepted_prefix_lengths(logps, logps, torch.tensor([3, 4]), 1.0, uniform).tolist() == [3, 4]


def test_the_prefix_ends_before_the_first_rejected_token():
    behavior = torch.log(torch.full((3, 4), 0.5))
    current = torch.log(torch.tensor([[0.5, 0.3, 0.5, 0.01], [0.5, 0.5, 0.5, 0.5], [0.05, 0.5, 0.5, 0.5]]))
    uniform = torch.tensor([[0.1, 0.7, 0.1, 0.1], [0.9] * 4, [0.15, 0.1, 0.1, 0.1]])
    caps = torch.tensor([4, 2, 4])
    # row 0: token 1 has ratio 0.6 < u = 0.7: rejected; row 1: capped at 2; row 2: token 0 has ratio 0.1 < 0.15
    assert accepted_prefix_lengths(behavior, current, caps, 1.0, uniform).tolist() == [1, 2, 0]
    # lenience 0.5: a token is kept for sure while its probability is at least half the behavior's
    assert accepted_prefix_lengths(behavior, current, caps, 0.5, uniform).tolist() == [3, 2, 4]
    # rejections beyond a row's cap do not count
    assert accepted_prefix_lengths(behavior, current, torch.tensor([1, 0, 0]), 1.0, uniform).tolist() == [1, 0, 0]


def test_config_names_a_bad_lenience(tmp_path):
    with pytest.raises(ValueError, match=r"soup_drift_lenience must be in \(0, 1\], got 0.0"):
        SOUPConfig(output_dir=str(tmp_path), soup_truncation="drift", soup_drift_lenience=0.0, use_cpu=True, bf16=False)


def drift_run(model_dir, make_config, make_dataset, **overrides):
    settings = dict(
        soup_behavior_steps=T, soup_truncation="drift", soup_prefix_ratio=0.75, per_device_train_batch_size=4,
        gradient_accumulation_steps=2, num_generations=4, temperature=TEMPERATURE, max_steps=2 * T,
        learning_rate=5e-2,
    )  # fmt: skip
    args = make_config(**{**settings, **overrides})
    trainer = SOUPTrainer(model_dir, shaped_reward, args=args, train_dataset=make_dataset(100))
    recorder = ContractRecorder(trainer)
    trainer.train()
    return trainer, recorder.records


@pytest.fixture(scope="module")
def strict_run(tiny_model_dir, make_config, make_dataset):
    return drift_run(tiny_model_dir, make_config, make_dataset, soup_drift_lenience=1.0)


def test_refined_cuts_equal_an_independent_acceptance_test(strict_run, tiny_model_dir):
    trainer, records = strict_run
    policy = partial(SnapshotPolicy, tiny_model_dir, temperature=TEMPERATURE)
    eos = set(trainer.eos_token_ids)
    shorter = kept = 0
    for global_step, step in enumerate(records["steps"]):
        if step["step"] == 0:
            continue
        cycle = step["cycle"]["cycle"]
        behavior, current = policy(step["cycle"]["params"]), policy(step["params"])
        rows = range(step["step"] * cycle.rows_per_step, (step["step"] + 1) * cycle.rows_per_step)
        caps = []
        for r in rows:
            completion = cycle.completion_ids[r]
            content = len(completion) - (len(completion) > 0 and completion[-1] in eos)
            caps.append(min(int(torch.tensor(content * 0.75).round()), trainer.args.max_completion_length - 1))
        uniform = torch.rand((len(caps), max(caps)), generator=step_generator(trainer.args.seed, global_step, 0))
        for j, r in enumerate(rows):
            prompt, completion = cycle.prompt_ids[r], cycle.completion_ids[r]
            b, c = behavior.logps(prompt, completion), current.logps(prompt, completion)
            expected = 0
            while expected < caps[j] and uniform[j, expected] < min(1.0, float(torch.exp(c[expected] - b[expected]))):
                expected += 1
            assert int(cycle.prefix_lengths[r]) == expected, (global_step, r)
            shorter += expected < caps[j]
            kept += expected
    assert shorter > 0 and kept > 0  # the test rejected tokens (the policy drifted) and kept others


def test_refined_cuts_are_logged_per_step(strict_run):
    trainer, records = strict_run
    lines = [json.loads(x) for x in (Path(trainer.args.output_dir) / CUT_TOKENS_FILE).read_text().splitlines()]
    assert [line["step"] for line in lines] == [2, 3, 5, 6]  # the spliced steps, when each is scored
    for line, step in zip(lines, [s for s in records["steps"] if s["step"] > 0]):
        cycle = step["cycle"]["cycle"]
        rows = range(step["step"] * cycle.rows_per_step, (step["step"] + 1) * cycle.rows_per_step)
        cuts = [(cycle.completion_ids[r], int(cycle.prefix_lengths[r])) for r in rows]
        assert line["token_ids"] == [c[k] for c, k in cuts if k < len(c)] and line["truncation"] == "drift"


def test_an_all_accepting_test_is_the_ratio_cut(tiny_model_dir, make_config, make_dataset):
    """Lenience near 0 accepts every token: the run is the ratio run (the test draws nothing from the global
    generator), parameter for parameter."""
    drift, _ = drift_run(tiny_model_dir, make_config, make_dataset, soup_drift_lenience=1e-12)
    ratio, _ = drift_run(tiny_model_dir, make_config, make_dataset, soup_truncation="ratio")
    expected = dict(ratio.model.named_parameters())
    for name, param in drift.model.named_parameters():
        assert torch.equal(param, expected[name]), name
