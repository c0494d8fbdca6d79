"""`sft-vs-rlhf cache list | du | prune` on caches built in the tests, and `--version`."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest

from compare.cache import LOCKS, MARKER, PARENT, StageCache
from compare.cache_commands import human_age, human_size, plan_prune
from compare.cli import main
from compare.plan import plan_runs, stage_order
from compare.suite import load_suites

MICRO = """
name: micro
description: micro suite for the cache tests (LoRA everywhere)
task: {train_prompts: 64, eval_prompts: 4}
base:
  tiny: {n_layer: 1, n_head: 2, n_embd: 32, corpus_size: 1000, steps: 60, batch_size: 32}
budget: {units: 48, cost: {demonstration: 4, comparison: 1}}
stages:
  sft: {epochs: 1, batch_size: 8, lora_r: 4}
  dpo: {epochs: 1, batch_size: 8, lora_r: 4}
arms:
  base: {recipe: []}
  sft_dpo: {recipe: [sft, dpo]}
grid: {seed: [0]}
eval: {samples_per_prompt: 2, max_new_tokens: 16}
"""


def key(n: int) -> str:
    return f"{n:016x}"


def make_stage(root, kind, k, size=1000, parent=None, age_days=0.0, adapter=False):
    """A complete stage folder as the cache writes one: its files, a parent note if stored on one, its marker
    (written before markers held a manifest); and the cache's `.locks`, which every run makes."""
    folder = root / f"{kind}-{k}"
    folder.mkdir(parents=True)
    (root / LOCKS).mkdir(exist_ok=True)
    (folder / ("adapter_model.safetensors" if adapter or parent else "data.bin")).write_bytes(b"x" * size)
    if parent:
        (folder / PARENT).write_text(json.dumps({"parent": parent}))
    (folder / MARKER).write_text(json.dumps({"kind": kind, "key": k}))
    when = time.time() - age_days * 86400
    os.utime(folder / MARKER, (when, when))
    return folder


def du(*folders) -> int:
    """Bytes of the files in `folders`, counted here independently of the command."""
    return sum(p.stat().st_size for f in folders for p in f.rglob("*") if p.is_file() and not p.is_symlink())


