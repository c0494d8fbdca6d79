"""The stage cache: one folder per stage key, counted only once complete, checked on every read, shared
safely by many processes.

A stage writes into a temporary folder beside its final one. Its completion marker is written last: a
record of what the stage is and, for every file it wrote, the file's size and SHA-256 (its manifest),
taken after each file is flushed to disk. The folder is then flushed and renamed into place in one
atomic step. A folder without its marker is never used: an interrupted stage leaves only a temporary
folder, which a later run clears and redoes.

What a stage holds is checked, not trusted (`check`): on every read the marker must be a record of
this stage, and the folder must hold exactly the files of its manifest, at their recorded sizes; the
files' hashes are checked too the first time a process reads a stage it did not write itself (the
process that wrote a stage knows what it wrote), and by `sft-vs-rlhf cache verify`. A stage that fails
is moved aside into `quarantine/` (`set_aside`, never deleted) and computed again. A stage written
before markers held a manifest is read as complete, with the checks that need none (docs/cache.md).

Many processes (several runs, or the workers of one) may share a cache. Each stage has a lock
(`.locks/<stage>.lock`, an OS file lock, `flock`: the kernel releases it when its process dies, so a
crashed run leaves no stale lock). Whoever holds a stage's lock alone is the only one computing it (or
moving it); the others wait, then find it complete and use it. A run also holds each stage it reads
shared (`hold`) until it ends, so no other process removes a stage while a run reads it. The harness
never removes a complete stage folder on its own; `sft-vs-rlhf cache prune` and `cache rm` do when
asked (`remove`: under the stage's lock, and only a complete stage folder directly inside the cache;
`compare/cache_commands.py`, docs/cache.md).

Nothing the cache writes follows a link: files are written whole into a new temporary file and renamed
over their name (`write_file`), lock files are opened with O_NOFOLLOW, and the cache's own folders
(`.locks`, `logs`, `quarantine`) may not be links.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import resource
import secrets
import shutil
import sys
import time
import traceback
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

MARKER = "COMPLETE"
PARENT = "parent.json"  # in a stage stored as a LoRA adapter: the stage folder it was trained from
STAGE_NAME = re.compile(r"[a-z][a-z0-9_]*-[0-9a-f]{16}")  # <kind>-<key>: every folder the cache holds
LEFTOVER = re.compile(r"\.tmp-([a-z][a-z0-9_]*-[0-9a-f]{16})-(?:incomplete-)?[0-9]+")  # an interrupted write
LOCKS = ".locks"
LOGS = "logs"  # the log of a stage that failed: <stage>.failed.log
QUARANTINE = "quarantine"  # stages that failed their check: <stage>-<date>-<pid>/, never deleted by us
WAIT_POLL_S = 0.5  # how often a process waiting for a stage's lock looks again
FREE_FILES = 512  # file handles left free for the run's own work, however many stages it holds
_CONTENDED = {errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK}

# Stage folders this process has hashed whole (or written itself), by path: the identity of their marker
# when it did. Later reads in this process check sizes only; a replaced marker is hashed again.
_VERIFIED: dict[str, tuple[int, int, int]] = {}


def default_cache_dir() -> Path:
    if env := os.environ.get("SFT_VS_RLHF_CACHE"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sft-vs-rlhf"


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- files written whole, never through a link --------------------------------------------------------------
def write_file(path: Path, data: str | bytes, sync: bool = False) -> None:
    """Write `path` whole or not at all, never through a link at its name: a new temporary file beside it
    (O_EXCL and O_NOFOLLOW: nothing there is followed or reused), then one rename over the name, which
    replaces a link itself, never its target. `sync`: flushed to disk before the rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise


def real_folder(path: Path) -> Path:
    """`path` as a folder of ours: created if missing; an error if it is a link or not a folder."""
    path = Path(path)
    with suppress(FileExistsError):
        path.mkdir(parents=True)
    if path.is_symlink() or not path.is_dir():
        raise OSError(
            errno.ENOTDIR, "is a link or not a folder; the harness writes only into its own", str(path)
        )
    return path


def _sync_folder(path: Path) -> None:
    """Flush a folder's entries (new names, renames) to disk; a filesystem that cannot is left as it is."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _hash_file(path: Path, sync: bool = False) -> str:
    """SHA-256 of a file, read without following a link; `sync`: flushed to disk first."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        if sync:
            os.fsync(f.fileno())
        return hashlib.file_digest(f, "sha256").hexdigest()


