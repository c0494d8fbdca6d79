"""The harness never destroys what it did not write, never caches a failed stage, and survives failures.

Each test here breaks if its protection is removed: a user's folder survives `--out`, a failing stage
is not in the cache and the other arms are reported, two processes on one cache compute a stage once,
`report` leaves a report untouched when its saved files are damaged.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import SMALL_SUITE

from compare.cache import MARKER, StageCache
from compare.cli import main
from compare.pipeline import EXIT_RUNS_FAILED
from compare.preflight import PARTIAL_MARKER, REPORT_MARKER

ROOT = Path(__file__).resolve().parents[1]

SMALL = SMALL_SUITE


@pytest.fixture
def small(tmp_path):
    suite = tmp_path / "small.yaml"
    suite.write_text(textwrap.dedent(SMALL))
    return suite, tmp_path / "cache"


def run(suite, cache, out, *more) -> int:
    return main(["run", str(suite), "--cache-dir", str(cache), "--out", str(out), *more])


# -- --out: only what the harness wrote is replaced --------------------------------------------------------
def test_a_folder_the_harness_did_not_write_survives(small, tmp_path, capsys):
    suite, cache = small
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "chapter1.tex").write_text("years of work")
    assert run(suite, cache, mine) == 2
    err = capsys.readouterr().err
    assert "not written by sft-vs-rlhf" in err and err.count("\n") == 1
    assert (mine / "chapter1.tex").read_text() == "years of work"
    assert not cache.exists()  # refused before anything ran


@pytest.mark.parametrize("where", ["cwd", "parent", "cache", "inside_cache"])
def test_out_may_not_be_the_current_folder_its_parents_or_the_cache(
    small, tmp_path, monkeypatch, capsys, where
):
    suite, cache = small
    work = tmp_path / "work"
    (work / "keep").mkdir(parents=True)
    (work / "keep" / "file").write_text("x")
    monkeypatch.chdir(work / "keep")
    out = {"cwd": Path("."), "parent": Path(".."), "cache": cache.parent, "inside_cache": cache / "r"}[where]
    (tmp_path / REPORT_MARKER).write_text("")  # even a marked folder: these are never a report folder
    assert run(suite, cache, out) == 2
    assert "--out" in capsys.readouterr().err
    assert (work / "keep" / "file").read_text() == "x"


def test_report_folder_replaced_and_killed_publish_cleared(small, tmp_path, capsys):
    suite, cache = small
    out = tmp_path / "report"
    out.mkdir(mode=0o750)  # an empty folder is fine, and kept (its mode too)
    assert run(suite, cache, out) == 0
    assert (out / REPORT_MARKER).exists() and (out / "report.md").exists()
    assert out.stat().st_mode & 0o777 == 0o750
    (out / "report.md").write_text("an older report")  # ours: replaced
    killed = tmp_path / f".report.tmp-{2**22 + 7}"  # a publish killed half-way: it carries the partial marker
    (killed / "plots").mkdir(parents=True)
    (killed / PARTIAL_MARKER).write_text("")
    users = tmp_path / ".report.tmp-backup"  # the same prefix, even only subfolders, but not ours: left alone
    (users / "thesis").mkdir(parents=True)
    (users / "thesis" / "ch1.tex").write_text("mine")
    assert run(suite, cache, out) == 0  # a report folder written before is replaced whole
    assert (out / "report.md").read_text() != "an older report"
    assert not killed.exists() and (users / "thesis" / "ch1.tex").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".report")) == [
        ".report.tmp-backup"
    ]

    # what the user added to a report folder is never deleted: the run refuses, naming it
    (out / "my_analysis").mkdir()
    (out / "my_analysis" / "notes.md").write_text("notes")
    capsys.readouterr()
    assert run(suite, cache, out) == 2
    assert "my_analysis" in capsys.readouterr().err
    assert (out / "my_analysis" / "notes.md").read_text() == "notes"


def test_report_needs_our_marker_and_a_cache_must_be_a_cache(small, tmp_path, capsys):
    suite, _ = small
    mine = tmp_path / "mine"
    shutil.copytree(ROOT / "reports" / "example", mine)
    (mine / REPORT_MARKER).unlink()
    (mine / "report.md").write_text("MINE")
    assert main(["report", str(mine)]) == 2 and "not a report folder written by" in capsys.readouterr().err
    assert (mine / "report.md").read_text() == "MINE"
    photos = tmp_path / "photos"
    (photos / ".tmp-photos-2023").mkdir(parents=True)
    (photos / ".tmp-photos-2023" / "img.jpg").write_text("j")
    assert run(suite, photos, tmp_path / "r") == 2 and "not a stage cache" in capsys.readouterr().err
    assert (photos / ".tmp-photos-2023" / "img.jpg").exists()
    StageCache(photos).clear_stale()  # even called directly, it removes only what the cache writes
    assert (photos / ".tmp-photos-2023" / "img.jpg").exists()
    (tmp_path / "afile").write_text("x")
    assert run(suite, tmp_path / "afile", tmp_path / "r") == 2 and "not a folder" in capsys.readouterr().err
    assert main(["run", str(suite), "--threads", "-1", "--cache-dir", str(tmp_path / "c")]) == 2
    assert "--threads -1" in capsys.readouterr().err


# -- a failed stage: not cached, the rest reported -----------------------------------------------------
def test_a_failing_arm_leaves_the_others_reported(small, tmp_path, capsys):
    suite, cache = small
    out = tmp_path / "report"
    assert run(suite, cache, out, "--set", "stages.dpo.lr=1e20") == EXIT_RUNS_FAILED
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("error: stage dpo"))
    key = re.search(r"stage dpo ([0-9a-f]{16})", line).group(1)
    log = Path(re.search(r"log: (\S+)$", line).group(1))
    assert "dpo seed=0" in line and "not cached" in line and log.exists()
    assert "NonFiniteError" in line or "nan" in line.lower()
    assert not (cache / f"dpo-{key}").exists()  # never published
    assert not any(p.name.startswith(".tmp-") for p in cache.iterdir())
    results = pd.read_csv(out / "results.csv")
    assert set(results["arm"]) == {"base", "sft"}
    failed = pd.read_csv(out / "failed_runs.csv")
    assert list(failed["arm"]) == ["dpo"] and failed["stage"].iloc[0] == f"dpo {key}"
    text = (out / "report.md").read_text()
    assert "### Failed runs" in text and "Computed without the 1 failed run(s)" in text

    # a re-run retries only what failed: the base model and SFT come from the cache
    assert run(suite, cache, out, "--set", "stages.dpo.lr=1e20") == EXIT_RUNS_FAILED
    err = capsys.readouterr().err
    attempted = re.findall(r"^\[\d+/(\d+)\] (\w+)", err, re.M)
    assert attempted == [] or {kind for _, kind in attempted} <= {"comparisons"}
    assert "error: stage dpo" in err and "sft" not in {k for _, k in attempted}

    # fixed, the same folder is reported whole
    assert run(suite, cache, out) == 0
    assert set(pd.read_csv(out / "results.csv")["arm"]) == {"base", "sft", "dpo"}
    assert not (out / "failed_runs.csv").exists() and "Failed runs" not in (out / "report.md").read_text()
    assert log.exists()  # that stage (lr 1e20) still failed: its log stays


def test_a_stage_error_names_the_stage_and_skips_only_its_dependents(small, tmp_path, monkeypatch, capsys):
    from compare import stages

    def broken(job, out, inputs, ctx):
        (out / "model.safetensors").write_text("half")
        raise RuntimeError("probability tensor contains either inf, nan or element < 0")

    monkeypatch.setitem(stages.SPECS, "sft", dataclasses.replace(stages.SPECS["sft"], run=broken))
    suite, cache = small
    out = tmp_path / "report"
    assert run(suite, cache, out) == EXIT_RUNS_FAILED
    err = capsys.readouterr().err
    assert re.search(r"error: stage sft [0-9a-f]{16} failed \(sft seed=0\): RuntimeError: probability", err)
    assert not any(p.name.startswith("sft-") for p in cache.iterdir())
    assert any(p.name.startswith("dpo-") and (p / MARKER).exists() for p in cache.iterdir())
    failed = pd.read_csv(out / "failed_runs.csv")
    assert failed["reason"].iloc[0].startswith("RuntimeError: probability")
    assert set(pd.read_csv(out / "results.csv")["arm"]) == {"base", "dpo"}


def test_all_runs_failing_writes_no_report(small, tmp_path, monkeypatch, capsys):
    from compare import stages

    def broken(job, out, inputs, ctx):
        raise ValueError("corpus exploded")

    monkeypatch.setitem(stages.SPECS, "base", dataclasses.replace(stages.SPECS["base"], run=broken))
    suite, cache = small
    out = tmp_path / "report"
    assert run(suite, cache, out) == EXIT_RUNS_FAILED
    assert "all 3 runs failed" in capsys.readouterr().err and not out.exists()


# -- the cache under many processes ----------------------------------------------------------------------
def test_complete_stage_is_never_rewritten(tmp_path):
    cache = StageCache(tmp_path)
    log = cache.record_failure("x-0000000000000001", {"kind": "x"}, ValueError("first try"))
    assert "ValueError: first try" in log.read_text()
    with cache.lock("x-0000000000000001"), cache.writing("x-0000000000000001", {}) as folder:
        (folder / "a").write_text("1")
    with (
        pytest.raises(FileExistsError),
        cache.lock("x-0000000000000001"),
        cache.writing("x-0000000000000001", {}),
    ):
        pass
    assert (tmp_path / "x-0000000000000001" / "a").read_text() == "1" and cache.is_complete(
        "x-0000000000000001"
    )
    assert not log.exists()  # a stage's failure log goes once it succeeds
    (tmp_path / "y-0000000000000001").mkdir()  # a folder without its marker is not complete: it is replaced
    (tmp_path / "y-0000000000000001" / "junk").write_text("")
    with cache.lock("y-0000000000000001"), cache.writing("y-0000000000000001", {}) as folder:
        (folder / "b").write_text("2")
    assert sorted(p.name for p in (tmp_path / "y-0000000000000001").iterdir()) == [MARKER, "b"]


HOLD = """
import sys, time
from compare.cache import StageCache
with StageCache(sys.argv[1]).lock(sys.argv[2]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_lock_of_a_killed_process_is_broken(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path), "s-0000000000000001"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        cache = StageCache(tmp_path)
        assert cache.is_locked("s-0000000000000001")
        (tmp_path / ".tmp-s-0000000000000001-123").mkdir()
        cache.clear_stale()  # a folder whose stage is being computed is kept
        assert (tmp_path / ".tmp-s-0000000000000001-123").exists()
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        assert not cache.is_locked("s-0000000000000001")
        cache.clear_stale()  # nobody holds it now: the leftover goes
        assert not (tmp_path / ".tmp-s-0000000000000001-123").exists()
        with cache.lock("s-0000000000000001", on_wait=None):
            pass
    finally:
        holder.kill()


def test_two_runs_on_one_cache_compute_each_stage_once(small, tmp_path):
    suite, cache = small
    out = tmp_path / "shared-report"  # the same --out too: both succeed
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "compare", "run", str(suite), "--cache-dir", str(cache), "--out", str(out)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)]
    time.sleep(0.5)
    procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    ran = []
    for stdout, _ in outputs:
        m = re.search(r"\((\d+) stages run\)|\(all stages cached\)", stdout)
        ran.append(int(m.group(1) or 0))
    stages = [p for p in cache.iterdir() if (p / MARKER).exists()]
    assert sum(ran) == len(stages)  # every stage computed by exactly one of the two
    waited = "".join(err for _, err in outputs)
    assert "another process is computing it" in waited or "done by another process" in waited
    assert (out / "report.md").exists() and (out / REPORT_MARKER).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".shared-report")]


