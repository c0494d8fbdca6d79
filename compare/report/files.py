"""The files of a report folder: writing them after a run, reading them back (each checked), rebuilding.

A report folder holds `results.csv` (one row per run and split), `samples.csv` (one row per sample),
`training_logs.csv`, `snapshots.csv` (held-out samples along online RL training, when any stage saved
them: one row per run, checkpoint and prompt), `compute.csv` (FLOPs and seconds per run and stage),
`suite.yaml` (the resolved suite), `provenance.json`, `failed_runs.csv` (when runs
failed), `beside.csv` (the tiny world's findings, when the suite sets `beside_findings`), `report.md`, `report.html` (the same report as one self-contained page) and `plots/`. The report
is built only from these, so it can be rebuilt at will.
"""

from __future__ import annotations

import csv
import datetime
import json
import os
import platform
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import yaml
from pydantic import ValidationError

from compare.report.beside import BESIDE, read_beside
from compare.report.claims import check_claims
from compare.report.figures import report_figures, slide_figures
from compare.report.html import render_html
from compare.report.render import render_markdown
from compare.report.roles import Roles
from compare.suite import Suite, one_line


class ReportError(Exception):
    """A report folder whose saved files cannot be trusted, said in one line."""


COMPUTE = "compute.csv"  # FLOPs and seconds of every run's stages (`compare/compute.py`)
FAILED_RUNS = "failed_runs.csv"  # arm, point, seed, stage, reason, log of every run that has no results
SNAPSHOTS = "snapshots.csv"  # held-out samples along training (compare/stages/snapshots.py)
REBUILT = ("plots", "report.md", "report.html")  # what `rebuild_report` writes into a report folder


def write_report(
    out: Path,
    suite: Suite,
    results,
    samples,
    logs,
    stage_seconds: dict[str, float],
    failed: list[dict] = (),
    snapshots: pd.DataFrame | None = None,
    compute: pd.DataFrame | None = None,
    beside: pd.DataFrame | None = None,
) -> None:
    """Every file of a report folder, then report.md, report.html and the plots from them. `beside`: the
    tiny world's findings of a suite that sets `beside_findings` (`beside.reference_frame`)."""
    out.mkdir(parents=True, exist_ok=True)
    results.to_csv(out / "results.csv", index=False)
    if beside is not None:
        beside.to_csv(out / BESIDE, index=False)
    if compute is not None and not compute.empty:  # per run and stage: `compare/compute.py`
        compute.to_csv(out / COMPUTE, index=False)
    samples.to_csv(out / "samples.csv", index=False)
    logs.to_csv(out / "training_logs.csv", index=False)
    if snapshots is not None and not snapshots.empty:
        snapshots.to_csv(out / SNAPSHOTS, index=False)
    if failed:
        pd.DataFrame(failed).to_csv(out / FAILED_RUNS, index=False)
    (out / "suite.yaml").write_text(yaml.safe_dump(suite.model_dump(), sort_keys=False))
    prov = provenance(stage_seconds)
    if suite.description_from:  # the report warns that the description may describe another suite
        prov["description_from"] = suite.description_from
    (out / "provenance.json").write_text(json.dumps(prov, indent=1))
    rebuild_report(out)


def provenance(timings: dict[str, float]) -> dict:
    import torch
    import transformers
    import trl

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent, timeout=5
        ).stdout.strip()
    except OSError:
        commit = ""
    from compare import __version__

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "sft_vs_rlhf": __version__,  # the package's version (`sft-vs-rlhf --version`)
        "git_commit": commit or None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "stage_seconds": {k: round(v, 2) for k, v in timings.items()},
    }


