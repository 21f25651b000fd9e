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
import heapq
import logging
import math
import os
import tempfile
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from accelerate.utils import broadcast_object_list, gather_object

from .cycle import GenerationPlan
from .history_store import TokenStore
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


@dataclass
class _Entry:
    """A stored rollout: where its tokens are in the store, when its row was trained, and its oldest token's step."""

    offset: int
    length: int
    recorded_at: int
    oldest: int
    entropies: bool  # whether its entropies were recorded


class RolloutHistory:
    """Per prompt and slot of its group, the newest `pool` trained rollouts; their tokens in a flat `TokenStore`.

    With `pool=1` a group is the rollouts its prompt's last training step trained on. With `pool=k` each slot keeps
    its last k rollouts, from k earlier visits of the prompt (k earlier policies), and a served group draws each
    slot's rollout among those young enough, with a generator seeded by the prompt and the step (the same draw on any
    number of processes); every token keeps the denominator of the policy that sampled it.

    A rollout whose oldest token is more than `max_age` steps old can never be served again (ages only grow): it is
    evicted when the store next takes rows, and so is a rollout its slot's newer ones pushed out of the pool. When the
    evicted tokens outnumber the live ones (and are at least `compact_tokens`), the store is compacted.
    """

    def __init__(
        self,
        group_size: int,
        max_age: int | None = None,
        pool: int = 1,
        store: TokenStore | None = None,
        compact_tokens: int = 1 << 20,
    ):
        if group_size < 1:
            raise ValueError(f"RolloutHistory: group_size must be >= 1, got {group_size}.")
        if max_age is not None and max_age < 0:
            raise ValueError(f"RolloutHistory: max_age must be None or >= 0, got {max_age}.")
        if pool < 1:
            raise ValueError(f"RolloutHistory: pool must be >= 1, got {pool}.")
        self.group_size = group_size
        self.max_age = max_age
        self.pool = pool
        self.store = store or TokenStore()
        self.compact_tokens = compact_tokens
        self._groups: dict[bytes, list[list[_Entry]]] = {}  # key -> slot -> entries, newest last
        self._by_age: list[tuple[int, int, bytes, int]] = []  # heap of (oldest, counter, key, slot) to evict
        self._counter = 0
        self.dead_tokens = 0

    def __len__(self) -> int:
        """Prompts with a complete group."""
        return sum(all(slot for slot in group) for group in self._groups.values())

    def add(self, records: Iterable[Record]) -> None:
        """Store trained rows; several records of one slot and step: the one with the largest `order` is the newest.
        Then evict what can no longer be served, as of the newest record's step."""
        records = sorted(records, key=lambda r: (r.recorded_at, r.order))
        for record in records:
            if not 0 <= record.slot < self.group_size:
                raise ValueError(f"RolloutHistory: slot {record.slot} outside a group of {self.group_size}.")
        rollouts = [r.rollout for r in records]
        offsets = self.store.append([(r.completion_ids, r.logps, r.sampled_at, r.entropies) for r in rollouts])
        for record, rollout, offset in zip(records, rollouts, offsets):
            entry = _Entry(offset, rollout.completion_ids.numel(), record.recorded_at, rollout.oldest(record.recorded_at),
                           rollout.entropies is not None)  # fmt: skip
            group = self._groups.setdefault(record.key, [[] for _ in range(self.group_size)])
            slot = group[record.slot]
            slot.append(entry)
            for old in slot[: -self.pool]:
                self.dead_tokens += old.length
            del slot[: -self.pool]
            if self.max_age is not None:
                heapq.heappush(self._by_age, (entry.oldest, self._counter, record.key, record.slot))
                self._counter += 1
        if records:
            self.evict(records[-1].recorded_at)

    def evict(self, step: int) -> None:
        """Drop the rollouts whose oldest token is more than `max_age` steps older than `step`, then compact the store
        when the dropped tokens outnumber the live ones."""
        while self._by_age and self.max_age is not None and step - self._by_age[0][0] > self.max_age:
            oldest, _, key, slot_index = heapq.heappop(self._by_age)
            group = self._groups.get(key)
            if group is None:
                continue
            slot = group[slot_index]
            kept = [e for e in slot if e.oldest != oldest]  # rollouts of the same oldest step go together
            self.dead_tokens += sum(e.length for e in slot if e.oldest == oldest)
            group[slot_index] = kept
            if not any(group):
                del self._groups[key]
        live = self.num_tokens()
        if self.dead_tokens >= max(live, self.compact_tokens):
            entries = [e for group in self._groups.values() for slot in group for e in slot]
            for entry, offset in zip(entries, self.store.compact([(e.offset, e.length) for e in entries])):
                entry.offset = offset
            self.dead_tokens = 0

    def _rollout(self, entry: _Entry) -> Rollout:
        fields = self.store.read(entry.offset, entry.length)
        entropies = fields["entropies"] if entry.entropies else None
        return Rollout(fields["ids"], fields["logps"], fields["sampled_at"], entropies)

    def age(self, key: bytes, step: int) -> int | None:
        """Steps since the oldest token of the prompt's newest stored group was sampled; None without a complete
        group."""
        group = self._groups.get(key)
        if group is None or not all(group):
            return None
        return max(step - slot[-1].oldest for slot in group)

    def _choose(self, key: bytes, step: int) -> list[_Entry] | None:
        group = self._groups.get(key)
        if group is None or not all(group):
            return None
        eligible = [[e for e in slot if self.max_age is None or step - e.oldest <= self.max_age] for slot in group]
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
        return None if chosen is None else [self._rollout(e) for e in chosen]

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
                rollouts += [self._rollout(e) for e in chosen]
                ages += [float(max(step - e.oldest for e in chosen))] * self.group_size
        return rollouts, ages

    def _entries(self):
        return (e for group in self._groups.values() for slot in group for e in slot)

    def num_tokens(self) -> int:
        """Tokens of the rollouts it can still serve."""
        return sum(e.length for e in self._entries())

    def nbytes(self) -> int:
        """Bytes of per-token data of the rollouts it can still serve (12 a token, 14 with entropies; the store may
        also hold the holes of evicted ones until it is compacted, and keys and spans are not counted)."""
        return sum(e.length * (14 if e.entropies else 12) for e in self._entries())

    # ------------------------------------------------------------------ checkpoints

    def _index_state(self) -> tuple[dict, list[_Entry]]:
        rows = [(key, s, e) for key, group in self._groups.items() for s, slot in enumerate(group) for e in slot]
        index = {
            "format": "flat",
            "group_size": self.group_size,
            "pool": self.pool,
            "keys": torch.tensor([list(key) for key, _, _ in rows], dtype=torch.uint8).view(-1, KEY_BYTES),
            "entries": torch.tensor(
                [[s, e.recorded_at, e.oldest, e.length, int(e.entropies)] for _, s, e in rows], dtype=torch.long
            ).view(-1, 5),
        }
        return index, [e for _, _, e in rows]

    def save(self, prefix: str) -> None:
        """A checkpoint of the store: `{prefix}.index.pt` (every live rollout's key, slot, steps and length) and one raw
        file per field of their tokens, written span by span (`TokenStore.save`)."""
        index, entries = self._index_state()
        torch.save(index, f"{prefix}.index.pt")
        self.store.save(prefix, [(e.offset, e.length) for e in entries])

    def load(self, prefix: str) -> None:
        """Restore `save`'s checkpoint (every process reads the index; the machine's writer copies the token files)."""
        index = torch.load(f"{prefix}.index.pt", weights_only=False)
        self._check_group_size(index)
        self.store.load_files(prefix)
        self._restore_index(index)

    def state_dict(self) -> dict:
        """The store as a few tensors: every live rollout's key, slot, step, oldest token's step and length, and its
        tokens' fields one after another (a small store; a checkpoint uses `save`, which streams the tokens)."""
        index, entries = self._index_state()
        return {**index, "fields": self.store.arrays([(e.offset, e.length) for e in entries])}

    def load_state_dict(self, state: dict) -> None:
        self._check_group_size(state)
        if state.get("format") != "flat":  # soup-trl 0.1: key -> slot -> [(recorded_at, fields)]
            state = _flat_state(state)
        self.store.load(state["fields"])
        self._restore_index(state)

    def _check_group_size(self, state: dict) -> None:
        if state["group_size"] != self.group_size:
            raise ValueError(
                f"The checkpoint's rollout history holds groups of {state['group_size']} rollouts but this run has "
                f"num_generations={self.group_size}; resume with the num_generations the checkpoint was trained with."
            )

    def _restore_index(self, state: dict) -> None:
        self._groups, self._by_age, self._counter, self.dead_tokens = {}, [], 0, 0
        offset = 0
        for key_bytes, (slot, recorded_at, oldest, length, entropies) in zip(
            state["keys"].tolist(), state["entries"].tolist()
        ):
            key = bytes(key_bytes)
            group = self._groups.setdefault(key, [[] for _ in range(self.group_size)])
            group[slot].append(_Entry(offset, length, recorded_at, oldest, bool(entropies)))
            offset += length
            if self.max_age is not None:
                heapq.heappush(self._by_age, (oldest, self._counter, key, slot))
                self._counter += 1
        for group in self._groups.values():  # a smaller pool keeps the newest
            for s, slot in enumerate(group):
                self.dead_tokens += sum(e.length for e in slot[: -self.pool])
                group[s] = slot[-self.pool :]