# -- `report` trusts nothing it reads --------------------------------------------------------------------
@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: (f / "results.csv").write_text(""), "empty"),
        (
            lambda f: (f / "results.csv").write_text((f / "results.csv").read_text().splitlines()[0] + "\n"),
            "no rows",
        ),
        (lambda f: (f / "results.csv").write_text((f / "results.csv").read_text()[:-25]), "cut short"),
        (
            lambda f: (f / "results.csv").write_text(
                "\n".join((f / "results.csv").read_text().splitlines()[:3])[:-40] + "\n"
            ),
            "fields",
        ),  # fmt: skip
        (lambda f: (f / "suite.yaml").unlink(), "suite.yaml: missing"),
        (lambda f: (f / "suite.yaml").write_text("name: [unclosed\n"), "not valid YAML"),
        (
            lambda f: (f / "suite.yaml").write_text("name: x\narms: {a: {recipe: [sft]}}\nbogus: 1\n"),
            "bogus: unknown key",
        ),
        (lambda f: (f / "provenance.json").write_text("{"), "not valid JSON"),
    ],
)
def test_report_on_damaged_files_is_one_line_and_leaves_the_report(tmp_path, capsys, damage, message):
    folder = tmp_path / "copy"
    shutil.copytree(ROOT / "reports" / "example", folder)
    before = (folder / "report.md").read_text()
    damage(folder)
    assert main(["report", str(folder)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert (folder / "report.md").read_text() == before
