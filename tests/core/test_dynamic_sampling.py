"""DAPO's dynamic sampling: pure row bookkeeping on hand-made tensors, then real tiny-model runs."""

import pytest
import torch
from datasets import Dataset

from soup_trl import LUFFYConfig, LUFFYTrainer, M2POConfig, M2POTrainer, SOUPConfig, SOUPTrainer
from soup_trl.core.dynamic_sampling import PromptStream, concat_batches, group_has_variance, group_rows, take_rows
from soup_trl.soup.ops import fill_current_logps
from soup_trl.testing.rewards import CONSTANT_PREFIX, mixed_reward

NAN = float("nan")


def test_group_has_variance():
    rewards = torch.tensor([1, 1, 1, 1, 0, 1, 0, 0, NAN, 1, 1, 1, NAN, NAN, NAN, NAN, NAN, 0, 1, NAN,
                            0.3, 0.1 + 0.2, 0.3, 0.3], dtype=torch.float64)
    assert group_has_variance(rewards, 4).tolist() == [False, True, False, False, True, True]
    assert group_has_variance(torch.tensor([NAN, 1.0]), 2).tolist() == [False]  # one scored sample: no variance


def test_group_rows_and_take_rows():
    assert group_rows(torch.tensor([2, 0]), 3).tolist() == [6, 7, 8, 0, 1, 2]
    batch = {"completion_ids": torch.arange(8).view(4, 2), "advantages": torch.tensor([1.0, 2, 3, 4]),
             "num_items_in_batch": torch.tensor(8), "names": ["a", "b", "c", "d"]}
    out = take_rows(batch, torch.tensor([2, 3]))
    assert out["completion_ids"].tolist() == [[4, 5], [6, 7]]
    assert out["advantages"].tolist() == [3.0, 4.0] and out["names"] == ["c", "d"]
    assert out["num_items_in_batch"].item() == 8


def test_concat_batches_pads_prompts_left_and_completions_right():
    a = {"prompt_ids": torch.tensor([[5, 6]]), "prompt_mask": torch.tensor([[1, 1]]),
         "completion_ids": torch.tensor([[7]]), "completion_mask": torch.tensor([[1]]),
         "old_per_token_logps": torch.tensor([[-0.5]]), "advantages": torch.tensor([1.0]),
         "num_items_in_batch": torch.tensor(1)}
    b = {"prompt_ids": torch.tensor([[4, 5, 6]]), "prompt_mask": torch.tensor([[1, 1, 1]]),
         "completion_ids": torch.tensor([[8, 9]]), "completion_mask": torch.tensor([[1, 1]]),
         "old_per_token_logps": torch.tensor([[-0.25, -0.75]]), "advantages": torch.tensor([-1.0]),
         "num_items_in_batch": torch.tensor(2)}
    out = concat_batches([a, b], pad_token_id=0)
    assert out["prompt_ids"].tolist() == [[0, 5, 6], [4, 5, 6]]
    assert out["prompt_mask"].tolist() == [[0, 1, 1], [1, 1, 1]]
    assert out["completion_ids"].tolist() == [[7, 0], [8, 9]]
    assert out["completion_mask"].tolist() == [[1, 0], [1, 1]]
    assert out["old_per_token_logps"].tolist() == [[-0.5, 0.0], [-0.25, -0.75]]
    assert out["advantages"].tolist() == [1.0, -1.0]
    with pytest.raises(ValueError, match="old_per_token_logps"):
        concat_batches([a, {k: v for k, v in b.items() if k != "old_per_token_logps"}], 0)


def test_prompt_stream_is_a_seeded_permutation_per_epoch_and_resumes():
    data = Dataset.from_dict({"prompt": [str(i) for i in range(5)]})
    stream = PromptStream(data, seed=3)
    first = [r["prompt"] for r in stream.take(7)]
    assert sorted(first[:5]) == ["0", "1", "2", "3", "4"] and stream.drawn == 7
    resumed = PromptStream(data, seed=3)
    resumed.drawn = 3
    assert [r["prompt"] for r in resumed.take(4)] == first[3:7]
    with pytest.raises(ValueError, match="non-empty"):
        PromptStream(data.select([]), seed=0)


# ---------------------------------------------------------------------------------------------- tiny-model runs