def _files(folder: Path) -> dict[str, os.stat_result]:
    """Every entry under `folder` that is not a folder (links included, not followed), by relative path."""
    found = {}
    for top, dirs, names in os.walk(folder):
        for name in names + [d for d in dirs if os.path.islink(os.path.join(top, d))]:
            path = os.path.join(top, name)
            found[os.path.relpath(path, folder)] = os.lstat(path)
    return found


def manifest(folder: Path, sync: bool = True) -> dict[str, list]:
    """{relative path: [size, SHA-256]} of every file in a stage folder but its marker, each flushed to
    disk first (`sync`)."""
    return {
        rel: [st.st_size, _hash_file(folder / rel, sync)]
        for rel, st in sorted(_files(folder).items())
        if rel != MARKER and os.path.isfile(folder / rel) and not os.path.islink(folder / rel)
    }


def _marker_identity(marker: Path) -> tuple[int, int, int]:
    st = os.stat(marker, follow_symlinks=False)
    return st.st_dev, st.st_ino, st.st_mtime_ns


def _safetensors_problem(path: Path, size: int) -> str | None:
    """A safetensors file whose header does not account for its size (cut short, or padded)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if n < 0 or n > size - 8:
                return "cut short (no whole header)"
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, TypeError, KeyError, IndexError) as e:
        return f"not a safetensors file ({type(e).__name__})"
    if 8 + n + end != size:
        return f"{size} bytes, its header says {8 + n + end}"
    return None


# a tokenizer's vocabulary, in one of the files `save_pretrained` writes it to
VOCABULARIES = ("tokenizer.json", "vocab.json", "vocab.txt", "tokenizer.model", "spiece.model")


def _legacy_problem(folder: Path, found: dict[str, os.stat_result], needs: tuple[str, ...]) -> str | None:
    """What can be told wrong of a stage folder written before markers held a manifest: a file the reader
    needs is missing, a link, a JSON file that does not parse, a JSON-lines file cut mid-line, a
    safetensors file cut short, a model folder without its weights or its tokenizer."""
    for name in needs:
        if name not in found:
            return f"{folder / name}: missing"
    for rel, st in sorted(found.items()):
        path = folder / rel
        if not os.path.isfile(path) or os.path.islink(path):
            return f"{path}: not a plain file (a link?)"
        if rel.endswith(".safetensors"):
            problem = _safetensors_problem(path, st.st_size)
            if problem:
                return f"{path}: {problem}"
        elif rel.endswith(".jsonl") and st.st_size:
            with open(path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    return f"{path}: cut short (its last line is not whole)"
        elif rel.endswith(".json") and rel != MARKER:
            try:
                json.loads(path.read_bytes())
            except (OSError, ValueError) as e:
                return f"{path}: not valid JSON ({type(e).__name__})"
    if "config.json" in found:
        weights = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
        if PARENT in found:
            weights = ("adapter_model.safetensors",)
        if not any(w in found for w in weights):
            return f"{folder}: a model folder without its weights ({' or '.join(weights)})"
        if "tokenizer_config.json" not in found or not any(v in found for v in VOCABULARIES):
            return f"{folder}: a model folder without its tokenizer (every stage saves one with its model)"
    return None


class StageCache:
    def __init__(self, root: Path):
        self.root = Path(root)
        self._held: dict[str, int] = {}  # stages this object holds shared (`hold`): name -> lock file
        weakref.finalize(self, _close_all, self._held)

    def path(self, name: str) -> Path:
        return self.root / name

    def is_complete(self, name: str) -> bool:
        return (self.path(name) / MARKER).exists()

    def info(self, name: str) -> dict:
        return json.loads((self.path(name) / MARKER).read_text())

    # -- locks ---------------------------------------------------------------------------------------------
    def _lock_file(self, name: str) -> Path:
        return real_folder(self.root / LOCKS) / f"{name}.lock"

    def _open_lock(self, name: str) -> int:
        """The lock file of `name`, opened for locking only (never written; a link there is refused)."""
        return os.open(self._lock_file(name), os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)

    @staticmethod
    def _try(fd: int, shared: bool) -> bool:
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in _CONTENDED:
                return False
            raise
        return True

    @contextmanager
    def lock(
        self,
        name: str,
        on_wait: Callable[[str], None] | None = _say,
        done: Callable[[], bool] | None = None,
    ) -> Iterator[bool]:
        """Hold `name`'s lock alone for the block; if another process holds it, say so once and wait.

        `done`: looked at while waiting; once it is true the block runs without the lock and the context
        yields False (a stage another process completed meanwhile, while runs that read it hold it shared).
        """
        fd = self._open_lock(name)
        try:
            if not self._try(fd, shared=False):
                if on_wait is not None:
                    on_wait(f"waiting for {name}: another process is computing it")
                while not self._try(fd, shared=False):
                    if done is not None and done():
                        yield False
                        return
                    time.sleep(WAIT_POLL_S)
            try:
                yield True
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def is_locked(self, name: str) -> bool:
        """Whether some process holds `name`'s lock now: computing or moving it, publishing a report, or a
        run holding it shared because it reads it (`hold`)."""
        if not (self.root / LOCKS / f"{name}.lock").exists():
            return False
        fd = self._open_lock(name)
        try:
            if not self._try(fd, shared=False):
                return True
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)

    def hold(self, name: str) -> bool:
        """Hold the complete stage `name` shared until `release` (or this object is gone): the run reads
        it, so no other process may remove or move it meanwhile. False if it is not complete (removed
        meanwhile). A cache this process cannot write to cannot be held; it is read all the same."""
        if name in self._held:
            return True
        if not _room_for(len(self._held) + FREE_FILES):  # held stages must not take every file handle
            return self.is_complete(name)
        try:
            fd = self._open_lock(name)
        except OSError:
            return self.is_complete(name)
        while not self._try(fd, shared=True):  # another process computes or moves it: a moment
            time.sleep(WAIT_POLL_S / 5)
        if not self.is_complete(name):
            os.close(fd)
            return False
        self._held[name] = fd
        return True

    def release(self, name: str | None = None) -> None:
        """Stop holding `name` (None: every stage this object holds)."""
        for held in [name] if name is not None else list(self._held):
            fd = self._held.pop(held, None)
            if fd is not None:
                os.close(fd)

    @contextmanager
    def reading(self, name: str) -> Iterator[None]:
        """Hold `name` shared for the block (see `hold`)."""
        had = name in self._held
        self.hold(name)
        try:
            yield
        finally:
            if not had:
                self.release(name)

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

        Publishing: every file flushed to disk and recorded (size and SHA-256) in the marker, the marker
        and the folder flushed, one rename into place, the cache's folder flushed. Call it with the
        stage's lock held (`lock`), so no other process writes or publishes it meanwhile.
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
            files = manifest(tmp)
            info = {**info, "seconds": round(time.time() - started, 3), "files": files}
            write_file(tmp / MARKER, json.dumps(info, indent=1, default=str), sync=True)
            for folder, _, _ in os.walk(tmp):
                _sync_folder(Path(folder))
            if final.exists() or final.is_symlink():  # not complete (no marker): set aside, then removed
                aside = self.root / f".tmp-{name}-incomplete-{os.getpid()}"
                os.replace(final, aside)
                shutil.rmtree(aside, ignore_errors=True)
            os.replace(tmp, final)
            _sync_folder(self.root)
            _VERIFIED[str(final.absolute())] = _marker_identity(final / MARKER)  # it wrote what it knows
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
            fd = self._open_lock(name)
            try:
                if not self._try(fd, shared=False):
                    continue  # being computed right now
                try:
                    self._clear_leftovers(name)
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    # -- reading a stage: is it what was written? ------------------------------------------------------------
    def check(self, name: str, full: bool | None = None, needs: tuple[str, ...] = ()) -> str | None:
        """None if the complete stage `name` is whole, else what is wrong, in one line naming the path.

        Always: the marker is a record of this stage, the folder holds exactly the files of its manifest
        (no link, nothing added) at their recorded sizes, and the files in `needs` are there. `full`: the
        files' SHA-256 too; None: only the first time this process reads a stage it did not write. A stage
        whose marker has no manifest (written by an earlier version) gets the checks that need none.
        """
        folder = self.path(name)
        marker = folder / MARKER
        if folder.is_symlink():
            return f"{folder}: a link, not a stage folder of the cache"
        try:
            fd = os.open(marker, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as f:
                info = json.loads(f.read())
        except FileNotFoundError:
            return f"{marker}: missing"
        except (OSError, ValueError) as e:
            return f"{marker}: not a completion record ({type(e).__name__})"
        if not isinstance(info, dict):
            return f"{marker}: not a completion record"
        kind, _, key = name.rpartition("-")
        if info.get("kind", kind) != kind or info.get("key", key) != key:
            return f"{marker}: the record of stage {info.get('kind')}-{info.get('key')}, not of this folder"
        try:
            found = _files(folder)
        except OSError as e:
            return f"{folder}: cannot be read ({e.strerror or e})"
        found.pop(MARKER, None)
        files = info.get("files")
        if files is None:
            return _legacy_problem(folder, found, needs)
        if not isinstance(files, dict) or not all(
            isinstance(v, list) and len(v) == 2 and isinstance(v[0], int) and isinstance(v[1], str)
            for v in files.values()
        ):
            return f"{marker}: its list of files is not one of sizes and hashes"
        for name_needed in needs:
            if name_needed not in files:
                return f"{folder / name_needed}: missing"
        for rel, (size, _) in files.items():
            st = found.get(rel)
            if st is None:
                return f"{folder / rel}: missing"
            if not os.path.isfile(folder / rel) or os.path.islink(folder / rel):
                return f"{folder / rel}: not a plain file (a link?)"
            if st.st_size != size:
                return f"{folder / rel}: {st.st_size} bytes, {size} recorded"
        extra = sorted(set(found) - set(files))
        if extra:
            return f"{folder / extra[0]}: not one of the files the stage wrote"
        where = str(folder.absolute())
        identity = _marker_identity(marker)
        if full is None:
            full = _VERIFIED.get(where) != identity
        if full:
            for rel, (_, digest) in files.items():
                if _hash_file(folder / rel) != digest:
                    return f"{folder / rel}: its content is not what was written (its SHA-256 differs)"
            _VERIFIED[where] = identity
        return None

    def has_manifest(self, name: str) -> bool:
        """Whether the marker of `name` records its files (False for one written by an earlier version)."""
        try:
            return isinstance(self.info(name).get("files"), dict)
        except (OSError, ValueError, AttributeError):
            return False

    def record_manifest(self, name: str) -> None:
        """Write the manifest into the marker of a stage written before markers held one (its files as
        they are now: call it only on a stage `check` finds whole). Its completion time is kept."""
        marker = self.path(name) / MARKER
        info = json.loads(marker.read_text())
        when = marker.stat().st_mtime_ns
        info["files"] = manifest(self.path(name))
        write_file(marker, json.dumps(info, indent=1, default=str), sync=True)
        os.utime(marker, ns=(when, when), follow_symlinks=False)
        _VERIFIED[str(self.path(name).absolute())] = _marker_identity(marker)

    def set_aside(self, name: str) -> Path | None:
        """Move a stage folder that failed its check into `quarantine/` (never deleted), so that it is
        computed again; returns where it went, or None if another process holds it (reads or computes it).
        """
        self.release(name)  # our own hold, if any
        fd = self._open_lock(name)
        try:
            if not self._try(fd, shared=False):
                return None
            try:
                if not (self.path(name).exists() or self.path(name).is_symlink()):
                    return None
                stamp = time.strftime("%Y%m%dT%H%M%S")
                where = real_folder(self.root / QUARANTINE) / f"{name}-{stamp}-{os.getpid()}"
                os.replace(self.path(name), where)
                _VERIFIED.pop(str(self.path(name).absolute()), None)
                return where
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

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
        """Remove the complete stage folder `name`; False, removing nothing, if another process holds its
        lock (computes it, moves it, or reads it in a run).

        Under the stage's lock, the folder is first renamed out of sight in one atomic step (a later
        `clear_stale` finishes an interrupted removal), then deleted. Raises ValueError for anything that
        is not a complete stage folder of this cache.
        """
        if not self._is_stage_folder(name):
            raise ValueError(f"{self.path(name)}: not a complete stage folder of the cache {self.root}")
        self.release(name)
        fd = self._open_lock(name)
        try:
            if not self._try(fd, shared=False):
                return False
            try:
                if not self._is_stage_folder(name):  # removed by another process meanwhile
                    return False
                aside = self.root / f".tmp-{name}-incomplete-{os.getpid()}"
                os.replace(self.path(name), aside)
                _VERIFIED.pop(str(self.path(name).absolute()), None)
                shutil.rmtree(aside)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
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

    def record_failure(self, name: str, info: dict, error: BaseException) -> Path | None:
        """Write what failed and its traceback where the user can read it; returns the log's path, or None
        when it could not be written (a full disk, say): the failure is still reported, in one line."""
        path = self.failure_log(name)
        trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        try:
            real_folder(path.parent)
            write_file(path, json.dumps(info, indent=1, default=str) + "\n\n" + trace)
        except OSError:
            return None
        return path


def _room_for(files: int) -> bool:
    """Whether this process may open `files` files, its soft limit raised towards the hard one if need be."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or files <= soft:
        return True
    wanted = max(files, 2 * soft) if hard == resource.RLIM_INFINITY else min(hard, max(files, 2 * soft))
    if wanted < files:
        return False
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (OSError, ValueError):
        return False
    return True


def _close_all(held: dict[str, int]) -> None:
    for fd in held.values():
        with suppress(OSError):
            os.close(fd)
    held.clear()
