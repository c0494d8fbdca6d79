"""Stage `demonstrator`: the demonstrator's mean gold reward on the evaluation prompts.

The bar that imitation aims at: what an SFT policy that copied its demonstrations perfectly would score.
No policy is involved; the demonstrator writes `samples_per_prompt` answers for every prompt of each
evaluation split, and the task's gold reward scores them (in batches: a dataset task's gold may be a
model, the `judge` input).
"""

from __future__ import annotations

import json
import random
import statistics
from pathlib import Path

from compare.stages.common import Context, make_task
from compare.stages.spec import StageSpec


def run(params: dict, out: Path, inputs: dict[str, Path], ctx: Context) -> None:
    task = make_task(params["task"], inputs)
    k = params["samples_per_prompt"]
    gold = {}
    for split in task.eval_splits:
        rng = random.Random(f"eval-demonstrator-{params['seed']}")
        prompts = [p for p in task.prompts(split) for _ in range(k)]
        demonstrations = [task.demonstrate(p, rng) for p in prompts]
        gold[split] = statistics.fmean(task.gold_rewards(prompts, demonstrations))
    (out / "metrics.json").write_text(json.dumps(gold, indent=1))


SPEC = StageSpec(kind="demonstrator", version=1, run=run)
