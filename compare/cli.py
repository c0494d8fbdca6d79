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


def _run(collection, suites, cache: StageCache, args) -> int:
    from compare.plan import plan_runs
    from compare.runner import execute, is_main_process
    from compare.stages.common import Context

    name = collection.name if collection else suites[0].name
    out = args.out or Path("reports") / name
    if out.exists() and not out.is_dir():
        raise SuiteError(f"--out {out}: exists and is not a folder")
    runs = {suite.name: plan_runs(suite) for suite in suites}
    for suite in suites:
        _check_memory(suite)
    start = time.time()
    try:
        tiny = not any(suite.base.external for suite in suites)
        threads = args.threads or (1 if tiny else None)
        # every suite's stages in one pass: stages shared between suites run once
        timings = execute([r for rs in runs.values() for r in rs], cache, Context(args.verbose, threads))
    except Exception as e:  # a stage crashed: say which, keep completed stages, leave no report
        if args.verbose:
            raise
        print(
            f"error: a stage failed: {type(e).__name__}: {e} (run with --verbose for the traceback)",
            file=sys.stderr,
        )
        return 1
    if not is_main_process():  # the main process writes the report
        return 0
    if collection is None:
        _publish(out, lambda folder: _write_suite(folder, suites[0], runs[suites[0].name], cache))
    else:
        _publish(out, lambda folder: _write_collection(folder, collection, suites, runs, cache))
    ran = f"{len(timings)} stages run" if timings else "all stages cached"
    total = sum(len(r) for r in runs.values())
    report = out / "report.md" if collection is None else out / "index.md"
    print(f"{name}: {total} runs ({ran}) in {time.time() - start:.0f}s; report: {report}")
    return 0


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


def _write_suite(folder: Path, suite, runs, cache: StageCache) -> None:
    from compare.report import write_report
    from compare.runner import collect

    results, samples, logs = collect(runs, cache)
    # seconds each stage took when it ran (kept in its completion marker), so warm runs report them too
    seconds = {s.name: cache.info(s.name).get("seconds", float("nan")) for r in runs for s in _stages(r)}
    write_report(folder, suite, results, samples, logs, seconds)


def _write_collection(folder: Path, collection, suites, runs, cache: StageCache) -> None:
    folder.mkdir(parents=True)
    lines = [f"# {collection.name}", "", collection.description.strip(), ""]
    for suite in suites:
        _write_suite(folder / suite.name, suite, runs[suite.name], cache)
        lines.append(f"- [{suite.name}]({suite.name}/report.md): {suite.description.strip()}")
    (folder / "index.md").write_text("\n".join(lines) + "\n")


def _stages(run):
    from compare.plan import stage_order

    return stage_order([run.eval])


def _publish(out: Path, write) -> None:
    """Write a report folder beside `out`, then swap it in: a half-written report is never left as one."""
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        write(tmp)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _report(args) -> int:
    from compare.report import rebuild_report

    if not (args.dir / "results.csv").exists():
        raise SuiteError(f"{args.dir}: no results.csv here (not a report folder written by `run`)")
    rebuild_report(args.dir)
    print(f"report: {args.dir / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
