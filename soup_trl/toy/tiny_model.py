"""Offline tiny model for the scratchpad-addition task: tokenizer, random model, cached SFT warm-up, evaluation.

Everything runs on CPU without network access. `ensure_tiny_base_model` returns the path of a warmed-up base model
(building it with TRL's `SFTTrainer` on first use, then reusing a cached copy keyed by a hash of its settings).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, ClassVar

import torch

from ..core.cache import DEFAULT_CACHE_DIR, build_once, cache_root  # noqa: F401  (DEFAULT_CACHE_DIR: re-exported)
from ..core.runtime import configure_threads  # noqa: F401  (re-exported: older scripts import it from here)
from ..rewards.arithmetic import ALPHABET, arithmetic_reward
from .arithmetic import make_arithmetic_dataset

logger = logging.getLogger(__name__)

PAD_TOKEN, BOS_TOKEN, EOS_TOKEN = "<pad>", "<bos>", "<eos>"
SPECIAL_TOKENS = [PAD_TOKEN, BOS_TOKEN, EOS_TOKEN]

# Roles are not marked: a conversation renders as BOS + the message contents, each assistant turn closed by EOS, so a
# conversational prompt tokenizes exactly like the same plain-text prompt.
CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for block in message['content'] -%}"
    "{%- if block['type'] == 'text' -%}{{- block['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}{{- eos_token -}}{%- endif -%}"
    "{%- endfor -%}"
)

# Bump when the tokenizer, model construction or warm-up procedure changes, so that old caches are not reused.
CACHE_FORMAT_VERSION = 2
MARKER_FILE = "soup_tiny_model.json"


# --------------------------------------------------------------------------------------------------------------------
# Tokenizer and model
# --------------------------------------------------------------------------------------------------------------------


def build_tokenizer(save_dir: str | os.PathLike | None = None, max_digits: int = 4, seed: int = 0):
    """Character-level tokenizer: the 14 task symbols (`0-9 + = , |`) plus `<pad>`, `<bos>`, `<eos>` (17 tokens).

    A byte-level BPE trained with `tokenizers` on task text, with a vocabulary restricted to the task alphabet (so
    no merges), wrapped in `PreTrainedTokenizerFast`. Its pipeline is the one `Qwen2Tokenizer` rebuilds, because
    `AutoTokenizer` loads a tokenizer saved next to a Qwen2 model as `Qwen2Tokenizer`: both load paths tokenize
    identically. Characters outside the alphabet are dropped. Encoding prepends `<bos>`, and so does the chat
    template. Saved to `save_dir` if given.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    data = make_arithmetic_dataset(2000, seed=seed, max_digits=max_digits, with_target=True)
    corpus = [p + c for p, c in zip(data["prompt"], data["completion"])] + [ALPHABET]

    tok = Tokenizer(models.BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=len(SPECIAL_TOKENS) + len(ALPHABET), special_tokens=SPECIAL_TOKENS, show_progress=False
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    if sorted(tok.get_vocab()) != sorted(SPECIAL_TOKENS + list(ALPHABET)):  # guards against future edits
        raise RuntimeError(f"unexpected tokenizer vocabulary {sorted(tok.get_vocab())}")
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A", pair=f"{BOS_TOKEN} $A $B", special_tokens=[(BOS_TOKEN, tok.token_to_id(BOS_TOKEN))]
    )

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=None,
        clean_up_tokenization_spaces=False,
        model_max_length=128,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    if save_dir is not None:
        tokenizer.save_pretrained(save_dir)
    return tokenizer


def build_tiny_model(
    save_dir: str | os.PathLike,
    tokenizer=None,
    hidden_size: int = 96,
    num_layers: int = 3,
    num_heads: int = 3,
    num_kv_heads: int | None = None,
    intermediate_size: int = 288,
    max_position_embeddings: int = 64,
    seed: int = 0,
) -> str:
    """Randomly initialised (seeded) `Qwen2ForCausalLM`, saved with its tokenizer to `save_dir`; returns the path.

    The defaults (head size 32, ~0.36 M parameters) keep the head size >= 32 that vLLM's CPU backend requires.
    """
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    if tokenizer is None:
        tokenizer = build_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads or num_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
    )
    save_dir = str(save_dir)
    model.save_pretrained(save_dir)
    tokenizer.save_pretrained(save_dir)
    return save_dir


# --------------------------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------------------------


def _load(model_or_path, tokenizer):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if isinstance(model_or_path, str | os.PathLike):
        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(model_or_path)
        model_or_path = AutoModelForCausalLM.from_pretrained(model_or_path)
    if tokenizer is None:
        raise ValueError("a tokenizer is required when a model object is given")
    return model_or_path, tokenizer


