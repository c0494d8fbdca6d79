"""The stage cache: one folder per stage key, counted only once complete.

A stage writes into a temporary folder beside its final one; the completion marker is written last and
the folder is then renamed into place in one atomic step. A folder without its marker is never used: an
interrupted stage leaves only a temporary folder, which the next run clears and redoes.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

MARKER = "COMPLETE"


def default_cache_dir() -> Path:
    if env := os.environ.get("SFT_VS_RLHF_CACHE"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sft-vs-rlhf"


class StageCache:
    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, name: str) -> Path:
        return self.root / name

    def is_complete(self, name: str) -> bool:
        return (self.path(name) / MARKER).exists()

    @contextmanager
    def writing(self, name: str, info: dict):
        """Yield a temporary folder to write a stage into; publish it only if the block succeeds."""
        final = self.path(name)
        tmp = self.root / f".tmp-{name}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        started = time.time()
        try:
            yield tmp
            info = {**info, "seconds": round(time.time() - started, 3)}
            (tmp / MARKER).write_text(json.dumps(info, indent=1, default=str))
            if final.exists():  # a folder without a marker: left by something else, never complete
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def info(self, name: str) -> dict:
        return json.loads((self.path(name) / MARKER).read_text())

    def clear_stale(self, max_age_s: float = 24 * 3600) -> None:
        """Remove temporary folders of interrupted stages (older ones, or ones of dead processes)."""
        if not self.root.exists():
            return
        for tmp in self.root.glob(".tmp-*"):
            pid = tmp.name.rsplit("-", 1)[-1]
            alive = pid.isdigit() and _pid_alive(int(pid))
            if not alive or time.time() - tmp.stat().st_mtime > max_age_s:
                shutil.rmtree(tmp, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
