"""Command line: `sft-vs-rlhf run | plan | report | cache | export` and `--version` (also
`python -m compare`). It parses and dispatches.

Exit codes: 0 done, 1 a crash of the harness itself (or a full disk, said in one line), 2 bad input
(one line, nothing ran), 3 some runs failed (the others are reported; `cache verify`: some stages were
broken), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
import threading
from pathlib import Path

from compare import __version__, cache_commands, export
from compare.cache import StageCache, default_cache_dir
from compare.suite import SuiteError
from compare.tracking import DEFAULT as DEFAULT_TRACKER
from compare.tracking import parse_report_to


def _path(text: str) -> Path:
    """A path argument, `~` expanded as the shell would have (a quoted `~` reaches us literally)."""
    return Path(text).expanduser()


def _check_threads(threads: int | None) -> None:
    most = 4 * (os.cpu_count() or 1)
    if threads is not None and not 1 <= threads <= most:
        raise SuiteError(
            f"--threads {threads}: give a number of CPU threads from 1 to {most} (this machine has {os.cpu_count()} cores)"
        )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sft-vs-rlhf",
        description="Run SFT and RLHF from one base model and one annotation budget, and compare them.",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def suite_args(sp):
        sp.add_argument("suite", help="suite YAML file, e.g. experiments/quick.yaml")
        sp.add_argument(
            "--cache-dir",
            type=_path,
            help="stage cache (default: $SFT_VS_RLHF_CACHE or ~/.cache/sft-vs-rlhf)",
        )
        sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override a suite setting, e.g. --set budget.units=128 (repeatable)")  # fmt: skip

    run = sub.add_parser("run", help="run a suite and write its report")
    suite_args(run)
    run.add_argument("--out", type=_path, help="report folder (default: reports/<suite name>/)")
    run.add_argument("-v", "--verbose", action="store_true", help="show the trainers' logs and progress bars")
    run.add_argument(
        "--threads",
        type=int,
        help="CPU threads for torch (default: 1 for the built-in tiny model, whose small matrices gain "
        "nothing from more and suffer badly on a busy machine; torch's own default otherwise)",
    )
    run.add_argument(
        "--jobs",
        type=_positive,
        metavar="N",
        help="stages run at once, each started as soon as its inputs are complete (default: every core for "
        "the built-in tiny model, one for an external model, or one per GPU); more than 1 runs them as Ray "
        "tasks, 1 runs them one after another in this process; results are the same for any N",
    )
    run.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="run the stages on this Ray cluster (host:port of its head, or 'auto'); every node must see "
        "the stage cache at the same path (docs/cluster.md)",
    )
    run.add_argument(
        "--report-to",
        nargs="?",
        const=DEFAULT_TRACKER,
        default="none",
        metavar="TRACKERS",
        help="log every training stage's curves to experiment trackers: tensorboard (the default when the "
        "option is given alone, after the suite), wandb, mlflow, trackio, comma-separated; tagged with arm, "
        "seed and grid point",
    )
    run.add_argument(
        "--tracking-dir",
        type=_path,
        metavar="DIR",
        help="TensorBoard's event files, one folder per stage (default: runs/<suite name>/)",
    )
    plan = sub.add_parser("plan", help="validate a suite and list its runs and stages, without training")
    suite_args(plan)
    report = sub.add_parser("report", help="rebuild a report from the results saved in its folder")
    report.add_argument("dir", type=_path, help="a report folder written by `run`")
    report.add_argument(
        "--figures",
        choices=("svg", "pdf"),
        help="also write the key figures as vector files with type that reads on a 1280x720 slide "
        "(plots/slides/)",
    )
    cache_commands.add_parser(sub, _path)
    export.add_parser(sub, _path)
    return p


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is less than 1")
    return value


class Terminated(BaseException):
    """SIGTERM: the command unwinds as for Ctrl-C (temporary folders cleared, Ray stopped), then exits 143."""


def _terminate(signum, frame) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends the process at once
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    main_thread = threading.current_thread() is threading.main_thread()
    before = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    cache = None
    try:
        if args.command == "cache":
            return cache_commands.main(args)
        if args.command == "export":
            return export.run_export(args)
        if args.command == "report":
            return _report(args)
        cache = StageCache(args.cache_dir or default_cache_dir())
        if args.command == "plan":
            from compare.preflight import preflight
            from compare.suite import load_suites

            _, suites = load_suites(args.suite, args.overrides)
            preflight(suites, cache_root=cache.root)
            return max(_plan(suite, cache) for suite in suites)
        from compare.pipeline import run_suite

        _check_threads(args.threads)
        report_to = parse_report_to(args.report_to)
        if args.tracking_dir and not report_to:
            raise SuiteError("--tracking-dir is where --report-to tensorboard writes; give --report-to too")

        return run_suite(
            args.suite,
            args.overrides,
            out=args.out,
            cache=cache,
            verbose=args.verbose,
            threads=args.threads,
            jobs=args.jobs,
            ray_address=args.ray_address,
            report_to=report_to,
            tracking_dir=args.tracking_dir,
        )
    except SuiteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and the like
        return 0
    except KeyboardInterrupt:
        print("interrupted: completed stages are cached; run again to resume", file=sys.stderr)
        return 130
    except Terminated:
        print("terminated: completed stages are cached; run again to resume", file=sys.stderr)
        return 143
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        where = f" ({e.filename})" if e.filename else ""
        print(f"error: the disk is full{where}: {e.strerror}; completed stages are cached", file=sys.stderr)
        return 1
    finally:
        if cache is not None:
            cache.release()  # the stages this run held while it read them
        if main_thread and before is not None:
            signal.signal(signal.SIGTERM, before)


def _plan(suite, cache: StageCache) -> int:
    from compare.plan import plan_runs, stage_order
    from compare.stages import DATA_KINDS

    runs = plan_runs(suite)
    # each kind of feedback some run buys, named after the stage that buys it
    kinds = [k for k in DATA_KINDS.values() if any(r.bought[k.name] for r in runs)]
    stages = stage_order([root for r in runs for root in r.roots])
    print(f"suite {suite.name}: {len(runs)} runs, {len(stages)} stages, cache {cache.root}")
    print("\nruns:")
    for run in runs:
        state = "cached" if cache.is_complete(run.eval.name) else "to run"
        bought = "".join(f"{k.stage}={run.bought[k.name]:<5} " for k in kinds)
        print(f"  {run.label:<40} {bought}[{state}]")
    print("\nstages:")
    for stage in stages:
        state = "cached" if cache.is_complete(stage.name) else "to run"
        print(f"  {stage.name:<32} [{state}]")
    todo = sum(not cache.is_complete(s.name) for s in stages)
    print(f"\n{todo} of {len(stages)} stages to run")
    return 0


def _report(args) -> int:
    from compare.preflight import REPORT_MARKER, read_marker
    from compare.report import ReportError, rebuild_report

    folder = args.dir.expanduser()
    if not folder.exists():
        raise SuiteError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise SuiteError(f"{folder}: is a file; give the report folder that `run` wrote")
    marker = read_marker(folder)
    if marker is None:
        raise SuiteError(
            f"{folder}: not a report folder written by sft-vs-rlhf (no {REPORT_MARKER}); nothing was changed"
        )
    if not marker.get("complete", True):
        raise SuiteError(f"{folder}: an interrupted run left this report incomplete; run the suite again")
    if not (folder / "results.csv").exists():
        suites = sorted(p.name for p in folder.iterdir() if (p / "results.csv").exists())
        if suites:
            raise SuiteError(
                f"{folder}: a collection's folder; rebuild one of its reports: {', '.join(suites)}"
            )
        raise SuiteError(f"{folder}: no results.csv here (not a report folder written by `run`)")
    from compare.pipeline import list_in_marker
    from compare.report.files import REBUILT

    list_in_marker(folder, REBUILT)  # first: what the rebuild writes is never left unlisted
    try:
        rebuild_report(folder, slides=args.figures)
    except ReportError as e:
        raise SuiteError(f"{e}; the report was left as it was") from None
    slides = f"; slide figures in {folder / 'plots' / 'slides'}" if args.figures else ""
    print(f"report: {folder / 'report.md'}, {folder / 'report.html'}{slides}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
