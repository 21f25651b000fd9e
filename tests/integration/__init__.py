"""Runs across modules: contracts checked on real tiny-model runs, multi-process and multi-node launches, kill and
resume, vLLM, the real model, and the README's and the training command's runs. Launched scripts: workers/."""
