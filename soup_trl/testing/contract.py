"""A SOUP run recorded through its own hooks, and the contract checks on the records.

Shared by tests/integration/test_contract.py, tests/integration/test_vllm.py and benchmarks/gpu_smoke.py.
`ContractRecorder` wraps the trainer's hooks (each wrapped hook still runs unchanged) and keeps, with snapshots of the
policy's parameters taken before the hook runs:

- `cycles`: `{"params", "cycle", "call"}` per behavior sampling (`call`: index of its vLLM generate call, or -1)
- `steps`: `{"step", "cycle", "params", "batches", "calls"}` per scored optimizer step (`step` 0 .. T-1 in its cycle)
- `losses`: `{"inputs", "batch", "params", "loss", "step"}` per loss: `inputs` as GRPOTrainer's loss read them (the
  log-probs filled in, and what `soup_prefix_loss` changed: "mask"'s `tool_mask`, "minpro"'s per-token advantages),
  `batch` the micro-batch as scored (the same dict as `inputs` with the default "token_ratio")
- `calls`, `syncs`: vLLM generate calls and weight syncs (colocate mode)

The checks take `records` (those lists, by name) and return what they measured (largest differences, counts), so
that a test can assert its bounds and the GPU smoke run can print them. `policy(params)` is any callable returning an
object with `logps(prompt, completion)` for a parameter snapshot, e.g. a fresh
`soup_trl.testing.snapshots.SnapshotPolicy`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .snapshots import clone_batch, rows, snapshot


class ContractRecorder:
    def __init__(self, trainer):
        """Record `trainer` (a SOUPTrainer, before `train()`)."""
        self.trainer = trainer
        self.cycles, self.steps, self.losses, self.calls, self.syncs = [], [], [], [], []
        self.records = {"cycles": self.cycles, "steps": self.steps, "losses": self.losses, "calls": self.calls,
                        "syncs": self.syncs}  # fmt: skip
        self._wrap("_sample_cycle", self._record_cycle)
        self._wrap("_score_step", self._record_step)
        self._wrap("compute_loss", self._record_loss)
        self._wrap("_after_loss", self._record_loss_inputs)
        self._loss_inputs = None
        if trainer.use_vllm and trainer.vllm_mode == "colocate":
            record_engine(trainer, self.records)

    def _wrap(self, name: str, recording: Callable) -> None:
        own = getattr(self.trainer, name)
        setattr(self.trainer, name, lambda *args, **kwargs: recording(own, *args, **kwargs))

    def _record_cycle(self, own, inputs, *args, **kwargs):
        before = snapshot(self.trainer.model)
        cycle = own(inputs, *args, **kwargs)
        self.cycles.append({"params": before, "cycle": cycle, "call": len(self.calls) - 1})
        return cycle

    def _record_step(self, own, cycle, step):
        before, calls = snapshot(self.trainer.model), len(self.calls)
        batches = own(cycle, step)
        self.steps.append({"step": step, "cycle": self.cycles[-1], "params": before,
                           "batches": [clone_batch(b) for b in batches], "calls": self.calls[calls:]})  # fmt: skip
        return batches

    def _record_loss(self, own, model, inputs, *args, **kwargs):
        before = snapshot(self.trainer.model)
        loss = own(model, inputs, *args, **kwargs)
        self.losses.append({"inputs": clone_batch(self._loss_inputs), "batch": clone_batch(inputs), "params": before,
                            "loss": loss.item(), "step": self.steps[-1]})  # fmt: skip
        return loss

    def _record_loss_inputs(self, own, loss, inputs, forward):
        self._loss_inputs = forward.inputs  # the batch GRPOTrainer's loss read (`inputs` itself, or a changed copy)
        return own(loss, inputs, forward)


def record_engine(trainer, records):
    """Append every weight sync (`records["syncs"]`: the optimizer step) and every generation call
    (`records["calls"]`: step, prompt ids, num_generations, max_tokens, completions, per-token log-probs)."""
    generation = trainer.vllm_generation
    records.setdefault("syncs", [])
    records.setdefault("calls", [])
    sync, generate = generation.sync_weights, generation.generate

    def recording_sync():
        records["syncs"].append(trainer.state.global_step)
        return sync()

    def recording_generate(prompts, images, num_generations, profiler=None):
        out = generate(prompts=prompts, images=images, num_generations=num_generations, profiler=profiler)
        records["calls"].append(
            {
                "step": trainer.state.global_step,
                "prompts": [list(p) for p in prompts],
                "num_generations": num_generations,
                "max_tokens": generation.max_completion_length,
                "completions": [list(c) for c in out[1]],
                "logprobs": [[lp[0] for lp in seq] for seq in out[2]],
            }
        )
        return out

    generation.sync_weights = recording_sync
    generation.generate = recording_generate


def largest(difference: torch.Tensor) -> float:
    """max |difference|, and infinity where it has a NaN (a missing log-prob must not pass as 0)."""
    difference = difference.abs()
    if difference.isnan().any():
        return float("inf")
    return difference.max().item() if difference.numel() else 0.0


def spliced_steps(records: dict) -> list[dict]:
    """Steps 2..T of every cycle: their rows continue a behavior prefix."""
    return [s for s in records["steps"] if s["step"] > 0]


def spliced_prefixes(step: dict) -> tuple[list, list]:
    """(expected, got) for a spliced step: the (prompt ids, first k completion ids) of its rows in the behavior cycle,
    and of its scored rows, each sorted; equal when every prefix is its behavior completion's first k token ids."""
    cycle = step["cycle"]["cycle"]
    lo = step["step"] * cycle.rows_per_step
    expected = sorted(
        (tuple(cycle.prompt_ids[r]), tuple(cycle.completion_ids[r][: int(cycle.prefix_lengths[r])]))
        for r in range(lo, lo + cycle.rows_per_step)
    )
    got = sorted((tuple(p), tuple(c[:k])) for batch in step["batches"] for p, c, k, _ in rows(batch))
    return expected, got


