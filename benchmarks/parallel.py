"""A suite cold with 1 job and with N jobs (each in a fresh cache): the seconds and the speed-up.

    python benchmarks/parallel.py [SUITE.yaml] [--jobs N]

Defaults: `experiments/full.yaml`, N = 2. Both runs must give byte-identical `results.csv` (every stage
is seeded by its own settings); the script checks it. Prints a table and a last line

    parallel suite=S jobs=N one_job_s=A n_jobs_s=B speedup=A/B identical=True
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cold_run(suite: str, root: Path, jobs: int) -> float:
    cmd = [sys.executable, "-m", "compare", "run", suite, "--cache-dir", str(root / "cache")]
    cmd += ["--out", str(root / "report"), "--jobs", str(jobs)]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("suite", nargs="?", default="experiments/full.yaml")
    parser.add_argument("--jobs", type=int, default=2, help="jobs of the parallel run (default 2)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one, many = Path(tmp) / "one", Path(tmp) / "many"
        seconds = {1: cold_run(args.suite, one, 1), args.jobs: cold_run(args.suite, many, args.jobs)}
        identical = all(
            (one / "report" / f).read_bytes() == (many / "report" / f).read_bytes()
            for f in ("results.csv", "samples.csv")
        )
    print(f"suite: {args.suite}")
    print(f"{'jobs':>6}{'seconds':>10}")
    for jobs, s in seconds.items():
        print(f"{jobs:>6}{s:>10.1f}")
    ratio = seconds[1] / seconds[args.jobs]
    print(
        f"parallel suite={Path(args.suite).stem} jobs={args.jobs} one_job_s={seconds[1]:.1f} "
        f"n_jobs_s={seconds[args.jobs]:.1f} speedup={ratio:.2f} identical={identical}"
    )
    if not identical:
        sys.exit("results differ between 1 job and more: a stage depends on what ran before it")


if __name__ == "__main__":
    main()
