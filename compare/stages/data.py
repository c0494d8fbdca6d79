"""Stages `demos` and `comparisons`: spending the annotation budget with the simulated labellers.

Demonstrations: the demonstrator writes a completion for a training prompt. Comparisons: two completions
sampled from the arm's starting policy for a training prompt, judged by the annotator on their gold
rewards (Bradley–Terry with a temperature, then a flip rate); or, for a task whose dataset has human
labels (`Task.fixed_comparisons`), pairs of the dataset with their labels, flipped at the annotator's
flip rate. Only these labels reach training; the gold rewards are stored beside them for analysis
(label accuracy), never read by a training stage.

Stage `judge_data`: every pair of a dataset task's held-out judge split, the training data of its gold
reward model (the `judge` stage, trained by the rm stage's code).
"""

from __future__ import annotations

import random
from pathlib import Path

from compare.lm.loading import load_policy
from compare.lm.sampling import sample
from compare.oracle import annotate
from compare.stages.common import Context, make_task, write_jsonl
from compare.stages.spec import StageSpec

COMPARISON_TEMPERATURE = 1.0  # sample the pair from the policy itself


def _train_prompts(task, n: int, rng: random.Random) -> list[str]:
    pool = task.prompts("train")
    return [rng.choice(pool) for _ in range(n)]


def run_demos(params: dict, out: Path, inputs: dict[str, Path], ctx: Context) -> None:
    task = make_task(params["task"], inputs)
    rng = random.Random(f"demos-{params['seed']}")
    prompts = _train_prompts(task, params["n"], rng)
    completions = [task.demonstrate(prompt, rng) for prompt in prompts]
    golds = task.gold_rewards(prompts, completions)
    rows = [{"prompt": p, "completion": c, "gold": g} for p, c, g in zip(prompts, completions, golds)]
    write_jsonl(out / "demos.jsonl", rows)


def run_comparisons(params: dict, out: Path, inputs: dict[str, Path], ctx: Context) -> None:
    task = make_task(params["task"], inputs)
    annotator = params["task"]["annotator"]
    rng = random.Random(f"comparisons-{params['seed']}")
    labelled = task.fixed_comparisons(params["n"], rng)
    if labelled is not None:
        write_jsonl(out / "comparisons.jsonl", _human_labels(task, labelled, annotator["flip_rate"], rng))
        return
    prompts = _train_prompts(task, params["n"], rng)
    model, tokenizer = load_policy(str(inputs["policy"]))
    # as long as the completions evaluation samples (the suite's eval.max_new_tokens)
    length = params["max_new_tokens"]
    pairs = sample(model, tokenizer, prompts, 2, length, COMPARISON_TEMPERATURE, seed=params["seed"])
    golds = task.gold_rewards(pairs.prompts, pairs.completions)
    rows = []
    for i, prompt in enumerate(prompts):
        a, b = pairs.completions[2 * i], pairs.completions[2 * i + 1]
        gold_a, gold_b = golds[2 * i], golds[2 * i + 1]
        a_wins = annotate(gold_a, gold_b, annotator["temperature"], annotator["flip_rate"], rng)
        chosen, rejected = (a, b) if a_wins else (b, a)
        gold_chosen, gold_rejected = (gold_a, gold_b) if a_wins else (gold_b, gold_a)
        rows.append(
            {
                "prompt": prompt,
                "chosen": chosen,
                "rejected": rejected,
                "gold_chosen": gold_chosen,
                "gold_rejected": gold_rejected,
            }
        )
    write_jsonl(out / "comparisons.jsonl", rows)


def _human_labels(task, pairs: list[dict], flip_rate: float, rng: random.Random) -> list[dict]:
    """The dataset's own labels, each flipped with probability `flip_rate`, with the gold of both sides."""
    prompts = [p["prompt"] for p in pairs]
    golds = task.gold_rewards(
        prompts + prompts, [p["chosen"] for p in pairs] + [p["rejected"] for p in pairs]
    )
    gold_chosen, gold_rejected = golds[: len(pairs)], golds[len(pairs) :]
    rows = []
    for pair, g_chosen, g_rejected in zip(pairs, gold_chosen, gold_rejected):
        row = {**pair, "gold_chosen": g_chosen, "gold_rejected": g_rejected}
        if rng.random() < flip_rate:
            row = {
                "prompt": pair["prompt"],
                "chosen": pair["rejected"],
                "rejected": pair["chosen"],
                "gold_chosen": g_rejected,
                "gold_rejected": g_chosen,
            }
        rows.append(row)
    return rows


def run_judge_data(params: dict, out: Path, inputs: dict[str, Path], ctx: Context) -> None:
    task = make_task(params["task"])
    write_jsonl(out / "comparisons.jsonl", task.judge_comparisons())


SPECS = (
    StageSpec(kind="demos", version=1, run=run_demos),
    StageSpec(kind="comparisons", version=2, run=run_comparisons),
    StageSpec(kind="judge_data", version=1, run=run_judge_data),
)