def run(tiny_model_dir, tmp_path, behavior_steps, max_rounds=10, prompts=None, capture_policy=False):
    prompts = prompts or [f"{a}+{b}=" for a in range(4) for b in range(8)]  # a quarter of them constant
    args = SOUPConfig(
        output_dir=str(tmp_path), soup_behavior_steps=behavior_steps, dynamic_sampling=True,
        dynamic_sampling_max_rounds=max_rounds, per_device_train_batch_size=16, num_generations=4,
        max_completion_length=6, max_steps=4, logging_steps=1, save_strategy="no", report_to="none",
        use_cpu=True, bf16=False, seed=0,
    )
    trainer = SOUPTrainer(tiny_model_dir, mixed_reward, args=args, train_dataset=Dataset.from_dict({"prompt": prompts}))
    seen = []
    original = trainer.compute_loss

    def capture(model, inputs, *a, **k):
        batch = {key: v.detach().clone() if isinstance(v, torch.Tensor) else v for key, v in inputs.items()}
        if capture_policy and trainer._cycle is not None:
            batch["cycle_prompts"] = {x["prompt"] for x in trainer._cycle.inputs}
            ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
            attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
            with torch.no_grad():  # the current policy, before this step's update
                batch["current_logps"] = trainer._get_per_token_logps_and_entropies(
                    model, ids, attention, inputs["completion_ids"].size(1))[0]
        seen.append(batch)
        return original(model, inputs, *a, **k)

    trainer.compute_loss = capture
    trainer.train()
    return trainer, seen


def decode_rows(trainer, batch):
    tok = trainer.processing_class
    prompts = tok.batch_decode(batch["prompt_ids"] * batch["prompt_mask"], skip_special_tokens=True)
    ids = batch["completion_ids"] * batch["completion_mask"]
    return prompts, tok.batch_decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize("behavior_steps", [1, 2])
def test_no_zero_variance_group_reaches_the_loss(tiny_model_dir, tmp_path, behavior_steps):
    trainer, seen = run(tiny_model_dir, tmp_path, behavior_steps)
    assert len(seen) == 4
    for batch in seen:
        assert batch["completion_ids"].size(0) == 16  # the configured 4 groups of 4
        prompts, completions = decode_rows(trainer, batch)
        assert not any(p.startswith(CONSTANT_PREFIX) for p in prompts)
        groups = {}
        for p, c in zip(prompts, completions):
            groups.setdefault(p, []).append(mixed_reward([c], [p])[0])
        assert all(len(set(r)) > 1 for r in groups.values()), groups
        if behavior_steps == 2:  # SOUP keeps groups contiguous
            assert all(len(set(prompts[i : i + 4])) == 1 for i in range(0, 16, 4))
    logs = [h for h in trainer.state.log_history if "dynamic_sampling/rounds" in h]
    assert len(logs) == 4 and any(h["dynamic_sampling/rounds"] > 0 for h in logs)
    assert all(h["dynamic_sampling/kept_group_frac"] <= 1 and h["dynamic_sampling/unfilled_group_frac"] == 0
               for h in logs)


def test_refilled_soup_groups_are_on_policy(tiny_model_dir, tmp_path):
    """A refill on a spliced step is a fresh group of the current policy: no prefix, current-policy denominators."""
    trainer, seen = run(tiny_model_dir, tmp_path, behavior_steps=2, capture_policy=True)
    refilled = 0
    for batch in seen[1::2]:  # step 2 of each cycle
        prompts, _ = decode_rows(trainer, batch)
        rows = torch.tensor([p not in batch["cycle_prompts"] for p in prompts])
        refilled += int(rows.sum())
        mask = batch["completion_mask"][rows].bool()
        assert batch["soup_prefix_mask"][rows].sum() == 0
        # NaN means "the current policy at loss time" (filled in by the loss forward)
        old = fill_current_logps(batch["old_per_token_logps"], batch["current_logps"])
        assert torch.allclose(old[rows][mask], batch["current_logps"][rows][mask], atol=1e-5)
    assert refilled > 0


