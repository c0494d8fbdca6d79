"""Command line: `sft-vs-rlhf run | plan | report` (also `python -m compare`)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from compare.cache import StageCache, default_cache_dir
from compare.config import SuiteError, load_suites


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sft-vs-rlhf",
        description="Run SFT and RLHF from one base model and one annotation budget, and compare them.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    def suite_args(sp):
        sp.add_argument("suite", help="suite YAML file, e.g. experiments/quick.yaml")
        sp.add_argument(
            "--cache-dir", type=Path, help="stage cache (default: $SFT_VS_RLHF_CACHE or ~/.cache/sft-vs-rlhf)"
        )
        sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override a suite setting, e.g. --set budget.units=128 (repeatable)")  # fmt: skip

    run = sub.add_parser("run", help="run a suite and write its report")
    suite_args(run)
    run.add_argument("--out", type=Path, help="report folder (default: reports/<suite name>/)")
    run.add_argument("-v", "--verbose", action="store_true", help="show the trainers' logs and progress bars")
    run.add_argument(
        "--threads",
        type=int,
        help="CPU threads for torch (default: 1 for the built-in tiny model, whose small matrices gain "
        "nothing from more and suffer badly on a busy machine; torch's own default otherwise)",
    )
    plan = sub.add_parser("plan", help="validate a suite and list its runs and stages, without training")
    suite_args(plan)
    report = sub.add_parser("report", help="rebuild a report from the results saved in its folder")
    report.add_argument("dir", type=Path, help="a report folder written by `run`")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "report":
            return _report(args)
        collection, suites = load_suites(args.suite, args.overrides)
        cache = StageCache(args.cache_dir or default_cache_dir())
        if args.command == "plan":
            return max(_plan(suite, cache) for suite in suites)
        return _run(collection, suites, cache, args)
    except SuiteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        return 0
    except KeyboardInterrupt:
        print("interrupted: completed stages are cached; run again to resume", file=sys.stderr)
        return 130


def _plan(suite, cache: StageCache) -> int:
    from compare.plan import plan_runs, stage_order

    runs = plan_runs(suite)
    stages = stage_order([r.eval for r in runs])
    print(f"suite {suite.name}: {len(runs)} runs, {len(stages)} stages, cache {cache.root}")
    print("\nruns:")
    for run in runs:
        state = "cached" if cache.is_complete(run.eval.name) else "to run"
        print(
            f"  {run.label:<40} demos={run.n_demonstrations:<5} comparisons={run.n_comparisons:<5} [{state}]"
        )
    print("\nstages:")
    for stage in stages:
        state = "cached" if cache.is_complete(stage.name) else "to run"
        print(f"  {stage.name:<32} [{state}]")
    todo = sum(not cache.is_complete(s.name) for s in stages)
    print(f"\n{todo} of {len(stages)} stages to run")
    return 0


# Exit codes: 0 all runs reported, 1 a crash of the harness itself, 2 bad input (nothing ran),
# 3 some runs failed (the others are reported), 130 interrupted.
EXIT_RUNS_FAILED = 3
REPORT_MARKER = ".sft-vs-rlhf-report"  # in every folder `run` writes: only such a folder is ever replaced


def _run(collection, suites, cache: StageCache, args) -> int:
    from compare.plan import plan_runs
    from compare.runner import execute, is_main_process
    from compare.stages.common import Context

    name = collection.name if collection else suites[0].name
    out = args.out or Path("reports") / name
    check_out_folder(out, cache.root)
    runs = {suite.name: plan_runs(suite) for suite in suites}
    for suite in suites:
        _check_memory(suite)
    start = time.time()
    tiny = not any(suite.base.external for suite in suites)
    threads = args.threads or (1 if tiny else None)
    # every suite's stages in one pass: stages shared between suites run once
    outcome = execute([r for rs in runs.values() for r in rs], cache, Context(args.verbose, threads))
    if not is_main_process():  # the main process writes the report
        return 0
    failed = {s: [r for r in rs if not cache.is_complete(r.eval.name)] for s, rs in runs.items()}
    n_failed = sum(len(f) for f in failed.values())
    total = sum(len(r) for r in runs.values())
    if n_failed == total:
        print(
            f"error: all {total} runs failed; no report written (logs in {cache.root / 'logs'})",
            file=sys.stderr,
        )
        return EXIT_RUNS_FAILED
    if collection is None:
        suite = suites[0]
        write = lambda folder: _write_suite(folder, suite, runs[suite.name], cache, outcome)  # noqa: E731
    else:
        write = lambda folder: _write_collection(folder, collection, suites, runs, cache, outcome)  # noqa: E731
    _publish(out, cache, write)
    ran = f"{len(outcome.timings)} stages run" if outcome.timings else "all stages cached"
    report = out / "report.md" if collection is None else out / "index.md"
    print(f"{name}: {total} runs ({ran}) in {time.time() - start:.0f}s; report: {report}")
    if n_failed:
        print(
            f"error: {n_failed} of {total} runs failed (see the report's failed runs; logs in "
            f"{cache.root / 'logs'}); run again to retry only what failed",
            file=sys.stderr,
        )
        return EXIT_RUNS_FAILED
    return 0


def check_out_folder(out: Path, cache_root: Path) -> None:
    """Refuse, before anything runs, a report folder that would replace something the harness did not write."""
    where = out.resolve()
    cache = Path(cache_root).resolve()
    here = Path.cwd().resolve()
    if where == here or where in here.parents:
        raise SuiteError(
            f"--out {out}: is the current folder or one of its parents; give the report its own folder"
        )
    if where == cache or where in cache.parents:
        raise SuiteError(f"--out {out}: holds the stage cache ({cache_root}); give the report its own folder")
    if cache in where.parents:
        raise SuiteError(f"--out {out}: is inside the stage cache ({cache_root}); choose a folder outside it")
    if out.is_symlink():
        raise SuiteError(f"--out {out}: is a symbolic link; give the folder itself")
    if not out.exists():
        return
    if not out.is_dir():
        raise SuiteError(f"--out {out}: exists and is not a folder")
    if not (out / REPORT_MARKER).exists() and any(out.iterdir()):
        raise SuiteError(
            f"--out {out}: this folder is not empty and was not written by sft-vs-rlhf (no {REPORT_MARKER}); "
            "nothing in it was touched: choose a new or empty folder"
        )


def _check_memory(suite) -> None:
    """Say before loading anything that the base model will not fit (its parameter count, not its weights)."""
    from compare import basemodel
    from compare.config import arm_stages

    if not suite.base.external:
        return
    stages = {("eval", False)}
    for arm in suite.arms.values():
        settings = arm_stages(suite, arm)
        stages |= {(k, bool(getattr(settings, k).lora_r)) for k in arm.recipe if k != "best_of_n"}
    base = suite.base
    problem = basemodel.too_large(basemodel.resolve(base.model, base.gguf_file, base.package), stages)
    if problem:
        raise SuiteError(f"suite {suite.name!r}: base: {base.model or base.package}: {problem}")


def _write_suite(folder: Path, suite, runs, cache: StageCache, outcome) -> None:
    from compare.report import write_report
    from compare.runner import collect

    done = [r for r in runs if cache.is_complete(r.eval.name)]
    failed = [_failed_row(r, outcome) for r in runs if not cache.is_complete(r.eval.name)]
    results, samples, logs = collect(done, cache)
    # seconds each stage took when it ran (kept in its completion marker), so warm runs report them too
    seconds = {s.name: cache.info(s.name).get("seconds", float("nan")) for r in done for s in _stages(r)}
    write_report(folder, suite, results, samples, logs, seconds, failed)
    (folder / REPORT_MARKER).write_text(f"written by sft-vs-rlhf: suite {suite.name}\n")


def _failed_row(run, outcome) -> dict:
    """One row of the report's failed runs: which run, the stage that failed, why, and where its log is."""
    failure = outcome.failure_of(run)
    stage = failure.cause or failure.stage if failure else run.eval
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


