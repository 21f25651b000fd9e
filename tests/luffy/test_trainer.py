"""LUFFYTrainer: its contract on real tiny-model runs, the loss by hand, the data rule, the training script, resume.

The contract checks rebuild fresh models from parameter snapshots (never `copy.deepcopy` of the trainer's model,
whose forward TRL patches) and recompute the trace tokens, masks and losses from the tokens alone.
"""

import json

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import GRPOTrainer

from soup_trl import LUFFYConfig, LUFFYTrainer
from soup_trl.rewards.arithmetic import scratchpad
from soup_trl.testing.rewards import shaped_reward
from soup_trl.testing.runs import small_config
from soup_trl.testing.snapshots import SnapshotPolicy, clone_batch, snapshot

TEMPERATURE = 0.8
MAX_LEN = 10
G = 4  # num_generations
B = 8  # per_device_train_batch_size
GA = 2  # gradient_accumulation_steps
SPG = 4  # steps_per_generation: each generation serves 2 optimizer steps, so old log-probs differ from current ones
GAMMA = 0.1


# ---------------------------------------------------------------------------------------------- a real run


def trace_text(a, b):
    """Traces of the test dataset: short scratchpads, and (a + b even) 13-character ones cut to MAX_LEN tokens."""
    return scratchpad(a, b, width=4) if (a + b) % 2 == 0 else scratchpad(a, b)


def trace_dataset():
    pairs = [(a, b) for a in range(10) for b in range(10)]
    # the LUFFY data's chat-message format (the other tests use plain strings)
    targets = [[{"role": "assistant", "content": trace_text(a, b)}] for a, b in pairs]
    return Dataset.from_dict({"prompt": [f"{a}+{b}=" for a, b in pairs], "target": targets})


def make_config(output_dir, **overrides):
    settings = dict(
        per_device_train_batch_size=B, gradient_accumulation_steps=GA, steps_per_generation=SPG, num_generations=G,
        max_completion_length=MAX_LEN, temperature=TEMPERATURE,
    )
    return small_config(output_dir, LUFFYConfig, **{**settings, **overrides})


def run_luffy(model_dir, output_dir, num_traces):
    trainer = LUFFYTrainer(
        model_dir, shaped_reward, args=make_config(output_dir, luffy_num_traces=num_traces), train_dataset=trace_dataset()
    )
    records = {"scored": [], "sampled": [], "losses": []}
    score, compute_loss = trainer._generate_and_score_completions, trainer.compute_loss
    base_generate = GRPOTrainer._generate_single_turn

    def recording_score(inputs):
        before = snapshot(trainer.model)
        output = score(inputs)
        records["scored"].append({"inputs": inputs, "params": before, "output": clone_batch(output)})
        return output

    def recording_generate(self, prompt_ids, *args, **kwargs):
        records["sampled"].append([list(p) for p in prompt_ids])
        return base_generate(self, prompt_ids, *args, **kwargs)

    def recording_loss(model, inputs, *args, **kwargs):
        before = snapshot(trainer.model)
        loss = compute_loss(model, inputs, *args, **kwargs)
        records["losses"].append(
            {"inputs": clone_batch(inputs), "params": before, "loss": loss.item(), "scored": records["scored"][-1]}
        )
        return loss

    trainer._generate_and_score_completions = recording_score
    trainer.compute_loss = recording_loss
    GRPOTrainer._generate_single_turn = recording_generate  # every sampling call, passed on to TRL's own
    try:
        trainer.train()
    finally:
        GRPOTrainer._generate_single_turn = base_generate
    return trainer, records


@pytest.fixture(scope="module", params=[1, 2], ids=["1-trace", "2-traces"])
def luffy_run(request, tiny_model_dir, tmp_path_factory):
    trainer, records = run_luffy(tiny_model_dir, tmp_path_factory.mktemp("luffy"), request.param)
    return tiny_model_dir, trainer, records, request.param


def unpadded(batch, i):
    prompt = batch["prompt_ids"][i][batch["prompt_mask"][i].bool()].tolist()
    completion = batch["completion_ids"][i][batch["completion_mask"][i].bool()].tolist()
    return prompt, completion


