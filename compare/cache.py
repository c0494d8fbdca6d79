"""The stage cache: one folder per stage key, counted only once complete, shared safely by many processes.

A stage writes into a temporary folder beside its final one; the completion marker is written last and
the folder is then renamed into place in one atomic step. A folder without its marker is never used: an
interrupted stage leaves only a temporary folder, which a later run clears and redoes.

Many processes (several runs, or the workers of one) may share a cache. Each stage has a lock
(`.locks/<stage>.lock`, an OS file lock through `filelock`: the kernel releases it when its process dies,
so a crashed run leaves no stale lock). Whoever holds a stage's lock is the only one computing it; the
others wait, then find it complete and use it. The harness never removes a complete stage folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

MARKER = "COMPLETE"
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
            shutil.rmtree(tmp, ignore_errors=True)

    def clear_stale(self) -> None:
        """Remove the temporary folders of interrupted stages that nobody is computing now."""
        if not self.root.exists():
            return
        names = {tmp.name[len(".tmp-") :].rsplit("-", 1)[0] for tmp in self.root.glob(".tmp-*")}
        for name in names:
            name = name.removesuffix("-incomplete")
            lock = FileLock(self._lock_file(name), thread_local=False)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue  # being computed right now
            try:
                self._clear_leftovers(name)
            finally:
                lock.release()

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
