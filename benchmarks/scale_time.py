"""What each size of a base-size ladder costs: stage seconds per size, read from the stage cache.

    python benchmarks/scale_time.py [SUITE.yaml] [--cache-dir DIR] [--set KEY=VALUE ...]

Plans the suite (default experiments/scale.yaml) as `run` would, gives each stage the size of the runs
that use it (a stage every size uses, such as the demonstrations, is "shared") and sums the seconds each
completed stage took, from its cache record. Works while the run is still going: it says how many of each
size's stages are done. Prints one table, then a last line

    scale stages=DONE/ALL stage_s=S fair_min=M

where fair_min is the stage seconds divided by 2 (two cores) in minutes: the run's duration on an
otherwise idle 2-core machine with both cores busy.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

SIZE_KEYS = ("base.tiny.n_layer", "base.tiny.n_embd")  # the grid keys of the base model's size


def main(argv: list[str] | None = None) -> None:
    from compare.cache import StageCache, default_cache_dir
    from compare.plan import plan_runs, stage_order
    from compare.suite import load_suites

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("suite", nargs="?", default="experiments/scale.yaml")
    parser.add_argument("--cache-dir", type=Path, help="the stage cache (default: the run's default)")
    parser.add_argument("--set", action="append", default=[], help="as `run --set`")
    args = parser.parse_args(argv)
    cache = StageCache(args.cache_dir or default_cache_dir())
    (suite,) = load_suites(args.suite, args.set)[1]
    sizes: dict[str, set[str]] = defaultdict(set)
    for run in plan_runs(suite):
        size = ", ".join(f"{k.rsplit('.', 1)[-1]}={run.point[k]}" for k in SIZE_KEYS if k in run.point)
        for stage in stage_order(run.roots):
            sizes[stage.name].add(size or "(one size)")
    rows: dict[str, dict] = defaultdict(lambda: {"done": 0, "all": 0, "base": 0.0, "other": 0.0})
    for name, used_by in sizes.items():
        row = rows[next(iter(used_by)) if len(used_by) == 1 else "shared"]
        row["all"] += 1
        if cache.is_complete(name):
            row["done"] += 1
            row["base" if name.startswith("base-") else "other"] += float(
                cache.info(name).get("seconds", 0.0)
            )
    print(f"suite: {args.suite}, cache: {cache.root}")
    print(f"{'size':<22}{'stages done':>14}{'base s':>10}{'other s':>10}{'total s':>10}")
    for size, row in sorted(rows.items(), key=lambda kv: _order(kv[0])):
        total = row["base"] + row["other"]
        print(
            f"{size:<22}{row['done']:>7}/{row['all']:<6}{row['base']:>10.1f}{row['other']:>10.1f}{total:>10.1f}"
        )
    done, every = sum(r["done"] for r in rows.values()), sum(r["all"] for r in rows.values())
    seconds = sum(r["base"] + r["other"] for r in rows.values())
    print(f"scale stages={done}/{every} stage_s={seconds:.1f} fair_min={seconds / 2 / 60:.1f}")


def _order(size: str) -> tuple:
    numbers = [float(part.split("=")[1]) for part in size.split(", ") if "=" in part]
    return (size == "shared", numbers, size)


if __name__ == "__main__":
    main()