def cli(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def suite_file(tmp_path):
    path = tmp_path / "micro.yaml"
    path.write_text(textwrap.dedent(MICRO))
    return path


def planned(path, overrides=()) -> list[str]:
    _, suites = load_suites(path, list(overrides))
    return [s.name for suite in suites for run in plan_runs(suite) for s in stage_order(run.roots)]


@pytest.fixture
def holder():
    """Hold a stage's lock in another process (as a run computing it would) until the test ends."""
    procs = []

    def hold(root, name):
        code = (
            "import sys\nfrom compare.cache import StageCache\n"
            f"with StageCache({str(root)!r}).lock({name!r}):\n"
            "    print('held', flush=True)\n    sys.stdin.read()\n"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "held"
        procs.append(proc)
        return proc

    yield hold
    for proc in procs:
        proc.stdin.close()
        proc.wait(timeout=30)


# -- --version -------------------------------------------------------------------------------------------
def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"sft-vs-rlhf {importlib.metadata.version('sft-vs-rlhf')}"


def test_provenance_records_the_version():
    import compare
    from compare.report.files import provenance

    assert compare.__version__ == importlib.metadata.version("sft-vs-rlhf")
    assert provenance({})["sft_vs_rlhf"] == compare.__version__


# -- which stages go ---------------------------------------------------------------------------------------
def test_plan_prune_keeps_locked_stages_and_every_parent_of_what_stays(tmp_path):
    root = tmp_path / "cache"
    # base <- sft (adapter) <- dpo (adapter); base <- rm (adapter)
    make_stage(root, "base", key(1))
    make_stage(root, "sft", key(2), parent=f"base-{key(1)}")
    make_stage(root, "dpo", key(3), parent=f"sft-{key(2)}")
    make_stage(root, "rm", key(4), parent=f"base-{key(1)}")
    from compare.cache_commands import entries

    held = entries(StageCache(root))
    names = set(held)
    # everything may go but dpo: its chain (sft, base) stays
    remove, kept = plan_prune(held, names - {f"dpo-{key(3)}"}, locked=set())
    assert remove == [f"rm-{key(4)}"]
    assert set(kept) == {f"sft-{key(2)}", f"base-{key(1)}"}
    # everything may go, but dpo is locked: the same
    remove, kept = plan_prune(held, names, locked={f"dpo-{key(3)}"})
    assert remove == [f"rm-{key(4)}"] and kept[f"dpo-{key(3)}"] == "another process holds its lock"
    # everything goes: children before their parents
    remove, kept = plan_prune(held, names, locked=set())
    assert not kept and remove.index(f"dpo-{key(3)}") < remove.index(f"sft-{key(2)}") < remove.index(
        f"base-{key(1)}"
    )


# -- list and du ---------------------------------------------------------------------------------------------
def test_list_shows_each_stage_and_the_suites_that_use_it(tmp_path, capsys, suite_file):
    root = tmp_path / "cache"
    used = planned(suite_file)
    base = next(n for n in used if n.startswith("base-"))
    sft = next(n for n in used if n.startswith("sft-"))
    folders = [
        make_stage(root, "base", base.split("-")[1], size=5000),
        make_stage(root, "sft", sft.split("-")[1], size=300, parent=base, age_days=2),
        make_stage(root, "sft", key(9), size=700, parent=base, age_days=30),  # an old sft no suite uses
    ]
    code, out, _ = cli(capsys, "cache", "list", "--cache-dir", str(root), "--suite", str(suite_file))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"cache {root}: 3 stages, {human_size(du(*folders))}"
    row = next(line for line in lines if sft.split("-")[1] in line).split()
    assert row[:2] == ["sft", sft.split("-")[1]] and " ".join(row[2:4]) == human_size(du(folders[1]))
    assert row[4:6] == ["2.0", "d"] and row[-4:] == ["adapter", "on", base, "micro"]
    old = next(line for line in lines if key(9) in line).split()
    assert old[4:6] == ["30.0", "d"] and old[-1] == "-"  # used by no suite named
    assert f"1 of 3 stages ({human_size(du(folders[2]))}) are used by none of the suites named" in out


def test_sizes_and_ages_read_as_people_write_them():
    assert [human_size(n) for n in (0, 300, 2048, 5 * 1024**2 + 1024**2 // 2, 3 * 1024**3)] == [
        "0 B", "300 B", "2.0 KiB", "5.5 MiB", "3.0 GiB"]  # fmt: skip
    assert [human_age(s) for s in (90, 7200, 86400 * 3.5)] == ["2 min", "2.0 h", "3.5 d"]


def test_du_sums_by_kind_and_counts_what_is_not_a_stage(tmp_path, capsys):
    root = tmp_path / "cache"
    base = make_stage(root, "base", key(1), size=4096)
    evals = [make_stage(root, "eval", key(2), size=1024), make_stage(root, "eval", key(3), size=1024)]
    (root / f".tmp-eval-{key(4)}-123").mkdir()
    (root / f".tmp-eval-{key(4)}-123" / "x").write_bytes(b"x" * 512)
    (root / "logs").mkdir()
    (root / "logs" / f"sft-{key(5)}.failed.log").write_bytes(b"x" * 100)
    code, out, _ = cli(capsys, "cache", "du", "--cache-dir", str(root))
    assert code == 0
    rows = {line.split("  ")[0]: line.split("  ")[1:] for line in out.splitlines()[2:]}
    rows = {k: [c.strip() for c in v if c.strip()] for k, v in rows.items()}
    assert rows["base"] == ["1", human_size(du(base))]
    assert rows["eval"] == ["2", human_size(du(*evals))]
    assert rows["(temporary folders)"] == ["1", "512 B"]
    assert rows["(failure logs)"] == ["100 B"]
    assert rows["total"] == ["3", human_size(du(root))]


# -- prune ------------------------------------------------------------------------------------------------------
@pytest.fixture
def mixed_cache(tmp_path, suite_file):
    """The micro suite's base and sft, an old sft nobody uses (and a dpo on it), things that are not stages."""
    root = tmp_path / "cache"
    used = planned(suite_file)
    base = next(n for n in used if n.startswith("base-"))
    sft = next(n for n in used if n.startswith("sft-"))
    make_stage(root, "base", base.split("-")[1], size=5000, age_days=40)
    make_stage(root, "sft", sft.split("-")[1], size=300, parent=base, age_days=1)
    old_sft = make_stage(root, "sft", key(9), size=700, parent=base, age_days=30)
    old_dpo = make_stage(root, "dpo", key(10), size=200, parent=old_sft.name, age_days=30)
    (root / "notes").mkdir()  # the user's, not a stage
    (root / "notes" / "todo.txt").write_text("keep me")
    outside = tmp_path / "elsewhere"
    make_stage(outside, "eval", key(11))
    (root / f"eval-{key(11)}").symlink_to(outside / f"eval-{key(11)}")  # a link to a stage outside
    return root, base, sft, old_sft.name, old_dpo.name, outside


def test_prune_dry_run_says_what_would_go_and_changes_nothing(mixed_cache, capsys, suite_file):
    root, base, sft, old_sft, old_dpo, outside = mixed_cache
    before = sorted(str(p) for p in root.rglob("*"))
    argv = ["cache", "prune", "--cache-dir", str(root), "--unused-by", str(suite_file), "--dry-run"]
    code, out, _ = cli(capsys, *argv)
    assert code == 0
    removed = [root / old_dpo, root / old_sft]
    assert (
        f"would remove 2 stage(s):\n  {old_dpo}  {human_size(du(removed[0]))}, 30.0 d old, adapter on" in out
    )
    assert f"\n  {old_sft}  {human_size(du(removed[1]))}, 30.0 d old, adapter on {base}" in out
    assert f"would free {human_size(du(*removed))} (dry run: nothing was changed)" in out
    assert sorted(str(p) for p in root.rglob("*")) == before


def test_prune_unused_removes_only_unused_unlocked_stages_inside_the_cache(
    mixed_cache, capsys, suite_file, holder
):
    root, base, sft, old_sft, old_dpo, outside = mixed_cache
    holder(root, old_dpo)  # another process holds the unused dpo's lock: it stays, and so does its parent
    code, out, _ = cli(capsys, "cache", "prune", "--cache-dir", str(root), "--unused-by", str(suite_file))
    assert code == 0
    assert f"  {old_dpo}: another process holds its lock" in out
    assert f"  {old_sft}: {old_dpo}, which stays, is stored on it" in out
    assert "freed 0 B" in out
    assert all((root / n / MARKER).exists() for n in (base, sft, old_sft, old_dpo))
    assert (root / "notes" / "todo.txt").read_text() == "keep me"


def test_prune_unused_removes_an_unused_chain_and_never_what_is_outside(mixed_cache, capsys, suite_file):
    root, base, sft, old_sft, old_dpo, outside = mixed_cache
    freed = du(root / old_sft, root / old_dpo)
    code, out, _ = cli(capsys, "cache", "prune", "--cache-dir", str(root), "--unused-by", str(suite_file))
    assert code == 0 and f"freed {human_size(freed)}; 2 stages" in out
    assert not (root / old_sft).exists() and not (root / old_dpo).exists()
    assert (root / base / MARKER).exists() and (root / sft / MARKER).exists()  # what the suite uses
    assert (root / "notes" / "todo.txt").read_text() == "keep me"  # not a stage: never touched
    assert (outside / f"eval-{key(11)}" / MARKER).exists() and (root / f"eval-{key(11)}").is_symlink()
    assert not list(root.glob(".tmp-*"))  # nothing left half-removed


def test_prune_older_than_keeps_the_parent_of_a_younger_adapter(mixed_cache, capsys):
    root, base, sft, old_sft, old_dpo, outside = mixed_cache
    code, out, _ = cli(capsys, "cache", "prune", "--cache-dir", str(root), "--older-than", "10")
    assert code == 0
    # the 40-day-old base stays: the 1-day-old sft is stored on it; the 30-day-old chain goes
    assert f"  {base}: {sft}, which stays, is stored on it" in out
    assert (root / base / MARKER).exists() and (root / sft / MARKER).exists()
    assert not (root / old_sft).exists() and not (root / old_dpo).exists()


def test_prune_with_both_removes_what_is_old_and_unused(mixed_cache, capsys, suite_file):
    root, base, sft, old_sft, old_dpo, outside = mixed_cache
    argv = ["cache", "prune", "--cache-dir", str(root), "--unused-by", str(suite_file), "--older-than", "35"]
    code, out, _ = cli(capsys, *argv)
    assert code == 0 and "freed 0 B" in out  # the 40-day-old base is used; the unused ones are 30 days old
    assert all((root / n).exists() for n in (base, sft, old_sft, old_dpo))


def test_prune_refuses_while_another_process_computes_a_stage(mixed_cache, capsys, suite_file, holder):
    root, base, sft, old_sft, old_dpo, outside = mixed_cache
    running = f"dpo-{key(12)}"
    (root / f".tmp-{running}-999").mkdir()  # its inputs are unknown until it is complete
    holder(root, running)
    code, _, err = cli(capsys, "cache", "prune", "--cache-dir", str(root), "--unused-by", str(suite_file))
    assert code == 2 and "another process is computing 1 stage(s)" in err and running in err
    assert (root / old_sft).exists() and (root / old_dpo).exists() and (root / f".tmp-{running}-999").exists()


def test_prune_clears_stale_temporary_folders(mixed_cache, capsys, suite_file):
    root, *_ = mixed_cache
    stale = root / f".tmp-sft-{key(13)}-4242"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"x" * 100)
    code, out, _ = cli(
        capsys, "cache", "prune", "--cache-dir", str(root), "--older-than", "1000", "--dry-run"
    )
    assert code == 0 and "would clear 1 temporary folder(s)" in out and stale.exists()
    code, out, _ = cli(capsys, "cache", "prune", "--cache-dir", str(root), "--older-than", "1000")
    assert code == 0 and not stale.exists() and "freed 100 B" in out


@pytest.mark.parametrize(
    "argv,message",
    [(["cache", "prune"], "say what to remove"), (["cache", "prune", "--older-than", "-1"], "0 or more")],
)
def test_prune_input_errors_are_one_line(tmp_path, capsys, argv, message):
    code, _, err = cli(capsys, *argv, "--cache-dir", str(tmp_path))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_prune_refuses_a_suite_whose_local_base_is_missing(tmp_path, capsys):
    suite = tmp_path / "gone.yaml"
    suite.write_text(textwrap.dedent(MICRO).replace("  tiny: {n_layer: 1, n_head: 2, n_embd: 32, corpus_size: 1000, steps: 60, batch_size: 32}", f"  model: {tmp_path / 'no-such-model'}"))  # fmt: skip
    root = tmp_path / "cache"
    make_stage(root, "base", key(1))
    code, _, err = cli(capsys, "cache", "prune", "--cache-dir", str(root), "--unused-by", str(suite))
    assert code == 2 and "no-such-model is missing" in err and "nothing was removed" in err
    assert (root / f"base-{key(1)}").exists()


# -- end to end: a LoRA micro suite -------------------------------------------------------------------------
@pytest.mark.slow
def test_a_lora_suite_run_then_prune_by_a_changed_suite(tmp_path, capsys, suite_file):
    root, out = tmp_path / "cache", tmp_path / "report"
    assert main(["run", str(suite_file), "--cache-dir", str(root), "--out", str(out)]) == 0
    cache = StageCache(root)
    names = cache.stage_names()
    assert set(names) == set(planned(suite_file))
    sft = next(n for n in names if n.startswith("sft-"))
    assert json.loads((root / sft / PARENT).read_text())["parent"].startswith("base-")  # stored as an adapter
    assert json.loads((out / "provenance.json").read_text())["sft_vs_rlhf"] == importlib.metadata.version(
        "sft-vs-rlhf"
    )
    code, listing, _ = cli(capsys, "cache", "list", "--cache-dir", str(root), "--suite", str(suite_file))
    assert code == 0 and f"0 of {len(names)} stages" in listing
    # the same suite with another DPO beta: its dpo and the dpo arm's eval go; sft, base and the rest stay
    changed = planned(suite_file, ["stages.dpo.beta=0.2"])
    argv = [
        "cache",
        "prune",
        "--cache-dir",
        str(root),
        "--unused-by",
        str(suite_file),
        "--set",
        "stages.dpo.beta=0.2",
    ]
    code, pruned, _ = cli(capsys, *argv)
    assert code == 0
    assert set(cache.stage_names()) == set(names) & set(changed)
    gone = set(names) - set(changed)
    assert {n.split("-")[0] for n in gone} == {"dpo", "eval"} and all(n in pruned for n in gone)
    assert main(["run", str(suite_file), "--cache-dir", str(root), "--out", str(out)]) == 0  # rebuilt
    assert set(cache.stage_names()) == set(names)
