"""Stage `kto`: Kahneman–Tversky Optimisation on thumbs-up/down labels, with TRL's KTOTrainer.

KTO learns from unpaired binary feedback: each example is one completion with a thumbs up (desirable) or
down (undesirable), the sparse kind of feedback users give (Ethayarajh et al. 2024). With the implied
reward r = log pi(y|x) - log ref(y|x) and z a batch estimate of KL(pi || ref) (from mismatched prompt and
completion pairs of the same batch), the loss of an example is

    desirable:    desirable_weight   * (1 - sigmoid(beta * (r - z)))
    undesirable:  undesirable_weight * (1 - sigmoid(beta * (z - r)))

(eq. 7 of the paper), averaged over the batch. The reference is the frozen starting policy. The labels
come from the `labels` stage: one completion sampled from the starting policy per bought label, judged by
the annotator's binary mode (`compare.oracle.thumbs_up`), each label paid `budget.cost.label` units.
TRL's KL estimate pairs the examples of each batch in order, so the data loader is sequential; the
`labels` stage's rows are already in a seeded random order.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from compare.compute import offline
from compare.lm.chat import conversational
from compare.lm.loading import load_policy, stored_as_adapter
from compare.stages.common import Context, lora_config, read_jsonl, train_and_save, trainer_args, weight_dtype
from compare.stages.data import LABELS
from compare.stages.spec import Job, Memory, Role, StageSpec, TrainSettings


class KTOSettings(TrainSettings):
    """TRL KTOConfig's settings."""

    lr: float = Field(5e-4, gt=0, description="Peak learning rate.")
    batch_size: int = Field(
        16, ge=2, description="Examples per optimiser step (at least 2: the KL estimate pairs them)."
    )
    beta: float = Field(
        0.1, gt=0, description="KTO's KL strength beta (higher = closer to the start policy)."
    )
    desirable_weight: float = Field(1.0, gt=0, description="Weight of the thumbs-up examples' losses.")
    undesirable_weight: float = Field(1.0, gt=0, description="Weight of the thumbs-down examples' losses.")


def build_trainer(job: Job, out: Path, inputs: dict[str, Path], ctx: Context):
    """The configured KTOTrainer on the `labels` stage's rows (split from `run` so tests can inspect it)."""
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    settings = job.settings
    model, tokenizer = load_policy(str(inputs["model"]), dtype=weight_dtype(settings))
    reference = None  # TRL's: the adapter disabled (LoRA), else reloaded from the start's folder
    if not settings.lora_r and stored_as_adapter(inputs["model"]):  # a LoRA start TRL cannot reload
        reference = load_policy(str(inputs["model"]), dtype=weight_dtype(settings))[0]
    rows = read_jsonl(inputs["data"] / "labels.jsonl")
    labelled = [
        {"prompt": r["prompt"], "completion": r["completion"], "label": bool(r["label"])} for r in rows
    ]
    data = Dataset.from_list(conversational(tokenizer, labelled))  # messages with a chat template
    args = trainer_args(
        KTOConfig,
        settings,
        job.seed,
        out,
        ctx,
        beta=settings.beta,
        desirable_weight=settings.desirable_weight,
        undesirable_weight=settings.undesirable_weight,
        max_length=None,
    )
    return KTOTrainer(
        model=model,
        ref_model=reference,
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=lora_config(settings.lora_r, "CAUSAL_LM"),
    )


def run(job: Job, out: Path, inputs: dict[str, Path], ctx: Context) -> None:
    train_and_save(build_trainer(job, out, inputs, ctx), out, ctx)


SPEC = StageSpec(
    kind="kto",
    version=1,
    run=run,
    description="KTO on thumbs-up/down labels (TRL KTOTrainer).",
    settings=KTOSettings,
    role=Role.PREFERENCE,
    data=LABELS,
    memory=Memory(trained=1, frozen=1, lora=1),  # + the frozen reference
    strength="beta",
    objective=("loss", "KTO loss ↓"),
    distributed=True,
    compute=offline("labels.jsonl", ("completion",), reference=True),
)
