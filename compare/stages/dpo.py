"""Stage `dpo`: Direct Preference Optimisation with TRL's DPOTrainer.

Loss -log sigmoid(beta * [(log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))]) (Rafailov et al.
2023, eq. 7); the reference is the frozen starting policy.
"""

from __future__ import annotations

from pathlib import Path

from compare.models import load_policy
from compare.stages.common import Context, lora_config, read_jsonl, train_and_save, trainer_args


def run(params: dict, out: Path, inputs: dict[str, Path], ctx: Context) -> None:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    model, tokenizer = load_policy(str(inputs["model"]))
    rows = read_jsonl(inputs["data"] / "comparisons.jsonl")
    data = Dataset.from_list(
        [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows]
    )
    train = params["train"]
    args = trainer_args(DPOConfig, train, params["seed"], out, ctx, beta=train["beta"], max_length=None)
    # with LoRA, the reference is the policy with its adapter disabled (no second copy)
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=lora_config(train["lora_r"], "CAUSAL_LM"),
    )
    train_and_save(trainer, out, ctx)
