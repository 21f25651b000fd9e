"""Independent recomputation for the contract tests: parameter snapshots, fresh models, per-row views of batches."""

import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def clone_batch(batch):
    return {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


class SnapshotPolicy:
    """Per-token log-probs of a parameter snapshot at a sampling temperature, computed by a freshly loaded model
    (never a `copy.deepcopy` of the trainer's model, whose forward TRL patches).

    `params=None` keeps the saved model's own weights; `wrap` turns the loaded model into the trainer's model class
    before the snapshot is loaded (for example `lambda m: get_peft_model(m, lora_config)`).
    """

    def __init__(self, model_dir, params=None, temperature=1.0, wrap=None):
        self.model = AutoModelForCausalLM.from_pretrained(model_dir)
        if wrap is not None:
            self.model = wrap(self.model)
        if params is not None:
            self.model.load_state_dict(params)
        self.model.eval()
        self.temperature = temperature

    @torch.no_grad()
    def logps(self, prompt, completion):
        ids = torch.tensor([prompt + completion])
        logits = self.model(ids).logits[0, len(prompt) - 1 : -1] / self.temperature
        return F.log_softmax(logits.float(), dim=-1).gather(1, torch.tensor(completion).unsqueeze(1)).squeeze(1)


def rows(batch):
    """Unpadded (prompt, completion, prefix length, row index) of every row in a micro-batch."""
    for i in range(batch["prompt_ids"].size(0)):
        prompt = batch["prompt_ids"][i][batch["prompt_mask"][i].bool()].tolist()
        completion = batch["completion_ids"][i][batch["completion_mask"][i].bool()].tolist()
        yield prompt, completion, int(batch["soup_prefix_mask"][i].sum()), i
