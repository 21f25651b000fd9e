"""History-seeded prefixes (`soup_behavior_source="history"`): the store on hand-made tensors, then real tiny-model runs
checked against fresh models rebuilt from parameter snapshots.

A run over 4 prompts with 2 prompts per step sees every prompt again every 2 steps, so from step 3 on every row is cut
from the rollout its prompt was last trained on. The checks: prefixes are those stored rollouts' first tokens, every
prefix token's denominator is the log-prob under the policy that sampled it (whatever step that was), continuation
denominators are the current policy's, the loss equals an independent recomputation, steps with history decode only
continuations (exact token counts), a rollout older than `soup_history_max_age` is sampled afresh, and a run resumed
from a checkpoint ends with the parameters of the uninterrupted run.
"""

from collections import defaultdict
from functools import partial

import pytest
import torch
from transformers import GenerationMixin

from soup_trl import SOUPConfig, SOUPTrainer
from soup_trl.soup import behavior
from soup_trl.soup.history import Record, Rollout, RolloutHistory, prompt_key, trained_rollouts
from soup_trl.testing.contract import (
    ContractRecorder,
    broken_groups,
    sampled_at_denominators,
    step_policies,
    with_global_steps,
)
from soup_trl.testing.rewards import shaped_reward
from soup_trl.testing.snapshots import SnapshotPolicy, rows

TEMPERATURE = 0.8
MAX_LEN = 10
G = 4

# ---------------------------------------------------------------------------------------------- the store


def rollout(ids, step, logp=-1.0):
    n = len(ids)
    return Rollout.of(torch.tensor(ids), torch.full((n,), logp), torch.full((n,), step))


def records(key, step, slots=range(G), order=0, logp=-1.0):
    return [Record(key, s, order + s, step, rollout([s + 1, s + 2], step, logp)) for s in slots]


def test_prompt_key_depends_on_the_tokens_only():
    assert prompt_key([1, 2, 3]) == prompt_key((1, 2, 3)) == prompt_key(torch.tensor([1, 2, 3]).tolist())
    assert prompt_key([1, 2, 3]) != prompt_key([1, 2, 4]) and len(prompt_key([5])) == 16


def test_a_group_is_served_only_when_complete_and_young_enough():
    history = RolloutHistory(G, max_age=3)
    key = prompt_key([7])
    history.add(records(key, step=2, slots=range(G - 1)))
    assert history.group(key, 3) is None and history.age(key, 3) is None and len(history) == 0  # a slot is missing
    history.add(records(key, step=2, slots=[G - 1]))
    assert len(history) == 1 and history.age(key, 4) == 2
    assert [r.completion_ids.tolist() for r in history.group(key, 5)] == [[s + 1, s + 2] for s in range(G)]
    assert history.group(key, 6) is None  # 4 steps old
    assert RolloutHistory(G).group(key, 6) is None  # unknown prompt


def test_age_is_that_of_the_oldest_token():
    history = RolloutHistory(1, max_age=9)
    key = prompt_key([1])
    spliced = Rollout.of(torch.tensor([4, 5, 6]), torch.zeros(3), torch.tensor([1, 1, 9]))  # prefix from step 1
    history.add([Record(key, 0, 0, 9, spliced)])
    assert history.age(key, 10) == 9 and history.group(key, 10) is not None
    assert history.group(key, 11) is None  # its prefix is 10 steps old


def test_what_can_no_longer_be_served_is_evicted_and_the_store_compacted():
    """Ages only grow: a rollout older than max_age is dropped when the store next takes rows, and once the dropped
    tokens outnumber the live ones the store keeps only the live ones (their tokens unchanged)."""
    history = RolloutHistory(1, max_age=3, compact_tokens=0)
    old, young = prompt_key([1]), prompt_key([2])
    history.add([Record(old, 0, 0, 0, rollout([5, 6, 7], 0))])
    history.add([Record(young, 0, 0, 3, rollout([8, 9], 3))])
    assert len(history) == 2 and history.store.length == 5
    history.add([Record(young, 0, 0, 4, rollout([10, 11], 4))])  # step 4: the old prompt's rollout is 4 steps old
    assert len(history) == 1 and history.group(old, 4) is None
    assert history.store.length == 2 and history.num_tokens() == 2  # compacted: the young prompt's newest only
    assert history.group(young, 5)[0].completion_ids.tolist() == [10, 11]


