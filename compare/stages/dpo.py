"""Stage `dpo`: Direct Preference Optimisation with TRL's DPOTrainer.

Loss -log sigmoid(beta * [(log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))]) (Rafailov et al.
2023, eq. 7); the reference is the frozen starting policy (with LoRA, the policy with its adapter
disabled, so no second copy is held).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from compare.lm.loading import load_policy
from compare.stages.common import Context, lora_config, read_jsonl, train_and_save, trainer_args
from compare.stages.spec import Data, Job, Role, StageSpec, TrainSettings


class DPOSettings(TrainSettings):
    lr: float = Field(5e-4, gt=0, description="Peak learning rate.")
    beta: float = Field(
        0.1, gt=0, description="DPO's KL strength beta (higher = closer to the start policy)."
    )


def run(job: Job, out: Path, inputs: dict[str, Path], ctx: Context) -> None:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    settings = job.settings
    model, tokenizer = load_policy(str(inputs["model"]))
    rows = read_jsonl(inputs["data"] / "comparisons.jsonl")
    data = Dataset.from_list(
        [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows]
    )
    args = trainer_args(DPOConfig, settings, job.seed, out, ctx, beta=settings.beta, max_length=None)
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=lora_config(settings.lora_r, "CAUSAL_LM"),
    )
    train_and_save(trainer, out, ctx)


SPEC = StageSpec(
    kind="dpo",
    version=1,
    run=run,
    description="DPO on comparisons (TRL DPOTrainer).",
    settings=DPOSettings,
    role=Role.PREFERENCE,
    data=Data.COMPARISONS,
    memory=(20, 4),  # + the frozen reference
    strength="beta",
    objective=("loss", "DPO loss ↓"),
    distributed=True,
)
