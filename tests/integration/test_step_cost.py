"""What a SOUP step costs, counted exactly: tokens the sampler decodes and forward passes the trainer makes.

Decoded tokens are read from `generate`'s output: a row decodes until its EOS, its budget or the call's limit, and
a finished row is filled with padding. The padding token is suppressed from sampling here, so trailing padding marks
exactly where a row stopped.
"""

import contextlib

import pytest
import torch
from transformers import GenerationMixin

from soup_trl import SOUPTrainer
from soup_trl.core import lockstep
from soup_trl.soup.continuation import continuation_budgets
from soup_trl.soup.truncation import prefix_budget_tokens
from soup_trl.testing.rewards import shaped_reward

MAX_LEN = 10


def row_decoded_counts(new_tokens: torch.Tensor, eos_id: int, pad_id: int) -> list[tuple[int, bool]]:
    """(tokens decoded, stopped by EOS) per row of a `generate` output: up to its first EOS (included), else its
    non-padding tokens."""
    counts = []
    for row in new_tokens.tolist():
        counts.append((row.index(eos_id) + 1, True) if eos_id in row else (sum(t != pad_id for t in row), False))
    return counts


def test_row_decoded_counts_reads_eos_and_padding():
    new = torch.tensor([[5, 2, 0, 0], [5, 6, 7, 8], [5, 6, 0, 0]])
    assert row_decoded_counts(new, eos_id=2, pad_id=0) == [(2, True), (4, False), (2, False)]


class GenerateLog:
    """Records every `generate` call of a trainer: its phase (behavior sampling or continuation) and per-row counts."""

    def __init__(self, trainer):
        self.trainer, self.calls, self.inside = trainer, [], False

    def install(self, monkeypatch):
        original = GenerationMixin.generate
        tokenizer = self.trainer.processing_class

        def generate(model, *args, **kwargs):
            self.inside = True
            try:
                out = original(model, *args, **kwargs)
            finally:
                self.inside = False
            width = kwargs["input_ids"].size(1)
            plan = self.trainer._plan
            rows = row_decoded_counts(out[:, width:], tokenizer.eos_token_id, tokenizer.pad_token_id)
            self.calls.append(
                {
                    "prefix_lengths": None if plan is None else [len(p) for p in plan.prefixes],
                    "decoded": [count for count, _ in rows],
                    "eos": [eos for _, eos in rows],
                    "width": out.size(1) - width,
                    "step": self.trainer.state.global_step,
                }
            )
            return out

        monkeypatch.setattr(GenerationMixin, "generate", generate)


def soup_run(tiny_model_dir, make_config, make_dataset, monkeypatch, **soup):
    args = make_config(
        max_completion_length=MAX_LEN,
        temperature=1.0,
        generation_kwargs={"suppress_tokens": [0]},  # the padding token (id 0 of the tiny tokenizer)
        max_steps=3,
        **soup,
    )
    trainer = SOUPTrainer(tiny_model_dir, shaped_reward, args=args, train_dataset=make_dataset())
    assert trainer.processing_class.pad_token_id == 0
    log = GenerateLog(trainer)
    log.install(monkeypatch)
    return trainer, log


def test_continuations_decode_exactly_their_budgets(tiny_model_dir, make_config, make_dataset, monkeypatch):
    trainer, log = soup_run(
        tiny_model_dir, make_config, make_dataset, monkeypatch,
        soup_behavior_steps=3, soup_truncation="ratio", soup_prefix_ratio=0.5,
    )
    trainer.train()
    continuations = [c for c in log.calls if c["prefix_lengths"] is not None]
    assert len(continuations) == 2  # steps 2 and 3 of the cycle
    for call in continuations:
        budgets = continuation_budgets(call["prefix_lengths"], MAX_LEN)
        assert len(set(budgets)) > 1  # rows with different budgets share the call
        assert call["width"] <= max(budgets)
        # A row decodes exactly its own budget, or less when it wrote an EOS first: never a longer row's budget
        expected = [d if eos else b for d, eos, b in zip(call["decoded"], call["eos"], budgets)]
        assert call["decoded"] == expected
        assert all(d <= b for d, b in zip(call["decoded"], budgets))
        # the case that matters happened: a row without EOS stopped below the call's longest budget
        assert any(not eos and d < max(budgets) for d, eos in zip(call["decoded"], call["eos"]))


@pytest.mark.parametrize(
    "soup",
    [
        dict(soup_behavior_steps=1),
        dict(soup_behavior_steps=3, soup_truncation="ratio", soup_prefix_ratio=0.5),
        dict(soup_behavior_steps=3, soup_truncation="prefix_budget", soup_prefix_budget=0.3),
    ],
    ids=["T1", "ratio", "prefix_budget"],
)
def test_logged_decoded_tokens_are_exact(tiny_model_dir, make_config, make_dataset, monkeypatch, soup):
    """The `decoded_tokens` metric of each optimizer step is the tokens that step's generate calls decoded: behavior
    samples in full, continuations up to their EOS or budget (not the padding after a budget stop)."""
    trainer, log = soup_run(tiny_model_dir, make_config, make_dataset, monkeypatch, **soup)
    trainer.train()
    logged = [h["decoded_tokens"] for h in trainer.state.log_history if "decoded_tokens" in h]
    per_step = [sum(sum(c["decoded"]) for c in log.calls if c["step"] == step) for step in range(3)]
    assert logged == per_step and all(n > 0 for n in per_step)


