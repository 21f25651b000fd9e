"""M2PO (second-moment trust region on stale samples) as a GRPOTrainer: `M2POConfig` and `M2POTrainer`.

Paper: Zheng, Zhao and Chen, "Prosperity before Collapse: How Far Can Off-Policy RL Reach with Stale Data on
LLMs?" (arXiv:2510.01161).
"""

from __future__ import annotations

import collections
import logging
import math
import os
import textwrap
from dataclasses import dataclass, field

import torch
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import RepeatSampler, split_tensor_dict

from ..core.config import MethodConfig
from ..core.model_card import Paper
from ..core.trainer import MethodTrainer, PolicyForward
from .m2po_ops import m2po_trust_region, trust_region_metrics, trust_region_stats

logger = logging.getLogger(__name__)

PAPER = Paper(
    title="Prosperity before Collapse: How Far Can Off-Policy RL Reach with Stale Data on LLMs?",
    arxiv_id="2510.01161",
    citation=textwrap.dedent(
        """\
        @article{zheng2025prosperity,
            title        = {{Prosperity before Collapse: How Far Can Off-Policy RL Reach with Stale Data on LLMs?}},
            author       = {Haizhong Zheng and Jiawei Zhao and Beidi Chen},
            year         = 2025,
            eprint       = {arXiv:2510.01161},
        }"""
    ),
)


@dataclass
class M2POConfig(MethodConfig):
    r"""
    Configuration for [`M2POTrainer`]: every field of `GRPOConfig`, plus `m2po_staleness` and `m2po_tau`.

    Each optimizer step trains on one batch (`per_device_train_batch_size * gradient_accumulation_steps` rows per
    process) that the policy sampled `m2po_staleness` optimizer steps earlier. The loss is GRPOTrainer's DAPO loss
    (`loss_type="dapo"`, token-level normaliser) with M2PO's trust region in place of the epsilon clip: `epsilon` and
    `epsilon_high` are not used.
    """

    m2po_staleness: int = field(
        default=256,
        metadata={
            "help": "Optimizer steps between sampling a batch and training on it (0: on-policy). The first batches "
            "are sampled up front by the initial policy. 256 is the M2PO paper's headline setting."
        },
    )
    m2po_tau: float = field(
        default=0.04,
        metadata={
            "help": "Second-moment budget: the largest mean of (log r)^2 over the harmful tokens of a micro-batch "
            "(A > 0 with r > 1, or A < 0 with r < 1) before the largest of them are clipped."
        },
    )

    def _field_errors(self) -> list[str]:
        errors = []
        staleness = self.m2po_staleness
        if isinstance(staleness, bool) or not isinstance(staleness, int) or staleness < 0:
            errors.append(f"m2po_staleness must be an integer >= 0 (0: on-policy), got {staleness!r}.")
        tau = self.m2po_tau
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not (math.isfinite(tau) and tau > 0):
            errors.append(f"m2po_tau must be a finite number > 0 (the paper uses 0.04), got {tau!r}.")
        return errors + super()._field_errors()

    def _derived_errors(self) -> list[str]:
        errors = []
        if self.steps_per_generation != self.gradient_accumulation_steps:
            errors.append(
                f"steps_per_generation ({self.steps_per_generation}) must equal gradient_accumulation_steps "
                f"({self.gradient_accumulation_steps}) with M2PO, which samples one batch per optimizer step and "
                "queues it: leave steps_per_generation and generation_batch_size unset."
            )
        if self.num_iterations != 1:
            errors.append(
                f"num_iterations must be 1 with M2PO (every batch is trained on exactly once), got {self.num_iterations}."
            )
        rows_per_step = self.per_device_train_batch_size * self.gradient_accumulation_steps
        if rows_per_step % self.num_generations:
            errors.append(
                f"per_device_train_batch_size * gradient_accumulation_steps ({rows_per_step}) must be a multiple of "
                f"num_generations ({self.num_generations}), so that every process queues whole groups."
            )
        if self.loss_type != "dapo":
            errors.append(
                f"loss_type must be 'dapo' with M2PO (token-level normalisation), got {self.loss_type!r}."
            )
        if self.importance_sampling_level != "token":
            errors.append(
                f"importance_sampling_level must be 'token' with M2PO (its trust region is per token), got "
                f"{self.importance_sampling_level!r}."
            )
        if self.delta is not None:
            errors.append(f"delta must be None with M2PO (no clip besides its trust region), got {self.delta!r}.")
        if self.off_policy_mask_threshold is not None:
            errors.append(
                "off_policy_mask_threshold must be None with M2PO (its trust region is the off-policy control), got "
                f"{self.off_policy_mask_threshold!r}."
            )
        return errors


@dataclass
class _QueuedBatch:
    """One scored batch of one process, waiting in the queue for its optimizer step."""

    batch: dict  # GRPOTrainer's scored batch (tensors on CPU) with the behavior policy's old_per_token_logps
    sampled_at: int  # global step at which the policy sampled it
    train_step: int  # global step that trains on it


