"""Stage `rloo`: REINFORCE with a leave-one-out baseline (RLOO) against our reward model, with TRL's RLOOTrainer.

For each prompt the policy samples k completions; completion i's advantage is its reward minus the mean
reward of the other k - 1 (Ahmadian et al. 2024, eq. 5). With beta > 0 the reward is first reduced by
beta * sum_t (log pi(y_t) - log ref(y_t)), the frozen starting policy being the reference.

Scoring: a reward *function* that calls `compare.lm.sampling.reward_scores`, not the reward model itself.
Given a model in `reward_funcs`, TRL 1.16 (`RLOOTrainer._calculate_rewards`) scores `prompt + completion`
with no EOS, and its completion is `batch_decode(ids, skip_special_tokens=True)`, which for our word-level
tokenizer has no leading space (so the last prompt word and the first completion word run together).
TRL's RewardTrainer appended EOS to every training text and the score is read at the last non-pad
token, so the built-in path would read the score one token early on text the model never saw.
`compare.lm.sampling.reward_function` rebuilds the completion the way `compare.lm.sampling.sample`
writes it (the format of the comparisons the reward model learnt from) and scores it with
`reward_scores`, which appends EOS: one scoring path for this stage, GRPO, evaluation and best-of-n.

Held-out samples at a few checkpoints along training go to `snapshots.jsonl` (`compare.stages.snapshots`:
a trainer callback that draws from no training RNG).

Positions: TRL's log-prob forward passes give left-padded prompts no position ids, while `generate`
derives them from the attention mask; GPT-2's absolute positions then shift between sampling and
scoring (docs/ppo.md row 2). `compare.lm.sampling.use_mask_positions` supplies `cumsum(mask) - 1`
wherever position ids are missing, on the policy and on the reference.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

from pydantic import Field, model_validator

from compare.compute import Tokens, rollouts
from compare.lm.chat import conversational, uses_chat
from compare.lm.loading import load_policy, load_reward_model
from compare.lm.sampling import reward_function, reward_scores, use_mask_positions
from compare.stages.common import (
    Context,
    lora_config,
    make_task,
    point_reference_at_start,
    train_and_save,
    train_prompt_tokens,
    trainer_args,
    weight_dtype,
)
from compare.stages.snapshots import SnapshotSettings, watch_training
from compare.stages.spec import LORA_HELP, Job, Memory, Role, StageSpec, TrainingSettings, TrainSettings


class RLOOSettings(TrainingSettings, SnapshotSettings):
    """TRL's RLOOTrainer scoring with our reward model (REINFORCE, leave-one-out baseline)."""

    episodes: int = Field(512, ge=1, description="Prompts used in all.")
    num_generations: int = Field(4, ge=2, description="Completions per prompt (the leave-one-out group).")
    batch_size: int = Field(16, ge=2, description="Completions per optimiser step.")
    lr: float = Field(3e-4, gt=0, description="Learning rate.")
    beta: float = Field(0.05, ge=0, description="KL coefficient to the starting policy.")
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
    """The configured RLOOTrainer, ready to train (split from `run` so tests can inspect its scoring)."""
    from trl import RLOOConfig, RLOOTrainer

    train = job.settings
    data = episode_prompts(make_task(job.task), train.episodes, f"rloo-{job.seed}")
    model, tokenizer = start_policy(inputs, train, out)
    rm = rm_scorer(inputs)
    score = reward_function(tokenizer, rm, "reward_model")
    trainer = group_trainer(RLOOTrainer, RLOOConfig, job, out, ctx, model, tokenizer, score, data)
    watch_training(trainer, job, inputs, out, rm)
    return trainer


# -- shared with GRPO (compare/stages/grpo.py): TRL's group-sampling trainers on one set-up ---------------
def episode_prompts(task, episodes: int, seed: str):
    """The training prompts, one per episode, drawn with replacement from the task's pool."""
    from datasets import Dataset

    rng, pool = random.Random(seed), task.prompts("train")
    return Dataset.from_dict({"prompt": [rng.choice(pool) for _ in range(episodes)]})


