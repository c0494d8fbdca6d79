"""Stages `demos` and `comparisons`: spending the annotation budget with the simulated labellers.

Demonstrations: the demonstrator writes a completion for a training prompt. Comparisons: two completions
sampled from the arm's starting policy for a training prompt, judged by the annotator on their gold
rewards (Bradley–Terry with a temperature, then a flip rate); or, for a task whose dataset has human
labels (`Task.fixed_comparisons`), pairs of the dataset with their labels, flipped at the annotator's
flip rate. Only these labels reach training; the gold rewards are stored beside them for analysis
(label accuracy), never read by a training stage.

Labels (stage `labels`, for KTO): one completion sampled from the arm's starting policy per label, a
thumbs up or down from the annotator's binary mode (`compare.oracle.thumbs_up`: the comparisons' noise
model against the mean of the batch). Stage `prompts`: the training prompts a stage that labels its
own samples during training (online DPO) buys its labels for.

Stage `judge_data`: every pair of a dataset task's held-out judge split, the training data of its gold
reward model (the `judge` stage, trained by the rm stage's code).
"""

from __future__ import annotations

import random
from pathlib import Path

from compare.compute import NO_MODEL, Tokens, sampled
from compare.lm.loading import load_policy
from compare.lm.sampling import sample
from compare.oracle import perceived, pick_annotator, prefers_first, thumbs_reference, thumbs_up
from compare.stages.common import Context, make_task, write_jsonl
from compare.stages.spec import DataKind, StageSpec
from compare.tasks import TASKS
from compare.tasks.task import Task

# the kinds of feedback an arm buys, each beside the stage that produces it (compare/stages/spec.py)
DEMONSTRATIONS = DataKind(
    name="demonstrations",
    singular="demonstration",
    cost="demonstration",
    cost_default=4.0,
    cost_help="Annotation units one demonstration costs.",
    stage="demos",
    file="demos.jsonl",
    columns=("prompt", "completion"),
    trainers="SFTTrainer",
    reads="demos",
    share=True,
)
COMPARISONS = DataKind(
    name="comparisons",
    singular="comparison",
    cost="comparison",
    cost_default=1.0,
    cost_help="Annotation units one comparison costs.",
    stage="comparisons",
    file="comparisons.jsonl",
    columns=("prompt", "chosen", "rejected"),
    trainers="DPOTrainer, RewardTrainer",
    reads="comparisons",
    sampled=2,
    item="comparison",
)
LABELS = DataKind(
    name="labels",
    singular="binary label",
    cost="label",
    cost_default=0.5,
    cost_help="Annotation units one binary label (thumbs up or down on one completion, KTO) costs; "
    "default half a comparison: one completion to read instead of two.",
    stage="labels",
    file="labels.jsonl",
    columns=("prompt", "completion", "label"),
    trainers="KTOTrainer",
    reads="comparisons",  # the annotator's settings
    sampled=1,
    booleans=("label",),
)
KINDS = (DEMONSTRATIONS, COMPARISONS, LABELS)
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
    rows = label_pairs(task, prompts, pairs.completions, golds, params["task"], rng)
    write_jsonl(out / "comparisons.jsonl", rows)


def label_pairs(task, prompts: list[str], completions: list[str], golds: list[float], settings: dict, rng):
    """The annotator's comparisons of pairs (completions 2i and 2i + 1 answer prompt i), with their gold.

    `settings` are the task settings with the annotator (and its pool). Shared by the `comparisons`
    stage and the stages that label their own samples (online DPO), so both buy the same labels.
    """
    rows = []
    for i, prompt in enumerate(prompts):
        a, b = completions[2 * i], completions[2 * i + 1]
        gold_a, gold_b = golds[2 * i], golds[2 * i + 1]
        labeller = pick_annotator(settings["annotator"], settings.get("annotator_pool", []), rng)
        view_a, view_b = task.labeller_view(prompt, a), task.labeller_view(prompt, b)
        a_wins = prefers_first((gold_a, view_a), (gold_b, view_b), labeller, rng)
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
    return rows


def run_labels(params: dict, out: Path, inputs: dict[str, Path], ctx: Context) -> None:
    """Binary labels: one completion per bought label, sampled from the arm's starting policy, thumbs up
    or down from the annotator's binary mode (`compare.oracle.thumbs_up`), the gold stored beside it."""
    task = make_task(params["task"], inputs)
    rng = random.Random(f"labels-{params['seed']}")
    prompts = _train_prompts(task, params["n"], rng)
    model, tokenizer = load_policy(str(inputs["policy"]))
    samples = sample(
        model, tokenizer, prompts, 1, params["max_new_tokens"], COMPARISON_TEMPERATURE, seed=params["seed"]
    )
    golds = task.gold_rewards(samples.prompts, samples.completions)
    views = [task.labeller_view(p, c) for p, c in zip(samples.prompts, samples.completions)]
    annotator, pool = params["task"]["annotator"], params["task"].get("annotator_pool", [])
    labellers = pool or [annotator]
    # each labeller's bar: the mean quality it perceives in the batch (compare.oracle.thumbs_reference)
    references = [thumbs_reference([perceived(g, v, who) for g, v in zip(golds, views)]) for who in labellers]
    rows = []
    for prompt, completion, gold, view in zip(samples.prompts, samples.completions, golds, views):
        who = rng.randrange(len(labellers)) if pool else 0
        up = thumbs_up(gold, view, references[who], labellers[who], rng)
        rows.append({"prompt": prompt, "completion": completion, "label": up, "gold": gold})
    write_jsonl(out / "labels.jsonl", rows)


def run_prompts(params: dict, out: Path, inputs: dict[str, Path], ctx: Context) -> None:
    """The training prompts an on-policy stage buys labels for (one per label), drawn from the pool."""
    task = make_task(params["task"])
    rng = random.Random(f"prompts-{params['seed']}")
    write_jsonl(out / "prompts.jsonl", [{"prompt": p} for p in _train_prompts(task, params["n"], rng)])


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


def no_model(params: dict, folder: Path, inputs: dict, counter) -> Tokens:
    """The demonstrator, the prompts and a dataset's pairs: written without a model."""
    return NO_MODEL


def comparisons_compute(params: dict, folder: Path, inputs: dict, counter) -> Tokens:
    """Both completions of every pair sampled from the policy; a dataset's own comparisons cost nothing."""
    if TASKS[params["task"]["name"]].fixed_comparisons is not Task.fixed_comparisons:
        return NO_MODEL
    return sampled("comparisons.jsonl", ("chosen", "rejected"))(params, folder, inputs, counter)


SPECS = (
    StageSpec(kind="demos", version=1, run=run_demos, compute=no_model),
    StageSpec(kind="comparisons", version=2, run=run_comparisons, compute=comparisons_compute),
    StageSpec(kind="judge_data", version=1, run=run_judge_data, compute=no_model),
    StageSpec(kind="labels", version=1, run=run_labels, compute=sampled("labels.jsonl", ("completion",))),
    StageSpec(kind="prompts", version=1, run=run_prompts, compute=no_model),
)