class M2POTrainer(MethodTrainer):
    """
    M2PO (Second-Moment Trust Policy Optimization) on top of TRL's `GRPOTrainer`.

    Staleness. At optimizer step s the current policy samples and scores the dataloader's batch, which is trained on
    at step s + `m2po_staleness` (each process keeps a FIFO queue of its own scored rows). At the first step the
    queue is filled up front: the initial policy also samples `m2po_staleness` batches of extra prompts (drawn from
    the training set by a sampler seeded with `seed + 1`) for steps 0 .. staleness - 1, like the released code, whose
    first iterations only generate. Every batch is trained on exactly once; batches that no step would train on
    (the last `m2po_staleness` steps) are not sampled. `old_per_token_logps` are the sampling policy's log-probs,
    computed when the batch is sampled.

    Rewards and advantages are computed at sampling time, by GRPOTrainer's own scoring (the released code scores a
    batch when it leaves the queue). Rewards that depend only on the text are the same either way; a reward function
    reading `trainer_state` sees the step at which the batch was sampled. The `reward` metric of a step is therefore
    the reward of the current policy's samples.

    Loss. Per micro-batch (one process's `per_device_train_batch_size` rows; the released code uses verl's
    token-budget micro-batches), with d = old - new log-prob and r = exp(-d), the harmful tokens (A > 0 with r > 1, or
    A < 0 with r < 1) set a threshold t on |d| so that their second moment stays within `m2po_tau`
    (`soup_trl.baselines.m2po_ops.second_moment_cap`), and the per-token loss is max(-A r, -A clamp(r, e^-t, e^t)):
    GRPOTrainer's own clipped loss with its clip bounds set to e^-t and e^t for that micro-batch, so the DAPO
    normaliser (clipped tokens stay in the denominator), KL, vLLM sampler-mismatch correction and metrics are
    GRPOTrainer's. The paper's Algorithm 1 instead removes the tokens with the largest (log r)^2 one by one until the
    mean of the remaining ones is <= tau; the released rule used here counts the tokens beyond the threshold at the
    threshold's value (they stay in the mean's count), so it clips at least as many tokens as the greedy algorithm
    would, and it ranks harmful tokens only.

    Hooks overridden (everything else is GRPOTrainer's):

    - `_prepare_inputs`: the staleness queue (sample and score the current batch, hand out the one sampled
      `m2po_staleness` steps earlier, split into its gradient-accumulation micro-batches; groups stay whole).
    - `_on_policy_forward` / `_after_loss` (`MethodTrainer`'s loss-forward hooks) and `compute_loss`: compute the
      trust region from the loss forward's own log-probs (no extra forward pass), set the clip bounds of that
      micro-batch (restored after its loss), and log `m2po/*` metrics.
    - `_save_optimizer_and_scheduler` / `_load_optimizer_and_scheduler`: each process saves its queue with the
      checkpoint, and a resumed run trains on it.

    `MethodTrainer` adds what every method of the package shares: data checks, guarded rewards (rows a reward
    function failed on are unscorable), the compact console, complete checkpoints, the model card.
    """

    _tag_names = ["trl", "grpo", "m2po"]
    _name = "M2PO"
    config_class = M2POConfig
    paper = PAPER
    console_fields = (("m2po/masked_token_frac", "masked", "%"),)

    def __init__(self, model, reward_funcs=None, args: M2POConfig | None = None, **kwargs):
        super().__init__(model, reward_funcs, args=args, **kwargs)
        args = self.args
        if args.m2po_staleness > 0 and isinstance(self.train_dataset, torch.utils.data.IterableDataset):
            raise ValueError(
                f"m2po_staleness={args.m2po_staleness} needs a map-style train_dataset (the batches sampled up front "
                "draw prompts from it); pass a datasets.Dataset, or use m2po_staleness=0."
            )
        self._m2po_queue: collections.deque[_QueuedBatch] = collections.deque()
        self._m2po_micro_batches: list[dict] | None = None
        self._m2po_upfront_prompts = None  # iterator over this process's rows of the up-front batches
        self._m2po_stats: torch.Tensor | None = None  # trust-region sums of the micro-batch whose loss is computed

    # ------------------------------------------------------------------ staleness queue

    def _prepare_inputs(self, generation_batch):
        if not self.model.training:
            return super()._prepare_inputs(generation_batch)
        accumulation = self.args.gradient_accumulation_steps
        micro_step = self._step % accumulation
        if micro_step == 0 or self._m2po_micro_batches is None:
            queued = self._next_batch(generation_batch)
            device = self.accelerator.device
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in queued.batch.items()}
            self._m2po_micro_batches = split_tensor_dict(batch, accumulation)
            self._metrics["train"]["m2po/staleness"].append(float(queued.train_step - queued.sampled_at))
        return self._m2po_micro_batches[micro_step]

    def _next_batch(self, generation_batch: list[dict]) -> _QueuedBatch:
        """Sample what this step must sample, then take the batch this step trains on from the queue."""
        step, last_step = self.state.global_step, self.state.max_steps
        staleness = self.args.m2po_staleness
        if not self._m2po_queue:
            if step > 0 and staleness > 0:
                logger.warning(
                    "M2PO: the staleness queue is empty at step %d (resumed from a checkpoint without it?); sampling "
                    "the batches of steps %d-%d up front with the current policy.", step, step, step + staleness - 1,
                )
            for offset in range(min(staleness, last_step - step)):
                self._m2po_queue.append(self._sample_batch(self._upfront_batch(), step + offset))
        if step + staleness < last_step:
            self._m2po_queue.append(self._sample_batch(generation_batch, step + staleness))
        queued = self._m2po_queue.popleft()
        if queued.train_step != step:
            raise RuntimeError(
                f"M2PO: the queue's next batch is for step {queued.train_step}, but step {step} is training."
            )
        return queued

    def _sample_batch(self, inputs: list[dict], train_step: int) -> _QueuedBatch:
        """Sample and score `inputs` with the current policy; keep the result (on CPU) for `train_step`."""
        output = self._generate_and_score_completions(inputs)
        if "num_images" in output:
            raise ValueError("M2POTrainer supports text prompts only.")
        if "old_per_token_logps" not in output:  # GRPOTrainer computes them only for vLLM's sampler correction
            output["old_per_token_logps"] = self._behavior_logps(output)
        batch = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in output.items()}
        return _QueuedBatch(batch=batch, sampled_at=self.state.global_step, train_step=train_step)

    @torch.no_grad()
    def _behavior_logps(self, output: dict) -> torch.Tensor:
        """Per-token log-probs of the completions under the current (sampling) policy, (B, C)."""
        completion_ids = output["completion_ids"]
        with disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            logps, _, _ = self._get_per_token_logps_and_entropies(
                self.model,
                torch.cat([output["prompt_ids"], completion_ids], dim=1),
                torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1),
                completion_ids.size(1),
                batch_size=self.args.per_device_train_batch_size,
            )
        return logps

    def _upfront_batch(self) -> list[dict]:
        """This process's rows of the next batch sampled up front: whole groups, like a dataloader batch."""
        if self._m2po_upfront_prompts is None:
            self._m2po_upfront_prompts = self._iterate_upfront_rows()
        return next(self._m2po_upfront_prompts)

    def _iterate_upfront_rows(self):
        rows = self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps
        processes, rank = self.accelerator.num_processes, self.accelerator.process_index
        sampler = RepeatSampler(
            self.train_dataset,
            mini_repeat_count=self.num_generations,
            batch_size=rows * processes // self.num_generations,
            shuffle=True,
            seed=self.args.seed + 1,
        )
        while True:
            indices = list(sampler)  # a new permutation on every pass over the data
            if not indices:
                raise ValueError(
                    f"train_dataset has {len(self.train_dataset)} prompts, fewer than one batch of "
                    f"{rows * processes // self.num_generations} prompts."
                )
            for start in range(0, len(indices), rows * processes):
                share = indices[start + rank * rows : start + (rank + 1) * rows]
                yield [self.train_dataset[i] for i in share]

    # ------------------------------------------------------------------ loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        try:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        finally:  # the clip bounds of the config, for whatever reads them outside a loss call
            self.epsilon_low = self.args.epsilon
            self.epsilon_high = self.args.epsilon_high if self.args.epsilon_high is not None else self.args.epsilon

    def _on_policy_forward(self, forward: PolicyForward) -> None:
        # this micro-batch's trust region, set before GRPOTrainer's loss clamps the ratio to
        # [1 - epsilon_low, 1 + epsilon_high]
        inputs, logps = forward.inputs, forward.logps.detach()
        old = inputs.get("old_per_token_logps")
        log_ratio = torch.zeros_like(logps) if old is None else logps - old  # (B, C)
        mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        region = m2po_trust_region(log_ratio, inputs["advantages"], mask, self.args.m2po_tau)
        self.epsilon_low, self.epsilon_high = 1.0 - region.ratio_low, region.ratio_high - 1.0
        self._m2po_stats = trust_region_stats(log_ratio, mask, region)

    def _after_loss(self, loss, inputs, forward: PolicyForward):
        stats, self._m2po_stats = self._m2po_stats, None
        totals = self.accelerator.reduce(stats, reduction="sum")
        mode = "train" if self.model.training else "eval"
        for name, value in trust_region_metrics(totals).items():
            self._metrics[mode][name].append(value)
        return loss

    # ------------------------------------------------------------------ checkpoints

    def _queue_file(self, folder: str) -> str:
        return os.path.join(folder, f"m2po_queue_rank{self.accelerator.process_index}.pt")

    def _save_optimizer_and_scheduler(self, folder):
        super()._save_optimizer_and_scheduler(folder)
        if self._m2po_queue:
            # Each process keeps its own queued batches, so that a resumed run trains on them
            os.makedirs(folder, exist_ok=True)
            queue = [vars(queued) for queued in self._m2po_queue]
            torch.save(queue, self._queue_file(folder))

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        path = self._queue_file(checkpoint)
        if os.path.exists(path):
            saved = torch.load(path, weights_only=False)
            self._m2po_queue = collections.deque(_QueuedBatch(**queued) for queued in saved)
