"""A cache and a report folder that cannot lie or be turned against their user (issue 23).

Each test breaks if its protection is removed: a stage is checked on every read (sizes, and hashes the
first time a process reads it) and a broken one is moved aside and computed again, with one line naming
it; no code from a stage folder runs; nothing is written through a link; `--out` may be a mount point;
the unclean cases (SIGTERM with Ray, a full disk, hostile arm names and descriptions, `cache prune` on
what is not a cache or while a run reads it) are one line, never a traceback.
"""

from __future__ import annotations

import ast
import errno
import hashlib
import io
import json
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

from compare import cache as cache_module
from compare import pipeline
from compare.cache import LOCKS, MARKER, QUARANTINE, StageCache
from compare.cli import main
from compare.pipeline import EXIT_RUNS_FAILED
from compare.plan import plan_runs, stage_order
from compare.preflight import REPORT_MARKER
from compare.suite import load_suites

ROOT = Path(__file__).resolve().parents[1]

SMALL = SMALL_SUITE


class Built:
    """The small suite, run once: its file, cache and report folder, and its stages by (arm, kind)."""

    def __init__(self, root: Path):
        self.suite = root / "small.yaml"
        self.suite.write_text(textwrap.dedent(SMALL))
        self.cache, self.out = root / "cache", root / "report"
        assert main(["run", str(self.suite), "--cache-dir", str(self.cache), "--out", str(self.out)]) == 0
        _, suites = load_suites(self.suite)
        self.stages = {(run.arm, s.kind): s for run in plan_runs(suites[0]) for s in stage_order(run.roots)}

    def copy(self, to: Path) -> Path:
        """A copy of the cache, as another machine or a later session would find it."""
        shutil.copytree(self.cache, to, symlinks=True)
        return to

    def folder(self, cache: Path, arm: str, kind: str) -> Path:
        return cache / self.stages[arm, kind].name


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    return Built(tmp_path_factory.mktemp("integrity"))


def run(built: Built, cache: Path, out: Path, *more) -> int:
    return main(["run", str(built.suite), "--cache-dir", str(cache), "--out", str(out), *more])


def no_manifests(cache: Path) -> None:
    """Every marker as an earlier version wrote it: the stage's record without its files."""
    for marker in cache.glob(f"*/{MARKER}"):
        info = json.loads(marker.read_text())
        info.pop("files", None)
        marker.write_text(json.dumps(info, indent=1))


# -- 1. integrity on every read ------------------------------------------------------------------------------
def test_a_stage_records_each_file_size_and_hash_flushed_before_it_is_published(tmp_path, monkeypatch):
    flushed = []
    real_fsync = os.fsync
    monkeypatch.setattr(
        os, "fsync", lambda fd: (flushed.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd))
    )
    cache = StageCache(tmp_path)
    with cache.lock("x-0000000000000001"), cache.writing("x-0000000000000001", {"kind": "x"}) as folder:
        (folder / "a.json").write_text('{"a": 1}')
        (folder / "sub").mkdir()
        (folder / "sub" / "b.bin").write_bytes(b"\0" * 1000)
    final = tmp_path / "x-0000000000000001"
    files = json.loads((final / MARKER).read_text())["files"]
    assert files == {
        "a.json": [8, hashlib.sha256(b'{"a": 1}').hexdigest()],
        os.path.join("sub", "b.bin"): [1000, hashlib.sha256(b"\0" * 1000).hexdigest()],
    }
    tmp = f".tmp-x-0000000000000001-{os.getpid()}"
    names = [Path(p).name for p in flushed]  # files, then the marker (written beside, renamed), then folders
    marker = next(i for i, n in enumerate(names) if n.startswith(f".{MARKER}.tmp-"))
    assert {"a.json", "b.bin"} <= set(names[:marker]) and {tmp, "sub"} <= set(names[marker:])
    assert names[-1] == tmp_path.name  # the cache's folder, once the stage is renamed into it
    assert cache.check("x-0000000000000001", full=True) is None


