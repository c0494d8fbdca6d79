"""Execute a plan: run every stage that is not cached, inputs first, then collect results for the report.

One stage at a time in this process, or many at once as Ray tasks (`compare/executor.py`); either way
through `attempt`, under the stage's lock, failures recorded and isolated the same way.

Every cached stage a run uses is checked before it is used (`StageCache.check`: sizes always, hashes the
first time a process reads it) and held for the run (`StageCache.hold`); a stage that fails its check,
or that a stage reading it finds broken, is moved aside into the cache's quarantine and computed again,
said in one line naming it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from compare import stage_run
from compare.cache import StageCache, real_folder, write_file
from compare.plan import Run, Stage, stage_order
from compare.stage_run import (  # noqa: F401  (running one stage: re-exported for the pools and the tests)
    _broken_input,
    _draws_bars,
    _world_size,
    attempt,
    is_main_process,
    run_stage,
    seed_everything,
    wait_for_everyone,
)
from compare.stages import DATA_KINDS, RECIPE_STAGES, SPECS
from compare.stages.common import Context, read_jsonl
from compare.suite.errors import SuiteError, first_line
from compare.tracking import run_tags


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


def execute(
    runs: list[Run], cache: StageCache, ctx: Context, jobs: int | None = 1, address: str | None = None
) -> Outcome:
    """Run every stage that is not cached, inputs first; a stage that fails takes down only its dependents.

    A failed stage is not cached and its traceback goes to the cache's `logs/`; stages that need it are
    skipped, every other stage still runs. Another process computing the same stage is waited for (the
    cache's per-stage lock), and its result used. `jobs` stages run at once (None: as many as suit the
    machine and the model, `compare.executor.default_jobs`): one runs in this process, more as Ray tasks
    (`compare/executor.py`), each started as soon as its inputs are complete; `address` names a Ray
    cluster to run them on. Every stage is seeded by its own settings, so the results do not depend on
    how many run at once.
    """
    from compare.stages.common import quiet_libraries

    cache.clear_stale()
    stage_run._waited = False  # each run says once that it waits for other processes
    outcome = Outcome()
    owners = stage_owners(runs)
    todo = usable_or_todo(runs, cache, outcome, owners)
    if not todo:
        return outcome
    if jobs is None and address is None:
        from compare.executor import default_jobs

        jobs = default_jobs(any(run.suite.base.external for run in runs))
    parallel = _world_size() == 1 and (address is not None or (jobs > 1 and len(todo) > 1))
    if ctx.threads and not parallel:
        import torch

        torch.set_num_threads(ctx.threads)
    on_terminal = _draws_bars()
    ctx.progress = on_terminal and not parallel  # a stage's own bars only when it runs in this process
    pool = _ray_pool(runs, todo, cache, ctx, jobs, address) if parallel else _InProcess(cache, ctx)
    bar = tqdm(total=len(todo), desc="stages", unit="stage", disable=not on_terminal, dynamic_ncols=True)
    pending = list(todo) if not parallel else _by_priority(todo)
    running: dict[str, Stage] = {}
    finished, total = 0, len(todo)
    again: set[tuple[str, str]] = set()  # (stage, its input) computed again because the stage found it broken

    def status(kind: str | None = None) -> None:
        failed = len(outcome.failures)
        bar.set_postfix_str(kind if kind and not parallel else f"running {len(running)}, failed {failed}")

    try:
        with quiet_libraries(ctx.verbose):
            while pending or running:
                waiting = {s.name for s in pending} | set(running)
                for stage in list(pending):
                    failed_input = next(
                        (d for d in stage.inputs.values() if d is not None and d.name in outcome.failures),
                        None,
                    )
                    if failed_input is not None:  # nothing to start from
                        cause = outcome.failures[failed_input.name]
                        outcome.failures[stage.name] = Failure(
                            stage,
                            f"needs {failed_input.kind} {failed_input.key}, which failed",
                            None,
                            cause.cause or cause.stage,
                        )
                        pending.remove(stage)
                        waiting.discard(stage.name)
                        finished += 1
                        bar.update()
                        continue
                    if len(running) >= pool.slots:
                        continue
                    if any(d is not None and d.name in waiting for d in stage.inputs.values()):
                        continue  # an input is not complete yet
                    pending.remove(stage)
                    running[stage.name] = stage
                    labels = [r.label for r in owners.get(stage.name, [])]
                    pool.submit(stage, _stage_info(stage), labels, run_tags(owners.get(stage.name, [])))
                    status(stage.kind)
                for name, result in pool.wait(timeout=1.0):
                    stage = running.pop(name)
                    finished += 1
                    who = describe_runs(owners.get(stage.name, []))
                    if "crash" in result:  # Ray: its worker died on every try
                        from compare.executor import crash_reason

                        info = {**_stage_info(stage), "runs": [r.label for r in owners.get(stage.name, [])]}
                        log = cache.record_failure(stage.name, info, result["crash"])
                        result = {"error": crash_reason(result["crash"]), "log": str(log or "")}
                    cause, where = None, ""
                    if "broken_input" in result:  # the input is to blame, not the stage: compute it again
                        dep = next(d for d in stage.inputs.values() if d and d.name == result["broken_input"])
                        first = (stage.name, dep.name) not in again
                        again.add((stage.name, dep.name))
                        queued = {s.name for s in pending}
                        if first and (dep.name in queued or set_aside(cache, dep, result["problem"], owners)):
                            added = [s for s in (dep, stage) if s.name not in queued]
                            pending += added
                            finished -= 1  # the stage runs again, after its input
                            total += dep in added
                            bar.total = total
                            continue
                        cause = dep
                        where = (
                            "computed again, it is still broken" if not first else "another process holds it"
                        )
                        where = f"stage {dep.kind} {dep.key}: {where}"
                    if "error" in result:
                        reason, log = result["error"], Path(result["log"]) if result.get("log") else None
                        outcome.failures[stage.name] = Failure(stage, reason, log, cause)
                        where = where or (f"log: {log}" if log else "no log (it could not be written)")
                        tqdm.write(
                            f"error: stage {stage.kind} {stage.key} failed ({who}): {reason}; not cached; "
                            f"{where}",
                            file=sys.stderr,
                        )
                        if ctx.verbose and result.get("trace"):
                            print(result["trace"], file=sys.stderr, end="")
                    else:
                        cache.hold(stage.name)  # read by this run from now on: nobody removes it meanwhile
                        if result["ran"]:
                            outcome.timings[stage.name] = result["seconds"]
                        if not on_terminal:  # one line per finished stage where no bar is drawn
                            ran = (
                                f"done in {result['seconds']:.1f} s"
                                if result["ran"]
                                else "done by another process"
                            )
                            print(
                                f"[{finished}/{total}] {stage.kind} ({who}): {ran}",
                                file=sys.stderr,
                                flush=True,
                            )
                    bar.update()
                    status()
                bar.refresh()  # the elapsed time, while long stages run
    finally:
        bar.close()
        pool.close()
    return outcome


# -- the cached stages a run reads: checked, held, and set aside when broken -------------------------------
def report_reads(runs: list[Run]) -> dict[str, tuple[str, ...]]:
    """The files `collect` reads of each stage, by stage name: they must be there for a stage to count."""
    reads: dict[str, tuple[str, ...]] = {}
    for run in runs:
        reads[run.eval.name] = ("metrics.json", "samples.jsonl")
        reads[run.demonstrator.name] = ("metrics.json",)
    return reads


def usable_or_todo(runs: list[Run], cache: StageCache, outcome: Outcome, owners: dict) -> list[Stage]:
    """The stages to compute, inputs first: those not complete, and those that fail their check (moved
    aside, one line each). Every other stage is held for the run. A broken stage that cannot be moved
    (another process reads it) fails, and takes its dependents with it."""
    reads = report_reads(runs)
    todo = []
    for stage in stage_order([root for r in runs for root in r.roots]):
        if cache.is_complete(stage.name):
            problem = cache.check(stage.name, needs=reads.get(stage.name, ()))
            if problem is None and cache.hold(stage.name):
                continue
            if problem is not None and not set_aside(cache, stage, problem, owners):
                reason = f"broken ({problem}) and in use by another process, so not moved; run again later"
                outcome.failures[stage.name] = Failure(stage, reason, None)
                continue
        todo.append(stage)
    return todo


def set_aside(cache: StageCache, stage: Stage, problem: str, owners: dict) -> bool:
    """Move a broken stage into the cache's quarantine, saying so in one line; False if it cannot be
    moved now (another process holds it)."""
    where = cache.set_aside(stage.name)
    if where is None and cache.is_complete(stage.name):
        tqdm.write(f"error: stage {stage.kind} {stage.key} is broken: {problem}; another process holds it, "
                   "so it was not moved", file=sys.stderr)  # fmt: skip
        return False
    moved = f"moved to {where}" if where is not None else "gone meanwhile"
    who = describe_runs(owners.get(stage.name, []))
    tqdm.write(f"warning: stage {stage.kind} {stage.key} ({who}) is broken: {problem}; {moved}; "
               "computing it again", file=sys.stderr)  # fmt: skip
    return True


def _stage_info(stage: Stage) -> dict:
    """What a stage's completion marker (and its failure log) records about it."""
    return {
        "kind": stage.kind,
        "key": stage.key,
        "params": stage.params,
        "inputs": {n: d.name for n, d in stage.inputs.items()},
    }