@torch.no_grad()
def evaluate_greedy(
    model_or_path,
    tokenizer=None,
    dataset=None,
    max_new_tokens: int | None = None,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Greedy-decode every prompt of `dataset` and score it with `arithmetic_reward`.

    `dataset` needs `prompt` and `solution` columns (default: 500 held-out problems). Prompts are batched by token
    length, so no padding is involved. Returns `accuracy`, `direct_answer_share` (completions that skip the
    scratchpad), `accuracy_by_digits` (when the dataset has `num_digits`),
    `mean_completion_tokens` (EOS included when generated), `num_examples` and `completions`.
    """
    model, tokenizer = _load(model_or_path, tokenizer)
    if dataset is None:
        dataset = make_arithmetic_dataset(500, seed=0, split="test")
    prompts, solutions = list(dataset["prompt"]), list(dataset["solution"])
    if max_new_tokens is None:
        digits = max((len(run) for p in prompts for run in re.findall(r"\d+", p)), default=1)
        max_new_tokens = 4 * digits + 4  # the longest target is 4 * digits + 1 characters, then EOS
    was_training = model.training
    model.eval()
    eos_id = tokenizer.eos_token_id
    completions: list[str] = [""] * len(prompts)
    lengths: list[int] = [0] * len(prompts)
    encoded = [tokenizer(p)["input_ids"] for p in prompts]
    by_length: dict[int, list[int]] = defaultdict(list)
    for i, ids in enumerate(encoded):
        by_length[len(ids)].append(i)
    for indices in by_length.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            input_ids = torch.tensor([encoded[i] for i in chunk], device=model.device)
            out = model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                do_sample=False,
                max_new_tokens=max_new_tokens,
                eos_token_id=eos_id,
                pad_token_id=tokenizer.pad_token_id,
            )
            for row, i in zip(out[:, input_ids.shape[1] :].tolist(), chunk):
                n = row.index(eos_id) + 1 if eos_id in row else len(row)
                lengths[i] = n
                completions[i] = tokenizer.decode(row[:n], skip_special_tokens=True)
    model.train(was_training)
    rewards = arithmetic_reward(completions, solutions)
    result: dict[str, Any] = {
        "accuracy": sum(rewards) / max(1, len(rewards)),
        # answers written without a scratchpad ("|605"): the warm-up teaches both ways, RL should learn which pays
        "direct_answer_share": sum(c.startswith("|") for c in completions) / max(1, len(completions)),
        "mean_completion_tokens": sum(lengths) / max(1, len(lengths)),
        "num_examples": len(rewards),
        "completions": completions,
    }
    if "num_digits" in dataset.column_names:
        groups: dict[int, list[float]] = defaultdict(list)
        for d, r in zip(dataset["num_digits"], rewards):
            groups[d].append(r)
        result["accuracy_by_digits"] = {d: sum(v) / len(v) for d, v in sorted(groups.items())}
    return result


def greedy_accuracy(model_or_path, tokenizer=None, dataset=None, max_new_tokens: int | None = None) -> float:
    """Fraction of `dataset` problems (default: 500 held-out ones) answered correctly by greedy decoding."""
    return evaluate_greedy(model_or_path, tokenizer, dataset, max_new_tokens=max_new_tokens)["accuracy"]


# --------------------------------------------------------------------------------------------------------------------
# Warmed-up base model with an on-disk cache
# --------------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TinyModelSettings:
    """Everything that determines the warmed-up base model; the cache directory is keyed by a hash of these fields.

    Defaults measured on one CPU core: ~63 s of SFT; greedy accuracy 0.42 on 500 held-out problems, 52% of the answers
    direct (almost all wrong), the rest with a scratchpad.
    """

    # Task of the warm-up (see soup_trl.arithmetic): 3-digit zero-padded operands, half the targets direct answers.
    max_digits: int = 3
    fixed_width: bool = True
    direct_fraction: float = 0.5
    hidden_size: int = 96
    num_layers: int = 3
    num_heads: int = 3
    num_kv_heads: int | None = None
    intermediate_size: int = 288
    max_position_embeddings: int = 64
    seed: int = 0
    # SFT warm-up (completion-only loss on scratchpad targets from the "train" split)
    warmup_steps: int = 500
    warmup_batch_size: int = 64
    warmup_learning_rate: float = 3e-3
    warmup_lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.05
    # Optional wall-clock cap: training stops early once exceeded (the result then depends on machine speed).
    warmup_seconds: float | None = None

    CACHE_PREFIX: ClassVar[str] = "tiny-addition"  # cache directory: <prefix>-<cache_key()>; a task subclass sets its own

    def warmup_dataset(self, num_examples: int):
        """The SFT examples (``prompt`` and target ``completion`` columns); a task subclass overrides this."""
        return make_arithmetic_dataset(
            num_examples,
            seed=self.seed,
            max_digits=self.max_digits,
            with_target=True,
            split="train",
            fixed_width=self.fixed_width,
            direct_fraction=self.direct_fraction,
        )

    def model_kwargs(self) -> dict[str, Any]:
        return {
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "num_kv_heads": self.num_kv_heads,
            "intermediate_size": self.intermediate_size,
            "max_position_embeddings": self.max_position_embeddings,
            "seed": self.seed,
        }

    def cache_key(self) -> str:
        payload = json.dumps({"version": CACHE_FORMAT_VERSION, **dataclasses.asdict(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


WARMUP_DESCRIPTION = "tiny base model: one-time SFT warm-up (cached afterwards)"
VERBOSE_WARMUP_ENV = "SOUP_TRL_VERBOSE_WARMUP"


def verbose_warmup() -> bool:
    """Whether the warm-up prints SFTTrainer's own logs (set SOUP_TRL_VERBOSE_WARMUP=1) instead of one labelled bar."""
    return os.environ.get(VERBOSE_WARMUP_ENV, "").strip().lower() in ("1", "true", "yes")


def _in_distributed_run() -> bool:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return True
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _warm_up(settings: TinyModelSettings, out_dir: Path) -> dict[str, Any]:
    """Build tokenizer and model in `out_dir`, train them with SFTTrainer, save them back to `out_dir`."""
    from datasets import Dataset
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, ProgressCallback, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from ..core.compat import no_activation_checkpointing

    tokenizer = build_tokenizer(out_dir, max_digits=settings.max_digits, seed=settings.seed)
    build_tiny_model(out_dir, tokenizer=tokenizer, **settings.model_kwargs())
    model = AutoModelForCausalLM.from_pretrained(out_dir)
    num_params = sum(p.numel() for p in model.parameters())

    train = settings.warmup_dataset(settings.warmup_steps * settings.warmup_batch_size)
    # Tokenized here in one batched call (TRL's per-example preprocessing would take ~10 s of the budget). Same result
    # as SFTTrainer's own completion-only preparation: BOS + prompt + completion + EOS, loss on completion + EOS.
    prompt_ids = tokenizer(list(train["prompt"]))["input_ids"]
    completion_ids = tokenizer(list(train["completion"]), add_special_tokens=False)["input_ids"]
    train = Dataset.from_dict(
        {
            "input_ids": [p + c + [tokenizer.eos_token_id] for p, c in zip(prompt_ids, completion_ids)],
            "labels": [[-100] * len(p) + c + [tokenizer.eos_token_id] for p, c in zip(prompt_ids, completion_ids)],
        }
    )

    class _TimeLimit(TrainerCallback):
        def __init__(self, seconds):
            self.seconds, self.start, self.stopped_at = seconds, None, None

        def on_train_begin(self, args, state, control, **kwargs):
            self.start = time.monotonic()

        def on_step_end(self, args, state, control, **kwargs):
            if self.seconds is not None and time.monotonic() - self.start > self.seconds:
                self.stopped_at = state.global_step
                control.should_training_stop = True

    time_limit = _TimeLimit(settings.warmup_seconds)
    args = SFTConfig(
        output_dir=str(out_dir / "_sft"),
        max_steps=settings.warmup_steps,
        per_device_train_batch_size=settings.warmup_batch_size,
        learning_rate=settings.warmup_learning_rate,
        lr_scheduler_type=settings.warmup_lr_scheduler,
        warmup_steps=round(settings.warmup_ratio * settings.warmup_steps),
        weight_decay=0.0,
        completion_only_loss=True,
        max_length=None,  # sequences are short (addition: at most 5 * max_digits + 9 tokens)
        **no_activation_checkpointing(),
        bf16=False,
        fp16=False,
        use_cpu=True,
        seed=settings.seed,
        data_seed=settings.seed,
        logging_steps=max(1, settings.warmup_steps // 10),
        save_strategy="no",
        report_to="none",
        dataloader_num_workers=0,
        disable_tqdm=False,
    )
    class _WarmupBar(TrainerCallback):
        """One labelled progress bar instead of SFT's log dicts, so the warm-up is not mistaken for the RL run."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.bar = tqdm(total=state.max_steps, desc=WARMUP_DESCRIPTION, unit="step", dynamic_ncols=True)

        def on_step_end(self, args, state, control, **kwargs):
            self.bar.update(state.global_step - self.bar.n)

        def on_train_end(self, args, state, control, **kwargs):
            self.bar.close()

    trainer = SFTTrainer(
        model=model, args=args, train_dataset=train, processing_class=tokenizer, callbacks=[time_limit]
    )
    if not verbose_warmup():
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(_WarmupBar())
    start = time.monotonic()
    trainer.train()
    seconds = time.monotonic() - start
    trainer.model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    shutil.rmtree(out_dir / "_sft", ignore_errors=True)
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return {
        "num_parameters": num_params,
        "warmup_seconds_measured": round(seconds, 2),
        "warmup_steps_done": trainer.state.global_step,
        "stopped_by_time_limit": time_limit.stopped_at is not None,
        "final_logged_loss": losses[-1] if losses else None,
        "torch_threads": torch.get_num_threads(),
    }


def _warm_up_in_subprocess(settings: TinyModelSettings, out_dir: Path) -> dict[str, Any]:
    """Run `_warm_up` in a fresh, non-distributed Python process (a training launch's ranks must not join it)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not (
            k in {"RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK", "MASTER_ADDR"}
            or k in {"MASTER_PORT", "ROLE_WORLD_SIZE", "GROUP_WORLD_SIZE"}
            or k.startswith(("ACCELERATE_", "TORCHELASTIC_"))
        )
    }
    env.setdefault("OMP_NUM_THREADS", str(torch.get_num_threads()))
    cmd = [sys.executable, "-m", "soup_trl.toy.tiny_model", "--settings", json.dumps(dataclasses.asdict(settings))]
    cmd += ["--settings-class", f"{type(settings).__module__}:{type(settings).__qualname__}", "--out", str(out_dir)]
    subprocess.run(cmd, env=env, check=True)
    return json.loads((out_dir / MARKER_FILE).read_text())["build"]


def ensure_tiny_base_model(
    cache_dir: str | os.PathLike | None = None,
    settings: TinyModelSettings | None = None,
    *,
    force: bool = False,
    isolate: bool | None = None,
    **overrides,
) -> str:
    """Path of a warmed-up tiny base model for the addition task, built and cached on first use.

    The model lives in `<cache_dir>/<settings.CACHE_PREFIX>-<hash of settings>` (`tiny-addition-...` here) (`cache_dir` defaults to `$SOUP_TRL_CACHE` or
    `~/.cache/soup_trl`). `overrides` replace fields of `settings` (e.g. `warmup_steps=2`). A build happens in a
    temporary directory renamed into place when complete, under a file lock, so concurrent callers build once and an
    interrupted build is never reused. `isolate` runs the warm-up in a subprocess (default: only inside a distributed
    launch). `force=True` rebuilds. Uses the caller's torch thread count (see `configure_threads`).
    """
    settings = dataclasses.replace(settings or TinyModelSettings(), **overrides)
    target = cache_root(cache_dir) / f"{settings.CACHE_PREFIX}-{settings.cache_key()}"
    if isolate is None:
        isolate = _in_distributed_run()

    def warm_up(tmp: Path) -> dict:
        logger.info(
            "Building the tiny base model once (it is cached for later runs) in %s: SFT warm-up of %d steps x %d "
            "examples on CPU (%d torch threads); %s=1 shows its logs",
            target,
            settings.warmup_steps,
            settings.warmup_batch_size,
            torch.get_num_threads(),
            VERBOSE_WARMUP_ENV,
        )
        build = _warm_up_in_subprocess(settings, tmp) if isolate else _warm_up(settings, tmp)
        return {"settings": dataclasses.asdict(settings), "build": build}

    # concurrent processes (e.g. the ranks of one launch) build a model only once
    record = build_once(target, MARKER_FILE, warm_up, force=force, what="tiny base model")
    if record is not None:
        build = record["build"]
        logger.info(
            "Tiny base model ready at %s (%d SFT steps in %.0f s); training starts from it",
            target,
            build["warmup_steps_done"],
            build["warmup_seconds_measured"],
        )
    return str(target)


def _main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Build or evaluate the tiny addition base model.")
    parser.add_argument("--settings", default="{}", help="JSON overrides of TinyModelSettings fields")
    parser.add_argument("--settings-class", default=None, help="module:Class of a TinyModelSettings subclass")
    parser.add_argument("--out", default=None, help="internal: warm up into this directory and exit")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--eval", type=int, default=500, help="held-out problems to evaluate (0: skip)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    configure_threads(args.threads)
    settings_class = pkgutil.resolve_name(args.settings_class) if args.settings_class else TinyModelSettings
    settings = dataclasses.replace(settings_class(), **json.loads(args.settings))
    if args.out is not None:
        out = Path(args.out)
        build = _warm_up(settings, out)
        (out / MARKER_FILE).write_text(json.dumps({"settings": dataclasses.asdict(settings), "build": build}))
        return
    path = ensure_tiny_base_model(args.cache_dir, settings)
    print(path)
    if args.eval and type(settings) is TinyModelSettings:  # a task subclass evaluates with its own data
        held_out = make_arithmetic_dataset(
            args.eval, seed=0, split="test", max_digits=settings.max_digits, fixed_width=settings.fixed_width
        )
        result = evaluate_greedy(path, dataset=held_out)
        result.pop("completions")
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    _main()
