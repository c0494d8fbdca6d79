"""The stage cache: one folder per stage key, counted only once complete, shared safely by many processes.

A stage writes into a temporary folder beside its final one; the completion marker is written last and
the folder is then renamed into place in one atomic step. A folder without its marker is never used: an
interrupted stage leaves only a temporary folder, which a later run clears and redoes.

Many processes (several runs, or the workers of one) may share a cache. Each stage has a lock
(`.locks/<stage>.lock`, an OS file lock through `filelock`: the kernel releases it when its process dies,
so a crashed run leaves no stale lock). Whoever holds a stage's lock is the only one computing it; the
others wait, then find it complete and use it. The harness never removes a complete stage folder on its
own; `sft-vs-rlhf cache prune` does when asked (`remove`: under the stage's lock, and only a complete
stage folder directly inside the cache; `compare/cache_commands.py`, docs/cache.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

MARKER = "COMPLETE"
PARENT = "parent.json"  # in a stage stored as a LoRA adapter: the stage folder it was trained from
STAGE_NAME = re.compile(r"[a-z][a-z0-9_]*-[0-9a-f]{16}")  # <kind>-<key>: every folder the cache holds
LEFTOVER = re.compile(r"\.tmp-([a-z][a-z0-9_]*-[0-9a-f]{16})-(?:incomplete-)?[0-9]+")  # an interrupted write
LOCKS = ".locks"
LOGS = "logs"  # the log of a stage that failed: <stage>.failed.log


def default_cache_dir() -> Path:
    if env := os.environ.get("SFT_VS_RLHF_CACHE"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sft-vs-rlhf"


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class StageCache:
    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, name: str) -> Path:
        return self.root / name

    def is_complete(self, name: str) -> bool:
        return (self.path(name) / MARKER).exists()

    def info(self, name: str) -> dict:
        return json.loads((self.path(name) / MARKER).read_text())

    # -- locks ---------------------------------------------------------------------------------------------
    def _lock_file(self, name: str) -> Path:
        folder = self.root / LOCKS
        folder.mkdir(parents=True, exist_ok=True)
        return folder / f"{name}.lock"

    @contextmanager
    def lock(self, name: str, on_wait: Callable[[str], None] | None = _say) -> Iterator[None]:
        """Hold `name`'s lock for the block; if another process holds it, say so once and wait."""
        lock = FileLock(self._lock_file(name), thread_local=False)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            if on_wait is not None:
                on_wait(f"waiting for {name}: another process is computing it")
            lock.acquire()
        try:
            yield
        finally:
            lock.release()

    def is_locked(self, name: str) -> bool:
        """Whether some process holds `name`'s lock now (a stage being computed, or a report published)."""
        if not (self.root / LOCKS / f"{name}.lock").exists():
            return False
        lock = FileLock(self._lock_file(name), thread_local=False)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return True
        lock.release()
        return False

    @contextmanager
    def folder_lock(self, folder: Path) -> Iterator[None]:
        """A lock for a folder outside the cache (a report folder being published), kept in the cache."""
        digest = hashlib.sha256(str(Path(folder).resolve()).encode()).hexdigest()[:16]
        with self.lock(
            f"out-{digest}", on_wait=lambda _: _say(f"waiting for {folder}: another run is writing it")
        ):
            yield

    # -- writing a stage -----------------------------------------------------------------------------------
    @contextmanager
    def writing(self, name: str, info: dict) -> Iterator[Path]:
        """Yield a temporary folder to write a stage into; publish it only if the block succeeds.

        Call it with the stage's lock held (`lock`), so no other process writes or publishes it meanwhile.
        """
        final = self.path(name)
        if self.is_complete(name):
            raise FileExistsError(f"{name} is already complete; it is never rewritten")
        self._clear_leftovers(name)
        tmp = self.root / f".tmp-{name}-{os.getpid()}"
        tmp.mkdir(parents=True)
        started = time.time()
        try:
            yield tmp
            info = {**info, "seconds": round(time.time() - started, 3)}
            (tmp / MARKER).write_text(json.dumps(info, indent=1, default=str))
            if final.exists():  # a folder without a marker (never complete): set aside, then removed
                aside = self.root / f".tmp-{name}-incomplete-{os.getpid()}"
                os.replace(final, aside)
                shutil.rmtree(aside, ignore_errors=True)
            os.replace(tmp, final)
            self.failure_log(name).unlink(missing_ok=True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def _clear_leftovers(self, name: str) -> None:
        """Temporary folders of `name` left by interrupted processes (its lock is held: none is in use)."""
        for tmp in self.root.glob(f".tmp-{name}-*"):
            match = LEFTOVER.fullmatch(tmp.name)
            if match and match.group(1) == name:  # only names the cache itself writes
                shutil.rmtree(tmp, ignore_errors=True)

    def clear_stale(self) -> None:
        """Remove the temporary folders of interrupted stages that nobody is computing now."""
        if not self.root.exists():
            return
        names = {m.group(1) for tmp in self.root.glob(".tmp-*") if (m := LEFTOVER.fullmatch(tmp.name))}
        for name in names:
            lock = FileLock(self._lock_file(name), thread_local=False)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue  # being computed right now
            try:
                self._clear_leftovers(name)
            finally:
                lock.release()

    # -- what it holds, and removing a stage ----------------------------------------------------------------
    def stage_names(self) -> list[str]:
        """The complete stage folders directly inside the cache (not links), by name, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if self._is_stage_folder(p.name))

    def _is_stage_folder(self, name: str) -> bool:
        """A stage's name whose folder is directly inside the root, is no link, and carries the marker."""
        if not STAGE_NAME.fullmatch(name):
            return False
        folder = self.path(name)
        return (
            not folder.is_symlink()
            and folder.is_dir()
            and folder.resolve().parent == self.root.resolve()
            and (folder / MARKER).is_file()
        )

    def remove(self, name: str) -> bool:
        """Remove the complete stage folder `name`; False, removing nothing, if another process holds its lock.

        Under the stage's lock (so no process computes or publishes it meanwhile), the folder is first
        renamed out of sight in one atomic step (a later `clear_stale` finishes an interrupted removal),
        then deleted. Raises ValueError for anything that is not a complete stage folder of this cache.
        """
        if not self._is_stage_folder(name):
            raise ValueError(f"{self.path(name)}: not a complete stage folder of the cache {self.root}")
        lock = FileLock(self._lock_file(name), thread_local=False)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return False
        try:
            if not self._is_stage_folder(name):  # removed by another process meanwhile
                return False
            aside = self.root / f".tmp-{name}-incomplete-{os.getpid()}"
            os.replace(self.path(name), aside)
            shutil.rmtree(aside)
        finally:
            lock.release()
        return True

    def in_flight(self) -> list[str]:
        """Stages another process is computing now: a temporary folder whose stage lock is held."""
        if not self.root.exists():
            return []
        names = {m.group(1) for tmp in self.root.glob(".tmp-*") if (m := LEFTOVER.fullmatch(tmp.name))}
        return sorted(n for n in names if self.is_locked(n))

    # -- failures ------------------------------------------------------------------------------------------
    def failure_log(self, name: str) -> Path:
        return self.root / LOGS / f"{name}.failed.log"

    def record_failure(self, name: str, info: dict, error: BaseException) -> Path:
        """Write what failed and its traceback where the user can read it; returns the log's path."""
        path = self.failure_log(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        path.write_text(json.dumps(info, indent=1, default=str) + "\n\n" + trace)
        return path
