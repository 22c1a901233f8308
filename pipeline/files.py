"""Files the tool writes: atomic writes, temp names a later run can sweep, contained paths.

Every write goes to a temp file in the destination's folder and is renamed into place, so a
reader never sees half a file. Temp names carry the writer's pid (``.<name>.<pid>.<random>.tmp``):
when a run is killed (SIGKILL leaves no chance to clean up), the next run that writes into the
same folder removes the temp files of processes that are gone (:func:`sweep_temp`), without
touching those of a run still going.

Digests and keys read from a record, a report or a cache are joined into paths only after
:func:`check_digest`, and every such path is resolved and checked to lie inside its root
(:func:`contained`) before it is read, written or deleted.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from pipeline.errors import UserInputError

DIGEST = re.compile(r"[0-9a-f]{64}")
#: ``.<name>.<pid>.<anything without a slash>.tmp``
_TEMP = re.compile(r"\..+\.(?P<pid>[0-9]+)\.[^/]+\.tmp")
#: temp files without a pid (written before pids were recorded) are stale after this long
STALE_AFTER_S = 6 * 3600


class PathOutsideRoot(UserInputError):
    """A path built from stored data resolves outside the folder it belongs to."""


def check_digest(value: object, what: str = "digest") -> str:
    """``value`` if it is a sha256 hex digest (64 lowercase hex characters); else a clear error."""
    if not isinstance(value, str) or not DIGEST.fullmatch(value):
        shown = repr(value)[:80]
        raise PathOutsideRoot(f"{what} {shown} is not a sha256 digest (64 hex characters); "
                              "the record holding it is damaged or crafted")
    return value


def contained(root: Path, path: Path) -> Path:
    """``path`` resolved, after checking it lies inside ``root`` (resolved; links followed)."""
    base = Path(root).resolve()
    resolved = Path(path).resolve()
    if resolved != base and not resolved.is_relative_to(base):
        raise PathOutsideRoot(f"{path} resolves to {resolved}, outside {base}; refusing to "
                              "touch it (a link or a crafted name leads out of the folder)")
    return resolved


def _prefix(name: str) -> str:
    return f".{name}.{os.getpid()}."


def temp_file(folder: Path, name: str) -> Path:
    """A new empty temp file in ``folder`` for an atomic write of ``folder/name``."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=_prefix(name), suffix=".tmp")
    os.close(fd)
    return Path(tmp)


def temp_dir(folder: Path, name: str, tag: str = "") -> Path:
    """A new temp folder in ``folder`` for staging ``folder/name`` (swept like temp files)."""
    folder.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=folder, prefix=_prefix(name) + tag, suffix=".tmp"))


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file and a rename."""
    path = Path(path)
    tmp = temp_file(path.parent, path.name)
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_copy(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` through a temp file and a rename."""
    dst = Path(dst)
    tmp = temp_file(dst.parent, dst.name)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale(path: Path, pid: int | None, max_age_s: float = STALE_AFTER_S) -> bool:
    """A temp entry of a process that is gone, or of unknown owner and older than ``max_age_s``."""
    if pid is not None:
        return pid != os.getpid() and not pid_alive(pid)
    try:
        return time.time() - path.lstat().st_mtime >= max_age_s
    except FileNotFoundError:
        return False


def remove(path: Path) -> None:
    """Delete a file, a link or a folder tree (a link is removed, never followed)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def sweep_temp(folder: Path) -> int:
    """Remove the stale temp entries (files or folders) directly in ``folder``; the count."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    swept = 0
    for entry in folder.iterdir():
        if not (entry.name.startswith(".") and entry.name.endswith(".tmp")):
            continue
        match = _TEMP.fullmatch(entry.name)
        if is_stale(entry, int(match["pid"]) if match else None):
            remove(entry)
            swept += 1
    return swept


#: below this much free space a run would fail half-way through writing its artifacts
MIN_FREE_BYTES = 200 << 20


def check_writable(folder: Path, what: str, option: str) -> None:
    """Refuse, before any work and without creating anything, a folder this process could not
    create or write to, or whose disk is nearly full: one :class:`UserInputError` naming
    ``option``."""
    folder = Path(folder).absolute()
    fix = f"pass {option} a folder you can write to"
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserInputError(f"the {what} {folder} cannot be created: {existing} is a file, "
                             f"not a folder; {fix}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserInputError(f"the {what} {folder} is not writable ({existing} is read-only "
                             f"for this user); {fix}")
    free = shutil.disk_usage(existing).free
    if free < MIN_FREE_BYTES:
        raise UserInputError(f"the {what} {folder} has {free >> 20} MiB free, less than the "
                             f"{MIN_FREE_BYTES >> 20} MiB a run needs; free space or {fix}")
