"""One suite run, top to bottom: load → plan → preflight → execute → collect → report.

`run_suite` is the whole pipeline (the CLI only parses arguments and calls it). Everything a report
shows comes from cached stages; the report folder is written beside its final place and swapped in, and
only a folder that carries the harness's marker is ever replaced.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from contextlib import contextmanager, suppress
from pathlib import Path

from compare.cache import StageCache, write_file
from compare.plan import Run, plan_runs, stage_order
from compare.preflight import (
    INSIDE_OLD,
    INSIDE_TMP,
    PARTIAL_MARKER,
    REPORT_MARKER,
    check_out_folder,
    clear_leftovers_inside,
    plain_name,
    preflight,
    read_marker,
    reference_state,
)
from compare.runner import (
    Outcome,
    collect,
    execute,
    is_main_process,
    remember_report,
    report_inputs,
    report_is_current,
)
from compare.stages.common import Context
from compare.suite import SuiteError, load_suites

# Exit codes: 0 all runs reported, 1 a crash of the harness itself, 2 bad input (nothing ran),
# 3 some runs failed (the others are reported), 130 interrupted.
EXIT_RUNS_FAILED = 3


def run_suite(
    path: Path | str,
    overrides: list[str] | None = None,
    *,
    out: Path | None = None,
    cache: StageCache | None = None,
    verbose: bool = False,
    threads: int | None = None,
    jobs: int | None = None,
    ray_address: str | None = None,
    report_to: tuple[str, ...] = (),
    tracking_dir: Path | None = None,
) -> int:
    """Run a suite (or a collection of suites) and write its report; returns the exit code.

    `report_to`: experiment trackers every training stage logs to (`compare.tracking`); TensorBoard's
    event files go under `tracking_dir` (default: runs/<suite name>/).

    Raises SuiteError (one line) for a problem found before anything runs.
    """
    from compare.cache import default_cache_dir

    cache = cache or StageCache(default_cache_dir())
    start = time.time()
    # 1. load: the file, its includes and overrides, validated whole
    collection, suites = load_suites(path, overrides)
    name = collection.name if collection else suites[0].name
    out = out or Path("reports") / name
    # 2. plan: runs = arms x grid points, each a chain of stages; shared stages once
    runs = {suite.name: plan_runs(suite) for suite in suites}
    # 3. preflight: files, datasets, packages, memory, the report folder
    preflight(suites, out, cache.root)
    # 4. execute: every stage not cached, inputs first; every suite's stages in one pass
    tiny = not any(suite.base.external for suite in suites)
    ctx = Context(verbose, threads or (1 if tiny else None), report_to=tuple(report_to), project=name)
    if report_to:
        tracking_dir = tracking_dir or Path("runs") / name
        if tracking_dir.exists() and not tracking_dir.is_dir():
            raise SuiteError(f"--tracking-dir {tracking_dir}: a file, not a folder")
        ctx.tracking_dir = str(tracking_dir.resolve())
        where = f"; TensorBoard logs in {ctx.tracking_dir}" if "tensorboard" in report_to else ""
        print(f"tracking: {', '.join(report_to)}{where}", file=sys.stderr)
    # `jobs` stages at once (None: what suits the machine), on Ray when more than one or on a cluster
    outcome = execute([r for rs in runs.values() for r in rs], cache, ctx, jobs, ray_address)
    if not is_main_process():  # the main process writes the report
        return 0
    # 5. collect and 6. report, for every run that finished
    total = sum(len(rs) for rs in runs.values())
    n_failed = sum(not complete(r, cache) for rs in runs.values() for r in rs)
    if n_failed == total:
        print(
            f"error: all {total} runs failed; no report written (logs in {cache.root / 'logs'})",
            file=sys.stderr,
        )
        return EXIT_RUNS_FAILED
    # a warm run whose report folder is already what it would write leaves it as it is
    every_run = [r for rs in runs.values() for r in rs]
    settings = [s.model_dump_json() for s in suites] + ([collection.model_dump_json()] if collection else [])
    settings += [reference_state(s) for s in suites if s.beside_findings]  # a findings folder rewritten
    inputs = report_inputs(every_run, settings)
    report = out / "report.md" if collection is None else out / "index.md"
    shown = f"{report} and report.html" if collection is None else str(report)  # what the user opens
    if not outcome.timings and not n_failed and report_is_current(out, cache, inputs):
        print(f"{name}: {total} runs (all stages cached, report up to date) in {time.time() - start:.0f}s; "
              f"report: {shown}")  # fmt: skip
        return 0
    if collection is None:
        suite = suites[0]
        publish(out, cache, lambda folder: write_suite(folder, suite, runs[suite.name], cache, outcome))
    else:
        publish(out, cache, lambda folder: write_collection(folder, collection, suites, runs, cache, outcome))
    remember_report(out, cache, inputs)
    ran = f"{len(outcome.timings)} stages run" if outcome.timings else "no stage run"
    if outcome.failures:
        ran += f", {len(outcome.failures)} failed or skipped"
    elif not outcome.timings:
        ran = "all stages cached"
    print(f"{name}: {total} runs ({ran}) in {time.time() - start:.0f}s; report: {shown}")
    if n_failed:
        print(
            f"error: {n_failed} of {total} runs failed (see the report's failed runs; logs in "
            f"{cache.root / 'logs'}); run again to retry only what failed",
            file=sys.stderr,
        )
        return EXIT_RUNS_FAILED
    return 0


def complete(run: Run, cache: StageCache) -> bool:
    """Whether every stage the report reads of `run` is in the cache."""
    return all(cache.is_complete(stage.name) for stage in run.roots)


def write_suite(folder: Path, suite, runs: list[Run], cache: StageCache, outcome: Outcome) -> None:
    from compare.report import write_report  # matplotlib, scipy: imported only when a report is written

    done = [r for r in runs if complete(r, cache)]
    failed = [_failed_row(r, outcome) for r in runs if not complete(r, cache)]
    results, samples, logs, snapshots, compute = collect(done, cache)
    # seconds each stage took when it ran (kept in its completion marker), so warm runs report them too
    seconds = {
        s.name: cache.info(s.name).get("seconds", float("nan")) for r in done for s in stage_order(r.roots)
    }
    beside = None
    if suite.beside_findings:  # the tiny world's findings, decided again from the folder the suite names
        from compare.report.beside import read_reference, reference_frame

        beside = reference_frame(read_reference(suite.beside_folder), suite)
    write_report(folder, suite, results, samples, logs, seconds, failed, snapshots, compute, beside)
    mark(folder)


def _failed_row(run, outcome) -> dict:
    """One row of the report's failed runs: which run, the stage that failed, why, and where its log is."""
    failure = outcome.failure_of(run)
    stage = (failure.cause or failure.stage) if failure else run.eval
    reason = failure.reason if failure else "not computed"
    root = outcome.failures.get(stage.name) if failure else None
    log = root.log if root is not None and root.log is not None else (failure.log if failure else None)
    return {
        "arm": run.arm,
        "point": " ".join(f"{k}={v}" for k, v in run.point.items() if k != "seed"),
        "seed": run.seed,
        "stage": f"{stage.kind} {stage.key}",
        "reason": root.reason if root is not None else reason,
        "log": str(log) if log else "",
    }