def _by_priority(todo: list[Stage]) -> list[Stage]:
    """Stages with the longest chain of stages after them first (they hold up the most), then in order."""
    height: dict[str, int] = {}
    users: dict[str, list[Stage]] = {}
    for stage in todo:
        for dep in stage.inputs.values():
            if dep is not None:
                users.setdefault(dep.name, []).append(stage)
    for stage in reversed(todo):  # inputs come before their users in `todo`
        height[stage.name] = 1 + max((height[u.name] for u in users.get(stage.name, [])), default=0)
    order = {s.name: i for i, s in enumerate(todo)}
    return sorted(todo, key=lambda s: (-height[s.name], order[s.name]))


class _InProcess:
    """Stages one after another in this process (`--jobs 1`, or under `accelerate launch`)."""

    slots = 1

    def __init__(self, cache: StageCache, ctx: Context):
        self.cache, self.ctx, self.next = cache, ctx, None

    def submit(self, stage: Stage, info: dict, labels: list[str], tags: dict) -> None:
        self.next = (stage, info, labels, tags)

    def wait(self, timeout: float) -> list[tuple[str, dict]]:
        if self.next is None:
            return []
        (stage, info, labels, tags), self.next = self.next, None
        inputs = {name: self.cache.path(dep.name) for name, dep in stage.inputs.items()}
        return [
            (
                stage.name,
                attempt(SPECS[stage.kind], stage.name, info, inputs, self.cache.root, self.ctx, labels, tags),
            )
        ]

    def close(self) -> None:
        pass


