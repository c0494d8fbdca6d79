"""`sft-vs-rlhf export REPORT_DIR --arm A --seed S [--point K=V ...] --to DIR`: one run's trained models
and data, written where they can be used outside the harness (docs/export.md).

The report folder's `suite.yaml` (the resolved suite) is planned again, as `run` planned it, to find the
run of the arm at that seed and grid point and the cache keys of its stages, which are then read from
the stage cache (`--cache-dir`, by default the same as `run`'s). DIR gets:

- `policy/`: the policy the arm's answers are sampled from, a full `save_pretrained` folder (model and
  tokenizer), also where the cache stores LoRA adapters chained on a parent: the chain is loaded merged,
  as every stage loads it (`compare.lm.loading`). An arm that trains no policy (the base arm, a
  reward-model-only arm, best-of-n on the base model) exports the policy it samples, and its card says so;
- `reward_model/`: the arm's reward model, where it has one (`AutoModelForSequenceClassification`);
- a model card `README.md` in each: the suite, the arm's recipe and every stage's resolved settings, the
  grid point and seed, the arm's metrics from the report's results.csv, the base model, the provenance;
- `data/demonstrations`, `data/comparisons`, `data/labels`: the annotations the arm bought, as `datasets`
  folders (`Dataset.save_to_disk`) in TRL's formats: prompt/completion (SFTTrainer), prompt/chosen/
  rejected (DPOTrainer, RewardTrainer), prompt/completion/label (KTOTrainer);
- `export.json` (which cache stage each part came from) and `suite.yaml` (the report's suite).

Nothing of the user's is overwritten: DIR must be new or an empty folder. Everything is written into a
temporary sibling of DIR that is renamed into place at the end, so a DIR that exists is complete. The
stages being read are held under their cache locks, so a `cache prune` meanwhile leaves them.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import math
import os
import secrets
import shutil
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from compare import __version__
from compare.cache import StageCache, default_cache_dir
from compare.export_card import Located, model_card
from compare.suite import SuiteError


# -- finding the run -------------------------------------------------------------------------------------
def read_report(folder: Path):
    """(the suite, results.csv, provenance.json) of a report folder `run` wrote; SuiteError otherwise."""
    import pandas as pd

    from compare.suite import load_suite

    if not folder.exists():
        raise SuiteError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise SuiteError(f"{folder}: is a file; give the report folder that `run` wrote")
    if not (folder / "suite.yaml").is_file() or not (folder / "results.csv").is_file():
        inside = sorted(p.name for p in folder.iterdir() if (p / "results.csv").is_file())
        hint = f"; the report folders in it: {', '.join(inside)}" if inside else ""
        raise SuiteError(
            f"{folder}: not a report folder (no suite.yaml and results.csv written by `run`){hint}"
        )
    suite = load_suite(folder / "suite.yaml")
    try:
        results = pd.read_csv(folder / "results.csv")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        raise SuiteError(f"{folder / 'results.csv'}: not a readable CSV ({str(e).splitlines()[0]})") from None
    try:
        provenance = json.loads((folder / "provenance.json").read_text())
    except (OSError, ValueError):
        provenance = {}
    return suite, results, provenance if isinstance(provenance, dict) else {}


def parse_points(items: list[str]) -> dict[str, Any]:
    """`--point KEY=VALUE` arguments as {key: value}, each value read as YAML (as `run --set` reads it)."""
    import yaml

    from compare import limits

    point = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SuiteError(f"--point {item!r}: expected KEY=VALUE, e.g. --point budget.units=128")
        try:
            point[key] = limits.load_yaml(raw)
        except (limits.YamlLimit, yaml.YAMLError):  # a value that is no YAML is its text
            point[key] = raw
    return point


def same_value(a: Any, b: Any) -> bool:
    """Whether two grid values are the same setting (48 and 48.0 are; so are 0.1 and "0.1")."""
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b))
    if numbers:
        return float(a) == float(b) or (math.isnan(float(a)) and math.isnan(float(b)))
    return a == b or str(a) == str(b)


def point_text(point: dict[str, Any]) -> str:
    return " ".join(f"--point {k}={v}" for k, v in point.items() if k != "seed")


def find_run(suite, arm: str, seed: int, wanted: dict[str, Any], folder: Path):
    """The run of `arm` at `seed` and the grid point `wanted` names; one line naming the choices otherwise."""
    from compare.plan import plan_runs

    if arm not in suite.arms:
        raise SuiteError(
            f"{folder}: --arm {arm!r}: suite {suite.name} has no such arm; its arms: {', '.join(suite.arms)}"
        )
    seeds = suite.grid["seed"]
    if seed not in seeds:
        shown = ", ".join(map(str, seeds))
        raise SuiteError(f"{folder}: --seed {seed}: not a seed of suite {suite.name}; its seeds: {shown}")
    try:
        runs = [r for r in plan_runs(suite) if r.arm == arm and r.seed == seed]
    except importlib.metadata.PackageNotFoundError as e:
        raise SuiteError(
            f"{folder}: base: package {e} is not installed, so the suite's stages cannot be told"
        ) from None
    keys = [k for k in runs[0].point if k != "seed"]
    for key in wanted:
        if key == "seed":
            raise SuiteError("--point seed=...: give the seed with --seed")
        if key not in keys:
            known = f"its grid keys: {', '.join(keys)}" if keys else "the suite sweeps nothing else for it"
            raise SuiteError(f"--point {key}={wanted[key]}: {key} is not a grid key of arm {arm} ({known})")
    matches = [r for r in runs if all(same_value(r.point[k], v) for k, v in wanted.items())]
    choices = "; ".join(point_text(r.point) for r in runs)
    if not matches:
        given = " ".join(f"{k}={v}" for k, v in wanted.items())
        raise SuiteError(f"--point {given}: no run of arm {arm} at seed {seed} has it; its points: {choices}")
    if len(matches) > 1:
        raise SuiteError(
            f"{folder}: arm {arm} has {len(matches)} runs at seed {seed}, one per grid point; choose one "
            f"with --point KEY=VALUE (repeatable): {'; '.join(point_text(r.point) for r in matches)}"
        )
    return matches[0]


def data_sources(run) -> dict[str, list]:
    """The stages that hold the annotations the run's arm trained on, by exported dataset name.

    The data stages (`compare/stages/data.py`), and a stage that labels its own samples while it trains
    (online DPO), which keeps what it bought in its own folder.
    """
    from compare.plan import stage_order
    from compare.stages import DATA_KINDS, RECIPE_STAGES

    producers = {kind.stage: name for name, kind in DATA_KINDS.items()}
    found: dict[str, list] = {}
    for stage in stage_order([run.eval]):
        spec = RECIPE_STAGES.get(stage.kind)
        if stage.kind in producers:
            found.setdefault(producers[stage.kind], []).append(stage)
        elif spec is not None and spec.on_policy and spec.data is not None:
            found.setdefault(spec.data.value, []).append(stage)
    return found


def run_results(results, run):
    """The run's rows of results.csv (one per split)."""
    rows = results[(results["arm"] == run.arm) & (results["seed"] == run.seed)]
    for key, value in run.point.items():
        column = f"grid.{key}"
        if key != "seed" and column in rows:
            rows = rows[[same_value(v, value) for v in rows[column]]]
    return rows