def write_collection(folder: Path, collection, suites, runs, cache: StageCache, outcome) -> None:
    from compare.report.render import quoted_text  # a user's text never becomes markup

    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"# {collection.name}", "", quoted_text(collection.description), ""]
    for suite in suites:
        if not any(complete(r, cache) for r in runs[suite.name]):
            lines.append(f"- {suite.name}: every run failed, no report")
            continue
        write_suite(folder / suite.name, suite, runs[suite.name], cache, outcome)
        lines.append(f"- [{suite.name}]({suite.name}/report.md): {quoted_text(suite.description)}")
    if collection.findings:
        write_findings_report(folder, collection, [s for s in suites if (folder / s.name).is_dir()])
        lines[4:4] = ["The findings, every claim on a discovery and a confirmation half of the seeds: "
                      "[report.md](report.md), [report.html](report.html).", ""]  # fmt: skip
    (folder / "index.md").write_text("\n".join(lines) + "\n")


def write_findings_report(folder: Path, collection, suites) -> None:
    """The findings report over the suites' saved results and logs (`compare/report/findings.py`); their
    samples, the largest files, are not read."""
    from compare.report import read_saved
    from compare.report.findings import write_findings
    from compare.report.roles import Roles

    data = []
    for suite in suites:
        saved, results, _, logs, _, _ = read_saved(folder / suite.name, samples=False)
        data.append((saved, results, logs, Roles.of(saved, set(results["arm"]))))
    write_findings(folder, collection, data)