def expected_trace_ids(tokenizer, prompt_ids):
    """The trace row's completion, from the prompt's text and the tokenizer alone."""
    a, b = tokenizer.decode(prompt_ids, skip_special_tokens=True).rstrip("=").split("+")
    ids = tokenizer(trace_text(int(a), int(b)), add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return ids[:MAX_LEN]


def test_groups_hold_exactly_the_trace_rows(luffy_run):
    model_dir, _, records, n = luffy_run
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    cut = 0
    assert len(records["scored"]) == 2
    for record in records["scored"]:
        output = record["output"]
        rows = [unpadded(output, i) for i in range(output["prompt_ids"].size(0))]
        assert len(rows) == B * SPG
        for g in range(0, len(rows), G):
            group = rows[g : g + G]
            assert len({tuple(p) for p, _ in group}) == 1
            expected = expected_trace_ids(tokenizer, group[0][0])
            cut += len(expected) == MAX_LEN and expected[-1] != tokenizer.eos_token_id
            for k, (_, completion) in enumerate(group):
                mask = output["off_policy_mask"][g + k]
                if k >= G - n:  # the trace rows: the tokenized trace, EOS, cut to max_completion_length
                    assert completion == expected
                    assert torch.equal(mask, output["completion_mask"][g + k])
                else:
                    assert mask.sum() == 0
            assert abs(output["advantages"][g : g + G].sum().item()) < 1e-4  # traces share the group's advantage
    assert cut > 0  # some traces really were cut


def test_only_sampled_rows_are_decoded(luffy_run):
    _, _, records, n = luffy_run
    assert len(records["sampled"]) == len(records["scored"])  # one sampling call per generation batch
    for prompts, record in zip(records["sampled"], records["scored"]):
        output = record["output"]
        sampled_rows = [i for i in range(B * SPG) if i % G < G - n]
        assert len(prompts) == B * SPG * (G - n) // G
        assert prompts == [unpadded(output, i)[0] for i in sampled_rows]


def test_every_micro_batch_carries_off_policy_mask(luffy_run):
    model_dir, _, records, n = luffy_run
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert len(records["losses"]) == 4 * GA
    trace_rows = 0
    for record in records["losses"]:
        inputs = record["inputs"]
        mask, completion_mask = inputs["off_policy_mask"], inputs["completion_mask"]
        assert mask.shape == completion_mask.shape == (B, inputs["completion_ids"].size(1))
        for i in range(B):
            prompt, completion = unpadded(inputs, i)
            if mask[i].any():
                assert torch.equal(mask[i], completion_mask[i])
                assert completion == expected_trace_ids(tokenizer, prompt)
                trace_rows += 1
    assert trace_rows == 2 * (B * SPG // G) * n  # every trace row of both generation batches, exactly once each
    # ... and nothing else: the sampled rows (seen at scoring time) carry no mask
    assert sum(int(r["output"]["off_policy_mask"].any(1).sum()) for r in records["scored"]) == trace_rows


def token_loss(policy, old_policy, prompt, completion, advantage, is_trace, eps_low, eps_high):
    """Independent per-token LUFFY loss of one row: shaped for a trace, clipped DAPO surrogate otherwise."""
    logp = policy.logps(prompt, completion)
    if is_trace:
        p = torch.exp(logp)
        return -advantage * p / (p + GAMMA), torch.zeros(())
    ratio = torch.exp(logp - old_policy.logps(prompt, completion))
    loss = -torch.min(ratio * advantage, ratio.clamp(1 - eps_low, 1 + eps_high) * advantage)
    clipped = ((ratio > 1 + eps_high) & (advantage > 0)) | ((ratio < 1 - eps_low) & (advantage < 0))
    return loss, clipped.sum()


def test_loss_equals_independent_recomputation(luffy_run):
    model_dir, trainer, records, _ = luffy_run
    eps_low, eps_high = trainer.args.epsilon, trainer.args.epsilon_high
    clipped = 0
    for record in records["losses"]:
        scored = record["scored"]
        old_policy = SnapshotPolicy(model_dir, scored["params"], TEMPERATURE)  # the policy that scored the batch
        policy = SnapshotPolicy(model_dir, record["params"], TEMPERATURE)
        generation_tokens = int(scored["output"]["completion_mask"].sum())  # both kinds of tokens
        inputs, total = record["inputs"], 0.0
        for i in range(B):
            prompt, completion = unpadded(inputs, i)
            loss, n_clipped = token_loss(
                policy, old_policy, prompt, completion, inputs["advantages"][i], inputs["off_policy_mask"][i].any(),
                eps_low, eps_high,
            )
            total += loss.sum().item()
            clipped += int(n_clipped)
        assert record["loss"] == pytest.approx(total / (generation_tokens * GA / SPG), abs=1e-5)
    assert clipped > 0  # the clipped branch of the sampled tokens was exercised
    assert any(abs(r["loss"]) > 1e-3 for r in records["losses"])


def test_metrics_are_logged(luffy_run):
    _, trainer, records, n = luffy_run
    steps = [h for h in trainer.state.log_history if "loss" in h]
    assert len(steps) == 4
    for h in steps:  # every micro-batch of these runs holds trace tokens
        assert 0 < h["luffy/off_policy_token_frac"] < 1
        assert 0 < h["luffy/off_policy_prob_mean"] < 1
        assert 0 < h["luffy/shaping_weight_mean"] <= 0.25  # gamma p / (p + gamma)^2 peaks at 1/4
    for h in steps[::2]:  # steps 1 and 3 generated their batch (steps_per_generation = 2 optimizer steps)
        assert h["luffy/dropped_prompts"] == 0
        assert "luffy/on_policy_reward" in h and "luffy/trace_reward" in h


def test_trace_rewards_are_the_trace_rows_rewards(luffy_run):
    model_dir, trainer, records, n = luffy_run
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    steps = [h for h in trainer.state.log_history if "luffy/trace_reward" in h]
    for record, h in zip(records["scored"], steps, strict=True):
        output = record["output"]
        traces = [tokenizer.decode(unpadded(output, i)[1], skip_special_tokens=True) for i in range(B * SPG)]
        rewards = shaped_reward(traces)
        expected = [r for i, r in enumerate(rewards) if i % G >= G - n]
        assert h["luffy/trace_reward"] == pytest.approx(sum(expected) / len(expected), abs=1e-6)


# ---------------------------------------------------------------------------------------------- the loss, by hand


def test_compute_loss_and_gradient_on_a_hand_made_batch(tiny_model_dir, tmp_path):
    """The trainer's loss and gradient on a batch whose advantages, masks, old log-probs and normaliser are chosen by
    hand: a sampled row whose ratios clip on both sides, and a trace row, against a fresh model's recomputation."""
    trainer = LUFFYTrainer(
        tiny_model_dir, shaped_reward, args=make_config(tmp_path), train_dataset=trace_dataset()
    )
    model = trainer.model
    model.eval()  # eval: no accumulation rescaling of the normaliser
    tokenizer = trainer.processing_class
    prompt = tokenizer(["3+4=", "12+5="])["input_ids"]
    completion = [tokenizer("07|7", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]] * 2
    width = max(map(len, prompt))
    prompt_ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in prompt])
    prompt_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompt])
    completion_ids = torch.tensor(completion)
    completion_mask = torch.ones_like(completion_ids)
    params = snapshot(model)
    fresh = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    fresh.load_state_dict(params)

    def fresh_logps():
        ids = torch.cat([prompt_ids, completion_ids], 1)
        logits = fresh(ids, attention_mask=torch.cat([prompt_mask, completion_mask], 1)).logits
        logits = logits[:, width - 1 : -1] / TEMPERATURE
        return F.log_softmax(logits, -1).gather(2, completion_ids.unsqueeze(2)).squeeze(2)  # (2, C)

    with torch.no_grad():
        shift = torch.tensor([0.5, -0.5, 0.1, 0.0, 0.3])  # ratios e^0.5 and e^-0.5 fall outside [0.8, 1.28]
        old = fresh_logps() - shift
    advantages = torch.tensor([1.5, -0.7])
    off_policy_mask = torch.tensor([[0] * 5, [1] * 5])
    num_items = torch.tensor(40.0)  # as if the generation batch held 40 tokens in all
    inputs = {
        "prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
        "completion_mask": completion_mask, "advantages": advantages, "old_per_token_logps": old,
        "num_items_in_batch": num_items, "off_policy_mask": off_policy_mask,
    }
    loss = trainer.compute_loss(model, inputs)
    loss.backward()

    logps = fresh_logps()
    ratio = torch.exp(logps[0] - old[0])
    sampled = -torch.min(ratio * 1.5, ratio.clamp(0.8, 1.28) * 1.5).sum()
    p = torch.exp(logps[1])
    expected = (sampled + (0.7 * p / (p + GAMMA)).sum()) / 40
    expected.backward()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    grads = dict(model.named_parameters())
    checked = 0
    for name, param in fresh.named_parameters():
        if param.grad is not None and grads[name].grad is not None:
            torch.testing.assert_close(grads[name].grad, param.grad, atol=1e-6, rtol=1e-4)
            checked += param.grad.abs().sum() > 0
    assert checked > 5


