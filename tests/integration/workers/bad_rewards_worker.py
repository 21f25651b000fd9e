"""A SOUP run in which every fourth prompt's gold answer hangs the grader and a user reward function hangs on some
completions, launched by tests/integration/test_distributed_reward_guard.py in two processes. Each process writes
OUT/rank{N}.json: per scored batch, the gathered rewards per function, its own rows' advantages, gold answers and
completions, and the log history."""

from __future__ import annotations

import json
import os

from soup_trl.rewards import grading
from soup_trl.rewards.accuracy import accuracy_reward
from soup_trl.rewards.deadline import time_limited
from soup_trl.testing.bad_rewards import RecordingSOUP, hang_dataset, hangs
from soup_trl.testing.rewards import shaped_reward
from soup_trl.testing.runs import launched_worker, leave_group, small_config


def main():
    args, state = launched_worker()
    grading.TIMEOUT_SECONDS = 1.0
    config = small_config(
        args.out,
        per_device_train_batch_size=8,
        max_steps=2,
        soup_behavior_steps=2,
        reward_weights=[1.0, 0.5, 1.0],
        accelerator_config={"use_configured_state": True},
    )
    funcs = [accuracy_reward, shaped_reward, time_limited(hangs, 1.0)]
    trainer = RecordingSOUP(args.model, funcs, args=config, train_dataset=hang_dataset(every=4))
    trainer.scored = []
    trainer.train()
    batches = [
        {
            "rewards": b["rewards"].tolist(),
            "advantages": b["advantages"].tolist(),
            "solutions": [x["solution"] for x in b["inputs"]],
            "completions": b["completions"],
        }
        for b in trainer.scored
    ]
    with open(os.path.join(args.out, f"rank{state.process_index}.json"), "w") as f:
        json.dump({"batches": batches, "history": trainer.state.log_history}, f)
    leave_group(state)


if __name__ == "__main__":
    main()
