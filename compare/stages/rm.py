"""Stage `rm`: a reward model trained on the comparisons with TRL's RewardTrainer.

Initialised from the policy the comparisons were sampled from, with a scalar head; the Bradley–Terry
loss -log sigmoid(r(chosen) - r(rejected)) (Ouyang et al. 2022, eq. 1). The trainer appends EOS, and
the score is read at the last non-pad token, so scoring elsewhere appends EOS too; with a chat template
the pairs are conversations and scoring templates them the same way (`compare/lm/chat.py`). `train_reward_model`
also trains a dataset task's judge (`compare/stages/judge.py`).
"""

from __future__ import annotations

from pathlib import Path

from compare.compute import offline
from compare.lm.chat import conversational
from compare.lm.loading import ensure_pad_token, load_classifier
from compare.stages.common import Context, lora_config, read_jsonl, train_and_save, trainer_args, weight_dtype
from compare.stages.data import COMPARISONS
from compare.stages.spec import Job, Memory, Produces, Role, StageSpec, TrainSettings


class RewardSettings(TrainSettings):
    """The reward model's optimiser settings (TRL RewardConfig)."""


def train_reward_model(settings: RewardSettings, seed: int, out: Path, inputs: dict[str, Path], ctx: Context):
    """A scalar-head model from `inputs["model"]`, trained on `inputs["data"]`'s comparisons, saved to `out`."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    path = str(inputs["model"])
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    model = load_classifier(
        path, num_labels=1, dtype=weight_dtype(settings)
    )  # the policy's body (an adapter chain too), a fresh head
    ensure_pad_token(model, tokenizer)
    rows = read_jsonl(inputs["data"] / "comparisons.jsonl")
    pairs = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows]
    data = Dataset.from_list(conversational(tokenizer, pairs))  # messages with a chat template
    args = trainer_args(RewardConfig, settings, seed, out, ctx, max_length=None)
    trainer = RewardTrainer(
        model=model,
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=lora_config(settings.lora_r, "SEQ_CLS"),
    )
    train_and_save(trainer, out, ctx)


def run(job: Job, out: Path, inputs: dict[str, Path], ctx: Context) -> None:
    train_reward_model(job.settings, job.seed, out, inputs, ctx)


SPEC = StageSpec(
    kind="rm",
    version=2,  # 2: trained with LoRA, stored as its adapter on its start (docs/cache.md)
    run=run,
    description="Reward model (TRL RewardTrainer).",
    settings=RewardSettings,
    role=Role.REWARD_MODEL,
    data=COMPARISONS,
    produces=Produces.REWARD_MODEL,
    memory=Memory(trained=1, frozen=0, lora=1, sequences=2),
    objective=("loss", "Bradley–Terry loss ↓"),
    distributed=True,
    compute=offline("comparisons.jsonl", ("chosen", "rejected")),
)
