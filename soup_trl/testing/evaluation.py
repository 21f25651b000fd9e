"""What the tests of `soup_trl.evaluation` share: a backend that samples scripted completions, the run files Trainer
leaves, and a training log to plot.

- `ScriptedBackend`, `ids`, `EOS`: characters as token ids (EOS = 0), for exact metrics and relay splices without a
  model (tests/evaluation/test_runner.py, test_relay.py, test_backends.py);
- `save_training_args`: the training_args.bin Trainer writes beside a saved model, for the readers of a run's config
  (tests/evaluation/test_benchmarks.py, test_runs.py, test_selection.py);
- `make_log_history`: a SOUP run's log history with every metric `soup-trl plot` draws (tests/evaluation/
  test_plots.py, tests/scripts/test_cli.py).
"""

from types import SimpleNamespace

from ..evaluation.backends import Backend

EOS = 0


class ScriptedBackend(Backend):
    """Characters as token ids (EOS = 0); `script(text)` gives the completions of a prompt (cycled to n)."""

    name = "scripted"

    def __init__(self, script):
        super().__init__("scripted", SimpleNamespace(eos_token_id=EOS))
        self.script = script
        self.calls = []

    def encode_prompt(self, prompt):
        text = prompt if isinstance(prompt, str) else "".join(m["content"] for m in prompt)
        return [ord(c) for c in text]

    def decode(self, ids):
        return "".join(chr(i) for i in ids if i != EOS)

    def _sample(self, rows, n, budgets, sampling, desc):
        self.calls.append({"rows": [list(r) for r in rows], "n": n, "budgets": list(budgets)})
        out = []
        for row in rows:
            completions = self.script(self.decode(row))
            out.append([[ord(c) for c in completions[i % len(completions)]] + [EOS] for i in range(n)])
        return out


def ids(text: str, eos: bool = True) -> list[int]:
    return [ord(c) for c in text] + ([EOS] if eos else [])


def save_training_args(directory, **fields):
    """What Trainer writes beside a saved model: `torch.save` of the run's config."""
    import torch

    from ..soup.config import SOUPConfig

    directory.mkdir(parents=True, exist_ok=True)
    config = SOUPConfig(output_dir=str(directory), use_cpu=True, bf16=False, report_to="none", **fields)
    torch.save(config, directory / "training_args.bin")


def make_log_history(steps=30):
    history = []
    for s in range(1, steps + 1):
        entry = {
            "step": s,
            "epoch": s / steps,
            "loss": 0.1,
            "reward": s / steps,
            "entropy": 1.0 - s / (2 * steps),
            "clip_ratio/region_mean": 0.01 * (s % 3),
            "completions/mean_length": 10.0 + s,
            "soup/prefix_token_frac": 0.0 if s % 4 == 1 else 0.3,
            "soup/cut_position_mean": 0.5,
        }
        for seg, scale in (("prefix", 1.0), ("continuation", 2.0)):
            entry.update(
                {
                    f"soup/{seg}/ratio_mean": 1.0,
                    f"soup/{seg}/clip_ratio": 0.01 * scale,
                    f"soup/{seg}/entropy": 0.5 * scale,
                }
            )
        for b in range(10):
            entry[f"soup/position_bin_{b}/entropy"] = b + s / 100
            entry[f"soup/position_bin_{b}/clip_ratio"] = 0.001 * b
        history.append(entry)
    history.append({"step": steps, "train_runtime": 12.0, "train_loss": 0.1})
    return history