@dataclass
class Measured:
    error: float  # largest |recorded - expected|
    other: float  # largest |recorded - the other policy's|: how wrong the wrong policy would have been
    rows: int  # rows compared


def prefix_denominators(records: dict, policy: Callable, max_rows: int | None = None) -> Measured:
    """Old log-probs of prefix tokens, as scored, against the behavior policy (other: the current policy)."""
    error, other, checked = 0.0, 0.0, 0
    for step in spliced_steps(records):
        behavior, current = policy(step["cycle"]["params"]), policy(step["params"])
        for batch in step["batches"]:
            for prompt, completion, k, i in list(rows(batch))[:max_rows]:
                if k == 0:
                    continue
                expected = behavior.logps(prompt, completion)[:k]
                got = batch["old_per_token_logps"][i, :k].cpu()
                error = max(error, largest(got - expected))
                other = max(other, largest(current.logps(prompt, completion)[:k] - expected))
                checked += 1
    return Measured(error, other, checked)


def continuation_denominators(records: dict, policy: Callable, max_rows: int | None = None) -> Measured:
    """Old log-probs of continuation tokens, as the loss used them, against the policy of that loss forward (other:
    the behavior policy)."""
    error, other, checked = 0.0, 0.0, 0
    for record in records["losses"]:
        if record["step"]["step"] == 0:
            continue
        current, behavior = policy(record["params"]), policy(record["step"]["cycle"]["params"])
        inputs = record["inputs"]
        for prompt, completion, k, i in list(rows(inputs))[:max_rows]:
            expected = current.logps(prompt, completion)[k:]
            got = inputs["old_per_token_logps"][i, k : len(completion)].cpu()
            error = max(error, largest(got - expected))
            other = max(other, largest(behavior.logps(prompt, completion)[k:] - expected))
            checked += 1
    return Measured(error, other, checked)


def continuation_sampler(records: dict, policy: Callable, max_rows: int | None = None, steps=None) -> Measured:
    """vLLM's sampling log-probs of each continuation against the current policy (other: the behavior policy):
    the engine's weights were synced before the step generated. `steps`: the recorded steps whose calls continue
    prefixes (default: the spliced steps of every cycle)."""
    error, other, checked = 0.0, 0.0, 0
    for step in spliced_steps(records) if steps is None else steps:
        current, behavior = policy(step["params"]), policy(step["cycle"]["params"])
        for call in step["calls"]:
            for prompt, completion, logprobs in list(zip(call["prompts"], call["completions"], call["logprobs"]))[
                :max_rows
            ]:
                expected = current.logps(prompt, completion)
                error = max(error, largest(torch.tensor(logprobs) - expected))
                other = max(other, largest(behavior.logps(prompt, completion) - expected))
                checked += 1
    return Measured(error, other, checked)


def with_global_steps(records: dict) -> dict:
    """Number the recorded steps by optimizer step (`global_step`; records are in order, one per optimizer step)."""
    for i, step in enumerate(records["steps"]):
        step["global_step"] = i
    return records


def step_policies(records: dict, policy: Callable) -> dict:
    """The policy that sampled at each optimizer step (records numbered by `with_global_steps`): the parameters when
    that step was scored (its continuations and on-policy rows; behavior rows are sampled at a cycle's first step)."""
    policies = {}
    for step in records["steps"]:
        if step["global_step"] not in policies:
            policies[step["global_step"]] = policy(step["params"])
    return policies


def sampled_at_denominators(records: dict, policy: Callable) -> tuple[Measured, int]:
    """History-seeded prefixes: old log-probs of prefix tokens, as the loss used them, against the policy of the step
    that sampled each token (`soup_sampled_at`; other: the policy of the loss's own step), and how many prefix tokens
    are older than the previous step. Checks on the way that every prefix token was sampled before the loss's step,
    in order. Records numbered by `with_global_steps`."""
    policies = step_policies(records, policy)
    now_of = {id(s): s["global_step"] for s in records["steps"]}
    error, other, checked, old_tokens = 0.0, 0.0, 0, 0
    for record in records["losses"]:
        inputs, now = record["inputs"], now_of[id(record["step"])]
        for prompt, completion, k, i in rows(inputs):
            if k == 0:
                continue
            sampled_at = inputs["soup_sampled_at"][i, :k].tolist()
            assert all(s < now for s in sampled_at) and sampled_at == sorted(sampled_at)
            got = inputs["old_per_token_logps"][i, :k].cpu()
            expected = torch.stack([policies[s].logps(prompt, completion)[j] for j, s in enumerate(sampled_at)])
            error = max(error, largest(got - expected))
            other = max(other, largest(policies[now].logps(prompt, completion)[:k] - expected))
            old_tokens += sum(s < now - 1 for s in sampled_at)
            checked += 1
    return Measured(error, other, checked), old_tokens


def broken_groups(records: dict, num_generations: int, tolerance: float = 1e-4) -> int:
    """Groups of a scored step that are not `num_generations` contiguous rows of one prompt with advantages summing to
    0; 0 when groups stay whole."""
    broken = 0
    for step in records["steps"]:
        prompts = [tuple(p) for batch in step["batches"] for p, _, _, _ in rows(batch)]
        advantages = torch.cat([batch["advantages"].cpu() for batch in step["batches"]])
        if len(prompts) % num_generations:
            broken += 1
        for g in range(0, len(prompts), num_generations):
            group = slice(g, g + num_generations)
            if len(set(prompts[group])) != 1 or abs(advantages[group].sum().item()) > tolerance:
                broken += 1
    return broken