def read_csv_checked(
    path: Path, required: tuple[str, ...] = (), rows: bool = True, fields: bool = False, **read
) -> pd.DataFrame:
    """A CSV the harness wrote, or a one-line ReportError: missing, empty, header only, cut short, columns."""
    if not path.exists():
        raise ReportError(f"{path}: missing")
    text = path.read_text(errors="replace")
    if not text.strip():
        raise ReportError(f"{path}: empty")
    if not text.endswith("\n"):
        raise ReportError(f"{path}: cut short (the last row has no line end); the file is incomplete")
    try:
        frame = pd.read_csv(path, **read)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as e:
        raise ReportError(f"{path}: not a readable CSV ({str(e).splitlines()[0]})") from None
    if rows and frame.empty:
        raise ReportError(f"{path}: has a header but no rows")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ReportError(f"{path}: missing column(s) {', '.join(missing)}")
    if not fields:
        return frame
    with path.open(newline="") as f:  # a row cut mid-way has fewer fields than the header (numbers only:
        # free text such as completions may hold a lone carriage return that csv and pandas read apart)
        reader = csv.reader(f)
        width = len(next(reader))
        for line, row in enumerate(reader, 2):
            if row and len(row) != width:
                raise ReportError(f"{path}: line {line}: {len(row)} fields, the header has {width}")
    return frame


