"""Running one stage: under its lock, in this process or in a Ray worker, its inputs checked before they
are read, seeded by its own settings, its failure recorded (never raised) so that only its dependents are
skipped. The scheduler (`compare/runner.py:execute`) and the Ray pool (`compare/executor.py`) both call
`attempt`; under `accelerate launch` every process takes part in a training stage and rank 0 saves it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

from tqdm.auto import tqdm

from compare.cache import PARENT, STAGE_NAME, StageCache
from compare.stages import SPECS, Job
from compare.stages.common import Context
from compare.suite.errors import first_line


def _broken_input(cache: StageCache, inputs: dict[str, Path], error: BaseException | None = None):
    """(name, what is wrong) of the first input stage (or a folder its adapter is stored on) that fails
    its check; with `error`, what a stage raised: also an input written before markers held a manifest
    whose path the error names (a file missing there). None when every input is whole."""
    folders = []
    for path in inputs.values():
        folder = Path(path) if path is not None else None
        while folder is not None and folder.parent == cache.root and folder not in folders:
            folders.append(folder)
            try:
                parent = (
                    json.loads((folder / PARENT).read_text())["parent"]
                    if (folder / PARENT).is_file()
                    else None
                )
            except (OSError, ValueError, KeyError, TypeError):
                parent = None
            folder = cache.root / parent if isinstance(parent, str) and STAGE_NAME.fullmatch(parent) else None
    for folder in folders:
        if cache.is_complete(folder.name):
            problem = cache.check(folder.name)
            if problem is not None:
                return folder.name, problem
    if isinstance(error, OSError | ValueError):
        named = f"{error} {getattr(error, 'filename', '') or ''}"
        for folder in folders:
            if str(folder) in named and not cache.has_manifest(folder.name):
                return folder.name, f"{folder}: {first_line(error)}"
    return None


def attempt(
    spec,
    name: str,
    info: dict,
    inputs: dict[str, Path],
    root: Path,
    ctx: Context,
    labels: list[str],
    tags: dict | None = None,
) -> dict:
    """Compute one stage under its lock, in this process or a Ray worker; never raises for the stage's own
    errors: {"ran", "seconds"} (ran False when another process completed it meanwhile), or {"error", "log",
    "trace"} for a stage that raised, whose traceback is recorded in the cache's `logs/`."""
    cache = StageCache(root)
    ctx = dataclasses.replace(ctx, stage=name, tags=tags or {})  # the trackers' run for this stage
    if ctx.threads:
        import torch

        torch.set_num_threads(ctx.threads)
    start = time.time()
    broken = _broken_input(cache, inputs)  # every input checked before it is read
    try:
        if broken is None:
            seed_everything(info["params"])
            ran = _run_stage(spec, name, info, inputs, cache, ctx)
    except Exception as e:  # any stage error: this stage is not cached, its dependents are skipped
        broken = _broken_input(cache, inputs, e)
        if broken is None:
            log = cache.record_failure(name, {**info, "runs": labels}, e)
            return {
                "error": f"{type(e).__name__}: {first_line(e)}",
                "log": str(log or ""),
                "trace": traceback.format_exc(),
            }
    if broken is not None:  # the input is to blame: the run moves it aside and computes it again
        kind, _, key = broken[0].rpartition("-")
        return {
            "error": f"input {kind} {key} is broken: {broken[1]}",
            "log": "",
            "broken_input": broken[0],
            "problem": broken[1],
        }
    return {"ran": ran, "seconds": time.time() - start}


def seed_everything(params: dict) -> None:
    """The global random generators (Python's, NumPy's, torch's) seeded by the stage's own seed, before
    it runs: whatever a stage draws without a generator of its own (a fresh reward head, say) then
    depends only on its settings, not on which stages ran before it in the same process."""
    import numpy as np
    import torch

    seed = params.get("seed", 0)
    seed = seed if isinstance(seed, int) and not isinstance(seed, bool) else 0
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_stage(kind: str, params: dict, out: Path, inputs: dict[str, Path], ctx: Context) -> None:
    """Call a stage's run function: a recipe stage gets its typed settings (`Job`), others their params."""
    _call(SPECS[kind], params, out, inputs, ctx)


def _call(spec, params: dict, out: Path, inputs: dict[str, Path], ctx: Context) -> None:
    if spec.in_recipes:
        job = Job(spec.settings.model_validate(params["train"]), params["seed"], params.get("task"))
        spec.run(job, out, inputs, ctx)
    else:
        spec.run(params, out, inputs, ctx)


def _draws_bars() -> bool:
    """A progress bar needs a terminal with a width; elsewhere (a log, a pty of width 0) one line per stage."""
    if not sys.stderr.isatty():
        return False
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns > 0
    except OSError:
        return False


# whether this process has said, in this run, that it waits for another process: one line a run, not one
# a stage (`execute` clears it here; a Ray worker that a later run in this process reuses says it once)
_waited = False


def _say_waiting_once(message: str) -> None:
    global _waited
    if not _waited:
        tqdm.write(f"{message} (later waits for other processes are not listed)", file=sys.stderr)
        _waited = True


def _run_stage(spec, name: str, info: dict, inputs: dict[str, Path], cache: StageCache, ctx: Context) -> bool:
    """Compute one stage under its lock; False when another process completed it meanwhile."""
    params = info["params"]
    if not is_main_process():  # data-parallel training: every process takes part, rank 0 saves
        if spec.distributed:
            with tempfile.TemporaryDirectory() as scratch:
                _call(spec, params, Path(scratch), inputs, ctx)
        wait_for_everyone()
        return True
    try:
        # while another process computes it, wait; once it is complete (and held by the runs reading it)
        # use it without the lock
        with cache.lock(name, on_wait=_say_waiting_once, done=lambda: cache.is_complete(name)) as locked:
            if not locked or cache.is_complete(name):
                return False
            with cache.writing(name, info) as out:
                _call(spec, params, out, inputs, ctx)
        return True
    finally:
        wait_for_everyone()  # the other processes wait for this stage, failed or not


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
