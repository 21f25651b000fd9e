"""Sampling backends for evaluation: Transformers `generate` (CPU or GPU) and vLLM (GPU, imported lazily).

Both work on token ids: a prompt is tokenized once, the way `GRPOTrainer` tokenizes it (the tokenizer's chat template
with the generation prompt for chat messages, the plain tokenizer for text), and completions come back as token ids
cut after their first EOS and at their token budget. Relay sampling (`evaluation.relay`) relies on this: a
continuation starts exactly from prompt ids + prefix ids, never from re-tokenized text.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Callable, Sequence

from ..core.errors import UserError
from .arguments import BackendArguments, SamplingArguments

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "hf", "vllm")
def vllm_available() -> bool:
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


def resolve_backend(name: str) -> str:
    if name not in BACKENDS:
        raise UserError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}.")
    if name == "auto":
        return "vllm" if vllm_available() else "hf"
    if name == "vllm":
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            raise UserError(
                "--backend vllm: vLLM is not installed (pip install 'soup-trl[vllm]'), or use --backend hf."
            )
    return name


def check_model_path(model: str) -> None:
    """Fail early on a local model path that does not exist (anything else may be a Hub id)."""
    if not os.path.exists(os.path.expanduser(model)) and (model.startswith((".", "/", "~")) or model.count("/") > 1):
        raise UserError(f"model path {model} does not exist.")


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as e:  # noqa: BLE001 - a wrong path or Hub id is a user error
        raise UserError(f"could not load a tokenizer from {path!r}: {type(e).__name__}: {_first_line(e)}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0][:300]


class Backend:
    """Common part of the backends: prompt encoding, decoding, EOS handling."""

    name = "base"

    def __init__(self, model: str, tokenizer):
        self.model_name = model
        self.tokenizer = tokenizer
        self.eos_token_ids: set[int] = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
        self._warned_no_template = False

    def add_eos_ids(self, ids) -> None:
        if ids is None:
            return
        self.eos_token_ids.update([ids] if isinstance(ids, int) else ids)

    def encode_prompt(self, prompt: str | list[dict]) -> list[int]:
        """Token ids of one prompt, as GRPOTrainer builds them."""
        if isinstance(prompt, list):
            if self.tokenizer.chat_template is not None:
                encoded = self.tokenizer.apply_chat_template(
                    prompt, add_generation_prompt=True, tokenize=True, return_dict=True
                )
                return list(encoded["input_ids"])
            if not self._warned_no_template:
                logger.warning("%s has no chat template: prompts are sent as plain text.", self.model_name)
                self._warned_no_template = True
            prompt = "\n\n".join(m["content"] for m in prompt)
        return list(self.tokenizer(prompt)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def trim(self, ids: Sequence[int], budget: int) -> list[int]:
        """Cut a sampled row after its first EOS (kept) and at `budget` tokens."""
        ids = list(ids)[:budget]
        for i, token in enumerate(ids):
            if token in self.eos_token_ids:
                return ids[: i + 1]
        return ids

    def ends_with_eos(self, ids: Sequence[int]) -> bool:
        return bool(ids) and ids[-1] in self.eos_token_ids

    def generate(
        self, rows: list[list[int]], n: int, budgets: list[int], sampling: SamplingArguments, desc: str = "sampling"
    ) -> list[list[list[int]]]:
        """`n` completions (token ids, trimmed) of every row, row i within `budgets[i]` new tokens."""
        if len(rows) != len(budgets):
            raise ValueError("one budget per row is required")
        if not rows:
            return []
        if sampling.temperature == 0:  # greedy: one decode per row, repeated (generate refuses n > 1 without sampling)
            raw = [completions * n for completions in self._sample(rows, 1, budgets, sampling, desc)]
        else:
            raw = self._sample(rows, n, budgets, sampling, desc)
        return [[self.trim(c, b) for c in completions] for completions, b in zip(raw, budgets)]

    def _sample(self, rows, n, budgets, sampling, desc) -> list[list[list[int]]]:
        raise NotImplementedError

    def close(self) -> None:
        """Free the model (the next backend may need the memory)."""


class HFBackend(Backend):
    """`model.generate` on left-padded batches of prompts, `n` samples per prompt (`num_return_sequences`); a sample
    that has stopped leaves the forward batch (`soup_trl.core.generation`: the same tokens, fewer rows computed)."""

    name = "hf"

    def __init__(
        self, model: str, tokenizer=None, dtype: str = "auto", device: str | None = None, batch_size: int = 64
    ):
        import torch
        from transformers import AutoModelForCausalLM

        tokenizer = tokenizer if tokenizer is not None else load_tokenizer(model)
        super().__init__(model, tokenizer)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
            self.model = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype).to(self.device)
        except Exception as e:  # noqa: BLE001
            raise UserError(f"could not load model {model!r}: {type(e).__name__}: {_first_line(e)}") from None
        self.model.eval()
        self.add_eos_ids(self.model.generation_config.eos_token_id)
        self.batch_size = max(1, batch_size)

    def _sample(self, rows, n, budgets, sampling, desc):
        import torch
        from tqdm.auto import tqdm
        from transformers import GenerationConfig

        from ..core.generation import compacted_generation

        torch.manual_seed(sampling.seed)
        pad = self.tokenizer.pad_token_id
        do_sample = sampling.temperature > 0
        # Every sampling field is explicit: values left unset would be filled from the model's generation_config.
        base = dict(
            do_sample=do_sample,
            num_return_sequences=n,
            pad_token_id=pad,
            eos_token_id=sorted(self.eos_token_ids),
            repetition_penalty=1.0,
        )
        if do_sample:
            base.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
        # Shortest prompts first, so that a batch holds prompts of similar length (little padding).
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        per_call = max(1, self.batch_size // n)
        out: list[list[list[int]] | None] = [None] * len(rows)
        with (
            torch.no_grad(),
            compacted_generation(self.model),
            tqdm(total=len(rows), desc=desc, unit="prompt", leave=False) as bar,
        ):
            for start in range(0, len(order), per_call):
                chunk = order[start : start + per_call]
                width = max(len(rows[i]) for i in chunk)
                input_ids = torch.tensor([[pad] * (width - len(rows[i])) + rows[i] for i in chunk])
                mask = torch.tensor([[0] * (width - len(rows[i])) + [1] * len(rows[i]) for i in chunk])
                config = GenerationConfig(max_new_tokens=max(budgets[i] for i in chunk), **base)
                generated = self.model.generate(
                    input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device), generation_config=config
                )
                new_tokens = generated[:, width:].tolist()
                for j, i in enumerate(chunk):
                    out[i] = new_tokens[j * n : (j + 1) * n]
                bar.update(len(chunk))
        return out

    def close(self) -> None:
        import torch

        del self.model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


class VLLMBackend(Backend):
    """`vllm.LLM.generate` with `SamplingParams(n=...)` on token-id prompts built with the tokenizer's chat template."""

    name = "vllm"

    def __init__(
        self,
        model: str,
        tokenizer=None,
        dtype: str = "auto",
        seed: int = 0,
        tensor_parallel_size: int = 1,
        gpu_memory_utilization: float = 0.9,
        max_model_len: int | None = None,
    ):
        from vllm import LLM

        kwargs = dict(
            model=model,
            dtype=dtype,
            seed=seed,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
        )
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        if tokenizer is not None and isinstance(tokenizer, str):
            kwargs["tokenizer"] = tokenizer
        try:
            self.llm = LLM(**kwargs)
        except Exception as e:  # noqa: BLE001
            raise UserError(f"vLLM could not load model {model!r}: {type(e).__name__}: {_first_line(e)}") from None
        super().__init__(model, self.llm.get_tokenizer())
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        model_config = getattr(self.llm.llm_engine, "model_config", None)
        hf_config = getattr(model_config, "hf_config", None)
        self.add_eos_ids(getattr(hf_config, "eos_token_id", None))

    def _sample(self, rows, n, budgets, sampling, desc):
        from vllm import SamplingParams

        params = [
            SamplingParams(
                n=n,
                temperature=sampling.temperature,
                top_p=sampling.top_p if sampling.temperature > 0 else 1.0,
                max_tokens=budget,
                stop_token_ids=sorted(self.eos_token_ids),
                **({"top_k": sampling.top_k} if sampling.top_k > 0 else {}),
            )
            for budget in budgets
        ]
        logger.info("vLLM: %s (%d prompts x %d samples)", desc, len(rows), n)
        # vLLM 0.31 divides by the bar's elapsed time, which a disabled bar (TQDM_DISABLE, --no-progress) leaves at 0
        show_bar = os.environ.get("TQDM_DISABLE", "").lower() not in ("1", "true", "yes")
        outputs = self.llm.generate([{"prompt_token_ids": list(r)} for r in rows], params, use_tqdm=show_bar)
        return [[list(c.token_ids) for c in sorted(o.outputs, key=lambda c: c.index)] for o in outputs]

    def close(self) -> None:
        del self.llm
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover
            pass


def load_backend(
    options: BackendArguments,
    model: str,
    tokenizer: str | None = None,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> Backend:
    """Load `model` into the backend `options.backend` names ("auto": vLLM when installed with a GPU, else hf)."""
    backend = resolve_backend(options.backend)
    check_model_path(model)
    if log is not None:
        log(f"Loading {model} ({backend} backend)")
    if backend == "vllm":
        return VLLMBackend(
            model,
            tokenizer=tokenizer,
            dtype=options.dtype,
            seed=seed,
            tensor_parallel_size=options.tensor_parallel_size,
            gpu_memory_utilization=options.gpu_memory_utilization,
            max_model_len=options.max_model_len,
        )
    return HFBackend(
        model,
        tokenizer=load_tokenizer(tokenizer or model),
        dtype=options.dtype,
        device=options.device,
        batch_size=options.batch_size,
    )
