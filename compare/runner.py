"""Execute a plan: run every stage that is not cached, in order, then collect results for the report."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from compare.cache import StageCache
from compare.plan import Run, Stage, stage_order
from compare.stages import RECIPE_STAGES, SPECS, Job
from compare.stages.common import Context, read_jsonl


@dataclass
class Failure:
    """A stage that raised (or depends on one that did): never cached, reported with its reason."""

    stage: Stage
    reason: str  # one line
    log: Path | None  # the traceback, for a stage that raised itself
    cause: Stage | None = None  # the failed input stage, for a stage that could not start


@dataclass
class Outcome:
    """What `execute` did: seconds of each stage that ran, and the stages that failed (by name)."""

    timings: dict[str, float] = field(default_factory=dict)
    failures: dict[str, Failure] = field(default_factory=dict)

    def failure_of(self, run: Run) -> Failure | None:
        """Why `run` has no results: the first stage of its chain that failed, or None."""
        for stage in stage_order(run.roots):
            failure = self.failures.get(stage.name)
            if failure is not None and failure.cause is None:
                return failure
        return self.failures.get(run.eval.name)


def stage_owners(runs: list[Run]) -> dict[str, list[Run]]:
    """The runs that need each stage, by stage name."""
    owners: dict[str, list[Run]] = {}
    for run in runs:
        for stage in stage_order(run.roots):
            owners.setdefault(stage.name, []).append(run)
    return owners


def describe_runs(runs: list[Run]) -> str:
    """`arm sft seed 0, arm dpo seed 0 (+3 more)`: which runs a stage belongs to, for messages."""
    labels = [run.label for run in runs]
    shown = ", ".join(labels[:3])
    return shown + (f" (+{len(labels) - 3} more)" if len(labels) > 3 else "")


def execute(runs: list[Run], cache: StageCache, ctx: Context) -> Outcome:
    """Run every stage that is not cached, inputs first; a stage that fails takes down only its dependents.

    A failed stage is not cached and its traceback goes to the cache's `logs/`; stages that need it are
    skipped, every other stage still runs. Another process computing the same stage is waited for (the
    cache's per-stage lock), and its result used.
    """
    from compare.stages.common import quiet_libraries

    cache.clear_stale()
    outcome = Outcome()
    todo = [s for s in stage_order([root for r in runs for root in r.roots]) if not cache.is_complete(s.name)]
    if not todo:
        return outcome
    owners = stage_owners(runs)
    if ctx.threads:
        import torch

        torch.set_num_threads(ctx.threads)
    on_terminal = sys.stderr.isatty()
    ctx.progress = on_terminal
    bar = tqdm(todo, desc="stages", unit="stage", disable=not on_terminal, dynamic_ncols=True)
    with quiet_libraries(ctx.verbose):
        for i, stage in enumerate(bar, 1):
            bar.set_postfix_str(stage.kind)
            who = describe_runs(owners.get(stage.name, []))
            failed_input = next(
                (d for d in stage.inputs.values() if d is not None and d.name in outcome.failures), None
            )
            if failed_input is not None:  # nothing to start from
                cause = outcome.failures[failed_input.name]
                outcome.failures[stage.name] = Failure(
                    stage,
                    f"needs {failed_input.kind} {failed_input.key}, which failed",
                    None,
                    cause.cause or cause.stage,
                )
                continue
            start = time.time()
            info = {
                "kind": stage.kind,
                "key": stage.key,
                "params": stage.params,
                "inputs": {n: d.name for n, d in stage.inputs.items()},
            }
            try:
                ran = _run_stage(stage, info, cache, ctx)
            except Exception as e:  # any stage error: this stage is not cached, its dependents are skipped
                log = cache.record_failure(
                    stage.name, {**info, "runs": [r.label for r in owners.get(stage.name, [])]}, e
                )
                reason = f"{type(e).__name__}: {_first_line(e)}"
                outcome.failures[stage.name] = Failure(stage, reason, log)
                tqdm.write(
                    f"error: stage {stage.kind} {stage.key} failed ({who}): {reason}; not cached; log: {log}",
                    file=sys.stderr,
                )
                if ctx.verbose:
                    traceback.print_exc()
                continue
            if ran:
                outcome.timings[stage.name] = time.time() - start
            if not on_terminal:  # one line per finished stage where no bar is drawn
                state = f"done in {time.time() - start:.1f} s" if ran else "done by another process"
                print(f"[{i}/{len(todo)}] {stage.kind} ({who}): {state}", file=sys.stderr, flush=True)
    return outcome


def run_stage(kind: str, params: dict, out: Path, inputs: dict[str, Path], ctx: Context) -> None:
    """Call a stage's run function: a recipe stage gets its typed settings (`Job`), others their params."""
    spec = SPECS[kind]
    if spec.in_recipes:
        job = Job(spec.settings.model_validate(params["train"]), params["seed"], params.get("task"))
        spec.run(job, out, inputs, ctx)
    else:
        spec.run(params, out, inputs, ctx)


def _run_stage(stage: Stage, info: dict, cache: StageCache, ctx: Context) -> bool:
    """Compute one stage under its lock; False when another process completed it meanwhile."""
    inputs = {name: cache.path(dep.name) for name, dep in stage.inputs.items()}
    if not is_main_process():  # data-parallel training: every process takes part, rank 0 saves
        if SPECS[stage.kind].distributed:
            with tempfile.TemporaryDirectory() as scratch:
                run_stage(stage.kind, stage.params, Path(scratch), inputs, ctx)
        wait_for_everyone()
        return True
    try:
        with cache.lock(stage.name, on_wait=lambda message: tqdm.write(message, file=sys.stderr)):
            if cache.is_complete(stage.name):
                return False
            with cache.writing(stage.name, info) as out:
                run_stage(stage.kind, stage.params, out, inputs, ctx)
        return True
    finally:
        wait_for_everyone()  # the other processes wait for this stage, failed or not


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "(no message)"


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
    """Results (one row per run and split), per-sample rows, and training logs, all from cached stages."""
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
        demonstrator = json.loads((cache.path(run.demonstrator.name) / "metrics.json").read_text())
        for split, m in metrics.items():
            results.append({**meta, "split": split, **m, "demonstrator_gold": demonstrator[split]})
        samples.extend({**meta, **row} for row in read_jsonl(folder / "samples.jsonl"))
        for stage in stage_order([run.eval]):  # the arm's own training stages, inputs first
            history = cache.path(stage.name) / "log_history.json"
            if stage.kind in RECIPE_STAGES and history.exists():
                for entry in json.loads(history.read_text()):
                    logs.append({**meta, "stage": stage.kind, **entry})
    results_df = pd.DataFrame(results)
    for col in ("proxy_reward", "rm_accuracy"):
        if col not in results_df:
            results_df[col] = float("nan")
    return results_df, pd.DataFrame(samples), pd.DataFrame(logs)