def _flat_state(state: dict) -> dict:
    """A history saved by soup-trl 0.1 (a tensor per field of every rollout) in today's form."""
    keys, entries, fields = [], [], {name: [] for name in ("ids", "logps", "sampled_at", "entropies")}
    for key, group in state["groups"].items():
        for s, slot in enumerate(group):
            for recorded_at, (ids, logps, sampled_at, entropies) in slot:
                rollout = Rollout(ids, logps, sampled_at, entropies)
                keys.append(list(key))
                entries.append([s, recorded_at, rollout.oldest(recorded_at), ids.numel(), int(entropies is not None)])
                for name, value in zip(fields, (ids, logps, sampled_at, entropies)):
                    fields[name].append(torch.zeros(ids.numel(), dtype=torch.float16) if value is None else value)
    dtypes = {"ids": torch.int32, "logps": torch.float32, "sampled_at": torch.int32, "entropies": torch.float16}
    return {
        "format": "flat",
        "group_size": state["group_size"],
        "pool": state.get("pool", 1),
        "keys": torch.tensor(keys, dtype=torch.uint8).view(-1, KEY_BYTES),
        "entries": torch.tensor(entries, dtype=torch.long).view(-1, 5),
        "fields": {name: torch.cat(values).to(dtypes[name]) if values else torch.zeros(0, dtype=dtypes[name])
                   for name, values in fields.items()},  # fmt: skip
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


def epoch_steps(num_prompts: int, prompts_per_step: int) -> int:
    """Optimizer steps of one pass over `num_prompts` prompts, `prompts_per_step` (every process's) a step."""
    return max(1, math.ceil(num_prompts / prompts_per_step))


def max_age_steps(max_age: int | None, max_epochs: float | None, steps_per_epoch: int) -> int | None:
    """The store's age limit in steps: `max_age`, `max_epochs` epochs, the tighter of the two; None: no limit."""
    limits = [limit for limit in (max_age, None if max_epochs is None else math.ceil(max_epochs * steps_per_epoch))
              if limit is not None]  # fmt: skip
    return min(limits) if limits else None


def served_fraction(max_age: int | None, steps_per_epoch: int) -> float:
    """The share of a prompt's returns that find its stored group young enough. A prompt comes back once an epoch, at
    a place drawn anew each epoch, so the steps between two visits are the sum of two uniform spans: triangular on
    (0, 2 epochs)."""
    if max_age is None:
        return 1.0
    x = max_age / steps_per_epoch
    return x * x / 2 if x <= 1 else (1 - (2 - x) ** 2 / 2 if x < 2 else 1.0)


def history_notes(max_age: int | None, steps_per_epoch: int, total_steps: int) -> list[str]:
    """Start-up warnings for settings under which the history serves no row, or almost none."""
    if total_steps <= steps_per_epoch:
        return [
            f"soup_behavior_source='history': this run trains {total_steps} optimizer step(s) and one epoch of its "
            f"prompts is {steps_per_epoch}: no prompt comes back, so every row is sampled afresh and the store only "
            "costs memory. Train more than one epoch, or use soup_behavior_source='fresh'."
        ]
    share = served_fraction(max_age, steps_per_epoch)
    if share < 0.1:
        return [
            f"soup_behavior_source='history': the age limit is {max_age} step(s) and an epoch is {steps_per_epoch}: "
            f"about {share:.1%} of the prompts that come back find their rollouts young enough. Raise "
            "soup_history_max_epochs (1.0 serves about half, 2.0 all), or use soup_behavior_source='fresh'."
        ]
    return []


def build_history(trainer) -> RolloutHistory | None:
    """The rollout history of a trainer with `soup_behavior_source="history"` (None otherwise): its age limit from
    the config and the size of an epoch, its tokens in one store per machine that the machine's first process
    writes (a folder agreed by every process), and the start-up warnings of `history_notes`."""
    args = trainer.args
    if args.soup_behavior_source != "history":
        return None
    warn_if_dropout(trainer.model)
    accelerator = trainer.accelerator
    prompts_per_step = (
        args.per_device_train_batch_size * args.gradient_accumulation_steps * accelerator.num_processes
    ) // trainer.num_generations
    num_prompts = len(trainer.train_dataset) if hasattr(trainer.train_dataset, "__len__") else None
    steps_per_epoch = epoch_steps(num_prompts, prompts_per_step) if num_prompts else None
    max_age = max_age_steps(args.soup_history_max_age, args.soup_history_max_epochs if steps_per_epoch else None,
                            steps_per_epoch or 1)  # fmt: skip
    if steps_per_epoch:
        total = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * steps_per_epoch)
        for note in history_notes(max_age, steps_per_epoch, total):
            logger.warning(note)
    name = [f"soup-trl-history-{uuid.uuid4().hex}"]
    broadcast_object_list(name, from_process=0)  # one name for every process of the run
    folder = os.path.join(args.soup_history_dir or tempfile.gettempdir(), name[0])
    store = TokenStore(folder, writer=accelerator.is_local_main_process, barrier=accelerator.wait_for_everyone)
    accelerator.wait_for_everyone()  # the files exist before any process maps them
    return RolloutHistory(trainer.num_generations, max_age, args.soup_history_pool, store)


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