def read_saved(folder: Path, samples: bool = True):
    """Every file a report is built from, each checked; raises ReportError (one line) on the first problem.
    `samples=False` leaves samples.csv unread (the biggest file; None in its place), for readers of the
    results and logs alone, such as the findings report."""
    suite_path = folder / "suite.yaml"
    if not suite_path.exists():
        raise ReportError(f"{suite_path}: missing (not a report folder written by `run`)")
    try:
        data = yaml.safe_load(suite_path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ReportError(f"{suite_path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ReportError(f"{suite_path}: not a saved suite (a mapping of keys)")
    try:
        suite = Suite.model_validate(data)
    except ValidationError as err:
        raise ReportError(str(one_line(suite_path, err))) from None
    results = read_csv_checked(
        folder / "results.csv", ("arm", "seed", "split", "gold_reward", "budget"), fields=True
    )
    _numbers_only(results, folder / "results.csv", text=("arm", "split"))
    if (folder / COMPUTE).exists() and "compute_seconds" not in results:
        results = with_training_seconds(
            results, read_csv_checked(folder / COMPUTE, ("arm", "seed", "stage", "seconds"), rows=False)
        )
    if samples:
        samples = read_csv_checked(
            folder / "samples.csv",
            ("arm", "seed", "split"),
            rows=False,
            keep_default_na=False,
            na_values=[""],
        )
    else:
        samples = None
    logs_path = folder / "training_logs.csv"
    logs = pd.DataFrame()
    if logs_path.exists() and logs_path.stat().st_size > 1:
        logs = read_csv_checked(logs_path, rows=False)
    failed_path = folder / FAILED_RUNS
    failed = (
        read_csv_checked(failed_path, rows=False, keep_default_na=False) if failed_path.exists() else None
    )
    prov_path = folder / "provenance.json"
    try:
        prov = json.loads(prov_path.read_text()) if prov_path.exists() else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReportError(f"{prov_path}: not valid JSON ({e})") from None
    if not isinstance(prov, dict):
        raise ReportError(f"{prov_path}: not a provenance record (a JSON object)")
    return suite, results, samples, logs, prov, failed


def with_training_seconds(results: pd.DataFrame, compute: pd.DataFrame) -> pd.DataFrame:
    """`results` with each run's `compute_seconds`: the seconds of every stage its policy needed after the
    base model, summed from compute.csv (not saved in results.csv: wall seconds differ from run to run)."""
    keys = [c for c in ("arm", "seed", "budget") if c in compute] + [
        c for c in results.columns if c.startswith("grid.") and c in compute
    ]
    seconds = (  # the base model's seconds as 0: a run of the base model alone trained nothing after it
        compute.assign(seconds=compute["seconds"].where(compute["stage"] != "base", 0.0))
        .groupby(keys, dropna=False)["seconds"]
        .sum(min_count=1)
        .rename("compute_seconds")
        .reset_index()
    )
    return results.merge(seconds, on=keys, how="left")


def read_snapshots(folder: Path) -> pd.DataFrame:
    """snapshots.csv, checked; an empty frame when the folder has none (no online RL, or an older run)."""
    path = folder / SNAPSHOTS
    if not path.exists():
        return pd.DataFrame()
    frame = read_csv_checked(
        path,
        ("arm", "seed", "stage", "step", "prompt_index", "prompt", "completion", "gold_reward", "log_ratio"),
        rows=False,
        keep_default_na=False,
        na_values=[""],
    )
    _numbers_only(frame, path, text=("arm", "stage", "prompt", "completion", "ended_with_eos"))
    return frame


def _numbers_only(frame: pd.DataFrame, path: Path, text: tuple[str, ...]) -> None:
    """Every column but the named text ones holds numbers (or blanks): a hand edit is one line, not a crash."""
    for column in frame.columns:
        if column in text or column.startswith("grid.") or pd.api.types.is_numeric_dtype(frame[column]):
            continue
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = frame[column][values.isna() & frame[column].notna()]
        if not bad.empty:
            raise ReportError(f"{path}: column {column} holds {bad.iloc[0]!r}, not a number")


def rebuild_report(folder: Path, slides: str | None = None) -> None:
    """Report.md, report.html and the plots from the saved files; nothing is written unless every file
    reads cleanly. `slides` ("svg" or "pdf"): the key figures also as vector files with slide-sized type,
    in plots/slides/.

    The figures are drawn into a folder beside `plots/` and both pages into temporary files; all are
    swapped in only once everything is built, so a failure half-way leaves the old report as it was.
    """
    from compare.cache import write_file

    suite, results, samples, logs, prov, failed = read_saved(folder)
    snapshots = read_snapshots(folder)
    for name in REBUILT:
        path, kind = folder / name, "a folder" if name == "plots" else "a file"
        if path.exists() and (path.is_dir() != (kind == "a folder")):
            raise ReportError(f"{path}: should be {kind}; move it away to rebuild the report")
    new_plots, old_plots = folder / ".plots.tmp", folder / ".plots.old"
    pages = {
        folder / ".report.md.tmp": folder / "report.md",
        folder / ".report.html.tmp": folder / "report.html",
    }
    for leftover in (new_plots, old_plots):
        if leftover.is_symlink():  # never followed: the link itself goes
            leftover.unlink()
        shutil.rmtree(leftover, ignore_errors=True)
    new_plots.mkdir()
    try:
        roles = Roles.of(suite, set(results["arm"]))  # selections among the arms that have results
        drawn = report_figures(results, logs, roles, new_plots)
        if slides:
            slide_figures(results, logs, roles, new_plots / "slides", slides)
        figures = {
            axis: [(title, path and folder / "plots" / path.name) for title, path in figs]
            for axis, figs in drawn.items()
        }
        claims = check_claims(results, logs, roles)
        beside = read_beside(folder) if suite.beside_findings else None
        text = render_markdown(
            suite, results, samples, prov, figures, claims, failed, roles, snapshots, logs, beside
        )
        page = render_html(
            suite, results, samples, logs, prov, drawn, claims, failed, roles, snapshots, beside
        )
        md_tmp, html_tmp = pages
        write_file(md_tmp, text)  # whole, and never through a link at that name
        write_file(html_tmp, page)
        if (folder / "plots").exists():
            os.replace(folder / "plots", old_plots)
        os.replace(new_plots, folder / "plots")
        for tmp, final in pages.items():
            os.replace(tmp, final)
    finally:
        shutil.rmtree(new_plots, ignore_errors=True)
        shutil.rmtree(old_plots, ignore_errors=True)
        for tmp in pages:
            tmp.unlink(missing_ok=True)
