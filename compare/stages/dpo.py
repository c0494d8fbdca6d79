"""Stage `dpo`: Direct Preference Optimisation and its family, with TRL's DPOTrainer.

With the margin h = (log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l)), `loss_type` picks TRL's
loss (`DPOTrainer`, TRL 1.16):

- `sigmoid` (default): -log sigmoid(beta * h), DPO (Rafailov et al. 2023, eq. 7);
- `ipo`: (h / |y| - 1 / (2 beta))^2, IPO (Azar et al. 2023, eq. 17), h averaged per token as TRL does;
- `hinge`: max(0, 1 - beta * h), SLiC (Zhao et al. 2023);
- `robust`: DPO corrected for labels flipped at rate `label_smoothing` (Chowdhury et al. 2024);
- `sigmoid_norm`: -log sigmoid(beta * h / |y|), length-normalised DPO (log-ratios averaged per token,
  as in SimPO's normalisation, but with the reference kept).

The reference is the frozen starting policy (with LoRA, the policy with its adapter disabled, so no
second copy is held).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from compare.compute import offline
from compare.lm.chat import conversational
from compare.lm.loading import load_policy, stored_as_adapter
from compare.stages.common import Context, lora_config, read_jsonl, train_and_save, trainer_args, weight_dtype
from compare.stages.data import COMPARISONS
from compare.stages.spec import Job, Memory, Role, StageSpec, TrainSettings


class DPOSettings(TrainSettings):
    NEUTRAL: ClassVar[dict[str, Any]] = {**TrainSettings.NEUTRAL, "precompute_ref": False}

    lr: float = Field(5e-4, gt=0, description="Peak learning rate.")
    beta: float = Field(
        0.1, gt=0, description="DPO's KL strength beta (higher = closer to the start policy)."
    )
    loss_type: Literal["sigmoid", "ipo", "hinge", "robust", "sigmoid_norm"] = Field(
        "sigmoid",
        description="TRL's preference loss: sigmoid (DPO), ipo, hinge (SLiC), robust (noisy labels), "
        "sigmoid_norm (length-normalised DPO).",
    )
    label_smoothing: float = Field(
        0.0, ge=0, lt=0.5, description="robust: the rate at which labels are assumed flipped."
    )
    precompute_ref: bool = Field(
        False,
        description="Compute the reference's log-probs once before training (TRL's precompute_ref_log_probs) "
        "rather than at every step: one reference pass per comparison instead of one per epoch.",
    )

    @model_validator(mode="after")
    def _smoothing_is_robust(self):
        if self.label_smoothing and self.loss_type != "robust":
            raise ValueError(f"label_smoothing is robust's setting; loss_type is {self.loss_type!r}")
        return self


def run(job: Job, out: Path, inputs: dict[str, Path], ctx: Context) -> None:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    settings = job.settings
    model, tokenizer = load_policy(str(inputs["model"]), dtype=weight_dtype(settings))
    reference = None  # TRL's: the adapter disabled (LoRA), else reloaded from the start's folder
    if not settings.lora_r and stored_as_adapter(inputs["model"]):  # a LoRA start TRL cannot reload
        reference = load_policy(str(inputs["model"]), dtype=weight_dtype(settings))[0]
    rows = read_jsonl(inputs["data"] / "comparisons.jsonl")
    pairs = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows]
    data = Dataset.from_list(conversational(tokenizer, pairs))  # messages with a chat template
    args = trainer_args(
        DPOConfig,
        settings,
        job.seed,
        out,
        ctx,
        beta=settings.beta,
        loss_type=[settings.loss_type],
        label_smoothing=settings.label_smoothing,
        precompute_ref_log_probs=settings.precompute_ref,
        max_length=None,
    )
    trainer = DPOTrainer(
        model=model,
        ref_model=reference,
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=lora_config(settings.lora_r, "CAUSAL_LM"),
    )
    train_and_save(trainer, out, ctx)


SPEC = StageSpec(
    kind="dpo",
    version=2,  # 2: trained with LoRA, stored as its adapter on its start (docs/cache.md)
    run=run,
    description="DPO or a variant (IPO, hinge, robust, length-normalised) on comparisons (TRL DPOTrainer).",
    settings=DPOSettings,
    role=Role.PREFERENCE,
    data=COMPARISONS,
    memory=Memory(trained=1, frozen=1, lora=1, sequences=2),  # + the frozen reference
    strength="beta",
    objective=("loss", "DPO loss ↓"),
    distributed=True,
    compute=offline("comparisons.jsonl", ("chosen", "rejected"), reference=True),
)