def test_prefix_budget_cycle_decodes_no_more_than_on_policy(tiny_model_dir, make_config, make_dataset, monkeypatch):
    trainer, log = soup_run(
        tiny_model_dir, make_config, make_dataset, monkeypatch,
        soup_behavior_steps=3, soup_truncation="prefix_budget", soup_prefix_budget=0.3,
    )
    trainer.train()
    budget = prefix_budget_tokens(trainer.args.soup_prefix_budget, trainer.args.max_completion_length)
    behavior = [c for c in log.calls if c["prefix_lengths"] is None]
    continuations = [c for c in log.calls if c["prefix_lengths"] is not None]
    rows = trainer.args.per_device_train_batch_size
    # step 1 in full, then the tails of steps 2 and 3 in one call: 2 x 3-token tails decode fewer tokens than a step
    assert budget == 3 and [len(c["decoded"]) for c in behavior] == [rows, 2 * rows]
    assert all(d <= budget for c in behavior[1:] for d in c["decoded"])
    tail = [d for c in behavior[1:] for d in c["decoded"]]
    prefixes = [k for c in continuations for k in c["prefix_lengths"]]
    decoded = [d for c in continuations for d in c["decoded"]]
    for behavior_tokens, prefix, continuation in zip(tail, prefixes, decoded):
        # A spliced row's tokens were decoded once each: the prefix by the behavior policy, the rest by the current
        # policy within MAX_LEN - prefix. A behavior sample that stopped early also decoded its EOS decision,
        # which the continuation makes again (the one token more than on-policy).
        resampled_eos = behavior_tokens - prefix
        assert resampled_eos in (0, 1)
        assert prefix + continuation <= MAX_LEN
        assert behavior_tokens + continuation <= MAX_LEN + resampled_eos
    # Over the cycle: at most on-policy training's 3 * rows * MAX_LEN tokens, plus the resampled EOS decisions
    resampled = sum(d - k for d, k in zip(tail, prefixes))
    assert sum(sum(c["decoded"]) for c in log.calls) <= 3 * rows * MAX_LEN + resampled


@pytest.mark.parametrize("truncation", ["ratio", "entropy"])
def test_spliced_steps_make_no_no_grad_forward(tiny_model_dir, make_config, make_dataset, monkeypatch, truncation):
    trainer, log = soup_run(
        tiny_model_dir, make_config, make_dataset, monkeypatch,
        soup_behavior_steps=3, soup_truncation=truncation, soup_prefix_ratio=0.5, soup_entropy_top_k=4,
    )
    assert not trainer.use_vllm  # so TRL's sampler-mismatch correction is off
    phase = {"name": None}
    forwards = []  # (phase, grad enabled) of every forward outside generation

    def hook(module, args, output):
        if not log.inside:
            forwards.append((phase["name"], torch.is_grad_enabled()))

    trainer.model.register_forward_hook(hook)

    @contextlib.contextmanager
    def in_phase(name):
        phase["name"] = name
        try:
            yield
        finally:
            phase["name"] = None

    sample, score, loss = trainer._sample_cycle, trainer._score_step, trainer.compute_loss

    def recording_sample(inputs, *args, **kwargs):
        with in_phase("behavior"):
            return sample(inputs, *args, **kwargs)

    def recording_score(cycle, step):
        with in_phase(f"score {step}"):
            return score(cycle, step)

    def recording_loss(model, inputs, *args, **kwargs):
        with in_phase("loss"):
            return loss(model, inputs, *args, **kwargs)

    monkeypatch.setattr(trainer, "_sample_cycle", recording_sample)
    monkeypatch.setattr(trainer, "_score_step", recording_score)
    monkeypatch.setattr(trainer, "compute_loss", recording_loss)
    trainer.train()

    # The behavior log-probs once per cycle (the 16 rows of steps 2 and 3, in forwards of per_device_train_batch_size
    # = 8 rows), no forward while scoring a step, and one forward with gradients per loss (3 optimizer steps)
    assert forwards == [("behavior", False)] * 2 + [("loss", True)] * 3


def test_token_metrics_are_measured_on_logged_steps_only(tiny_model_dir, make_config, make_dataset, monkeypatch):
    args = make_config(soup_behavior_steps=2, max_steps=4, logging_steps=2)
    trainer = SOUPTrainer(tiny_model_dir, shaped_reward, args=args, train_dataset=make_dataset())
    measured = []
    log_sums = trainer._log_sums  # SOUP's per-token diagnostics are its only reduced sums

    def recording(*a, **k):
        measured.append(trainer.state.global_step + 1)
        return log_sums(*a, **k)

    monkeypatch.setattr(trainer, "_log_sums", recording)
    trainer.train()
    assert measured == [2, 4]
    logged = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["step"] for h in logged] == [2, 4]
    assert all("soup/continuation/ratio_mean" in h for h in logged)


def test_a_nan_behavior_log_prob_inside_a_prefix_stops_training(tiny_model_dir, make_config, make_dataset, monkeypatch):
    """A broken behavior forward must not count as on-policy: NaN denominators are filled on continuation tokens
    only, and one on a prefix token fails the step with a message, instead of training on the current policy's."""
    trainer, _ = soup_run(
        tiny_model_dir, make_config, make_dataset, monkeypatch,
        soup_behavior_steps=3, soup_truncation="ratio", soup_prefix_ratio=0.5,
    )  # fmt: skip
    original = lockstep.no_grad_logps  # the behavior forward of the rows a cycle cuts (its lockstep chunks)

    def broken_behavior_logps(*args, **kwargs):
        logps, entropies = original(*args, **kwargs)
        logps = logps.clone()
        logps[:, 0] = float("nan")  # every row's first token: inside every non-empty prefix
        return logps, entropies

    monkeypatch.setattr(lockstep, "no_grad_logps", broken_behavior_logps)
    with pytest.raises(FloatingPointError, match="prefix token.* NaN behavior log-probs"):
        trainer.train()
    assert trainer.state.global_step == 1  # step 1 trains on whole samples; the first spliced step stops