def locate(args) -> tuple[Located, StageCache]:
    folder = args.report.expanduser()
    suite, results, provenance = read_report(folder)
    run = find_run(suite, args.arm, args.seed, parse_points(args.point), folder)
    policy = run.eval.inputs["policy"]
    found = Located(
        report=folder,
        run=run,
        results=run_results(results, run),
        provenance=provenance,
        policy=policy,
        reward_model=run.eval.inputs.get("reward_model"),
        data=data_sources(run),
    )
    return found, StageCache(args.cache_dir or default_cache_dir())


def check_cached(found: Located, cache: StageCache, cache_flag: str) -> None:
    """Every stage to be read is complete in the cache; else one line naming the first one missing."""
    stages = [("policy", found.policy), ("reward model", found.reward_model)]
    stages += [(name, s) for name, group in found.data.items() for s in group]
    for what, stage in stages:
        if stage is not None and not cache.is_complete(stage.name):
            raise SuiteError(
                f"{cache.root}: stage {stage.name} (the {what} of {found.run.label}) is not in the cache; "
                f"run the suite first (sft-vs-rlhf run {found.report / 'suite.yaml'} --out {found.report}"
                f"{cache_flag}), or give the cache it ran with (--cache-dir)"
            )


def check_target(to: Path, found: Located, cache: StageCache) -> None:
    """`--to` is new or an empty folder, outside the report folder and the cache."""
    if to.is_symlink():
        raise SuiteError(f"--to {to}: is a link; give a new folder (nothing was written)")
    if to.exists() and not to.is_dir():
        raise SuiteError(f"--to {to}: is a file; give a new folder (nothing was written)")
    if to.is_dir() and any(to.iterdir()):
        raise SuiteError(f"--to {to}: exists and is not empty; give a new folder (nothing was written)")
    target = to.resolve()
    if Path.cwd().resolve().is_relative_to(target):
        raise SuiteError(f"--to {to}: the current folder or one above it; give a new folder")
    for other, what in ((found.report, "the report folder"), (cache.root, "the stage cache")):
        if target.is_relative_to(other.resolve()):
            raise SuiteError(f"--to {to}: inside {what} {other}; give a folder outside it")


