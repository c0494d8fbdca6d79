"""Stage `rloo`: REINFORCE with a leave-one-out baseline (RLOO) against our reward model, with TRL's RLOOTrainer.

For each prompt the policy samples k completions; completion i's advantage is its reward minus the mean
reward of the other k - 1 (Ahmadian et al. 2024, eq. 5). With beta > 0 the reward is first reduced by
beta * sum_t (log pi(y_t) - log ref(y_t)), the frozen starting policy being the reference.

Scoring: a reward *function* that calls `compare.models.reward_scores`, not the reward model itself.
Given a model in `reward_funcs`, TRL 1.16 (`RLOOTrainer._calculate_rewards`) scores `prompt + completion`
with no EOS, and its completion is `batch_decode(ids, skip_special_tokens=True)`, which for our word-level
tokenizer has no leading space (so the last prompt word and the first completion word run together).
TRL's RewardTrainer appended EOS to every training text and the score is read at the last non-pad
token, so the built-in path would read the score one token early on text the model never saw. The
function below rebuilds the completion the way `compare.models.sample` writes it (the format of the
comparisons the reward model learnt from) and scores it with `reward_scores`, which appends EOS: one
scoring path for this stage, evaluation and best-of-n.

Positions: TRL's log-prob forward passes give left-padded prompts no position ids, while `generate`
derives them from the attention mask; GPT-2's absolute positions then shift between sampling and
scoring (PPO.md row 2). A forward pre-hook supplies `cumsum(mask) - 1` wherever position ids are missing,
on the policy and on the reference.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

from compare.models import (
    completion_text,
    load_policy,
    load_reward_model,
    position_ids,
    reward_scores,
    save_model,
)
from compare.stages.common import Context, lora_config, make_task, train_and_save, trainer_args


def run(params: dict, out: Path, inputs: dict[str, Path], ctx: Context) -> None:
    trainer = build_trainer(params, out, inputs, ctx)
    train_and_save(trainer, out, ctx)


def build_trainer(params: dict, out: Path, inputs: dict[str, Path], ctx: Context):
    """The configured RLOOTrainer, ready to train (split from `run` so tests can inspect its scoring)."""
    from datasets import Dataset
    from trl import RLOOConfig, RLOOTrainer

    if params.get("reward", "model") != "model":
        raise ValueError(f"rloo trains on the reward model only, got reward={params['reward']!r}")
    train, seed = params["train"], params["seed"]
    task = make_task(params["task"])
    rng = random.Random(f"rloo-{seed}")
    pool = task.prompts("train")
    data = Dataset.from_dict({"prompt": [rng.choice(pool) for _ in range(train["episodes"])]})

    policy_path = str(inputs["model"])
    model, tokenizer = load_policy(policy_path)
    if train["beta"] > 0:
        point_reference_at_start(model, tokenizer, policy_path, out)
    use_mask_positions(model)
    rm, rm_tokenizer = load_reward_model(str(inputs["reward_model"]))

    def reward_model(prompts: list[str], completion_ids: list[list[int]], **_) -> list[float]:
        prompt_ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
        completions = [completion_text(tokenizer, c, p) for c, p in zip(completion_ids, prompt_ids)]
        return reward_scores(rm, rm_tokenizer, prompts, completions)

    # One epoch over `episodes` prompts, each sampled `num_generations` times: episodes * k completions,
    # `batch_size` of them per optimiser step.
    optimiser = {"epochs": 1, "batch_size": train["batch_size"], "lr": train["lr"]}
    args = trainer_args(
        RLOOConfig,
        optimiser,
        seed,
        out,
        ctx,
        num_generations=train["num_generations"],
        max_completion_length=train["max_new_tokens"],
        temperature=train["temperature"],
        beta=train["beta"],
        disable_dropout=True,
    )
    trainer = RLOOTrainer(
        model=model,
        reward_funcs=reward_model,
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=lora_config(train["lora_r"], "CAUSAL_LM"),
    )
    if trainer.ref_model is not None:
        use_mask_positions(trainer.ref_model)
    shutil.rmtree(out / "start", ignore_errors=True)  # the reference is loaded; the copy is not needed
    return trainer


def point_reference_at_start(model, tokenizer, path: str, out: Path) -> None:
    """Make sure TRL's reference (reloaded from `model.config._name_or_path`) is the starting policy.

    That is `path` itself unless `load_policy` had to add a pad token (resizing the embeddings), in which
    case the starting policy is saved under `out` and the reference loaded from there.
    """
    from transformers import AutoConfig

    if model.config.vocab_size != AutoConfig.from_pretrained(path).vocab_size:
        path = str(out / "start")
        save_model(model, tokenizer, Path(path))
    model.config._name_or_path = path


def use_mask_positions(model) -> None:
    """Give every forward pass without position ids `cumsum(mask) - 1`, so left padding shifts nothing."""

    def add_positions(module, args, kwargs):
        ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
        # only full-sequence passes: `generate` supplies its own position ids for cached steps
        if (
            kwargs.get("position_ids") is None
            and ids is not None
            and mask is not None
            and mask.shape == ids.shape
        ):
            kwargs["position_ids"] = position_ids(mask.long())
        return args, kwargs

    model.register_forward_pre_hook(add_positions, with_kwargs=True)
