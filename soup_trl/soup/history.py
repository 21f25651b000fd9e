"""Rollout history: the completions a run trained on, kept per prompt, so that later steps can cut SOUP prefixes from
them instead of decoding new behavior samples (`soup_behavior_source="history"`).

A stored rollout is one trained row: its completion token ids, each token's denominator (the log-prob under the policy
that sampled the token, as the loss of that step used it: behavior log-probs on its prefix, the loss forward's own
log-probs elsewhere), the optimizer step that sampled each token and, when the truncation strategy ranks positions by
entropy, the loss forward's entropies. A group is the `num_generations` rollouts of one prompt; the newest row trained
for each slot of the group replaces the previous one.

Groups are keyed by the prompt's token ids (`prompt_key`), so the key survives shuffling, the order of rows within a
step, any split over processes and a resume; rows of a dataset that repeat a prompt share its history.

Memory, per stored token: 4 bytes of token id, 4 of log-prob, 4 of sampling step, 2 of entropy (entropy cut only),
on CPU. `RolloutHistory.nbytes()` reports it; docs/history.md works it out for a DAPO-sized run.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from accelerate.utils import gather_object

from .cycle import GenerationPlan
from .ops import fit_width, prefix_mask_from_lengths

logger = logging.getLogger(__name__)

KEY_BYTES = 16


def prompt_key(prompt_ids: Sequence[int]) -> bytes:
    """A 16-byte key of a prompt's token ids: the same on every process and in every run."""
    data = torch.tensor(list(prompt_ids), dtype=torch.int64).numpy().tobytes()
    return hashlib.blake2b(data, digest_size=KEY_BYTES).digest()


@dataclass
class Rollout:
    """One stored completion (its real tokens, EOS included, no padding)."""

    completion_ids: torch.Tensor  # (L,) int32
    logps: torch.Tensor  # (L,) float32: each token's log-prob under the policy that sampled it
    sampled_at: torch.Tensor  # (L,) int32: the optimizer step (global_step before it) that sampled each token
    entropies: torch.Tensor | None = None  # (L,) float16, when recorded

    def __post_init__(self):
        n = self.completion_ids.numel()
        sizes = [self.logps.numel(), self.sampled_at.numel()] + ([] if self.entropies is None else [self.entropies.numel()])
        if any(size != n for size in sizes):
            raise ValueError(f"Rollout: {n} token ids but per-token fields of sizes {sizes}; they must all match.")
        if self.logps.isnan().any():
            raise ValueError("Rollout: a stored log-prob is NaN; only the log-probs the loss used may be stored.")

    @classmethod
    def of(cls, ids, logps, sampled_at, entropies=None) -> Rollout:
        """A rollout from tensors of any dtype and device (stored compactly on CPU)."""
        return cls(
            ids.detach().to("cpu", torch.int32),
            logps.detach().to("cpu", torch.float32),
            sampled_at.detach().to("cpu", torch.int32),
            None if entropies is None else entropies.detach().to("cpu", torch.float16),
        )

    def oldest(self, default: int) -> int:
        """The step that sampled its oldest token (`default` for an empty completion)."""
        return int(self.sampled_at.min()) if self.sampled_at.numel() else default

    def nbytes(self) -> int:
        tensors = [self.completion_ids, self.logps, self.sampled_at] + ([self.entropies] if self.entropies is not None else [])
        return sum(t.numel() * t.element_size() for t in tensors)


@dataclass(frozen=True)
class Record:
    """A trained row to store: its group (prompt key), slot in the group, and the row's place in the global step
    (records of one step are stored in that order, so that the store is the same on any number of processes)."""

    key: bytes
    slot: int
    order: int
    recorded_at: int  # the optimizer step that trained on it
    rollout: Rollout