def test_rows_follow_group_slots_and_mark_rows_without_history():
    history = RolloutHistory(2)
    history.add(records(prompt_key([1]), step=0, slots=[0, 1]))
    stored, ages = history.rows([[1], [1], [2], [2]], step=4)
    assert [r.completion_ids.tolist() for r in stored[:2]] == [[1, 2], [2, 3]] and stored[2:] == [None, None]
    assert ages[:2] == [4.0, 4.0] and all(a != a for a in ages[2:])
    with pytest.raises(ValueError, match="not one prompt's group"):
        history.rows([[1], [2]], step=4)
    with pytest.raises(ValueError, match="whole groups"):
        history.rows([[1]], step=4)


def test_the_same_records_in_any_order_give_the_same_store():
    key = prompt_key([3])
    a, b = RolloutHistory(G), RolloutHistory(G)
    first, second = records(key, 1, order=0, logp=-1.0), records(key, 1, order=10, logp=-2.0)  # one slot twice
    a.add(first + second)
    b.add(list(reversed(second)) + list(reversed(first)))
    assert [r.logps.tolist() for r in a.group(key, 1)] == [r.logps.tolist() for r in b.group(key, 1)] == [[-2.0] * 2] * G


def test_state_dict_round_trip_and_group_size_check():
    history = RolloutHistory(G, max_age=8)
    history.add(records(prompt_key([1]), step=3))
    restored = RolloutHistory(G, max_age=8)
    restored.load_state_dict(history.state_dict())
    assert restored.num_tokens() == history.num_tokens() == 2 * G
    assert restored.nbytes() == history.nbytes() == 2 * G * (4 + 4 + 4)
    with pytest.raises(ValueError, match="num_generations=2"):
        RolloutHistory(2).load_state_dict(history.state_dict())


def test_rollouts_refuse_mismatched_or_nan_fields():
    with pytest.raises(ValueError, match="must all match"):
        Rollout.of(torch.tensor([1, 2]), torch.zeros(1), torch.zeros(2))
    with pytest.raises(ValueError, match="NaN"):
        Rollout.of(torch.tensor([1]), torch.tensor([float("nan")]), torch.zeros(1))


