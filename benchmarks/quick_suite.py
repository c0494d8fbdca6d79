"""Time the quick suite: cold (empty cache), warm (everything cached), and time per stage kind.

    python benchmarks/quick_suite.py [SUITE.yaml]

Prints a table. Targets (issue 2): cold <= 5 minutes and warm <= 10 seconds on 2 CPU cores.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path


def timed_run(suite: str, cache: Path, out: Path) -> float:
    start = time.perf_counter()
    cmd = [sys.executable, "-m", "compare", "run", suite, "--cache-dir", str(cache), "--out", str(out)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    suite = sys.argv[1] if len(sys.argv) > 1 else "experiments/quick.yaml"
    with tempfile.TemporaryDirectory() as tmp:
        cache, out = Path(tmp) / "cache", Path(tmp) / "report"
        cold = timed_run(suite, cache, out)
        stage_seconds = json.loads((out / "provenance.json").read_text())["stage_seconds"]
        warm = timed_run(suite, cache, out)
    per_kind: dict[str, list[float]] = defaultdict(list)
    for name, seconds in stage_seconds.items():
        per_kind[name.rsplit("-", 1)[0]].append(seconds)
    print(f"suite: {suite}")
    print(f"{'what':<22}{'count':>7}{'seconds':>10}")
    print(f"{'cold run (total)':<22}{'':>7}{cold:>10.1f}")
    print(f"{'warm run (total)':<22}{'':>7}{warm:>10.1f}")
    for kind, values in sorted(per_kind.items(), key=lambda kv: -sum(kv[1])):
        print(f"{'  stage ' + kind:<22}{len(values):>7}{sum(values):>10.1f}")
    print(f"quick_suite cold_s={cold:.1f} warm_s={warm:.1f} cold_ok={cold <= 300} warm_ok={warm <= 10}")


if __name__ == "__main__":
    main()