def test_rounds_run_out_and_the_step_trains_on_what_it_has(tiny_model_dir, tmp_path, caplog):
    only_constant = [f"0+{b}=" for b in range(8)] + [f"{a}+{b}=" for a in range(1, 3) for b in range(4)]
    trainer, seen = run(tiny_model_dir, tmp_path, behavior_steps=1, max_rounds=0, prompts=only_constant)
    assert "dynamic_sampling_max_rounds" in caplog.text
    for batch in seen:
        prompts, _ = decode_rows(trainer, batch)
        constant_rows = torch.tensor([p.startswith(CONSTANT_PREFIX) for p in prompts])
        assert batch["completion_mask"][constant_rows].sum() == 0  # out of the loss and of its token count
        loss_tokens = batch["completion_mask"].sum()
        assert batch["num_items_in_batch"] == loss_tokens
    logs = [h for h in trainer.state.log_history if "dynamic_sampling/unfilled_group_frac" in h]
    assert any(h["dynamic_sampling/unfilled_group_frac"] > 0 for h in logs)


def test_bad_max_rounds_is_named():
    with pytest.raises(ValueError, match="dynamic_sampling_max_rounds must be an integer >= 0"):
        SOUPConfig(output_dir="x", dynamic_sampling=True, dynamic_sampling_max_rounds=-1, use_cpu=True, bf16=False)


# ---------------------------------------------------------------------------------------------- every trainer


def baseline_batches(trainer) -> list:
    """Every micro-batch the trainer's loss receives (a copy)."""
    seen, original = [], trainer.compute_loss

    def capture(model, inputs, *a, **k):
        seen.append({key: v.detach().clone() if isinstance(v, torch.Tensor) else v for key, v in inputs.items()})
        return original(model, inputs, *a, **k)

    trainer.compute_loss = capture
    return seen


def assert_no_zero_variance_group(trainer, seen, rows):
    for batch in seen:
        assert batch["completion_ids"].size(0) == rows
        prompts, completions = decode_rows(trainer, batch)
        assert not any(p.startswith(CONSTANT_PREFIX) for p in prompts)
        groups = {}
        for p, c in zip(prompts, completions):
            groups.setdefault(p, []).append(mixed_reward([c], [p])[0])
        assert all(len(set(r)) > 1 for r in groups.values()), groups
    logs = [h for h in trainer.state.log_history if "dynamic_sampling/rounds" in h]
    assert logs and any(h["dynamic_sampling/rounds"] > 0 for h in logs)


def test_m2po_queues_only_groups_with_reward_variance(tiny_model_dir, make_config):
    """Dynamic sampling is a feature of every trainer: M2PO filters and refills a batch when it samples it, before it
    queues it, and every queued batch is trained on with the sampling policy's log-probs (refills included)."""
    prompts = [f"{a}+{b}=" for a in range(4) for b in range(8)]  # a quarter of them constant
    args = make_config(M2POConfig, m2po_staleness=1, dynamic_sampling=True, per_device_train_batch_size=16,
                       max_completion_length=6)  # fmt: skip
    trainer = M2POTrainer(tiny_model_dir, mixed_reward, args=args, train_dataset=Dataset.from_dict({"prompt": prompts}))
    seen = baseline_batches(trainer)
    trainer.train()
    assert len(seen) == 4
    assert_no_zero_variance_group(trainer, seen, 16)
    for batch in seen:
        assert not torch.isnan(batch["old_per_token_logps"][batch["completion_mask"].bool()]).any()


def test_luffy_refill_groups_carry_their_trace_rows(tiny_model_dir, make_config):
    """LUFFY's groups are filtered on all their rows' rewards, and a refill group is scored as LUFFY scores a group:
    its last row is the prompt's trace."""
    prompts = [f"{a}+{b}=" for a in range(4) for b in range(8)]
    data = Dataset.from_dict({"prompt": prompts, "target": ["1" * (len(p) % 4 + 1) for p in prompts]})
    args = make_config(LUFFYConfig, dynamic_sampling=True, per_device_train_batch_size=16, max_completion_length=6,
                       remove_unused_columns=False)  # fmt: skip
    trainer = LUFFYTrainer(tiny_model_dir, mixed_reward, args=args, train_dataset=data)
    seen = baseline_batches(trainer)
    trainer.train()
    assert_no_zero_variance_group(trainer, seen, 16)
    for batch in seen:
        prompts, _ = decode_rows(trainer, batch)
        trace_rows = batch["off_policy_mask"].any(dim=1).tolist()
        per_group = {}
        for prompt, is_trace in zip(prompts, trace_rows):  # GRPOTrainer shuffles the rows of a batch
            per_group.setdefault(prompt, []).append(is_trace)
        assert len(per_group) == 4 and all(len(rows) == 4 and sum(rows) == 1 for rows in per_group.values()), per_group
