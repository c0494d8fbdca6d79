"""Stage `judge`: a dataset task's gold reward model, trained on held-out pairs (`task.data.judge_split`,
or `judge_fraction` of the train split).

It starts from the base model and is trained with the reward model's code on every held-out pair
(the `judge_data` stage); the stages that read the gold reward take it as their input "judge". Not a
recipe stage: it is part of the task, never trained on the arm's budget.
"""

from __future__ import annotations

from pathlib import Path

from compare.compute import offline
from compare.stages.common import Context
from compare.stages.rm import RewardSettings, train_reward_model
from compare.stages.spec import Memory, StageSpec


def run(params: dict, out: Path, inputs: dict[str, Path], ctx: Context) -> None:
    train_reward_model(RewardSettings.model_validate(params["train"]), params["seed"], out, inputs, ctx)


# 2: trained with LoRA, stored as its adapter on the base (docs/cache.md)
SPEC = StageSpec(
    kind="judge",
    version=2,
    run=run,
    memory=Memory(1, 0, 1, sequences=2),
    distributed=True,
    train_settings=RewardSettings,
    compute=offline("comparisons.jsonl", ("chosen", "rejected")),
)
