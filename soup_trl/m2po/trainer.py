"""`M2POTrainer`: M2PO (second-moment trust region on stale samples) as a GRPOTrainer.

Paper: Zheng, Zhao and Chen, "Prosperity before Collapse: How Far Can Off-Policy RL Reach with Stale Data on
LLMs?" (arXiv:2510.01161).
"""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass

import torch
from trl.trainer.utils import RepeatSampler, split_tensor_dict

from ..core.lockstep import no_grad_logps
from ..core.masks import loss_tokens
from ..core.trainer import MethodTrainer, PolicyForward
from .config import M2POConfig
from .model_card import PAPER
from .ops import m2po_trust_region, trust_region_metrics, trust_region_stats

logger = logging.getLogger(__name__)

QUEUE_STATE = "m2po_queue"  # per process: m2po_queue_rank{R}.pt

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
    (`soup_trl.m2po.ops.second_moment_cap`), and the per-token loss is max(-A r, -A clamp(r, e^-t, e^t)):
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
    - `_process_state` / `_restore_process_state` (checkpoint state): each process saves its queue with the
      checkpoint, and a resumed run trains on it.

    `MethodTrainer` adds what every method of the package shares: data checks, guarded rewards (rows a reward
    function failed on are unscorable), dynamic sampling (at sampling time: a queued batch is filtered and refilled
    when it is sampled), the compact console, complete checkpoints, the model card.
    """

    _tag_names = ["trl", "grpo", "m2po"]
    _name = "M2PO"
    config_class = M2POConfig
    paper = PAPER
    console_fields = (("m2po/masked_token_frac", "masked", "%"),)
    process_state_names = (QUEUE_STATE,)

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
            output["old_per_token_logps"], _ = no_grad_logps(
                self, output["prompt_ids"], output["prompt_mask"], output["completion_ids"], output["completion_mask"]
            )
        batch = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in output.items()}
        return _QueuedBatch(batch=batch, sampled_at=self.state.global_step, train_step=train_step)

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
        mask = loss_tokens(inputs)
        region = m2po_trust_region(log_ratio, inputs["advantages"], mask, self.args.m2po_tau)
        self.epsilon_low, self.epsilon_high = 1.0 - region.ratio_low, region.ratio_high - 1.0
        self._m2po_stats = trust_region_stats(log_ratio, mask, region)

    def _after_loss(self, loss, inputs, forward: PolicyForward):
        stats, self._m2po_stats = self._m2po_stats, None
        self._log_sums(stats, trust_region_metrics)
        return loss

    # ------------------------------------------------------------------ checkpoint state

    def _process_state(self):
        # Each process keeps its own queued batches, so that a resumed run trains on them
        queue = [vars(queued) for queued in self._m2po_queue] if self._m2po_queue else None
        return {**super()._process_state(), QUEUE_STATE: queue}

    def _restore_process_state(self, found):
        super()._restore_process_state(found)
        if QUEUE_STATE in found:
            self._m2po_queue = collections.deque(_QueuedBatch(**queued) for queued in found[QUEUE_STATE])
