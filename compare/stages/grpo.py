"""Stage `grpo`: Group Relative Policy Optimisation with TRL's GRPOTrainer.

For each prompt the policy samples a group of k completions; completion i's advantage is its reward
minus the group's mean, divided by the group's standard deviation (Shao et al. 2024, DeepSeekMath,
sec. 4.1.2; `scale_rewards: none` leaves out the division, as Dr. GRPO recommends). The policy loss is
PPO's clipped surrogate on those advantages, per token, aggregated over tokens as `loss_type` says; with
beta > 0 a per-token KL penalty to the frozen starting policy (the k3 estimator) is added to the loss,
not to the reward.

The reward is the arm's reward model (`reward: reward_model`, an `rm` before it in the recipe) or the
task's verifier (`reward: verifier`: RL with verifiable rewards, e.g. arithmetic's exact answer, which no
annotation pays for). Either way it goes through `compare.lm.sampling.reward_function`, the reward path
RLOO uses (completion text rebuilt as our sampler writes it, EOS appended for the reward model), and the
policy and reference get left-padding-proof position ids (`use_mask_positions`); see
`compare/stages/rloo.py` for why each is needed. The gold reward is never a training signal here
(docs/design.md, fairness rule 3); it only scores the held-out samples saved at a few checkpoints along
training (`snapshots.jsonl`, `compare.stages.snapshots`), as RLOO and PPO save them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from compare.compute import Tokens, rollouts
from compare.lm.sampling import reward_function
from compare.stages.common import Context, make_task, train_and_save, train_prompt_tokens
from compare.stages.rloo import episode_prompts, group_trainer, rm_scorer, start_policy, workload
from compare.stages.snapshots import SnapshotSettings, watch_training
from compare.stages.spec import LORA_HELP, Job, Memory, Role, StageSpec, TrainingSettings
from compare.tasks.task import has_verifier


class GRPOSettings(TrainingSettings, SnapshotSettings):
    """TRL's GRPOTrainer against the reward model or the task's verifier."""

    reward: Literal["reward_model", "verifier"] = Field(
        "reward_model",
        description="What rewards a completion: the arm's reward model (an rm before it in the recipe) or "
        "the task's verifier (tasks with checkable answers, e.g. arithmetic; costs no annotation).",
    )
    episodes: int = Field(512, ge=1, description="Prompts used in all.")
    num_generations: int = Field(4, ge=2, description="Completions per prompt (the group).")
    batch_size: int = Field(16, ge=2, description="Completions per optimiser step.")
    lr: float = Field(3e-4, gt=0, description="Learning rate.")
    beta: float = Field(
        0.05, ge=0, description="KL coefficient to the starting policy, in the loss (0: no reference)."
    )
    loss_type: Literal["grpo", "bnpo", "dr_grpo", "dapo"] = Field(
        "dapo",
        description="How per-token losses are aggregated (TRL's loss_type): grpo = mean per sequence, then "
        "over sequences; bnpo/dapo = over all tokens of the batch; dr_grpo = divided by max_new_tokens.",
    )
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group",
        description="Divide advantages by the group's reward std (GRPO), the batch's, or not (Dr. GRPO).",
    )
    epsilon: float = Field(0.2, gt=0, description="Clip range of the policy ratio.")
    temperature: float = Field(0.7, gt=0, description="Sampling temperature.")
    max_new_tokens: int = Field(32, ge=1, description="Longest completion.")
    lora_r: int | None = Field(None, ge=1, description=LORA_HELP)

    @model_validator(mode="after")
    def _groups_fit(self):
        if self.batch_size % self.num_generations:
            raise ValueError(
                f"batch_size ({self.batch_size}) must be a multiple of num_generations ({self.num_generations})"
            )
        return self


def run(job: Job, out: Path, inputs: dict[str, Path], ctx: Context) -> None:
    trainer = build_trainer(job, out, inputs, ctx)
    train_and_save(trainer, out, ctx)


def build_trainer(job: Job, out: Path, inputs: dict[str, Path], ctx: Context):
    """The configured GRPOTrainer, ready to train (split from `run` so tests can inspect it); one
    generation per step (on-policy: num_iterations 1), set up as RLOO is (`compare.stages.rloo`)."""
    from trl import GRPOConfig, GRPOTrainer

    train = job.settings
    task = make_task(job.task)  # prompts and the verifier; never the gold reward
    data = episode_prompts(task, train.episodes, f"grpo-{job.seed}")
    model, tokenizer = start_policy(inputs, train, out)
    rm = None  # the reward model's scores of the snapshots, when it has one
    if train.reward == "verifier":
        if not has_verifier(type(task)):
            raise ValueError(f"task {task.name!r} has no verifier: use reward: reward_model")
        score = reward_function(tokenizer, task.verifier_rewards, "verifier")
    else:
        rm = rm_scorer(inputs)
        score = reward_function(tokenizer, rm, "reward_model")
    trainer = group_trainer(
        GRPOTrainer,
        GRPOConfig,
        job,
        out,
        ctx,
        model,
        tokenizer,
        score,
        data,
        loss_type=train.loss_type,
        scale_rewards=train.scale_rewards,
        epsilon=train.epsilon,
    )
    watch_training(trainer, job, inputs, out, rm)
    return trainer


def compute(params: dict, folder: Path, inputs: dict, counter) -> Tokens:
    """As RLOO's; a verifier is no model, so only a reward model adds a scoring pass."""
    train = params["train"]
    prompt = train_prompt_tokens(params, counter)
    passes = 1 + (train["beta"] > 0) + (train["reward"] == "reward_model")
    return rollouts(train["episodes"] * train["num_generations"], prompt, train["max_new_tokens"], passes, 1)


SPEC = StageSpec(
    kind="grpo",
    version=2,  # 2: held-out snapshots along training
    run=run,
    description="GRPO against the reward model or the task's verifier (TRL GRPOTrainer).",
    settings=GRPOSettings,
    role=Role.ONLINE_RL,
    needs_reward_model=lambda s: s.reward == "reward_model",
    needs_verifier=lambda s: s.reward == "verifier",
    reads_task=True,
    memory=Memory(trained=1, frozen=2, lora=2),  # policy trained, reference and reward model frozen
    strength="beta",
    objective=("reward", "reward ↑ (RM score or verifier)"),
    distributed=True,
    workload=workload,
    compute=compute,
)
