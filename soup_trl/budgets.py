"""Per-row generation budgets: each continuation stops at its own token budget, on both generation paths.

A spliced row may write `max_completion_length - prefix_length` tokens. One generation call serves the rows of a
step, so without per-row limits every row would decode up to the largest budget and the excess would be thrown away.
"""

from __future__ import annotations

import contextlib

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from .core.generation import patched_attribute


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
                    "per-row budgets need colocate mode with vllm_tensor_parallel_size=1."
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
