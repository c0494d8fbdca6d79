"""Stage `online_dpo`: online (iterative) DPO, spending the arm's comparisons on its own samples.

Offline DPO buys every comparison up front, on pairs sampled from the starting policy. Online DPO spends
the same comparisons in `rounds`: each round samples two completions per prompt from the *current*
policy, the annotator labels them (the same simulated labeller as the `comparisons` stage, applied
here, `compare.stages.data.label_pairs`), and a short DPO run (TRL's DPOTrainer, `epochs` over the
round's pairs) updates the policy before the next round samples. On-policy preference data is what
separates online from offline preference learning (Guo et al. 2024; Tang et al. 2024; Ivison et al.
2024). The reference stays the frozen starting policy in every round, so beta bounds the distance from
the same start as offline DPO's.

Budget: the plan gives this stage the prompts of every comparison the arm's budget buys (stage
`prompts`, n = units / cost.comparison); round r labels an equal share of them (the first rounds take
one more when they do not divide evenly). The stage's log history has one row per round with the labels
it bought (`labels`) and the running total (`labels_total`), besides DPO's per-step rows (steps counted
across rounds). The gold reward reaches this stage only through the annotator; the gold of both sides
is kept beside each label in `comparisons.jsonl` for analysis, never read by training.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Literal

from pydantic import Field

from compare.compute import Tokens
from compare.lm.chat import conversational
from compare.lm.loading import load_policy, save_model
from compare.lm.sampling import sample
from compare.stages.common import (
    Context,
    check_finite,
    lora_config,
    make_task,
    read_jsonl,
    train,
    trainer_args,
    weight_dtype,
    write_jsonl,
)
from compare.stages.data import COMPARISON_TEMPERATURE, COMPARISONS, label_pairs
from compare.stages.spec import Job, Memory, Role, StageSpec, TrainSettings
from compare.tracking import round_context


class OnlineDPOSettings(TrainSettings):
    """Rounds of on-policy labelling, each followed by TRL's DPOTrainer on the round's pairs."""

    rounds: int = Field(
        4, ge=1, description="Rounds of sampling, labelling and a DPO run; the budget is split evenly."
    )
    epochs: float = Field(2.0, gt=0, description="Passes over each round's pairs.")
    lr: float = Field(5e-4, gt=0, description="Peak learning rate of each round.")
    beta: float = Field(0.1, gt=0, description="DPO's KL strength beta (reference: the starting policy).")
    loss_type: Literal["sigmoid", "ipo", "hinge", "sigmoid_norm"] = Field(
        "sigmoid", description="TRL's preference loss, as in the dpo stage."
    )
    max_new_tokens: int = Field(
        32, ge=1, description="Longest sampled completion (keep it at eval.max_new_tokens)."
    )


def rounds_of(n: int, rounds: int) -> list[int]:
    """How many of `n` labels each round buys: an equal share, the first `n % rounds` rounds one more."""
    if rounds < 1 or n < rounds:
        raise ValueError(f"{n} labels cannot be split into {rounds} rounds of at least one")
    return [n // rounds + (r < n % rounds) for r in range(rounds)]


def run(job: Job, out: Path, inputs: dict[str, Path], ctx: Context) -> None:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    settings, seed = job.settings, job.seed
    task = make_task(job.task, inputs)  # its gold reward is read only to label, through the annotator
    prompts = [row["prompt"] for row in read_jsonl(inputs["data"] / "prompts.jsonl")]
    model, tokenizer = load_policy(str(inputs["model"]), dtype=weight_dtype(settings))
    reference, _ = load_policy(
        str(inputs["model"]), dtype=weight_dtype(settings)
    )  # frozen: the starting policy in every round
    rng = random.Random(f"online-dpo-{seed}")
    labelled, history, steps, start = [], [], 0, 0
    for r, n in enumerate(rounds_of(len(prompts), settings.rounds)):
        chunk = prompts[start : start + n]
        start += n
        model.eval()
        pairs = sample(
            model, tokenizer, chunk, 2, settings.max_new_tokens, COMPARISON_TEMPERATURE, seed=seed * 1000 + r
        )
        golds = task.gold_rewards(pairs.prompts, pairs.completions)
        rows = label_pairs(task, chunk, pairs.completions, golds, job.task, rng)
        labelled += [{**row, "round": r} for row in rows]
        comparisons = [
            {"prompt": x["prompt"], "chosen": x["chosen"], "rejected": x["rejected"]} for x in rows
        ]
        data = Dataset.from_list(conversational(tokenizer, comparisons))  # messages with a chat template
        args = trainer_args(
            DPOConfig,
            settings,
            seed + r,
            out,
            round_context(ctx, r),
            beta=settings.beta,
            loss_type=[settings.loss_type],
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
        train(trainer, round_context(ctx, r))
        model = (
            trainer.model.merge_and_unload() if hasattr(trainer.model, "merge_and_unload") else trainer.model
        )
        history += [
            {**entry, "step": entry["step"] + steps, "round": r} for entry in trainer.state.log_history
        ]
        steps += trainer.state.global_step
        history.append({"step": steps, "round": r, "labels": n, "labels_total": start})
    check_finite(model, "weights after training")
    save_model(model, tokenizer, out)
    write_jsonl(out / "comparisons.jsonl", labelled)
    (out / "log_history.json").write_text(json.dumps(history, indent=1))
    shutil.rmtree(out / "trainer", ignore_errors=True)


def compute(params: dict, folder: Path, inputs: dict, counter) -> Tokens:
    """The pairs it sampled (both sides, kept in its comparisons.jsonl), then DPO's `epochs` over each
    round's pairs with the frozen reference scoring them at every epoch."""
    pairs = counter.rows(folder / "comparisons.jsonl", ("chosen", "rejected"))
    epochs = params["train"]["epochs"]
    return Tokens(epochs * pairs, pairs + epochs * pairs)


SPEC = StageSpec(
    kind="online_dpo",
    version=1,
    run=run,
    description="Online DPO: rounds of labelling the policy's own samples, a DPO run after each.",
    settings=OnlineDPOSettings,
    role=Role.PREFERENCE,
    data=COMPARISONS,
    on_policy=True,
    memory=Memory(trained=1, frozen=1, lora=2, sequences=2),  # the reference: a full copy also with LoRA
    strength="beta",
    objective=("loss", "DPO loss on each round's pairs ↓"),
    compute=compute,
)
