"""Stage `preferred_ft`: SFT on the chosen side of the comparisons (TRL's SFTTrainer).

The control that separates learning from preferences from imitating the better answer (DPO paper,
sec. 6): the same comparisons DPO learns from, used as demonstrations of their chosen answers.
"""

from __future__ import annotations

from pathlib import Path

from compare.compute import offline
from compare.stages.common import Context, read_jsonl
from compare.stages.data import COMPARISONS
from compare.stages.sft import SFTSettings, train_sft
from compare.stages.spec import Job, Memory, Role, StageSpec


def run(job: Job, out: Path, inputs: dict[str, Path], ctx: Context) -> None:
    comparisons = read_jsonl(inputs["data"] / "comparisons.jsonl")
    rows = [{"prompt": c["prompt"], "completion": c["chosen"]} for c in comparisons]
    train_sft(rows, job, out, inputs, ctx)


SPEC = StageSpec(
    kind="preferred_ft",
    version=2,  # 2: trained with LoRA, stored as its adapter on its start (docs/cache.md)
    run=run,
    description="SFT on the chosen side of the comparisons (the imitation control).",
    settings=SFTSettings,
    role=Role.IMITATION,
    data=COMPARISONS,
    memory=Memory(trained=1, frozen=0, lora=1),
    objective=("loss", "NLL of chosen responses ↓"),
    distributed=True,
    compute=offline("comparisons.jsonl", ("chosen",)),
)
