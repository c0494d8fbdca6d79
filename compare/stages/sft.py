"""Stages `sft` and `preferred_ft`: supervised fine-tuning with TRL's SFTTrainer.

`sft` imitates the demonstrations. `preferred_ft` imitates the chosen side of the comparisons: the
control that separates learning from preferences from imitating the better answer (DPO paper, sec. 6).
The loss is on completion tokens only (prompt-completion data), EOS appended by the trainer.
"""

from __future__ import annotations

from pathlib import Path

from compare.models import load_policy
from compare.stages.common import Context, lora_config, read_jsonl, train_and_save, trainer_args


def train_sft(rows: list[dict], params: dict, out: Path, inputs: dict[str, Path], ctx: Context) -> None:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = load_policy(str(inputs["model"]))
    args = trainer_args(SFTConfig, params["train"], params["seed"], out, ctx, max_length=None)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora_config(params["train"]["lora_r"], "CAUSAL_LM"),
    )
    train_and_save(trainer, out, ctx)


def run_sft(params: dict, out: Path, inputs: dict[str, Path], ctx: Context) -> None:
    demos = read_jsonl(inputs["data"] / "demos.jsonl")
    rows = [{"prompt": d["prompt"], "completion": d["completion"]} for d in demos]
    train_sft(rows, params, out, inputs, ctx)


def run_preferred_ft(params: dict, out: Path, inputs: dict[str, Path], ctx: Context) -> None:
    comparisons = read_jsonl(inputs["data"] / "comparisons.jsonl")
    rows = [{"prompt": c["prompt"], "completion": c["chosen"]} for c in comparisons]
    train_sft(rows, params, out, inputs, ctx)
