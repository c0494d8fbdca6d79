"""Time the findings collection cold, with the seconds per stage kind and per suite.

    python benchmarks/findings_time.py [COLLECTION.yaml] [--cache-dir DIR] [--out DIR] [--jobs N]

Runs the command line itself (`python -m compare run`, a fresh process) into a cache that must be new
or empty, so the run is cold; the cache is kept (a later `make findings` is then warm). Prints a table
of stage seconds by kind and by suite (each stage counted once, in the first suite that uses it), and a
last line

    findings cold_s=C stages=K stage_s=S ok=...

where ok says whether the cold run took at most 60 minutes (issue 21's target on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

TARGET_S = 3600.0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("collection", nargs="?", default="experiments/findings.yaml")
    parser.add_argument("--cache-dir", type=Path, default=Path(".cache/findings-benchmark"))
    parser.add_argument("--out", type=Path, default=Path("reports/findings"))
    parser.add_argument("--jobs", type=int, help="passed to `run` (default: the command's own)")
    parser.add_argument("--set", action="append", default=[], help="passed to `run`")
    args = parser.parse_args(argv)
    if args.cache_dir.exists() and any(args.cache_dir.iterdir()):
        sys.exit(f"--cache-dir {args.cache_dir}: not empty; a cold run needs a new or empty cache")
    cmd = [sys.executable, "-m", "compare", "run", args.collection, "--cache-dir", str(args.cache_dir)]
    cmd += ["--out", str(args.out)] + (["--jobs", str(args.jobs)] if args.jobs else [])
    cmd += [x for s in args.set for x in ("--set", s)]
    start = time.perf_counter()
    done = subprocess.run(cmd)
    cold = time.perf_counter() - start
    if done.returncode not in (0, 3):
        sys.exit(f"the run failed with exit code {done.returncode}")
    table(args.collection, args.out, cold)


def table(collection: str, out: Path, cold: float) -> None:
    seen: dict[str, float] = {}
    per_suite: dict[str, float] = defaultdict(float)
    for prov in sorted(out.glob("*/provenance.json")):
        for name, seconds in json.loads(prov.read_text())["stage_seconds"].items():
            if name not in seen:
                seen[name] = seconds
                per_suite[prov.parent.name] += seconds
    per_kind: dict[str, list[float]] = defaultdict(list)
    for name, seconds in seen.items():
        per_kind[name.rsplit("-", 1)[0]].append(seconds)
    total = sum(seen.values())
    print(f"collection: {collection}")
    print(f"{'what':<30}{'count':>7}{'seconds':>10}")
    print(f"{'cold run (wall)':<30}{'':>7}{cold:>10.1f}")
    print(f"{'stages (sum of seconds)':<30}{len(seen):>7}{total:>10.1f}")
    for kind, values in sorted(per_kind.items(), key=lambda kv: -sum(kv[1])):
        print(f"{'  stage ' + kind:<30}{len(values):>7}{sum(values):>10.1f}")
    for suite, seconds in sorted(per_suite.items(), key=lambda kv: -kv[1]):
        print(f"{'  suite ' + suite:<30}{'':>7}{seconds:>10.1f}")
    print(f"findings cold_s={cold:.1f} stages={len(seen)} stage_s={total:.1f} ok={cold <= TARGET_S}")


if __name__ == "__main__":
    main()