def flip(path: Path) -> None:
    """Overwrite 256 bytes in the middle of a file with others: the same size, different content."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 256] = bytes((b ^ 0x7F) for b in data[middle : middle + 256])
    path.write_bytes(bytes(data))


def cut_lines(path: Path) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: len(lines) // 2]))  # whole lines: half of them


def gold_999(path: Path) -> None:
    metrics = json.loads(path.read_text())
    for split in metrics.values():
        split["gold_reward"] = 9.99
    path.write_text(json.dumps(metrics, indent=1))


def remove_tokenizer(folder: Path) -> None:
    for path in folder.iterdir():
        if path.name.startswith(("tokenizer", "special_tokens", "vocab")):
            path.unlink()


def truncate(path: Path) -> None:
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


# (the stage damaged, the file, the damage, the stages that read it: removed so that they read it again)
DAMAGE = {
    "flipped bytes in weights": (("sft", "sft"), "model.safetensors", flip, [("sft", "eval")]),
    "truncated weights": (("sft", "sft"), "model.safetensors", truncate, [("sft", "eval")]),
    "missing tokenizer": (("sft", "sft"), None, remove_tokenizer, [("sft", "eval")]),
    "demos cut to half its lines": (("sft", "demos"), "demos.jsonl", cut_lines,
                                    [("sft", "sft"), ("sft", "eval")]),
    "edited metrics.json": (("sft", "eval"), "metrics.json", gold_999, []),
    "garbage COMPLETE": (("sft", "eval"), MARKER, lambda p: p.write_text("garbage{"), []),
    "missing samples.jsonl": (("sft", "eval"), "samples.jsonl", lambda p: p.unlink(), []),
    "missing comparisons.jsonl": (("dpo", "comparisons"), "comparisons.jsonl", lambda p: p.unlink(),
                                  [("dpo", "dpo"), ("dpo", "eval")]),
}  # fmt: skip
# what can still be caught in a stage written before markers held a manifest (no hashes, no sizes): the
# last one only once a stage reading it fails on the missing file (the run then computes it again at once)
LEGACY = ["truncated weights", "missing tokenizer", "garbage COMPLETE", "missing samples.jsonl",
          "missing comparisons.jsonl"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    "damage, legacy", [(d, False) for d in DAMAGE] + [(d, True) for d in LEGACY], ids=lambda v: str(v)
)
def test_a_broken_stage_is_named_moved_aside_and_computed_again(built, tmp_path, capsys, damage, legacy):
    cache = built.copy(tmp_path / "cache")
    if legacy:
        no_manifests(cache)
    (arm, kind), file, harm, readers = DAMAGE[damage]
    stage = built.stages[arm, kind]
    folder = cache / stage.name
    harm(folder / file if file else folder)
    for reader in readers:
        shutil.rmtree(built.folder(cache, *reader))
    capsys.readouterr()
    assert run(built, cache, tmp_path / "report") == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    named = [line for line in err.splitlines() if f"stage {stage.kind} {stage.key}" in line]
    assert len(named) == 1 and "is broken" in named[0] and str(folder) in named[0], err
    aside = list((cache / QUARANTINE).iterdir())
    assert [p.name.rsplit("-", 2)[0] for p in aside] == [stage.name]  # kept, not deleted
    assert str(aside[0]) in named[0]
    assert StageCache(cache).check(stage.name, full=True) is None  # computed again, whole
    # the same results as before the damage: nothing broken was used
    assert (tmp_path / "report" / "results.csv").read_bytes() == (built.out / "results.csv").read_bytes()


def test_stages_written_before_markers_held_a_manifest_are_complete(built, tmp_path, capsys):
    cache = built.copy(tmp_path / "cache")
    no_manifests(cache)
    markers = {p: p.read_bytes() for p in cache.glob(f"*/{MARKER}")}
    capsys.readouterr()
    assert run(built, cache, tmp_path / "report") == 0
    captured = capsys.readouterr()
    assert "all stages cached" in captured.out and "warning" not in captured.err
    assert {p: p.read_bytes() for p in cache.glob(f"*/{MARKER}")} == markers  # a run rewrites no stage
    assert (tmp_path / "report" / "results.csv").read_bytes() == (built.out / "results.csv").read_bytes()


def test_a_changed_file_of_the_same_size_is_caught_by_its_hash_in_another_process(built, tmp_path):
    cache = built.copy(tmp_path / "cache")
    name = built.stages["sft", "sft"].name
    flip(cache / name / "model.safetensors")
    assert StageCache(cache).check(name, full=False) is None  # sizes alone cannot tell
    code = f"from compare.cache import StageCache; print(StageCache({str(cache)!r}).check({name!r}))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env())
    assert "model.safetensors: its content is not what was written" in done.stdout, done.stderr


# -- 2. no code from the cache -------------------------------------------------------------------------------
EVIL = "import pathlib\npathlib.Path({sentinel!r}).write_text('ran')\n"  # run on import: it must never be


@pytest.mark.parametrize("loader", ["load_policy", "load_reward_model", "load_causal_lm", "load_classifier"])
def test_a_planted_auto_map_is_refused_and_never_run(tmp_path, monkeypatch, loader):
    from compare.lm import loading

    folder = tmp_path / "sft-00000000000000aa"
    folder.mkdir()
    sentinel = tmp_path / "the planted code ran"
    (folder / "evil.py").write_text(EVIL.format(sentinel=str(sentinel)))
    auto_map = {"AutoConfig": "evil.EvilConfig", "AutoModelForCausalLM": "evil.EvilConfig",
                "AutoTokenizer": ["evil.EvilConfig", None]}  # fmt: skip
    config = {"model_type": "evil", "auto_map": auto_map}  # a type transformers does not know
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "tokenizer_config.json").write_text(json.dumps({"auto_map": auto_map}))
    monkeypatch.setattr("builtins.input", lambda *a: "y")  # a user who answers the prompt "y"
    with pytest.raises(ValueError, match="custom code"):
        getattr(loading, loader)(folder)
    assert not sentinel.exists()


def test_every_from_pretrained_refuses_remote_code():
    """Every load of a model, config or tokenizer in the package says trust_remote_code=False."""
    loose = []
    for path in sorted((ROOT / "compare").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "from_pretrained"):
                continue
            owner = ast.unparse(node.func.value)
            if owner in ("PeftConfig", "PeftModel", "GenerationConfig"):  # no remote code to run
                continue
            said = {k.arg for k in node.keywords} | {
                getattr(k.value, "id", None) for k in node.keywords if k.arg is None
            }  # trust_remote_code=False, or **NO_REMOTE_CODE
            if not ({"trust_remote_code", "NO_REMOTE_CODE"} & said or _passes_no_remote_code(node)):
                loose.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)[:80]}")
    assert not loose, "\n".join(loose)


def _passes_no_remote_code(node: ast.Call) -> bool:
    return any("NO_REMOTE_CODE" in ast.unparse(k.value) for k in node.keywords if k.arg is None)


# -- 3. no write through a link ------------------------------------------------------------------------------
def test_a_failure_log_lock_or_record_that_is_a_link_is_never_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    cache = StageCache(tmp_path / "cache")
    (tmp_path / "cache" / "logs").mkdir(parents=True)
    log = cache.failure_log("sft-0000000000000001")
    log.symlink_to(victim)
    assert cache.record_failure("sft-0000000000000001", {"kind": "sft"}, ValueError("boom")) == log
    assert victim.read_text() == "precious" and not log.is_symlink() and "ValueError: boom" in log.read_text()
    (tmp_path / "cache" / LOCKS).mkdir()
    (tmp_path / "cache" / LOCKS / "sft-0000000000000002.lock").symlink_to(victim)
    with pytest.raises(OSError):  # refused, not followed (and never truncated)
        with cache.lock("sft-0000000000000002"):
            pass
    assert victim.read_text() == "precious"
    target = tmp_path / "cache" / "record.json"
    target.symlink_to(victim)
    cache_module.write_file(target, "new")
    assert victim.read_text() == "precious" and target.read_text() == "new" and not target.is_symlink()


def test_the_report_record_and_a_rebuild_never_write_through_a_link(built, tmp_path):
    from compare.runner import _report_record

    cache = built.copy(tmp_path / "cache")
    out = tmp_path / "report"
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    record = _report_record(out, StageCache(cache))
    for planted in (record, record.with_name(f"{record.name}.tmp-{os.getpid()}")):  # old and new names
        planted.symlink_to(victim)
        assert run(built, cache, out) == 0
        assert victim.read_text() == "precious"
        planted.unlink(missing_ok=True)
        (out / "report.md").unlink()  # so that the next run writes the report again
    for name in (".report.md.tmp", ".report.html.tmp", ".plots.tmp"):  # `report` rebuilding the folder
        (out / name).symlink_to(victim)
    assert main(["report", str(out)]) == 0
    assert victim.read_text() == "precious" and (out / "report.md").is_file()


# -- 4. --out on a mount point -------------------------------------------------------------------------------
@pytest.fixture
def tmpfs(tmp_path):
    where = tmp_path / "mounted"
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(where)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN)")
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def test_out_on_a_tmpfs_mount_point(built, tmp_path, tmpfs, capsys):
    cache = built.copy(tmp_path / "cache")
    assert os.path.ismount(tmpfs) and os.stat(tmpfs).st_dev != os.stat(tmp_path).st_dev
    assert run(built, cache, tmpfs) == 0  # an empty mount point: the report is written into it
    assert (tmpfs / "results.csv").read_bytes() == (built.out / "results.csv").read_bytes()
    (tmpfs / "report.md").write_text("an older report")
    assert run(built, cache, tmpfs) == 0  # replaced, on the mount
    assert (tmpfs / "report.md").read_text() != "an older report"
    marker = json.loads((tmpfs / REPORT_MARKER).read_text())
    assert marker["complete"] and sorted(p.name for p in tmpfs.iterdir()) == sorted(
        [*marker["files"], REPORT_MARKER]
    )
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".mounted")]  # nothing left beside it


def _unswappable(monkeypatch, out: Path) -> list[str]:
    """`out` as a mount point would be: it cannot be renamed (EBUSY), and a rename from outside it into it
    crosses filesystems (EXDEV). Returns the renames done, for the test to read."""
    done = []
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        src, dst = Path(src), Path(dst)
        if src == out:
            raise OSError(errno.EBUSY, "Device or resource busy", str(src))
        if out in dst.parents and out not in src.parents:
            raise OSError(errno.EXDEV, "Invalid cross-device link", str(src))
        done.append((src.name, dst.name))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(pipeline.os, "replace", replace)
    monkeypatch.setattr(pipeline.os.path, "ismount", lambda p: Path(p) == out)
    return done


def test_out_that_cannot_be_renamed_keeps_the_old_report_until_the_new_is_in(built, tmp_path, monkeypatch):
    cache = built.copy(tmp_path / "cache")
    out = tmp_path / "report"
    assert run(built, cache, out) == 0
    (out / "report.md").write_text("an older report")
    renames = _unswappable(monkeypatch, out)
    assert run(built, cache, out) == 0
    assert (out / "report.md").read_text() != "an older report" and (out / "results.csv").is_file()
    assert [n for n in os.listdir(out) if n.startswith(".sft-vs-rlhf-") and n != REPORT_MARKER] == []
    into = [i for i, (_, dst) in enumerate(renames) if dst == "report.md"]
    assert into, renames  # the new report.md was renamed in, from inside `out`


def test_a_publish_into_out_that_fails_half_way_puts_the_old_report_back(
    built, tmp_path, monkeypatch, capsys
):
    cache = built.copy(tmp_path / "cache")
    out = tmp_path / "report"
    assert run(built, cache, out) == 0
    (out / "report.md").write_text("the old report")
    before = {p.name: p.stat().st_size for p in out.iterdir()}
    _unswappable(monkeypatch, out)
    replace = os.replace

    def full(src, dst, *args, **kwargs):  # the disk fills up half-way through moving the new report in
        if Path(dst) == out / "report.html" and Path(src).parent.name.startswith(".sft-vs-rlhf-new"):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", full)
    capsys.readouterr()
    assert run(built, cache, out) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: the disk is full") and len(err.splitlines()) == 1, err
    assert (out / "report.md").read_text() == "the old report"
    assert {p.name: p.stat().st_size for p in out.iterdir()} == before  # the old report, whole, and only it


def test_only_plain_names_of_the_manifest_are_ever_removed(built, tmp_path, monkeypatch):
    cache = built.copy(tmp_path / "cache")
    out = tmp_path / "report"
    assert run(built, cache, out) == 0
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    marker = json.loads((out / REPORT_MARKER).read_text())
    marker["files"] += ["../victim.txt", str(victim), "..", "."]
    (out / REPORT_MARKER).write_text(json.dumps(marker))
    _unswappable(monkeypatch, out)
    assert run(built, cache, out) == 0
    assert victim.read_text() == "precious" and (out / "report.md").is_file()


# -- 5. a broken input is named and rebuilt; cache rm and cache verify ---------------------------------------
def test_cache_verify_moves_a_broken_stage_aside_and_records_old_stages(built, tmp_path, capsys):
    cache = built.copy(tmp_path / "cache")
    sft = built.stages["sft", "sft"]
    capsys.readouterr()
    n = len({s.name for s in built.stages.values()})
    assert main(["cache", "verify", "--cache-dir", str(cache)]) == 0
    assert f"{n} of {n} stages whole" in capsys.readouterr().out
    flip(cache / sft.name / "model.safetensors")
    assert main(["cache", "verify", "--cache-dir", str(cache), "--dry-run"]) == 3
    assert (cache / sft.name).is_dir()  # a dry run moves nothing
    assert main(["cache", "verify", "--cache-dir", str(cache)]) == 3
    out = capsys.readouterr().out
    assert f"broken: sft {sft.key}: {cache / sft.name / 'model.safetensors'}" in out and "SHA-256" in out
    assert not (cache / sft.name).exists() and len(list((cache / QUARANTINE).iterdir())) == 1
    no_manifests(cache)  # stages written by an earlier version: checked as they can be, and recorded
    assert main(["cache", "verify", "--cache-dir", str(cache)]) == 0
    assert "recorded the files of" in capsys.readouterr().out
    assert all("files" in json.loads(p.read_text()) for p in cache.glob(f"*/{MARKER}"))


def test_cache_rm_removes_one_stage_and_nothing_else(built, tmp_path, capsys):
    cache = built.copy(tmp_path / "cache")
    sft = built.stages["sft", "sft"]
    others = sorted(p.name for p in cache.iterdir() if p.name != sft.name)
    assert main(["cache", "rm", "--cache-dir", str(cache), sft.key]) == 0
    assert not (cache / sft.name).exists() and sorted(p.name for p in cache.iterdir()) == others
    capsys.readouterr()
    assert main(["cache", "rm", "--cache-dir", str(cache), sft.name]) == 2  # gone: one line
    assert len(capsys.readouterr().err.splitlines()) == 1
    assert run(built, cache, tmp_path / "report") == 0  # computed again
    assert (cache / sft.name / MARKER).is_file()


# -- 6. the unclean cases ------------------------------------------------------------------------------------
def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.mark.slow
def test_sigterm_with_ray_is_143_and_one_line_and_ray_listens_on_loopback_only(built, tmp_path):
    import psutil

    cmd = [sys.executable, "-m", "compare", "run", str(built.suite), "--cache-dir", str(tmp_path / "cache"),
           "--out", str(tmp_path / "report"), "--jobs", "2"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    try:
        listening, deadline = [], time.time() + 300
        while time.time() < deadline and proc.poll() is None:  # Ray's processes up, a stage running
            family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
            names = " ".join(p.name() for p in family if p.is_running())
            if "raylet" in names and "gcs_server" in names and any("ray::" in p.name() for p in family):
                listening = [c for c in psutil.net_connections("tcp") if c.status == "LISTEN"
                             and c.pid in {p.pid for p in family}]  # fmt: skip
                break
            time.sleep(0.5)
        assert listening, "Ray did not start"
        outside = [c.laddr for c in listening if c.laddr.ip not in ("127.0.0.1", "::ffff:127.0.0.1", "::1")]
        assert not outside, outside
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 143, err
    lines = [
        line for line in err.splitlines() if line.strip() and not line.startswith("[")
    ]  # "[k/N] ..." done
    assert lines == ["terminated: completed stages are cached; run again to resume"], err


def test_a_full_disk_is_one_line_and_the_finished_arms_are_reported(built, tmp_path, monkeypatch, capsys):
    import dataclasses

    from compare import stages

    cache = built.copy(tmp_path / "cache")
    for reader in (("sft", "sft"), ("sft", "eval")):
        shutil.rmtree(built.folder(cache, *reader))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setitem(stages.SPECS, "sft", dataclasses.replace(stages.SPECS["sft"], run=full))
    real_open, real_io_open = os.open, io.open

    def no_room_for_logs(opener):
        def opened(path, *args, **kwargs):
            if ".failed.log" in str(path):
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            return opener(path, *args, **kwargs)

        return opened

    monkeypatch.setattr(os, "open", no_room_for_logs(real_open))
    monkeypatch.setattr(io, "open", no_room_for_logs(real_io_open))
    capsys.readouterr()
    out = tmp_path / "report"
    assert run(built, cache, out, "--jobs", "1") == EXIT_RUNS_FAILED  # in this process: the disk is "full"
    err = capsys.readouterr().err
    assert "Traceback" not in err
    stage = built.stages["sft", "sft"]
    line = next(x for x in err.splitlines() if x.startswith(f"error: stage sft {stage.key}"))
    assert "No space left on device" in line and "no log" in line
    assert not list(cache.glob("logs/*"))  # no empty log left behind
    assert set(pd.read_csv(out / "results.csv")["arm"]) == {"base", "dpo"}
    assert list(pd.read_csv(out / "failed_runs.csv")["arm"]) == ["sft"]


@pytest.mark.parametrize("name", ["a|b", "a\nb", "tab\there", "bell\a", "rtl\u202eoverride", "line\u2028sep"])
def test_arm_names_with_a_pipe_or_control_characters_are_refused_at_load(tmp_path, capsys, name):
    suite = tmp_path / "s.yaml"
    suite.write_text(json.dumps({"name": "s", "arms": {name: {"recipe": []}}}))
    capsys.readouterr()
    assert main(["plan", str(suite), "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {suite}: arms: arm name ") and len(err.splitlines()) == 1, err


def test_the_description_is_quoted_in_report_md_and_html(tmp_path):
    import yaml

    folder = tmp_path / "copy"
    shutil.copytree(ROOT / "reports" / "example", folder)
    saved = yaml.safe_load((folder / "suite.yaml").read_text())
    saved["description"] = (
        "# Pwned title\n<script>alert(1)</script> & [a link](javascript:alert(1))\n"
        "![pixel](http://example.com/p.png)\n| a | b |\n|---|---|\n\n- item\n1. one `a|<b>`"
    )
    (folder / "suite.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    assert main(["report", str(folder)]) == 0
    text = (folder / "report.md").read_text()
    assert [x for x in text.splitlines() if x.startswith("# ")] == [f"# Report: {saved['name']}"]
    head = text.split("## ")[0]  # the title and the description
    assert not re.search(r"(?<!\\)(<script>|\]\(http|\n\||\n- |\n1\.)", head), head
    assert "\\# Pwned title" in text and "`a|<b>`" in text
    page = (folder / "report.html").read_text()
    assert f"<title>Report: {saved['name']}</title>" in page
    assert "<script>alert" not in page and 'src="http' not in page and 'href="javascript' not in page
    assert "# Pwned title &lt;script&gt;alert(1)&lt;/script&gt; &amp; [a link]" in page


def test_prune_refuses_what_is_not_a_cache(tmp_path, capsys):
    photos = tmp_path / "photos"
    stage = photos / "album-0123456789abcdef"  # looks like a stage, in a folder that is no cache
    stage.mkdir(parents=True)
    (stage / MARKER).write_text("{}")
    (tmp_path / "afile").write_text("x")
    for where, said in ((photos, "not a stage cache"), (tmp_path / "afile", "not a folder"),
                        (tmp_path / "missing", "no such folder")):  # fmt: skip
        capsys.readouterr()
        assert main(["cache", "prune", "--older-than", "0", "--cache-dir", str(where)]) == 2
        err = capsys.readouterr().err
        assert said in err and len(err.splitlines()) == 1
    assert (stage / MARKER).exists() and (tmp_path / "afile").exists() and not (tmp_path / "missing").exists()


def test_prune_never_removes_a_stage_another_process_reads(built, tmp_path, capsys):
    cache = built.copy(tmp_path / "cache")
    sft = built.stages["sft", "sft"].name
    code = (
        "import sys\nfrom compare.cache import StageCache\n"
        f"c = StageCache({str(cache)!r})\nassert c.hold({sft!r})\n"
        "print('held', flush=True)\nsys.stdin.read()\n"
    )
    reader = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=_env())  # fmt: skip
    try:
        assert reader.stdout.readline().strip() == "held"
        capsys.readouterr()
        assert main(["cache", "prune", "--older-than", "0", "--cache-dir", str(cache)]) == 0
        assert f"{sft}: another process holds its lock" in capsys.readouterr().out
        assert [p.name for p in cache.iterdir() if p.name.startswith(("base-", "sft-", "eval-"))] == [sft]
    finally:
        reader.stdin.close()
        reader.wait(timeout=30)


def test_prune_during_a_runs_report_phase_removes_nothing_it_reads(built, tmp_path, monkeypatch, capsys):
    cache = built.copy(tmp_path / "cache")
    before = sorted(p.name for p in cache.iterdir())
    write_suite = pipeline.write_suite
    pruned = []

    def prune_first(*args, **kwargs):
        pruned.append(main(["cache", "prune", "--older-than", "0", "--cache-dir", str(cache)]))
        return write_suite(*args, **kwargs)

    monkeypatch.setattr(pipeline, "write_suite", prune_first)
    assert run(built, cache, tmp_path / "report") == 0
    assert pruned == [0] and sorted(p.name for p in cache.iterdir()) == before
    assert (tmp_path / "report" / "results.csv").read_bytes() == (built.out / "results.csv").read_bytes()
    # once the run is over, its stages are no longer held
    assert main(["cache", "prune", "--older-than", "0", "--cache-dir", str(cache)]) == 0
    assert not StageCache(cache).stage_names()