def start_policy(inputs: dict[str, Path], train, out: Path):
    """The policy to train and its tokenizer; TRL's reference is pointed at the start (with LoRA it is the
    adapter disabled) and both take positions from the mask."""
    policy_path = str(inputs["model"])
    model, tokenizer = load_policy(policy_path, dtype=weight_dtype(train))
    if train.beta > 0 and not train.lora_r:
        point_reference_at_start(model, tokenizer, policy_path, out)
    use_mask_positions(model)
    return model, tokenizer


def model_scorer(inputs: dict[str, Path], tokenizer):
    """The arm's reward model as a TRL reward function."""
    return reward_function(tokenizer, rm_scorer(inputs), "reward_model")


def rm_scorer(inputs: dict[str, Path]):
    """The arm's reward model as a function (prompts, completions) -> scores (`reward_scores`)."""
    rm, rm_tokenizer = load_reward_model(str(inputs["reward_model"]))
    return lambda prompts, texts: reward_scores(rm, rm_tokenizer, prompts, texts)


def group_trainer(trainer_cls, config_cls, job: Job, out: Path, ctx: Context, model, tokenizer, score, data,
                  **config):  # fmt: skip
    """One epoch over the episodes' prompts, each sampled `num_generations` times: episodes * k
    completions, `batch_size` of them per optimiser step; `config`: the trainer's own settings."""
    from datasets import Dataset

    train = job.settings
    optimiser = TrainSettings.one_pass(train)
    args = trainer_args(
        config_cls,
        optimiser,
        job.seed,
        out,
        ctx,
        num_generations=train.num_generations,
        max_completion_length=train.max_new_tokens,
        temperature=train.temperature,
        beta=train.beta,
        disable_dropout=True,
        **config,
    )
    if uses_chat(tokenizer):  # TRL's conversational prompts: it applies the template when it samples
        data = Dataset.from_list(conversational(tokenizer, data.to_list()))
    trainer = trainer_cls(
        model=model,
        reward_funcs=score,
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=lora_config(train.lora_r, "CAUSAL_LM"),
    )
    if trainer.ref_model is not None:
        use_mask_positions(trainer.ref_model)
    shutil.rmtree(out / "start", ignore_errors=True)  # the reference is loaded; the copy is not needed
    return trainer


def workload(s) -> tuple[int, int, str]:  # RLOO's settings, or GRPO's
    """Its episodes' prompts are one dataset, built before training; every prompt has k completions."""
    tokens = (s.episodes * s.num_generations + s.snapshots * s.snapshot_prompts) * s.max_new_tokens
    return (
        s.episodes,
        tokens,
        f"{s.episodes} episodes x {s.num_generations} completions x {s.max_new_tokens} tokens",
    )


def compute(params: dict, folder: Path, inputs: dict, counter) -> Tokens:
    """`num_generations` completions per episode, sampled, scored by the reward model and by the
    reference (when beta > 0), then one update (forward and backward)."""
    train = params["train"]
    prompt = train_prompt_tokens(params, counter)
    passes = 2 + (train["beta"] > 0)
    return rollouts(train["episodes"] * train["num_generations"], prompt, train["max_new_tokens"], passes, 1)


SPEC = StageSpec(
    kind="rloo",
    version=3,  # 2: trained with LoRA, stored as its adapter on its start (docs/cache.md); 3: snapshots
    run=run,
    description="RLOO against the reward model (TRL RLOOTrainer).",
    settings=RLOOSettings,
    role=Role.ONLINE_RL,
    needs_reward_model=True,
    reads_task=True,
    memory=Memory(trained=1, frozen=2, lora=2),  # policy trained, reference and reward model frozen
    strength="beta",
    objective=("reward", "RM score ↑"),
    distributed=True,
    workload=workload,
    compute=compute,
)
