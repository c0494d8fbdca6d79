"""Execute a plan: run every stage that is not cached, in order, then collect results for the report."""

from __future__ import annotations

import functools
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from compare.cache import StageCache
from compare.plan import TRAINING_KINDS, Run, Stage, stage_order
from compare.stages.common import Context, make_task, read_jsonl


def execute(runs: list[Run], cache: StageCache, ctx: Context) -> dict[str, float]:
    """Run what is missing; returns seconds per stage that ran (cached stages are not listed)."""
    from compare.stages import RUNNERS
    from compare.stages.common import quiet_libraries

    cache.clear_stale()
    todo = [s for s in stage_order([r.eval for r in runs]) if not cache.is_complete(s.name)]
    timings: dict[str, float] = {}
    if not todo:
        return timings
    quiet_libraries(ctx.verbose)
    if ctx.threads:
        import torch

        torch.set_num_threads(ctx.threads)
    bar = tqdm(todo, desc="stages", unit="stage", disable=None)
    for stage in bar:
        bar.set_postfix_str(stage.kind)
        start = time.time()
        inputs = {name: cache.path(dep.name) for name, dep in stage.inputs.items()}
        info = {
            "kind": stage.kind,
            "key": stage.key,
            "params": stage.params,
            "inputs": {n: d.name for n, d in stage.inputs.items()},
        }
        if is_main_process():
            with cache.writing(stage.name, info) as out:
                RUNNERS[stage.kind](stage.params, out, inputs, ctx)
        elif stage.kind in TRAINING_KINDS:  # data-parallel training: every process takes part, rank 0 saves
            with tempfile.TemporaryDirectory() as scratch:
                RUNNERS[stage.kind](stage.params, Path(scratch), inputs, ctx)
        wait_for_everyone()
        timings[stage.name] = time.time() - start
    return timings


# Under `accelerate launch`, every process runs the training stages together (data parallel); data,
# evaluation and the cache are the main process's alone, and the others wait for it after each stage.
def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return _world_size() == 1 or int(os.environ.get("RANK", "0")) == 0


def wait_for_everyone() -> None:
    if _world_size() > 1:
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        dist.barrier()


def collect(runs: list[Run], cache: StageCache) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Results (one row per run and split), per-sample rows, and training logs, from the cache."""
    results, samples, logs = [], [], []
    for run in runs:
        meta = {
            "arm": run.arm,
            "seed": run.seed,
            "budget": run.suite.budget.units,
            "n_demonstrations": run.n_demonstrations,
            "n_comparisons": run.n_comparisons,
            **{f"grid.{k}": v for k, v in run.point.items() if k != "seed"},
        }
        folder = cache.path(run.eval.name)
        metrics = json.loads((folder / "metrics.json").read_text())
        k = run.suite.eval.samples_per_prompt
        judge = run.eval.inputs.get("judge")  # a dataset task's gold reward model, trained in a stage
        judge_dir = str(cache.path(judge.name)) if judge is not None else None
        for split, m in metrics.items():
            demo = demonstrator_gold(run.suite.task.model_dump(), split, k, run.seed, judge_dir)
            results.append({**meta, "split": split, **m, "demonstrator_gold": demo})
        samples.extend({**meta, **row} for row in read_jsonl(folder / "samples.jsonl"))
        for stage in _training_stages(run.eval):
            history = cache.path(stage.name) / "log_history.json"
            # the judge (a dataset task's gold reward model) is not one of the arm's training stages
            if history.exists() and stage.kind not in ("base", "judge"):
                for entry in json.loads(history.read_text()):
                    logs.append({**meta, "stage": stage.kind, **entry})
    results_df = pd.DataFrame(results)
    for col in ("proxy_reward", "rm_accuracy"):
        if col not in results_df:
            results_df[col] = float("nan")
    return results_df, pd.DataFrame(samples), pd.DataFrame(logs)


@functools.lru_cache(maxsize=256)
def _demonstrator_gold(task_json: str, split: str, k: int, seed: int, judge: str | None) -> float:
    task = make_task(json.loads(task_json), {"judge": Path(judge)} if judge else None)
    rng = random.Random(f"eval-demonstrator-{seed}")
    prompts = [p for p in task.prompts(split) for _ in range(k)]
    demonstrations = [task.demonstrate(p, rng) for p in prompts]
    return statistics.fmean(task.gold_rewards(prompts, demonstrations))  # batched: a gold may be a model


def demonstrator_gold(task_settings: dict, split: str, k: int, seed: int, judge: str | None = None) -> float:
    """Mean gold reward of the demonstrator on the evaluation prompts: the bar that imitation aims at.

    No policy is involved, so it is computed here rather than in a cached stage (`judge`: the folder of
    a dataset task's trained gold reward model).
    """
    return _demonstrator_gold(json.dumps(task_settings, sort_keys=True), split, k, seed, judge)


def _training_stages(stage: Stage) -> list[Stage]:
    """The training stages upstream of `stage`, each once, inputs first."""
    return [s for s in stage_order([stage]) if s.kind in TRAINING_KINDS]
