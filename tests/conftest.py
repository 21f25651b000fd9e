import os

import pytest
import torch

# Tests are small; one thread avoids oversubscription when another process shares the cores.
torch.set_num_threads(int(os.environ.get("SOUP_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random Qwen2-style causal LM and its tokenizer, built locally and saved for `from_pretrained`."""
    from soup_trl.toy.tiny_model import build_tiny_model

    path = tmp_path_factory.mktemp("tiny_model")
    build_tiny_model(str(path))
    return str(path)


@pytest.fixture(scope="session")
def arithmetic_prompts():
    from soup_trl.toy.arithmetic import make_arithmetic_dataset

    return make_arithmetic_dataset(256, seed=0, max_digits=2)