class _RayTasks:
    """Stages as Ray tasks (compare/executor.py), each with the resources its spec and base model need."""

    def __init__(self, pool, cache: StageCache, ctx: Context, memory: dict[str, int | None]):
        self.pool, self.cache, self.memory = pool, cache, memory
        self.slots = pool.slots
        self.ctx = dataclasses.replace(ctx, progress=False, threads=pool.cpus)

    def submit(self, stage: Stage, info: dict, labels: list[str], tags: dict) -> None:
        inputs = {name: self.cache.path(dep.name) for name, dep in stage.inputs.items()}
        args = (SPECS[stage.kind], stage.name, info, inputs, self.cache.root, self.ctx, labels, tags)
        self.pool.submit(stage.name, self.pool.resources(self.memory.get(stage.name)), args)

    def wait(self, timeout: float) -> list[tuple[str, dict]]:
        return self.pool.wait(timeout)

    def close(self) -> None:
        self.pool.close()


def _ray_pool(
    runs: list[Run], todo: list[Stage], cache: StageCache, ctx: Context, jobs, address
) -> _RayTasks:
    from compare.executor import RayPool, base_parameters, stage_memory

    cache.root.mkdir(parents=True, exist_ok=True)
    cache = StageCache(cache.root.resolve())  # the workers may start in another folder
    pool = RayPool(None if address is not None and jobs is None else jobs, address, ctx.threads, ctx.verbose)
    try:
        pool.check_shared_cache(cache.root)
        sizes = {id(run.suite): base_parameters(run.suite) for run in runs if run.suite.base.external}
        owners = stage_owners(runs)
        memory = {}
        for stage in todo:
            suite = owners[stage.name][0].suite if owners.get(stage.name) else None
            parameters = sizes.get(id(suite)) if suite is not None else None
            memory[stage.name] = stage_memory(stage.kind, stage.params, parameters)
    except BaseException:
        pool.close()
        raise
    return _RayTasks(pool, cache, ctx, memory)


