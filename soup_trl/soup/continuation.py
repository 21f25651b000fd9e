"""Continuations: the current policy writes the rest of every cut row of a step, each within its own token budget,
and the prefix and continuation are spliced.

A spliced row may write `max_completion_length - prefix_length` tokens. One generation call serves the open rows of a
step; each row stops at its own budget where the engine allows it (Transformers `generate`: a stopping rule; vLLM
colocate: per-prompt `max_tokens`, with tensor parallelism for the whole engine group's rows), else every row may
decode up to the call's limit and `splice` drops the excess. The limit of a call is agreed by every process that
shares the engine (`call_budgets`): vLLM server mode sends every process's prompts in one request with one
`max_tokens`, so its limit is the largest budget of any process's row.
"""

from __future__ import annotations

import contextlib

import torch
from accelerate.utils import gather_object
from transformers import StoppingCriteria, StoppingCriteriaList

from ..core.generation import patched_attribute
from ..core.lockstep import most_over_processes
from .cycle import GenerationPlan


def continuation_budgets(prefix_lengths: list[int], max_completion_length: int) -> list[int]:
    """Tokens the current policy may still write after each prefix (always >= 1)."""
    budgets = [max_completion_length - k for k in prefix_lengths]
    if any(b < 1 for b in budgets):
        raise ValueError(f"a prefix leaves no continuation budget (max_completion_length={max_completion_length}).")
    return budgets


def splice(prefixes: list[list], continuations: list[list], budgets: list[int]) -> list[list]:
    """Row-wise `prefix + continuation[:budget]`: the spliced completion (works for ids and for log-probs)."""
    if not len(prefixes) == len(continuations) == len(budgets):
        raise ValueError("prefixes, continuations and budgets must have one entry per row.")
    return [list(p) + list(c[:b]) for p, c, b in zip(prefixes, continuations, budgets)]


class RowBudgets(StoppingCriteria):
    """Stops row i of a `generate` batch once it has generated `budgets[i]` new tokens."""

    def __init__(self, budgets: list[int]):
        self.budgets = torch.tensor(budgets)
        self.prompt_width: int | None = None

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        if self.prompt_width is None:  # first call: one new token per row has been appended
            if input_ids.size(0) != len(self.budgets):
                raise RuntimeError(
                    f"SOUP: generate was asked for {input_ids.size(0)} rows but {len(self.budgets)} row budgets were "
                    "set; per-row budgets need one generated sequence per prompt (num_return_sequences=1)."
                )
            self.prompt_width = input_ids.size(1) - 1
        generated = input_ids.size(1) - self.prompt_width
        return generated >= self.budgets.to(input_ids.device)  # (B,) bool


@contextlib.contextmanager
def transformers_row_budgets(model, budgets: list[int]):
    """While active, `model.generate` also stops each row at its budget (the caller's stopping criteria are kept)."""
    original = model.generate

    def generate(*args, stopping_criteria=None, **kwargs):
        criteria = StoppingCriteriaList(stopping_criteria or [])
        criteria.append(RowBudgets(budgets))
        return original(*args, stopping_criteria=criteria, **kwargs)

    with patched_attribute(model, "generate", generate):
        yield


@contextlib.contextmanager
def vllm_row_budgets(llm, budgets: list[int]):
    """While active, `llm.generate` gives prompt i its own `max_tokens = budgets[i]` (one sampling-params object each)."""
    original = llm.generate

    def generate(prompts, sampling_params=None, **kwargs):
        if sampling_params is not None and not isinstance(sampling_params, list):
            if len(prompts) != len(budgets):
                raise RuntimeError(
                    f"SOUP: vLLM was asked for {len(prompts)} continuations but {len(budgets)} budgets were set; "
                    "per-row budgets need one budget per prompt of the engine's call (its tensor-parallel group's)."
                )
            per_prompt = []
            for budget in budgets:
                params = sampling_params.clone()
                params.max_tokens = budget
                per_prompt.append(params)
            sampling_params = per_prompt
        return original(prompts, sampling_params=sampling_params, **kwargs)

    with patched_attribute(llm, "generate", generate):
        yield