# -- writing -----------------------------------------------------------------------------------------------
def export_policy(folder: Path, out: Path) -> None:
    """The causal LM of a stage folder (its adapter chain merged), saved whole with its tokenizer.

    `use_cache` is switched back on (trainers switch it off): it changes no output, only how fast
    `generate` is.
    """
    from transformers import AutoTokenizer

    from compare.lm.loading import ensure_pad_token, load_causal_lm, save_model

    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    model = load_causal_lm(folder)
    ensure_pad_token(model, tokenizer)  # as every stage and the evaluator load it
    model.config.use_cache = True
    save_model(model.eval(), tokenizer, out)


def export_reward_model(folder: Path, out: Path) -> None:
    """The reward model of a stage folder (its adapter chain merged, scalar head included), saved whole."""
    from transformers import AutoTokenizer

    from compare.lm.loading import load_classifier, save_model

    save_model(
        load_classifier(folder).eval(), AutoTokenizer.from_pretrained(folder, trust_remote_code=False), out
    )


def dataset_rows(name: str, folders: list[Path]) -> list[dict]:
    """The rows of one exported dataset, in TRL's columns, from the stage folders that hold them."""
    from compare.stages import DATA_KINDS
    from compare.stages.common import read_jsonl

    kind = DATA_KINDS[name]
    rows = []
    for folder in folders:
        if (folder / kind.file).is_file():
            rows += [{c: row[c] for c in kind.columns} for row in read_jsonl(folder / kind.file)]
    return [{**row, **{c: bool(row[c]) for c in kind.booleans}} for row in rows]


def save_dataset(rows: list[dict], out: Path) -> None:
    from datasets import Dataset

    Dataset.from_list(rows).save_to_disk(str(out))


def publish(tmp: Path, to: Path) -> None:
    """Rename the finished `tmp` to `to` (new, or an empty folder: rename replaces only an empty one)."""
    try:
        os.replace(tmp, to)
    except OSError as e:
        if to.is_dir() and any(to.iterdir()):
            raise SuiteError(
                f"--to {to}: something was written into it meanwhile; nothing of it was changed"
            ) from None
        raise SuiteError(f"--to {to}: cannot move the export into place ({e.strerror or e})") from None


