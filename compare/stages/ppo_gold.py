"""Stage `ppo_gold`: our PPO against the gold reward itself, an oracle upper bound.

Not a competitor: it reads the task's true objective, which fairness rule 3 (docs/design.md) keeps from
every other training stage, and it is labelled as an oracle wherever it appears. It shows how far the
proxy-driven arms stay from the best the base model can reach. The value model starts from the policy's
body with a zero scalar head (there is no reward model to start it from).
"""

from __future__ import annotations

from pathlib import Path

from compare.compute import Tokens, rollouts
from compare.stages.common import Context, train_prompt_tokens
from compare.stages.ppo import PPOSettings, run_ppo, workload
from compare.stages.spec import Job, Memory, Role, StageSpec


def run(job: Job, out: Path, inputs: dict[str, Path], ctx: Context) -> None:
    run_ppo(job, out, inputs, ctx, reward="gold")


def compute(params: dict, folder: Path, inputs: dict, counter) -> Tokens:
    """As PPO's, without a reward model: the gold reward is the task's own function."""
    train = params["train"]
    prompt = train_prompt_tokens(params, counter)
    return rollouts(train["episodes"], prompt, train["max_new_tokens"], 3, 2 * train["ppo_epochs"])


SPEC = StageSpec(
    kind="ppo_gold",
    version=3,  # 2: trained with LoRA, stored as its adapter on its start (docs/cache.md); 3: snapshots
    run=run,
    description="PPO against the gold reward itself: an oracle upper bound.",
    settings=PPOSettings,
    role=Role.ORACLE,
    reads_task=True,
    memory=Memory(
        trained=2, frozen=1, lora=2, forwards=2
    ),  # no reward model; the value model has its own base
    strength="kl_coef",
    objective=("objective/rlhf_reward", "gold − β·KL ↑"),
    distributed=True,
    workload=workload,
    compute=compute,
)
