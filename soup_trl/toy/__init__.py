"""The offline toy task: scratchpad addition and the tiny Qwen2-style model warmed up on it (CPU, no network)."""