# ---------------------------------------------------------------------------------------------- the data rule


def test_missing_trace_column_fails_before_training(tiny_model_dir, tmp_path):
    prompts = Dataset.from_dict({"prompt": ["1+2=", "3+4="], "solution": ["3", "7"]})
    with pytest.raises(ValueError, match="luffy_trace_field='target': the training dataset has no column 'target'"):
        LUFFYTrainer(tiny_model_dir, shaped_reward, args=make_config(tmp_path), train_dataset=prompts)


@pytest.mark.parametrize("empty", [None, "", [{"role": "assistant", "content": ""}]], ids=["none", "blank", "message"])
def test_empty_trace_fails_before_training(tiny_model_dir, tmp_path, empty):
    good = [{"role": "assistant", "content": "03|3"}] if isinstance(empty, list) else "03|3"
    rows = Dataset.from_dict({"prompt": ["1+2=", "3+4=", "5+6="], "target": [good, empty, good]})
    with pytest.raises(ValueError, match=r"luffy_trace_field='target': 1 of 3 training rows .*row 1"):
        LUFFYTrainer(tiny_model_dir, shaped_reward, args=make_config(tmp_path), train_dataset=rows)


def test_traces_beyond_the_context_drop_their_prompts(tiny_model_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    context = AutoModelForCausalLM.from_pretrained(tiny_model_dir).config.max_position_embeddings
    prompts = [f"{a}+{b}=" for a in range(4) for b in range(4)]
    fits = context - len(tokenizer("0+0=")["input_ids"]) - 1  # trace characters (= tokens) that just fit, with EOS
    lengths = [fits + 1 if i % 4 == 0 else fits if i % 4 == 1 else 4 for i in range(len(prompts))]
    traces = [("12," * 30)[:n] for n in lengths]
    rows = Dataset.from_dict({"prompt": prompts, "target": traces})
    trainer = LUFFYTrainer(
        tiny_model_dir, shaped_reward, args=make_config(tmp_path, max_steps=1), train_dataset=rows
    )
    assert trainer.luffy_dropped_prompts == 4
    assert sorted(trainer.train_dataset["prompt"]) == sorted(p for i, p in enumerate(prompts) if i % 4)
    trainer.train()
    assert [h["luffy/dropped_prompts"] for h in trainer.state.log_history if "loss" in h] == [4.0]


# ---------------------------------------------------------------------------------------------- the training script


def test_tiny_recipe_trains_through_the_script(tiny_model_dir, tmp_path):
    from soup_trl.scripts import train

    script_args, training_args, model_args = train.parse_args(
        [
            "--config", "tiny_arithmetic_luffy",
            "--model_name_or_path", tiny_model_dir,
            "--output_dir", str(tmp_path),
            "--max_steps", "2",
            "--logging_steps", "1",
            "--per_device_train_batch_size", "16",
            "--num_generations", "4",
            "--max_train_samples", "64",
            "--arithmetic_max_digits", "2",
            "--num_threads", "1",
        ]
    )
    assert isinstance(training_args, LUFFYConfig) and script_args.method == "luffy"
    train_dataset, _ = train.load_datasets(script_args, training_args)
    a, b = (int(x) for x in train_dataset[0]["prompt"].rstrip("=").split("+"))
    assert train_dataset[0]["target"] == scratchpad(a, b, 2)  # the task's correct scratchpad is the trace
    train.main(script_args, training_args, model_args)
    history = json.loads((tmp_path / "trainer_state.json").read_text())["log_history"]
    assert [h["luffy/trace_reward"] for h in history if "loss" in h] == [1.0, 1.0]  # every trace is a right answer


# ---------------------------------------------------------------------------------------------- resume


def test_resume_mid_run_is_exact(tiny_model_dir, tmp_path):
    def make(output_dir):
        args = make_config(output_dir, max_steps=4, save_strategy="steps", save_steps=2)
        return LUFFYTrainer(tiny_model_dir, shaped_reward, args=args, train_dataset=trace_dataset())

    uninterrupted = make(tmp_path / "full")
    uninterrupted.train()
    resumed = make(tmp_path / "resumed")
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2"))
    expected = dict(uninterrupted.model.named_parameters())
    moved = 0.0
    initial = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    for name, param in resumed.model.named_parameters():
        assert torch.equal(param, expected[name]), name
        moved = max(moved, (param - initial[name]).abs().max().item())
    assert moved > 1e-2
    resumed_steps = [h for h in resumed.state.log_history if "loss" in h and h["step"] > 2]  # after the checkpoint's
    assert [h["step"] for h in resumed_steps] == [3, 4] and all(h["luffy/off_policy_token_frac"] > 0 for h in resumed_steps)