def continue_rows(trainer, plan: GenerationPlan, prompt_ids) -> tuple[list[list[int]], list | None]:
    """The step's completions as `plan` serves them, for the prompts GRPOTrainer tokenized (which must be the plan's):
    whole rows as sampled, the open rows' prefixes spliced with continuations of the current policy, each within its
    own budget, from one generation call. A process with fewer open rows than another continues filler rows (1 token
    each) and drops them. Returns the completion ids and, on vLLM, their sampler log-probs."""
    if plan.used or [list(p) for p in prompt_ids] != plan.prompt_ids:
        raise RuntimeError("SOUP: the prompts GRPOTrainer tokenized for this step differ from the cycle's behavior prompts.")
    plan.used = True
    completion_ids = [list(t) for t in plan.tokens]
    logprobs = None if plan.logprobs is None else [list(lp) for lp in plan.logprobs]
    open_rows = plan.open_rows
    calls = most_over_processes(trainer.accelerator, len(open_rows))
    if calls == 0:  # every row (of every process) is a whole completion: nothing to decode
        return completion_ids, logprobs

    prefixes = [plan.tokens[i] for i in open_rows]
    extended = [list(prompt_ids[i]) + list(p) for i, p in zip(open_rows, prefixes)]
    budgets = continuation_budgets([len(p) for p in prefixes], trainer.max_completion_length)
    extended += [list(plan.filler)] * (calls - len(open_rows))
    all_budgets = budgets + [1] * (calls - len(open_rows))
    limit, engine_budgets = call_budgets(trainer, all_budgets)
    with max_new_tokens(trainer, limit), row_budgets(trainer, engine_budgets):
        continuations, continuation_logps = trainer._generate_rows(extended, 1)
    if engine_budgets is not None:  # what a row returns past its budget is padding (Transformers), not decoded tokens
        trainer._decoded_tokens -= sum(max(0, len(c) - b) for c, b in zip(continuations, all_budgets))
    continuations = list(continuations)[: len(open_rows)]  # filler rows dropped
    for i, row in zip(open_rows, splice(prefixes, continuations, budgets)):
        completion_ids[i] = row
    if continuation_logps is not None:
        kept = [plan.logprobs[i] for i in open_rows]
        for i, row in zip(open_rows, splice(kept, list(continuation_logps)[: len(open_rows)], budgets)):
            logprobs[i] = row
    return completion_ids, logprobs


def call_budgets(trainer, budgets: list[int]) -> tuple[int, list[int] | None]:
    """What the next generation call of a step's continuations is given, from this process's row budgets (filler rows
    included): the call's limit (`max_new_tokens` / `max_tokens`), the same on every process that shares the engine,
    and the per-row budgets the engine applies, in the order it sees its prompts (None where it takes one limit per
    call).

    - Transformers `generate`: each process decodes its own rows, each stopping at its own budget.
    - vLLM colocate: each engine group (one process, or the `vllm_tensor_parallel_size` processes of a tensor-parallel
      group, which gathers its processes' prompts in rank order) gives each prompt its own `max_tokens`.
    - vLLM server mode: the main process sends every process's prompts in one request with one `max_tokens`; the limit
      is the largest budget of any process (a smaller one would cut other processes' rows before their EOS), and every
      row may decode up to it (`splice` cuts each to its budget).
    Every process must call it, in the same order (server mode and tensor parallelism gather)."""
    if not trainer.use_vllm:
        return max(budgets), budgets
    generation = trainer.vllm_generation
    if generation.mode == "server":
        return max(gather_object(list(budgets))), None
    if generation.tensor_parallel_size > 1:
        gathered = [None] * generation.tensor_parallel_size
        torch.distributed.all_gather_object(gathered, list(budgets), group=generation.tp_group)
        group_budgets = [b for rank_budgets in gathered for b in rank_budgets]
        return max(group_budgets), group_budgets
    return max(budgets), budgets


def row_budgets(trainer, budgets: list[int] | None):
    """Each row of the next generation call stops at its own budget (`call_budgets`' per-row budgets): a stopping rule
    (Transformers `generate`) or per-prompt `max_tokens` (vLLM colocate). None: one limit for the call (server mode).
    (Transformers continuous batching is rejected by `SOUPConfig` when T > 1.)"""
    if budgets is None:
        return contextlib.nullcontext()
    if not trainer.use_vllm:
        return transformers_row_budgets(trainer.accelerator.unwrap_model(trainer.model_wrapped), budgets)
    return vllm_row_budgets(trainer.vllm_generation.llm, budgets)


@contextlib.contextmanager
def max_new_tokens(trainer, limit: int):
    """Cap the generation length of the trainer's next calls (each row's own budget: `row_budgets`, and `splice` cuts
    to it)."""
    target = trainer.vllm_generation if trainer.use_vllm else trainer.generation_config
    field = "max_completion_length" if trainer.use_vllm else "max_new_tokens"
    previous = getattr(target, field)
    setattr(target, field, limit)
    try:
        yield
    finally:
        setattr(target, field, previous)
