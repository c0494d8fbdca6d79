"""`sft-vs-rlhf cache list | du | prune | rm | verify`: what the stage cache holds, how big it is,
removing what no suite needs or one stage, and checking every stage (docs/cache.md).

`list` shows every complete stage (kind, key, size, age, how it is stored, and which of the suites named
with `--suite` use it); `du` the size by kind and in all; `prune` removes stages not used by the suites
named with `--unused-by`, or older than `--older-than` days (both: only stages that are both). Prune
removes only complete stage folders directly inside the cache root, never one whose lock another
process holds, never a stage that a kept stage is stored on (a LoRA adapter's parent, through its
whole chain), and nothing while another process is computing a stage in the cache (the inputs of a
stage are known only once it is complete). It also clears the temporary folders interrupted stages
left (`StageCache.clear_stale`). `--dry-run` says what would go and how much it frees, changing nothing.
`rm STAGE ...` removes the stages named, on the same terms. `verify` checks every stage whole (sizes
and SHA-256 of every file) and moves a broken one into the cache's quarantine, so the next run computes
it again. Prune, rm and verify refuse a path that is not a stage cache (missing, a file, or a folder
without the cache's `.locks`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from compare.cache import (
    LEFTOVER,
    LOCKS,
    LOGS,
    MARKER,
    PARENT,
    QUARANTINE,
    STAGE_NAME,
    StageCache,
    default_cache_dir,
)
from compare.suite import SuiteError

DAY = 86400.0
HELD = "another process holds its lock"  # computing it, moving it, or reading it in a run


# -- what the cache holds --------------------------------------------------------------------------------
@dataclass
class Entry:
    """One complete stage folder of the cache."""

    name: str
    kind: str
    key: str
    size: int  # bytes of its files
    completed: float  # when it was completed (its marker's modification time)
    parent: str | None  # the stage it is stored on (a LoRA adapter's parent), by name; None for none
    stored: str  # "adapter", "weights" (a full model) or "data"

    def age(self, now: float) -> float:
        return max(0.0, now - self.completed)


def folder_size(path: Path) -> int:
    """Bytes of the files under `path`, links not followed (a link counts as itself)."""
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += (Path(folder) / name).lstat().st_size
            except OSError:  # removed meanwhile
                pass
    return total


def read_entry(cache: StageCache, name: str) -> Entry:
    folder = cache.path(name)
    marker = folder / MARKER
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        info = {}
    kind, _, key = name.rpartition("-")
    parent = None
    if (folder / PARENT).is_file():
        try:
            ref = json.loads((folder / PARENT).read_text())["parent"]
        except (OSError, ValueError, KeyError, TypeError):
            ref = None
        if isinstance(ref, str):
            target = (folder.parent / ref).resolve()
            if target.parent == cache.root.resolve():  # a stage of this cache (an absolute path may be too)
                parent = target.name
    if parent is not None or (folder / "adapter_config.json").is_file():
        stored = "adapter"
    elif (folder / "config.json").is_file():
        stored = "weights"
    else:
        stored = "data"
    return Entry(
        name=name,
        kind=str(info.get("kind", kind)),
        key=str(info.get("key", key)),
        size=folder_size(folder),
        completed=marker.stat().st_mtime,
        parent=parent,
        stored=stored,
    )


def entries(cache: StageCache) -> dict[str, Entry]:
    out = {}
    for name in cache.stage_names():
        try:
            out[name] = read_entry(cache, name)
        except FileNotFoundError:  # removed while we looked
            continue
    return out


def leftovers(cache: StageCache) -> list[Path]:
    """Temporary folders of interrupted (or running) stages."""
    if not cache.root.is_dir():
        return []
    return sorted(p for p in cache.root.glob(".tmp-*") if LEFTOVER.fullmatch(p.name))


def stale_leftovers(cache: StageCache) -> list[Path]:
    """The temporary folders `clear_stale` would remove: those of stages nobody is computing now."""
    busy = set(cache.in_flight())
    return [p for p in leftovers(cache) if LEFTOVER.fullmatch(p.name).group(1) not in busy]


def suite_usage(files: list[Path], overrides: list[str], strict: bool) -> dict[str, list[str]]:
    """The stages the suites in `files` use (every stage of every run, by name) -> the suites' names.

    `strict`: a suite whose base model is a local file that is missing cannot say which base stage it
    uses (its key holds the files' sizes and dates), so it is an error; otherwise a warning.
    """
    import importlib.metadata
    import sys

    from compare.plan import plan_runs, stage_order
    from compare.suite import load_suites

    usage: dict[str, list[str]] = {}
    for file in files:
        _, suites = load_suites(file, overrides)
        for suite in suites:
            try:
                runs = plan_runs(suite)
            except importlib.metadata.PackageNotFoundError as e:
                raise SuiteError(
                    f"{file}: base: package {e} is not installed, so the stages this suite uses cannot "
                    "be told; install it, or leave this suite out"
                ) from None
            for run in runs:
                for stage in stage_order(run.roots):
                    source = stage.params.get("source", {}) if stage.kind == "base" else {}
                    if source.get("files") == "missing":
                        message = (
                            f"{file}: base: {source.get('model')} is missing, so the stages this suite uses "
                            "cannot be told"
                        )
                        if strict:
                            raise SuiteError(f"{message}; nothing was removed")
                        print(f"warning: {message}", file=sys.stderr)
                    users = usage.setdefault(stage.name, [])
                    if suite.name not in users:
                        users.append(suite.name)
    return usage


# -- formatting ------------------------------------------------------------------------------------------
def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError  # unreachable


def human_age(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < DAY:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / DAY:.1f} d"


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def stored_text(entry: Entry) -> str:
    if entry.stored == "adapter":
        return f"adapter on {entry.parent}" if entry.parent else "adapter"
    return entry.stored


# -- the commands ----------------------------------------------------------------------------------------
def cmd_list(cache: StageCache, suites: list[Path], overrides: list[str]) -> int:
    held = entries(cache)
    usage = suite_usage(suites, overrides, strict=False) if suites else None
    now = time.time()
    total = sum(e.size for e in held.values())
    print(f"cache {cache.root}: {len(held)} stages, {human_size(total)}")
    if not held:
        return 0
    header = ["kind", "key", "size", "age", "stored"] + (["suites"] if usage is not None else [])
    rows = [header]
    for e in sorted(held.values(), key=lambda e: (e.kind, e.completed)):
        row = [e.kind, e.key, human_size(e.size), human_age(e.age(now)), stored_text(e)]
        if usage is not None:
            row.append(", ".join(usage.get(e.name, [])) or "-")
        rows.append(row)
    print(table(rows))
    if usage is not None:
        unused = [e for e in held.values() if e.name not in usage]
        print(
            f"\n{len(unused)} of {len(held)} stages ({human_size(sum(e.size for e in unused))}) are used by "
            f"none of the suites named"
        )
    return 0


def cmd_du(cache: StageCache) -> int:
    held = entries(cache)
    by_kind: dict[str, list[Entry]] = {}
    for e in held.values():
        by_kind.setdefault(e.kind, []).append(e)
    rows = [["kind", "stages", "size"]]
    for kind, group in sorted(by_kind.items(), key=lambda kv: -sum(e.size for e in kv[1])):
        rows.append([kind, str(len(group)), human_size(sum(e.size for e in group))])
    tmp = leftovers(cache)
    tmp_size = sum(folder_size(p) for p in tmp)
    logs = cache.root / LOGS
    logs_size = folder_size(logs) if logs.is_dir() else 0
    quarantine = cache.root / QUARANTINE
    broken = list(quarantine.iterdir()) if quarantine.is_dir() and not quarantine.is_symlink() else []
    broken_size = folder_size(quarantine) if broken else 0
    known = {e.name for e in held.values()} | {p.name for p in tmp} | {LOGS, LOCKS, QUARANTINE}
    other = [p for p in cache.root.iterdir() if p.name not in known] if cache.root.is_dir() else []
    other_size = sum(folder_size(p) for p in other)
    if tmp:
        rows.append(["(temporary folders)", str(len(tmp)), human_size(tmp_size)])
    if logs_size:
        rows.append(["(failure logs)", "", human_size(logs_size)])
    if broken:
        rows.append(["(quarantined: broken)", str(len(broken)), human_size(broken_size)])
    if other:
        rows.append(["(not the harness's)", str(len(other)), human_size(other_size)])
    total = sum(e.size for e in held.values()) + tmp_size + logs_size + broken_size + other_size
    rows.append(["total", str(len(held)), human_size(total)])
    print(f"cache {cache.root}")
    print(table(rows))
    return 0


def plan_prune(
    held: dict[str, Entry], candidates: set[str], locked: set[str]
) -> tuple[list[str], dict[str, str]]:
    """Which of `candidates` go, children before their parents, and why each other candidate stays.

    A locked candidate stays; so does every stage that a staying stage is stored on, through its chain.
    """
    why = {name: HELD for name in sorted(candidates & locked)}
    stay = set(held) - (candidates - set(why))
    todo = sorted(stay)
    while todo:
        name = todo.pop()
        parent = held[name].parent
        if parent in held and parent not in stay:
            stay.add(parent)
            why[parent] = f"{name}, which stays, is stored on it"
            todo.append(parent)

    def depth(name: str) -> int:
        n, seen = 0, set()
        while (name := held[name].parent) in held and name not in seen:
            seen.add(name)
            n += 1
        return n

    remove = sorted((n for n in candidates if n not in stay), key=lambda n: (-depth(n), n))
    return remove, {n: w for n, w in why.items() if n in candidates}


def require_cache(cache: StageCache, command: str) -> None:
    """Refuse, in one line, a path that is not a stage cache: missing, a file, or a folder without the
    cache's `.locks` (every run makes it): stage-like folders elsewhere are not ours to remove."""
    root = cache.root
    if not root.exists() and not root.is_symlink():
        raise SuiteError(f"cache {command}: --cache-dir {root}: no such folder; nothing was changed")
    if not root.is_dir():
        raise SuiteError(f"cache {command}: --cache-dir {root}: not a folder; nothing was changed")
    locks = root / LOCKS
    if locks.is_symlink() or not locks.is_dir():
        raise SuiteError(
            f"cache {command}: --cache-dir {root}: not a stage cache (no {LOCKS} folder, which every run "
            "makes); nothing was changed"
        )


def cmd_prune(
    cache: StageCache, unused_by: list[Path], older_than: float | None, overrides: list[str], dry_run: bool
) -> int:
    if not unused_by and older_than is None:
        raise SuiteError(
            "cache prune: say what to remove: --unused-by SUITE.yaml ... and/or --older-than DAYS"
        )
    if older_than is not None and not older_than >= 0:
        raise SuiteError(f"cache prune: --older-than {older_than}: give a number of days, 0 or more")
    require_cache(cache, "prune")
    usage = suite_usage(unused_by, overrides, strict=True) if unused_by else None
    busy = cache.in_flight()
    if busy and not dry_run:
        shown = ", ".join(busy[:3]) + (f" (+{len(busy) - 3} more)" if len(busy) > 3 else "")
        raise SuiteError(
            f"cache prune: another process is computing {len(busy)} stage(s) in {cache.root} ({shown}), "
            "whose inputs are known only once they are complete; nothing was removed: prune when it is done"
        )
    held = entries(cache)
    now = time.time()
    candidates = {
        e.name
        for e in held.values()
        if (usage is None or e.name not in usage) and (older_than is None or e.age(now) > older_than * DAY)
    }
    locked = {n for n in candidates if cache.is_locked(n)}
    remove, kept = plan_prune(held, candidates, locked)
    stale = stale_leftovers(cache)
    stale_size = sum(folder_size(p) for p in stale)
    verb = "would remove" if dry_run else "removing"
    print(f"cache {cache.root}: {len(held)} stages, {human_size(sum(e.size for e in held.values()))}")
    if busy:
        print(f"note: another process is computing {len(busy)} stage(s) now; a real prune waits for it")
    if remove:
        print(f"{verb} {len(remove)} stage(s):")
    freed, gone = 0, set()
    for name in remove:  # children before their parents
        e = held[name]
        if any(held[o].parent == name for o in held if o not in gone and o != name):
            kept[name] = "a stage stored on it could not be removed"
            continue
        if not dry_run:
            try:
                if not cache.remove(name):
                    kept[name] = HELD
                    continue
            except (OSError, ValueError) as err:
                kept[name] = f"could not be removed: {err}"
                continue
        gone.add(name)
        freed += e.size
        print(f"  {e.name}  {human_size(e.size)}, {human_age(e.age(now))} old, {stored_text(e)}", flush=True)
    if kept:
        print(f"kept {len(kept)} stage(s) that would otherwise go:")
        for name, reason in sorted(kept.items()):
            print(f"  {name}: {reason}")
    if stale:
        print(
            f"{'would clear' if dry_run else 'clearing'} {len(stale)} temporary folder(s) of interrupted stages"
        )
        if not dry_run:
            before = {p: folder_size(p) for p in stale}
            cache.clear_stale()
            stale_size = sum(size for p, size in before.items() if not p.exists())
        freed += stale_size
    left = sum(e.size for n, e in held.items() if n not in gone)
    if dry_run:
        print(f"would free {human_size(freed)} (dry run: nothing was changed)")
    else:
        print(f"freed {human_size(freed)}; {len(held) - len(gone)} stages ({human_size(left)}) left")
    return 0


def stage_name(cache: StageCache, text: str) -> str:
    """The stage `text` names: `<kind>-<key>`, or a key alone (16 hex digits) that one stage has."""
    if STAGE_NAME.fullmatch(text):
        return text
    if re.fullmatch(r"[0-9a-f]{16}", text):
        found = [n for n in cache.stage_names() if n.endswith(f"-{text}")]
        if len(found) == 1:
            return found[0]
    raise SuiteError(
        f"cache rm: {text!r}: not a stage of {cache.root} (give <kind>-<key> or the key, as `cache list` "
        "shows them); nothing was removed"
    )


def cmd_rm(cache: StageCache, stages: list[str]) -> int:
    """Remove the stages named (and nothing else): all of them, or none when one cannot go."""
    require_cache(cache, "rm")
    names = [stage_name(cache, text) for text in stages]
    held = entries(cache)
    for name in names:
        if name not in held:
            raise SuiteError(
                f"cache rm: {cache.path(name)}: not a complete stage of the cache; nothing was removed"
            )
    locked = {n for n in names if cache.is_locked(n)}
    remove, kept = plan_prune(held, set(names), locked)
    if kept:
        name, why = sorted(kept.items())[0]
        raise SuiteError(f"cache rm: {name}: {why}; nothing was removed")
    freed = 0
    for name in remove:  # children before their parents
        if not cache.remove(name):
            raise SuiteError(f"cache rm: {name}: {HELD} (since this command began); it was not removed")
        freed += held[name].size
        print(f"removed {name}  {human_size(held[name].size)}, {stored_text(held[name])}", flush=True)
    print(f"freed {human_size(freed)}; {len(held) - len(remove)} stages left")
    return 0


def cmd_verify(cache: StageCache, dry_run: bool) -> int:
    """Check every complete stage whole: marker, files, sizes and SHA-256. A broken stage is moved into
    the quarantine (never deleted), so the next run computes it again; a stage written before markers
    held a manifest that looks whole gets its manifest recorded. Returns 3 when some stage was broken."""
    require_cache(cache, "verify")
    names = cache.stage_names()
    broken, recorded = 0, 0
    print(f"cache {cache.root}: checking {len(names)} stages", flush=True)
    for name in names:
        problem = cache.check(name, full=True)
        kind, _, key = name.rpartition("-")
        if problem is not None:
            broken += 1
            if dry_run:
                moved = "left in place (dry run)"
            else:
                where = cache.set_aside(name)
                moved = f"moved to {where}" if where else "another process holds it, so it was not moved"
            print(f"broken: {kind} {key}: {problem}; {moved}", flush=True)
        elif not dry_run and not cache.has_manifest(name):
            with cache.lock(name, on_wait=None, done=lambda: True) as alone:  # not while others move it
                if alone and cache.check(name, full=True) is None and not cache.has_manifest(name):
                    cache.record_manifest(name)
                    recorded += 1
    whole = len(names) - broken
    note = f"; recorded the files of {recorded} stage(s) written before markers held them" if recorded else ""
    print(f"{whole} of {len(names)} stages whole{note}" + (f"; {broken} broken" if broken else ""))
    return 3 if broken else 0


# -- the command line ------------------------------------------------------------------------------------
def add_parser(sub, path_type=Path) -> None:
    """The `cache` command and its subcommands, on the CLI's subparsers."""
    cache = sub.add_parser("cache", help="see what the stage cache holds, its size, and prune it")
    commands = cache.add_subparsers(dest="cache_command", required=True)

    def common(sp):
        sp.add_argument(
            "--cache-dir",
            type=path_type,
            help="stage cache (default: $SFT_VS_RLHF_CACHE or ~/.cache/sft-vs-rlhf)",
        )

    def suites(sp, flag: str, help: str):
        sp.add_argument(flag, dest="suites", type=path_type, nargs="+", action="extend", default=[],
                        metavar="SUITE.yaml", help=help)  # fmt: skip
        sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                        help="override a setting of every suite named, as `run --set` (repeatable)")  # fmt: skip

    ls = commands.add_parser(
        "list", help="every stage: kind, key, size, age, how stored, the suites using it"
    )
    common(ls)
    suites(ls, "--suite", "suite files (or collections) whose use of each stage to show")
    du = commands.add_parser("du", help="the cache's size by stage kind, and in all")
    common(du)
    prune = commands.add_parser("prune", help="remove stages no suite named uses, or older ones")
    common(prune)
    suites(prune, "--unused-by", "remove the stages none of these suites use")
    prune.add_argument("--older-than", type=float, metavar="DAYS",
                       help="remove the stages completed more than DAYS ago (with --unused-by: only unused ones)")  # fmt: skip
    prune.add_argument(
        "--dry-run", action="store_true", help="say what would go and what it frees; change nothing"
    )
    rm = commands.add_parser("rm", help="remove the stages named (not one another stage is stored on)")
    common(rm)
    rm.add_argument(
        "stages", nargs="+", metavar="STAGE", help="<kind>-<key>, or the key, as `cache list` shows"
    )
    verify = commands.add_parser(
        "verify", help="check every stage's files (sizes and SHA-256); move broken ones to the quarantine"
    )
    common(verify)
    verify.add_argument("--dry-run", action="store_true", help="only say what is broken; move nothing")


def main(args: argparse.Namespace) -> int:
    cache = StageCache(args.cache_dir or default_cache_dir())
    if args.cache_command == "list":
        return cmd_list(cache, args.suites, args.overrides)
    if args.cache_command == "du":
        return cmd_du(cache)
    if args.cache_command == "rm":
        return cmd_rm(cache, args.stages)
    if args.cache_command == "verify":
        return cmd_verify(cache, args.dry_run)
    return cmd_prune(cache, args.suites, args.older_than, args.overrides, args.dry_run)
