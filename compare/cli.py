"""Command line: `sft-vs-rlhf run | plan | report` (also `python -m compare`)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from compare.cache import StageCache, default_cache_dir
from compare.config import SuiteError, load_suite


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
        suite = load_suite(args.suite, args.overrides)
        cache = StageCache(args.cache_dir or default_cache_dir())
        return _plan(suite, cache) if args.command == "plan" else _run(suite, cache, args)
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


def _run(suite, cache: StageCache, args) -> int:
    from compare.plan import plan_runs
    from compare.report import write_report
    from compare.runner import collect, execute
    from compare.stages.common import Context

    out = args.out or Path("reports") / suite.name
    if out.exists() and not out.is_dir():
        raise SuiteError(f"--out {out}: exists and is not a folder")
    runs = plan_runs(suite)
    start = time.time()
    try:
        threads = args.threads or (1 if suite.base.model is None else None)
        timings = execute(runs, cache, Context(verbose=args.verbose, threads=threads))
    except Exception as e:  # a stage crashed: say which, keep completed stages, leave no report
        if args.verbose:
            raise
        print(
            f"error: a stage failed: {type(e).__name__}: {e} (run with --verbose for the traceback)",
            file=sys.stderr,
        )
        return 1
    results, samples, logs = collect(runs, cache)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write_report(tmp, suite, results, samples, logs, timings)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ran = f"{len(timings)} stages run" if timings else "all stages cached"
    print(
        f"{suite.name}: {len(runs)} runs ({ran}) in {time.time() - start:.0f}s; report: {out / 'report.md'}"
    )
    return 0


def _report(args) -> int:
    from compare.report import rebuild_report

    if not (args.dir / "results.csv").exists():
        raise SuiteError(f"{args.dir}: no results.csv here (not a report folder written by `run`)")
    rebuild_report(args.dir)
    print(f"report: {args.dir / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