def test_trained_rollouts_keep_real_tokens_only():
    ids = torch.tensor([[5, 6, 2, 0], [7, 0, 0, 0], [8, 9, 9, 9]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    logps = -torch.arange(12.0).view(3, 4)
    steps = torch.tensor([[1, 1, 4, 4], [4, 4, 4, 4], [4, 4, 4, 4]])
    out = trained_rollouts(ids, mask, logps, steps, entropies=torch.ones(3, 4))
    assert [r.completion_ids.tolist() for r in out] == [[5, 6, 2], [7], []]
    assert out[0].logps.tolist() == [0.0, -1.0, -2.0] and out[0].sampled_at.tolist() == [1, 1, 4]
    assert out[0].entropies.dtype == torch.float16 and out[2].oldest(default=4) == 4


def test_config_names_bad_history_fields(tmp_path):
    with pytest.raises(ValueError, match="soup_behavior_source must be 'fresh' or 'history', got 'past'"):
        SOUPConfig(output_dir=str(tmp_path), soup_behavior_source="past", use_cpu=True, bf16=False)
    with pytest.raises(ValueError, match="soup_history_max_age must be an integer >= 0 or None"):
        SOUPConfig(output_dir=str(tmp_path), soup_behavior_source="history", soup_history_max_age=-1, use_cpu=True,
                   bf16=False)  # fmt: skip
    with pytest.raises(ValueError, match="with soup_behavior_source='history'"):
        SOUPConfig(output_dir=str(tmp_path), soup_behavior_source="history", soup_behavior_steps=1, num_iterations=2,
                   use_cpu=True, bf16=False)  # fmt: skip


# ---------------------------------------------------------------------------------------------- tiny-model runs


class DecodeLog:
    """Rows each behavior-sampling call asked for, and the tokens each `generate` call decoded per row."""

    def __init__(self, trainer, monkeypatch):
        self.behavior_rows, self.decoded = [], []
        sample = behavior.sample_rows  # every behavior-sampling call of a cycle

        def counting(owner, prompt_ids, *args):
            self.behavior_rows.append((trainer.state.global_step, len(prompt_ids)))
            return sample(owner, prompt_ids, *args)

        monkeypatch.setattr(behavior, "sample_rows", counting)
        original, pad_id = GenerationMixin.generate, trainer.processing_class.pad_token_id

        def generate(model, *args, **kwargs):
            out = original(model, *args, **kwargs)
            new = out[:, kwargs["input_ids"].size(1) :]
            self.decoded.append((trainer.state.global_step, int((new != pad_id).sum())))
            return out

        monkeypatch.setattr(GenerationMixin, "generate", generate)


def history_run(tiny_model_dir, make_config, make_dataset, monkeypatch, **overrides):
    settings = dict(
        soup_behavior_source="history", soup_behavior_steps=1, soup_truncation="ratio", soup_prefix_ratio=0.5,
        per_device_train_batch_size=4, gradient_accumulation_steps=2, num_generations=G, max_completion_length=MAX_LEN,
        temperature=TEMPERATURE, max_steps=6, generation_kwargs={"suppress_tokens": [0]},  # never the padding token
        soup_history_max_epochs=None,  # 4 prompts, 2 a step: every return is served (a test below sets a limit)
    )  # fmt: skip
    settings.update(overrides)
    args = make_config(**settings)
    trainer = SOUPTrainer(tiny_model_dir, shaped_reward, args=args, train_dataset=make_dataset(4))
    assert trainer.processing_class.pad_token_id == 0
    recorder = ContractRecorder(trainer)
    log = DecodeLog(trainer, monkeypatch)
    trainer.train()
    return trainer, recorder.records, log


@pytest.fixture(scope="module", params=[(1, 1), (2, 1), (1, 2)], ids=["T1", "T2", "T1-pool2"])
def run(request, tiny_model_dir, make_config, make_dataset):
    t, pool = request.param
    with pytest.MonkeyPatch.context() as monkeypatch:
        trainer, records, log = history_run(
            tiny_model_dir, make_config, make_dataset, monkeypatch, soup_behavior_steps=t, max_steps=6 if t == 1 else 8,
            soup_history_pool=pool,
        )  # fmt: skip
    return tiny_model_dir, trainer, records, log


Policy = partial(SnapshotPolicy, temperature=TEMPERATURE)


def test_every_prompt_seen_before_is_cut_from_its_history(run):
    _, trainer, records, log = run
    with_global_steps(records)
    frac = [h["soup/history_row_frac"] for h in trainer.state.log_history if "soup/history_row_frac" in h]
    assert frac[:2] == [0.0, 0.0] and all(f == 1.0 for f in frac[2:])  # 4 prompts, 2 a step: history from step 3 on
    assert broken_groups(records, G) == 0
    pool = trainer.args.soup_history_pool
    trained = defaultdict(list)  # prompt -> the completions of its last `pool` training steps
    for step in records["steps"]:
        batch_rows = [(tuple(p), c, k) for b in step["batches"] for p, c, k, _ in rows(b)]
        if step["global_step"] >= 2:
            for prompt, completion, k in batch_rows:
                assert any(c[:k] == completion[:k] for c in trained[prompt][-pool * G :]), (step["global_step"], prompt)
            assert sum(k for _, _, k in batch_rows) > 0
        for prompt in {p for p, _, _ in batch_rows}:
            visit = [c for p, c, _ in batch_rows if p == prompt]
            assert len(visit) == G
            trained[prompt] += visit


def test_prefix_denominators_are_the_policies_that_sampled_each_token(run):
    model_dir, _, records, _ = run
    measured, old_tokens = sampled_at_denominators(with_global_steps(records), partial(Policy, model_dir))
    assert measured.rows > 0 and measured.error < 1e-4
    assert measured.other > 1e-3  # the sampling and current policies really differ, so the check can fail
    assert old_tokens > 0  # some prefix tokens are older than the previous step: a prefix of a spliced rollout


def test_sampled_at_names_a_step_that_produced_the_token(run):
    _, _, records, _ = run
    with_global_steps(records)
    produced = defaultdict(set)  # step -> (prompt, completion prefix ending at a token that step trained on)
    for step in records["steps"]:
        for b in step["batches"]:
            for p, c, _, i in rows(b):
                at = b["soup_sampled_at"][i, : len(c)].tolist()
                for j in range(len(c)):
                    produced[at[j]].add((tuple(p), tuple(c[: j + 1])))
    for step in records["steps"]:
        for b in step["batches"]:
            for p, c, k, i in rows(b):
                for j, s in enumerate(b["soup_sampled_at"][i, :k].tolist()):
                    assert (tuple(p), tuple(c[: j + 1])) in produced[s] and s <= step["global_step"]


def test_continuations_are_the_current_policy_and_the_loss_recomputes(run):
    model_dir, trainer, records, _ = run
    with_global_steps(records)
    policies = step_policies(records, partial(Policy, model_dir))
    eps_low, eps_high = trainer.args.epsilon, trainer.args.epsilon_high
    index = {id(s): s for s in records["steps"]}
    for record in records["losses"]:
        step = index[id(record["step"])]
        policy = Policy(model_dir, record["params"])
        step_tokens = sum(int(b["completion_mask"].sum()) for b in step["batches"])
        inputs, total = record["inputs"], 0.0
        for prompt, completion, k, i in rows(inputs):
            at = inputs["soup_sampled_at"][i, : len(completion)].tolist()
            old = torch.stack([policies[s].logps(prompt, completion)[j] for j, s in enumerate(at)])
            assert all(s == step["global_step"] for s in at[k:])  # continuation: written at this step
            logp = policy.logps(prompt, completion)
            ratio = torch.exp(logp - old)
            advantage = inputs["advantages"][i]
            per_token = -torch.min(ratio * advantage, ratio.clamp(1 - eps_low, 1 + eps_high) * advantage)
            total += per_token.sum().item()
        assert record["loss"] == pytest.approx(total / step_tokens, abs=1e-5)


def test_steps_with_history_decode_only_continuations(run):
    _, trainer, records, log = run
    with_global_steps(records)
    rows_per_step = 8
    # behavior sampling: the first epoch's prompts only (2 steps of 2 prompts), nothing once every prompt has history
    assert sum(n for _, n in log.behavior_rows) == 2 * rows_per_step
    assert all(n == 0 for s, n in log.behavior_rows if s >= 2)
    # Exact decoded counts: each trained token was decoded once (a whole row's all, a spliced row's continuation), and
    # so was each fresh behavior row of a later cycle step, decoded in full and then cut; nothing else.
    trained = sum(len(c) - k for step in records["steps"] for b in step["batches"] for _, c, k, _ in rows(b))
    cut_fresh = sum(
        len(cycle.completion_ids[r]) for cycle in (c["cycle"] for c in records["cycles"]) for r in range(len(cycle.whole))
        if not cycle.whole[r] and cycle.history_age[r].isnan()
    )  # fmt: skip
    assert sum(n for _, n in log.decoded) == trained + cut_fresh
    logged = [h["decoded_tokens"] for h in trainer.state.log_history if "decoded_tokens" in h]
    assert logged == [sum(n for s, n in log.decoded if s == step) for step in range(len(logged))]
    history_steps = [n for s, n in log.decoded if s >= 2]
    assert sum(history_steps) == sum(
        len(c) - k for step in records["steps"][2:] for b in step["batches"] for _, c, k, _ in rows(b)
    )


def test_rollouts_older_than_the_limit_are_sampled_afresh(tiny_model_dir, make_config, make_dataset, monkeypatch):
    trainer, records, log = history_run(
        tiny_model_dir, make_config, make_dataset, monkeypatch, soup_history_max_age=0, max_steps=5
    )
    frac = [h["soup/history_row_frac"] for h in trainer.state.log_history if "soup/history_row_frac" in h]
    assert frac == [0.0] * 5  # a stored rollout is at least one step old: too old for a limit of 0
    assert [n for _, n in log.behavior_rows] == [8] * 5
    # stored all the same, and evicted once they are too old to serve: what remains is the last step's two groups
    assert len(trainer.history) == 2 and trainer.history.num_tokens() > 0


@pytest.mark.parametrize("source", ["fresh", "history"])
def test_resume_with_history_is_exact(tiny_model_dir, make_config, make_dataset, tmp_path, source):
    def train(name, resume=None):
        args = make_config(
            output_dir=tmp_path / name, soup_behavior_source=source, soup_behavior_steps=2,
            per_device_train_batch_size=4, gradient_accumulation_steps=2, num_generations=G, max_steps=7,
            save_strategy="steps", save_steps=5,
        )  # fmt: skip
        trainer = SOUPTrainer(tiny_model_dir, shaped_reward, args=args, train_dataset=make_dataset(4))
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    full = train("full")
    checkpoint = tmp_path / "full" / "checkpoint-5"
    assert (checkpoint / "soup_history.index.pt").exists() == (source == "history")
    assert (checkpoint / "soup_history.ids.bin").exists() == (source == "history")
    assert (checkpoint / "soup_cycle_rank0.pt").exists()
    resumed = train("resumed", resume=str(checkpoint))
    expected = dict(full.model.named_parameters())
    for name, param in resumed.model.named_parameters():
        assert torch.equal(param, expected[name]), name
    if source == "history":
        assert stored(resumed.history) == stored(full.history)
        assert any(h.get("soup/history_row_frac", 0) > 0 for h in resumed.state.log_history)


def stored(history: RolloutHistory) -> dict:
    """Everything a history holds, as plain values: per prompt key, the (slot, step, oldest token's step) of each
    rollout with its token ids, log-probs and sampling steps."""
    state, held, offset = history.state_dict(), {}, 0
    fields = {name: values.tolist() for name, values in state["fields"].items()}
    for key, (slot, recorded_at, oldest, length, _) in zip(state["keys"].tolist(), state["entries"].tolist()):
        span = slice(offset, offset + length)
        held.setdefault(bytes(key), []).append(
            (slot, recorded_at, oldest, fields["ids"][span], fields["logps"][span], fields["sampled_at"][span])
        )
        offset += length
    return held


def test_a_pool_keeps_the_last_k_rollouts_of_each_slot_and_draws_among_the_young():
    history = RolloutHistory(2, max_age=5, pool=2)
    key = prompt_key([9])
    for step in (1, 4, 6):  # three visits: the first one falls out of the pool
        history.add(records(key, step, slots=[0, 1], logp=-float(step)))
    entries = history.state_dict()["entries"].tolist()  # (slot, recorded_at, oldest, length, entropies) each
    assert [[at for s, at, *_ in entries if s == slot] for slot in range(2)] == [[4, 6], [4, 6]]
    assert history.num_tokens() == 2 * 2 * 2
    draws = {tuple(r.logps[0].item() for r in history.group(key, step)) for step in range(7, 10)}
    assert draws <= {(a, b) for a in (-4.0, -6.0) for b in (-4.0, -6.0)} and len(draws) > 1
    def drawn(step):
        return [(r.completion_ids.tolist(), r.logps.tolist()) for r in history.group(key, step)]

    assert drawn(7) == drawn(7)  # the same draw for the same prompt and step
    assert {r.logps[0].item() for r in history.group(key, 10)} == {-6.0}  # step 4's rollouts are too old at 10
    assert history.group(key, 12) is None
    restored = RolloutHistory(2, max_age=5, pool=1)  # a smaller pool keeps the newest
    restored.load_state_dict(history.state_dict())
    assert restored.num_tokens() == 2 * 2


def test_history_with_dynamic_sampling(tiny_model_dir, make_config, make_dataset):
    """Dynamic sampling replaces zero-variance groups by fresh groups of further prompts (trained on, not stored: the
    store keeps the rows of the step's own prompts); the store fills and serves all the same."""
    from datasets import Dataset

    from soup_trl.testing.rewards import CONSTANT_PREFIX, mixed_reward

    prompts = Dataset.from_dict({"prompt": [f"{CONSTANT_PREFIX}1+1=", "1+2=", "2+2=", "3+1="]})
    args = make_config(
        soup_behavior_source="history", soup_behavior_steps=1, per_device_train_batch_size=4,
        gradient_accumulation_steps=2, num_generations=G, max_steps=4, dynamic_sampling=True,
        dynamic_sampling_max_rounds=2,
    )  # fmt: skip
    trainer = SOUPTrainer(tiny_model_dir, mixed_reward, args=args, train_dataset=prompts)
    trainer.train()
    history = trainer.history
    assert 0 < len(history) <= 4
    served = [h["soup/history_row_frac"] for h in trainer.state.log_history if "soup/history_row_frac" in h]
    assert served[:2] == [0.0, 0.0] and any(f > 0 for f in served[2:])