def collect(runs: list[Run], cache: StageCache):
    """Results (one row per run and split, with each run's compute), per-sample rows, training logs, the
    held-out samples online RL saved along training (`compare.stages.snapshots`) and compute per run and
    stage (`compare/ledger.py`): five DataFrames, all read from cached stages."""
    import pandas as pd

    from compare.ledger import Ledger
    from compare.stages.snapshots import FILE as SNAPSHOTS

    results, samples, logs, snapshots, compute_rows = [], [], [], [], []
    ledger = Ledger(runs, cache)

    def read(stage: Stage, file: str, parse, *args):
        path = cache.path(stage.name) / file
        try:
            return parse(path, *args)
        except (OSError, ValueError, TypeError, KeyError) as e:  # checked at the start; broken since
            where = cache.set_aside(stage.name)
            moved = f"moved to {where}; run again to compute it again" if where else "it was not moved"
            raise SuiteError(
                f"stage {stage.kind} {stage.key}: {path}: cannot be read ({first_line(e)}); {moved}"
            ) from None

    def json_file(path: Path):
        return json.loads(path.read_text())

    def gold_of_splits(path: Path, metrics: dict) -> dict:
        gold = json_file(path)
        return {split: gold[split] for split in metrics}

    for run in runs:
        meta = {
            "arm": run.arm,
            "seed": run.seed,
            "budget": run.suite.budget.units,
            **{DATA_KINDS[name].column: n for name, n in run.bought.items()},
            **{f"grid.{k}": v for k, v in run.point.items() if k != "seed"},
        }
        metrics = read(run.eval, "metrics.json", json_file)
        gold = read(run.demonstrator, "metrics.json", gold_of_splits, metrics)
        stages = ledger.rows(run)
        after_base = [r for r in stages if r["stage"] != "base"]  # the base model: the same for every arm
        # nan when a stage was not counted; the seconds stay in compute.csv (no two runs share them, and
        # results.csv is the same however and wherever a suite runs): the report adds them back
        compute = {"compute_flops": sum(r["flops"] for r in after_base)}
        compute_rows.extend({**meta, **r} for r in stages)
        for split, m in metrics.items():
            results.append({**meta, "split": split, **m, "demonstrator_gold": gold[split], **compute})
        samples.extend({**meta, **row} for row in read(run.eval, "samples.jsonl", read_jsonl))
        for stage in stage_order([run.eval]):  # the arm's own training stages, inputs first
            history = cache.path(stage.name) / "log_history.json"
            if stage.kind in RECIPE_STAGES and history.exists():
                for entry in read(stage, "log_history.json", json_file):
                    logs.append({**meta, "stage": stage.kind, **entry})
            if stage.kind in RECIPE_STAGES and (cache.path(stage.name) / SNAPSHOTS).exists():
                for row in read(stage, SNAPSHOTS, read_jsonl):
                    snapshots.append({**meta, "stage": stage.kind, **row})
    results_df = pd.DataFrame(results)
    for col in ("proxy_reward", "rm_accuracy"):
        if col not in results_df:
            results_df[col] = float("nan")
    return (
        results_df,
        pd.DataFrame(samples),
        pd.DataFrame(logs),
        pd.DataFrame(snapshots),
        pd.DataFrame(compute_rows),
    )


# -- a warm run: the report folder is already what this run would write ----------------------------------
REPORT_CODE = ("report", "pipeline.py", "runner.py")  # the code a report is made by (compare/...)


def report_inputs(runs: list[Run], settings: list[str]) -> str:
    """A digest of everything a report is made of: the suites' settings, every stage of every run (a
    stage's name holds its kind, version, settings and inputs), and the code that writes the report."""
    digest = hashlib.sha256()
    for text in settings:
        digest.update(text.encode())
    for name in sorted({s.name for run in runs for s in stage_order(run.roots)}):
        digest.update(name.encode())
    package = Path(__file__).resolve().parent
    for entry in REPORT_CODE:
        for path in (
            sorted(p for p in (package / entry).rglob("*") if p.is_file() and "__pycache__" not in p.parts)
            if (package / entry).is_dir()
            else [package / entry]
        ):
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _folder_state(folder: Path) -> dict[str, list[int]]:
    return {
        str(p.relative_to(folder)): [p.stat().st_size, p.stat().st_mtime_ns]
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _report_record(out: Path, cache: StageCache) -> Path:
    """Beside the lock of that report folder (`StageCache.folder_lock`), in the cache's `.locks/`."""
    from compare.cache import LOCKS

    digest = hashlib.sha256(str(Path(out).resolve()).encode()).hexdigest()[:16]
    return cache.root / LOCKS / f"out-{digest}.report.json"


def report_is_current(out: Path, cache: StageCache, inputs: str) -> bool:
    """Whether `out` holds exactly the report this run would write: the one written last from the same
    inputs (`report_inputs`), every file of it as it was written (sizes and times), nothing added."""
    record = _report_record(out, cache)
    if not out.is_dir() or not record.is_file():
        return False
    try:
        saved = json.loads(record.read_text())
    except (OSError, ValueError):
        return False
    return saved.get("inputs") == inputs and saved.get("files") == _folder_state(out)


def remember_report(out: Path, cache: StageCache, inputs: str) -> None:
    """Record what the report just published to `out` was made of, for `report_is_current`."""
    record = _report_record(out, cache)
    real_folder(record.parent)
    write_file(
        record, json.dumps({"out": str(Path(out).resolve()), "inputs": inputs, "files": _folder_state(out)})
    )