def publish(out: Path, cache: StageCache, write) -> None:
    """Write a report folder beside `out`, then swap it in: a half-written report is never left as one.

    Runs that publish the same folder take turns (a lock kept in the cache). The folder being written
    carries a "partial" marker from its first moment, so the leftovers of a publish that was killed are
    known for ours and cleared by the next one; nothing else beside `out` is touched. Only a folder that
    carries our marker, and holds nothing but what its manifest lists, is ever replaced.

    Where `out` cannot be swapped (a mount point, a folder on another filesystem than its parent, a
    parent we may not write, or an empty folder of the user's), the new report is written inside `out`
    itself, on its own filesystem, and moved in entry by entry (`_move_contents`); the old entries go only
    once the new ones are in place.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    with cache.folder_lock(out):
        check_out_folder(out, cache.root)  # again: the folder may have changed while we trained
        for leftover in out.parent.glob(f".{out.name}.tmp-*"):  # a killed publish (we hold the lock)
            if (leftover / PARTIAL_MARKER).is_file() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
        if out.is_dir():
            clear_leftovers_inside(out)
        inside = out.is_dir() and not _swappable(out)
        tmp = (
            out / f"{INSIDE_TMP}-{os.getpid()}" if inside else out.with_name(f".{out.name}.tmp-{os.getpid()}")
        )
        old = out.with_name(f".{out.name}.tmp-{os.getpid()}-old")
        tmp.mkdir()
        (tmp / PARTIAL_MARKER).write_text("a report being written by sft-vs-rlhf\n")
        try:
            write(tmp)
            (tmp / PARTIAL_MARKER).unlink()
            mark(tmp)
            if not out.exists():
                os.replace(tmp, out)
            elif not inside and read_marker(out) is not None and _swap(out, tmp, old):
                pass
            else:  # an empty folder of the user's, or one that cannot be renamed (a mount point)
                _move_contents(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            if out.exists():  # the old report, once the new one is in place
                shutil.rmtree(old, ignore_errors=True)


def _swappable(out: Path) -> bool:
    """Whether `out` can be replaced by a rename of a folder beside it: not a mount point, on the same
    filesystem as its parent, in a parent we may write."""
    try:
        same = os.stat(out).st_dev == os.stat(out.parent).st_dev
    except OSError:
        return False
    return same and not os.path.ismount(out) and os.access(out.parent, os.W_OK | os.X_OK)


@contextmanager
def _uninterrupted():
    """SIGTERM and SIGINT held back for the block (a few renames), so a report is never left half-moved:
    the signal arrives when the block is done."""
    held = {signal.SIGTERM, signal.SIGINT}
    try:
        before = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    except (AttributeError, OSError, ValueError):  # not on this platform
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _swap(out: Path, tmp: Path, old: Path) -> bool:
    """Replace `out` by `tmp` with two renames; False when `out` cannot be renamed (e.g. a mount point)."""
    with _uninterrupted():
        try:
            os.replace(out, old)
        except OSError:
            return False
        try:
            os.replace(tmp, out)
        except OSError:
            os.replace(old, out)  # the old report back
            raise
    return True


def _move_contents(tmp: Path, out: Path) -> None:
    """Publish into the folder `out` itself: the new entries in, then the old report entries out.

    The old entries (only plain names of the old manifest) are first renamed into a folder inside `out`,
    then the new ones renamed in, then the old ones deleted: a failure half-way puts the old ones back.
    The marker lists old and new entries while this runs (marked incomplete), so a crash half-way leaves
    a folder the next run recognises as its own and replaces.
    """
    marker = read_marker(out)
    old = marker or {"files": []}
    new = json.loads((tmp / REPORT_MARKER).read_text())
    entries = [p.name for p in tmp.iterdir() if p.name != REPORT_MARKER]
    files = sorted(set(old["files"]) | set(new["files"]))
    aside = out / f"{INSIDE_OLD}-{os.getpid()}"
    moved_old, moved_new = [], []
    with _uninterrupted():
        _write_marker(out, {**new, "files": files, "complete": False})
        aside.mkdir()
        (aside / PARTIAL_MARKER).write_text("the report sft-vs-rlhf is replacing\n")
        try:
            for name in old["files"]:
                if plain_name(name) and name != REPORT_MARKER and os.path.lexists(out / name):
                    os.replace(out / name, aside / name)
                    moved_old.append(name)
            for name in entries:
                os.replace(tmp / name, out / name)
                moved_new.append(name)
        except BaseException:  # everything back as it was
            back = [(out / n, tmp / n) for n in moved_new] + [(aside / n, out / n) for n in moved_old]
            restored = True
            for src, dst in back:
                try:
                    os.replace(src, dst)
                except OSError:
                    restored = False
            with suppress(OSError):
                if marker is None:
                    (out / REPORT_MARKER).unlink(missing_ok=True)
                else:
                    _write_marker(out, marker)
            if restored:
                shutil.rmtree(aside, ignore_errors=True)
            raise
        _write_marker(out, new)
    shutil.rmtree(aside, ignore_errors=True)


def mark(folder: Path) -> None:
    """Write the marker that says the harness wrote `folder`, with the entries it wrote (its manifest)."""
    files = sorted(p.name for p in folder.iterdir() if p.name not in (REPORT_MARKER, PARTIAL_MARKER))
    _write_marker(folder, {"written_by": "sft-vs-rlhf", "files": files, "complete": True})


def list_in_marker(folder: Path, names) -> None:
    """Add `names` to the manifest of `folder`'s marker (keeping its other fields), so entries a rebuild
    adds (report.html to a folder an earlier version wrote) are ours to replace; no marker, no change."""
    marker = read_marker(folder)
    names = [n for n in names if plain_name(n)]
    if marker is None or set(names) <= set(marker["files"]):
        return
    _write_marker(
        folder, {"written_by": "sft-vs-rlhf", **marker, "files": sorted({*marker["files"], *names})}
    )


def _write_marker(folder: Path, data: dict) -> None:
    """The marker, written whole (a new file renamed over it: never through a link at its name)."""
    write_file(folder / REPORT_MARKER, json.dumps(data, indent=1) + "\n")
