"""Which cached blobs were hashed and found intact, keyed by their file's stat fingerprint.

Re-hashing every cached blob on every run cost a fully cached rerun of the built-in model
0.13 s of its 0.43 s (45 MB of ONNX, TFLite and Core ML files). Like git's index and DVC's state
database, a blob whose ``(size, mtime_ns, ctime_ns, inode, device)`` is the one recorded when it
last hashed to its digest is taken as unchanged. The ctime cannot be set from user space (any
write, ``touch -d`` or rename of the file sets it to now), so a file changed through the file
system is always hashed again; a blob not yet in the memo, or whose entry does not match, is
hashed as before. As in git's "racy" rule, a file changed in the last ``RACY_S`` seconds is
never remembered: file-system timestamps are coarse (a clock tick), so a second write within the
same tick could leave the fingerprint unchanged.

The memo is ``<cache>/stat-memo.json``: read once (at most ``MAX_MEMO_BYTES``, validated: any
malformed content is ignored as a whole, with a warning, and everything is hashed), written
with temp + rename only when it changed, and pruned to the blobs that still exist.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.files import atomic_write_bytes

log = logging.getLogger(__name__)

MEMO_NAME = "stat-memo.json"
MAX_MEMO_BYTES = 4 * 2**20
RACY_S = 3.0
_DIGEST = re.compile(r"^[0-9a-f]{64}$")

Fingerprint = tuple[int, int, int, int, int]


def fingerprint(stat: os.stat_result) -> Fingerprint:
    return (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev)


class StatMemo:
    """digest -> the fingerprint its blob had when it last hashed to that digest."""

    def __init__(self, root: Path) -> None:
        self.path = Path(root) / MEMO_NAME
        self._entries: dict[str, Fingerprint] | None = None
        self._dirty = False

    def _load(self) -> dict[str, Fingerprint]:
        if self._entries is None:
            self._entries = _read(self.path)
        return self._entries

    def unchanged(self, digest: str, stat: os.stat_result) -> bool:
        """True when the blob's file has the fingerprint recorded for ``digest``."""
        return self._load().get(digest) == fingerprint(stat)

    def remember(self, digest: str, stat: os.stat_result) -> None:
        """Record the fingerprint of a blob that just hashed to ``digest`` (unless racy)."""
        if time.time_ns() - max(stat.st_mtime_ns, stat.st_ctime_ns) < RACY_S * 1e9:
            return
        entries = self._load()
        if entries.get(digest) != fingerprint(stat):
            entries[digest] = fingerprint(stat)
            self._dirty = True

    def forget(self, digest: str) -> None:
        if self._load().pop(digest, None) is not None:
            self._dirty = True

    def save(self, exists: Callable[[str], bool]) -> None:
        """Write the memo when it changed, keeping only digests whose blob ``exists``."""
        if not self._dirty or self._entries is None:
            return
        kept = {d: list(f) for d, f in sorted(self._entries.items()) if exists(d)}
        atomic_write_bytes(self.path, json.dumps(kept, separators=(",", ":")).encode())
        self._dirty = False


def _read(path: Path) -> dict[str, Fingerprint]:
    """The memo's entries; empty (everything is hashed) when it is absent or malformed."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_MEMO_BYTES + 1)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        log.warning("cache stat memo %s unreadable (%s): hashing every blob", path, exc)
        return {}
    try:
        if len(data) > MAX_MEMO_BYTES:
            raise ValueError(f"larger than {MAX_MEMO_BYTES} bytes")
        raw = json.loads(data)
        if not isinstance(raw, dict):
            raise ValueError("not an object")
        entries: dict[str, Fingerprint] = {}
        for digest, values in raw.items():
            if not (_DIGEST.match(digest) and isinstance(values, list) and len(values) == 5
                    and all(type(v) is int and v >= 0 for v in values)):
                raise ValueError(f"bad entry {digest[:16]!r}")
            entries[digest] = tuple(values)  # type: ignore[assignment]
        return entries
    except ValueError as exc:   # JSONDecodeError is a ValueError
        log.warning("cache stat memo %s is malformed (%s): ignored, hashing every blob",
                    path, str(exc)[:120])
        return {}