class RolloutHistory:
    """Per prompt and slot of its group, the newest `pool` trained rollouts (CPU tensors).

    With `pool=1` a group is the rollouts its prompt's last training step trained on. With `pool=k` each slot keeps
    its last k rollouts, from k earlier visits of the prompt (k earlier policies), and a served group draws each
    slot's rollout among those young enough, with a generator seeded by the prompt and the step (the same draw on any
    number of processes); every token keeps the denominator of the policy that sampled it.
    """

    def __init__(self, group_size: int, max_age: int | None = None, pool: int = 1):
        if group_size < 1:
            raise ValueError(f"RolloutHistory: group_size must be >= 1, got {group_size}.")
        if max_age is not None and max_age < 0:
            raise ValueError(f"RolloutHistory: max_age must be None or >= 0, got {max_age}.")
        if pool < 1:
            raise ValueError(f"RolloutHistory: pool must be >= 1, got {pool}.")
        self.group_size = group_size
        self.max_age = max_age
        self.pool = pool
        self._groups: dict[bytes, list[list[tuple[int, Rollout]]]] = {}  # key -> slot -> [(recorded_at, rollout)]

    def __len__(self) -> int:
        """Prompts with a complete group."""
        return sum(all(slot for slot in group) for group in self._groups.values())

    def add(self, records: Iterable[Record]) -> None:
        """Store trained rows; several records of one slot and step: the one with the largest `order` is the newest."""
        for record in sorted(records, key=lambda r: (r.recorded_at, r.order)):
            if not 0 <= record.slot < self.group_size:
                raise ValueError(f"RolloutHistory: slot {record.slot} outside a group of {self.group_size}.")
            group = self._groups.setdefault(record.key, [[] for _ in range(self.group_size)])
            slot = group[record.slot]
            slot.append((record.recorded_at, record.rollout))
            del slot[: -self.pool]

    @staticmethod
    def _age(entry: tuple[int, Rollout], step: int) -> int:
        recorded_at, rollout = entry
        return step - rollout.oldest(recorded_at)

    def age(self, key: bytes, step: int) -> int | None:
        """Steps since the oldest token of the prompt's newest stored group was sampled; None without a complete
        group."""
        group = self._groups.get(key)
        if group is None or not all(group):
            return None
        return max(self._age(slot[-1], step) for slot in group)

    def _choose(self, key: bytes, step: int) -> list[tuple[int, Rollout]] | None:
        group = self._groups.get(key)
        if group is None or not all(group):
            return None
        eligible = [[e for e in slot if self.max_age is None or self._age(e, step) <= self.max_age] for slot in group]
        if not all(eligible):
            return None
        if self.pool == 1:
            return [slot[-1] for slot in eligible]
        seed = int.from_bytes(key[:8], "little") ^ (step * 0x9E3779B97F4A7C15 % 2**64)
        generator = torch.Generator().manual_seed(seed % 2**63)
        return [slot[int(torch.randint(len(slot), (1,), generator=generator))] for slot in eligible]

    def group(self, key: bytes, step: int) -> list[Rollout] | None:
        """The rollouts served for the prompt at `step` (one per slot), or None when a slot has no rollout whose
        oldest token is at most `max_age` steps old."""
        chosen = self._choose(key, step)
        return None if chosen is None else [rollout for _, rollout in chosen]

    def rows(self, prompt_ids: Sequence[Sequence[int]], step: int) -> tuple[list[Rollout | None], list[float]]:
        """Per row of a batch whose groups are contiguous runs of `group_size` rows of one prompt: the stored rollout
        for the row's slot (None for every row of a group without usable history) and the served group's age (the
        oldest token's; NaN without history)."""
        if len(prompt_ids) % self.group_size:
            raise ValueError(f"RolloutHistory: {len(prompt_ids)} rows are not whole groups of {self.group_size}.")
        rollouts: list[Rollout | None] = []
        ages: list[float] = []
        for start in range(0, len(prompt_ids), self.group_size):
            prompt = list(prompt_ids[start])
            if any(list(p) != prompt for p in prompt_ids[start : start + self.group_size]):
                raise ValueError(f"RolloutHistory: rows {start}..{start + self.group_size - 1} are not one prompt's group.")
            chosen = self._choose(prompt_key(prompt), step)
            if chosen is None:
                rollouts += [None] * self.group_size
                ages += [float("nan")] * self.group_size
            else:
                rollouts += [rollout for _, rollout in chosen]
                ages += [float(max(self._age(e, step) for e in chosen))] * self.group_size
        return rollouts, ages

    def _rollouts(self):
        return (rollout for group in self._groups.values() for slot in group for _, rollout in slot)

    def num_tokens(self) -> int:
        return sum(r.completion_ids.numel() for r in self._rollouts())

    def nbytes(self) -> int:
        """Bytes of stored per-token data (keys and Python objects not counted)."""
        return sum(r.nbytes() for r in self._rollouts())

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict:
        def fields(r: Rollout):
            return (r.completion_ids, r.logps, r.sampled_at, r.entropies)

        return {
            "group_size": self.group_size,
            "pool": self.pool,
            "groups": {key: [[(at, fields(r)) for at, r in slot] for slot in group] for key, group in self._groups.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        if state["group_size"] != self.group_size:
            raise ValueError(
                f"The checkpoint's rollout history holds groups of {state['group_size']} rollouts but this run has "
                f"num_generations={self.group_size}; resume with the num_generations the checkpoint was trained with."
            )
        self._groups = {
            key: [[(at, Rollout(*f)) for at, f in slot][-self.pool :] for slot in group]
            for key, group in state["groups"].items()
        }


def trained_rollouts(
    completion_ids: torch.Tensor,
    completion_mask: torch.Tensor,
    denominators: torch.Tensor,
    sampled_at: torch.Tensor,
    entropies: torch.Tensor | None = None,
) -> list[Rollout]:
    """The rollouts of a trained micro-batch: per row, its real tokens (`completion_mask`; a masked-out row stores an
    empty completion), the denominators its loss used, the step that sampled each token and the entropies (B, C)."""
    out = []
    for b in range(completion_ids.size(0)):
        keep = completion_mask[b].bool()
        out.append(
            Rollout.of(
                completion_ids[b][keep],
                denominators[b][keep],
                sampled_at[b][keep],
                None if entropies is None else entropies[b][keep],
            )
        )
    return out


def history_fields(output: dict, source, prefix_lengths, prefix_sampled_at, step: int, plan: GenerationPlan) -> dict:
    """What a scored step carries to its loss so that the loss can store its rows (`store_trained_rows`): each row's
    row of the step (`soup_history_row`, -1 for refilled rows, which are not stored), its prompt's key
    (`soup_history_key`, (B, 16) bytes) and the step that sampled each of its tokens (`soup_sampled_at`)."""
    completion_mask = output["completion_mask"]
    device, width = completion_mask.device, completion_mask.size(1)
    now = torch.full(completion_mask.shape, step, dtype=torch.long, device=device)
    prefix = prefix_mask_from_lengths(prefix_lengths.to(device), width).bool()
    stored = fit_width(prefix_sampled_at.to(device), width)
    keys = [prompt_key(plan.prompt_ids[row]) if row >= 0 else bytes(KEY_BYTES) for row in source.tolist()]
    return {
        "soup_history_row": source.to(device),
        "soup_history_key": torch.tensor([list(k) for k in keys], dtype=torch.uint8, device=device).view(-1, KEY_BYTES),
        "soup_sampled_at": torch.where(prefix, stored, now),
    }


def store_trained_rows(trainer, inputs: dict, logps: torch.Tensor, entropies: torch.Tensor | None) -> None:
    """Put the rows a loss trained on into the trainer's rollout history, with the denominators the loss used (`logps`,
    (B, C)) and, for the entropy cut, the loss forward's entropies: every process's rows, on every process, so that the
    history is the same whatever the number of processes."""
    rollouts = trained_rollouts(inputs["completion_ids"], inputs["completion_mask"], logps, inputs["soup_sampled_at"], entropies)
    rows_per_step = trainer.args.per_device_train_batch_size * trainer.args.gradient_accumulation_steps
    records = [
        Record(
            key=bytes(key),
            slot=row % trainer.num_generations,
            order=trainer.accelerator.process_index * rows_per_step + row,
            recorded_at=trainer.state.global_step,
            rollout=rollout,
        )
        for row, key, rollout in zip(inputs["soup_history_row"].tolist(), inputs["soup_history_key"].tolist(), rollouts)
        if row >= 0
    ]
    if trainer.accelerator.num_processes > 1:
        records = gather_object(records)
    trainer.history.add(records)


def warn_if_dropout(model: torch.nn.Module) -> None:
    """Stored log-probs come from the training-mode loss forward: with dropout they carry its noise."""
    rates = sorted({m.p for m in model.modules() if isinstance(m, torch.nn.Dropout) and m.p > 0})
    if rates:
        logger.warning(
            "soup_behavior_source='history': the model has dropout (p = %s). Stored behavior log-probs are those of the "
            "training-mode loss forward, dropout noise included (as GRPOTrainer's own old log-probs are); set the "
            "model's dropout to 0 for exact denominators.",
            ", ".join(str(r) for r in rates),
        )