def run_export(args: argparse.Namespace) -> int:
    """Export one run (see the module docstring); raises SuiteError (one line) for bad input."""
    from compare.lm.loading import ChainError, chain
    from compare.stages.common import quiet_libraries

    found, cache = locate(args)
    to = args.to.expanduser()
    check_target(to, found, cache)
    check_cached(found, cache, f" --cache-dir {args.cache_dir}" if args.cache_dir else "")
    run = found.run
    stages = [s for s in (found.policy, found.reward_model) if s is not None]
    stages += [s for group in found.data.values() for s in group]
    tmp = to.parent / f".{to.name}.export-{os.getpid()}-{secrets.token_hex(4)}"
    exported = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    with ExitStack() as held:
        for name in sorted({s.name for s in stages}):  # one order for every exporter: no deadlock
            try:
                held.enter_context(cache.reading(name))  # held shared: no prune meanwhile
            except OSError:  # a cache we may not write to (a shared, read-only one) is not ours to prune
                break
        try:  # a missing parent: one line, before anything is written
            folders = {
                part: len(chain(cache.path(stage.name)))
                for part, stage in (("policy", found.policy), ("reward_model", found.reward_model))
                if stage is not None
            }
        except ChainError as e:
            raise SuiteError(str(e)) from None
        try:
            to.parent.mkdir(parents=True, exist_ok=True)
            tmp.mkdir()
        except OSError as e:
            raise SuiteError(f"--to {to}: cannot create it ({e.strerror or e})") from None
        try:
            with quiet_libraries(args.verbose):
                print(f"exporting {run.label} of suite {run.suite.name} to {to}")
                export_policy(cache.path(found.policy.name), tmp / "policy")
                if found.reward_model is not None:
                    export_reward_model(cache.path(found.reward_model.name), tmp / "reward_model")
                counts = {}
                for name, group in found.data.items():
                    rows = dataset_rows(name, [cache.path(s.name) for s in group])
                    if rows:
                        save_dataset(rows, tmp / "data" / name)
                        counts[name] = len(rows)
            (tmp / "policy" / "README.md").write_text(
                model_card(found, "policy", counts, exported, folders["policy"])
            )
            if found.reward_model is not None:
                card = model_card(found, "reward_model", counts, exported, folders["reward_model"])
                (tmp / "reward_model" / "README.md").write_text(card)
            shutil.copyfile(found.report / "suite.yaml", tmp / "suite.yaml")
            record = {
                "suite": run.suite.name,
                "arm": run.arm,
                "seed": run.seed,
                "point": {k: v for k, v in run.point.items() if k != "seed"},
                "report": str(found.report.resolve()),
                "stages": {
                    "policy": found.policy.name,
                    "reward_model": found.reward_model.name if found.reward_model else None,
                    **{name: [s.name for s in group] for name, group in found.data.items()},
                },
                "rows": counts,
                "exported": exported,
                "sft_vs_rlhf": __version__,
            }
            (tmp / "export.json").write_text(json.dumps(record, indent=1, default=str) + "\n")
            publish(tmp, to)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    parts = ["policy/"] + (["reward_model/"] if found.reward_model else [])
    parts += [f"data/{name} ({n} rows)" for name, n in counts.items()]
    print(f"exported: {', '.join(parts)}; model card: {to / 'policy' / 'README.md'}")
    return 0


def add_parser(sub, path_type=Path) -> None:
    """The `export` command, on the CLI's subparsers."""
    sp = sub.add_parser(
        "export",
        help="write one run's policy, reward model and data as save_pretrained and datasets folders",
        description="Write one arm's trained policy (a full save_pretrained folder, LoRA merged), its "
        "reward model if it has one, model cards, and its demonstrations, comparisons and labels as "
        "datasets folders in TRL's formats (docs/export.md).",
    )
    sp.add_argument("report", type=path_type, metavar="REPORT_DIR", help="a report folder written by `run`")
    sp.add_argument("--arm", required=True, help="the arm to export")
    sp.add_argument("--seed", type=int, required=True, help="the run's seed (one of the suite's grid.seed)")
    sp.add_argument("--point", action="append", default=[], metavar="KEY=VALUE",
                    help="the run's grid point, one swept setting each (repeatable), e.g. "
                    "--point arms.dpo.stages.dpo.beta=0.1; needed when the arm has several")  # fmt: skip
    sp.add_argument("--to", type=path_type, required=True, metavar="DIR", help="a new (or empty) folder")
    sp.add_argument(
        "--cache-dir",
        type=path_type,
        help="stage cache the suite ran with (default: $SFT_VS_RLHF_CACHE or ~/.cache/sft-vs-rlhf)",
    )
    sp.add_argument("-v", "--verbose", action="store_true", help="show the libraries' logs")
