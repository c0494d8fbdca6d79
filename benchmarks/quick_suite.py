"""Time a suite cold (empty cache) and warm (everything cached), with the seconds per stage kind.

    python benchmarks/quick_suite.py [SUITE.yaml] [--jobs N] [--profile]

Each run is the command line itself (`python -m compare run`, a fresh process), so the times include
starting Python, the imports, planning, Ray and writing the report. `--profile` runs the warm run once
more under cProfile and prints where its seconds go. Prints a table and a last line

    quick_suite cold_s=C warm_s=W cold_ok=... warm_ok=...

Targets (issue 13), for the quick suite on 2 CPU cores: cold <= 120 s, warm <= 3 s.
"""

from __future__ import annotations

import argparse
import json
import pstats
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

COLD_TARGET, WARM_TARGET = 120.0, 3.0


def command(suite: str, cache: Path, out: Path, jobs: int | None) -> list[str]:
    cmd = ["run", suite, "--cache-dir", str(cache), "--out", str(out)]
    return cmd + (["--jobs", str(jobs)] if jobs else [])


def timed_run(suite: str, cache: Path, out: Path, jobs: int | None) -> float:
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "compare", *command(suite, cache, out, jobs)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def profile_warm(suite: str, cache: Path, out: Path, jobs: int | None, lines: int = 25) -> None:
    """The warm run in a subprocess under cProfile: the functions with the most cumulative time."""
    stats = out.parent / "warm.prof"
    argv = command(suite, cache, out, jobs)
    code = f"import cProfile\nfrom compare.cli import main\ncProfile.run({f'main({argv!r})'!r}, {str(stats)!r})\n"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, stdout=subprocess.DEVNULL)
    print(f"\nwarm run under cProfile: {time.perf_counter() - start:.1f} s; top {lines} by cumulative time")
    pstats.Stats(str(stats)).sort_stats("cumulative").print_stats(lines)
    imports = _import_seconds()
    print("import time of the command's modules (python -X importtime, seconds, the largest):")
    for name, seconds in imports[:12]:
        print(f"  {seconds:6.2f}  {name}")


def _import_seconds() -> list[tuple[str, float]]:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import compare.cli, compare.pipeline"],
        capture_output=True,
        text=True,
    )
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|")
        if cumulative.strip().isdigit():
            rows.append((name.rstrip(), int(cumulative) / 1e6))
    tops = [(n.strip(), s) for n, s in rows if n.startswith(" ") and not n.startswith("  ")]
    return sorted(tops or rows, key=lambda r: -r[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("suite", nargs="?", default="experiments/quick.yaml")
    parser.add_argument("--jobs", type=int, help="passed to `run` (default: the command's own)")
    parser.add_argument("--profile", action="store_true", help="profile the warm run too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache, out = Path(tmp) / "cache", Path(tmp) / "report"
        cold = timed_run(args.suite, cache, out, args.jobs)
        stage_seconds = json.loads((out / "provenance.json").read_text())["stage_seconds"]
        warm = timed_run(args.suite, cache, out, args.jobs)
        if args.profile:
            try:
                profile_warm(args.suite, cache, out, args.jobs)
            except subprocess.CalledProcessError as e:
                print(f"profiling the warm run failed: {e}")
    table(args, cold, warm, stage_seconds)


def table(args, cold: float, warm: float, stage_seconds: dict[str, float]) -> None:
    per_kind: dict[str, list[float]] = defaultdict(list)
    for name, seconds in stage_seconds.items():
        per_kind[name.rsplit("-", 1)[0]].append(seconds)
    print(f"suite: {args.suite}, jobs: {args.jobs or 'default'}")
    print(f"{'what':<24}{'count':>7}{'seconds':>10}")
    print(f"{'cold run (total)':<24}{'':>7}{cold:>10.1f}")
    print(f"{'warm run (total)':<24}{'':>7}{warm:>10.1f}")
    total = sum(sum(v) for v in per_kind.values())
    print(f"{'stages (sum of seconds)':<24}{sum(map(len, per_kind.values())):>7}{total:>10.1f}")
    for kind, values in sorted(per_kind.items(), key=lambda kv: -sum(kv[1])):
        print(f"{'  stage ' + kind:<24}{len(values):>7}{sum(values):>10.1f}")
    print(
        f"quick_suite cold_s={cold:.1f} warm_s={warm:.1f} cold_ok={cold <= COLD_TARGET} "
        f"warm_ok={warm <= WARM_TARGET}"
    )


if __name__ == "__main__":
    main()