def _write_collection(folder: Path, collection, suites, runs, cache: StageCache, outcome) -> None:
    folder.mkdir(parents=True)
    lines = [f"# {collection.name}", "", collection.description.strip(), ""]
    for suite in suites:
        if not any(cache.is_complete(r.eval.name) for r in runs[suite.name]):
            lines.append(f"- {suite.name}: every run failed, no report")
            continue
        _write_suite(folder / suite.name, suite, runs[suite.name], cache, outcome)
        lines.append(f"- [{suite.name}]({suite.name}/report.md): {suite.description.strip()}")
    (folder / "index.md").write_text("\n".join(lines) + "\n")
    (folder / REPORT_MARKER).write_text(f"written by sft-vs-rlhf: collection {collection.name}\n")


def _stages(run):
    from compare.plan import stage_order

    return stage_order([run.eval])


def _publish(out: Path, cache: StageCache, write) -> None:
    """Write a report folder beside `out`, then swap it in: a half-written report is never left as one.

    Runs that publish the same folder take turns (a lock kept in the cache); leftovers of a publish
    that was killed are cleared by the next one. Only a folder carrying our marker is ever replaced.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    with cache.folder_lock(out):
        check_out_folder(out, cache.root)  # again: the folder may have changed while we trained
        for leftover in out.parent.glob(f".{out.name}.tmp-*"):  # a killed publish (we hold the lock)
            if (leftover / REPORT_MARKER).exists() or _is_ours_partial(leftover):
                shutil.rmtree(leftover, ignore_errors=True)
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        old = out.with_name(f".{out.name}.tmp-{os.getpid()}-old")
        try:
            write(tmp)
            if out.exists():
                os.replace(out, old)
            os.replace(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)


def _is_ours_partial(folder: Path) -> bool:
    """A folder a killed publish left: it holds only files a report is made of."""
    ours = {"results.csv", "samples.csv", "training_logs.csv", "suite.yaml", "provenance.json", "report.md",
            "plots", "index.md", "failed_runs.csv", REPORT_MARKER}  # fmt: skip
    return folder.is_dir() and all(p.name in ours or p.is_dir() for p in folder.iterdir())


def _report(args) -> int:
    from compare.report import ReportError, rebuild_report

    if not args.dir.is_dir():
        raise SuiteError(f"{args.dir}: no such folder")
    if not (args.dir / "results.csv").exists():
        raise SuiteError(f"{args.dir}: no results.csv here (not a report folder written by `run`)")
    try:
        rebuild_report(args.dir)
    except ReportError as e:
        raise SuiteError(f"{e}; the report was left as it was") from None
    print(f"report: {args.dir / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
