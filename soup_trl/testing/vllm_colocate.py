"""TRL's vLLM colocate mode for the tests: a trainer built with a colocated engine, and a record of its calls.

Import it after `pytest.importorskip("vllm")`. Two CPU-only adaptations live here, not in the trainers:
- vLLM's CPU backend runs float32 checkpoints in bfloat16 by default; the tests compare the engine's log-probs with
  float32 Transformers to 1e-4, so the engine TRL builds is asked for float32 (TRL exposes no dtype option).
- The engine runs eagerly: compiling the tiny model's graph takes 45-50 s per engine on CPU, running it eagerly a
  few seconds (the package's own vLLM path, `soup-trl eval --backend vllm`, keeps vLLM's default).
- TRL's colocate weight sync loads each tensor with the model's `load_weights`. vLLM's CPU backend repacks every
  linear weight for its GEMM kernels after loading and leaves an empty parameter in its place, so that per-tensor
  load has nothing to write into. vLLM's layer-wise reload takes the same (name, tensor) stream and re-runs the
  post-load processing of the layers it loads; a tied LM head is not among them, so its packed copy of the
  embedding is rebuilt afterwards.
GPU runs use TRL's own engine and sync.
"""

import gc
import os

import torch
import trl.generation.vllm_generation as trl_vllm
import vllm

ON_CPU = not torch.cuda.is_available()
# the config fields of a colocated engine for the tiny model
COLOCATE = dict(
    use_cpu=ON_CPU, use_vllm=True, vllm_mode="colocate", vllm_max_model_length=64, vllm_gpu_memory_utilization=0.3
)


def _repack_lm_head(worker):
    head = worker.model_runner.model.lm_head
    head.quant_method.process_weights_after_loading(head)


def cpu_sync_weights(generation):
    """Push the trainer's weights into a colocated vLLM engine running on CPU (see the module docstring)."""
    weights = [(name, tensor.detach().clone()) for name, tensor in generation._iter_named_params()]
    generation.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
    generation.llm.collective_rpc(_repack_lm_head)
    generation.llm.reset_prefix_cache()


class _Float32LLM:
    def __new__(cls, *args, **kwargs):
        return vllm.LLM(*args, dtype="float32", enforce_eager=True, **kwargs)


def colocated_trainer(trainer_cls, *args, **kwargs):
    """`trainer_cls(*args, **kwargs)` with its colocated engine (float32 and the reload sync on CPU), in a
    single-process group (the engines of a test session share it)."""
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}.items():
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_PORT", "29517")
    engine = trl_vllm.LLM
    trl_vllm.LLM = _Float32LLM if ON_CPU else engine
    try:
        trainer = trainer_cls(*args, **kwargs)
    finally:
        trl_vllm.LLM = engine
    if ON_CPU:
        trainer.vllm_generation.sync_weights = lambda: cpu_sync_weights(trainer.vllm_generation)
    return trainer


def release_engine(trainer):
    """Shut the trainer's engine down now. Left to the garbage collector, an engine may be collected while the next
    one starts, and its shutdown then tears down the process group state that the new engine has just set up."""
    del trainer.vllm_generation.llm
    gc.collect()


def train_and_release(trainer, model_dir, records):
    """The end of a module fixture: train, hand out (model_dir, trainer, records), then release the engine."""
    trainer.train()
    yield model_dir, trainer, records
    release_engine(trainer)
