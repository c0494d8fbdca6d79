"""Stage `sft`: supervised fine-tuning on demonstrations with TRL's SFTTrainer.

The policy imitates the demonstrator. The loss is the NLL of the completion tokens only
(prompt-completion data, EOS appended by the trainer; with a chat template, TRL's conversational
format, templated by the trainer: `compare/lm/chat.py`). `train_sft` also serves `preferred_ft`.
"""

from __future__ import annotations

from pathlib import Path

from compare.compute import offline
from compare.lm.chat import conversational
from compare.lm.loading import load_policy
from compare.stages.common import Context, lora_config, read_jsonl, train_and_save, trainer_args, weight_dtype
from compare.stages.data import DEMONSTRATIONS
from compare.stages.spec import Job, Memory, Role, StageSpec, TrainSettings


class SFTSettings(TrainSettings):
    """SFT's optimiser settings (TRL SFTConfig's num_train_epochs, learning_rate, batch size)."""


def train_sft(rows: list[dict], job: Job, out: Path, inputs: dict[str, Path], ctx: Context) -> None:
    """Fine-tune the policy in `inputs["model"]` on prompt-completion `rows` and save it to `out`."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    settings = job.settings
    model, tokenizer = load_policy(str(inputs["model"]), dtype=weight_dtype(settings))
    args = trainer_args(SFTConfig, settings, job.seed, out, ctx, max_length=None)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(conversational(tokenizer, rows)),
        processing_class=tokenizer,
        peft_config=lora_config(settings.lora_r, "CAUSAL_LM"),
    )
    train_and_save(trainer, out, ctx)


def run(job: Job, out: Path, inputs: dict[str, Path], ctx: Context) -> None:
    demos = read_jsonl(inputs["data"] / "demos.jsonl")
    rows = [{"prompt": d["prompt"], "completion": d["completion"]} for d in demos]
    train_sft(rows, job, out, inputs, ctx)


SPEC = StageSpec(
    kind="sft",
    version=2,  # 2: trained with LoRA, stored as its adapter on its start (docs/cache.md)
    run=run,
    description="SFT on demonstrations (TRL SFTTrainer).",
    settings=SFTSettings,
    role=Role.IMITATION,
    data=DEMONSTRATIONS,
    strength="epochs",  # more passes over the demonstrations move further from the base
    memory=Memory(trained=1, frozen=0, lora=1),
    objective=("loss", "NLL of demonstrations ↓"),
    distributed=True,
    compute=offline("demos.jsonl", ("completion",)),
)
