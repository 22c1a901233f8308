"""Content-addressed store of stage outputs, in the manner of DVC's run cache and Hamilton's keys.

Layout under the cache root::

    objects/ab/<sha256>     blobs, each stored once by content
    runs/<key>.json         one record per stage execution: output digests plus its parity/latency

Every write goes to a temp file in the same directory and is renamed into place, so a reader never
sees half a file. Digests are verified on read; a corrupt entry is evicted with a warning and the
caller recomputes it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.artifact import Artifact, sha256_file

log = logging.getLogger(__name__)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: the same value always gives the same text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def cache_key(stage: str, version: int, config: Any, input_digests: dict[str, str],
              tools: dict[str, str]) -> str:
    """Key of a stage execution: sha256 of everything that can change its outputs."""
    payload = {"stage": stage, "version": version, "config": config,
               "inputs": dict(sorted(input_digests.items())), "tools": dict(sorted(tools.items()))}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_copy(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` through a temp file and a rename."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class CorruptEntry(Exception):
    """A cached blob or record does not match its digest."""


class Cache:
    """Blob store plus run records under one root directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.runs = self.root / "runs"

    # -- blobs ---------------------------------------------------------------------------------
    def object_path(self, digest: str) -> Path:
        return self.objects / digest[:2] / digest

    def put_file(self, src: Path, kind: str, meta: dict[str, Any] | None = None) -> Artifact:
        """Store a file by content and return the stored artifact."""
        digest = sha256_file(src)
        dst = self.object_path(digest)
        if not dst.exists():
            atomic_copy(src, dst)
        return Artifact(kind=kind, digest=digest, path=dst, meta=dict(meta or {}))

    def get(self, digest: str, kind: str, meta: dict[str, Any] | None = None) -> Artifact:
        """Return a stored blob after checking its digest; raise CorruptEntry (and evict) if wrong."""
        path = self.object_path(digest)
        if not path.is_file():
            raise CorruptEntry(f"object {digest[:12]} is missing")
        actual = sha256_file(path)
        if actual != digest:
            path.unlink(missing_ok=True)
            raise CorruptEntry(f"object {digest[:12]} has digest {actual[:12]}; evicted")
        return Artifact(kind=kind, digest=digest, path=path, meta=dict(meta or {}))

    # -- run records ---------------------------------------------------------------------------
    def record_path(self, key: str) -> Path:
        return self.runs / f"{key}.json"

    def lookup(self, key: str) -> tuple[dict[str, Artifact], dict[str, Any]] | None:
        """Outputs and record of a cached execution, or None on a miss or a corrupt entry."""
        path = self.record_path(key)
        if not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text())
            outputs = {name: self.get(o["digest"], o["kind"], o.get("meta"))
                       for name, o in entry["outputs"].items()}
        except (CorruptEntry, KeyError, TypeError, json.JSONDecodeError) as exc:
            log.warning("cache entry %s for stage %s is corrupt (%s): evicted, recomputing",
                        key[:12], path.name, exc)
            path.unlink(missing_ok=True)
            return None
        return outputs, entry.get("record", {})

    def store(self, key: str, stage: str, outputs: dict[str, Artifact],
              record: dict[str, Any]) -> None:
        """Write the run record last, so a failure before this leaves no cache entry."""
        entry = {
            "stage": stage,
            "key": key,
            "outputs": {name: {"digest": a.digest, "kind": a.kind, "meta": dict(a.meta)}
                        for name, a in outputs.items()},
            "record": record,
        }
        atomic_write_bytes(self.record_path(key), json.dumps(entry, indent=1, default=str).encode())

    def sweep_stale(self, max_age_s: float = 6 * 3600) -> int:
        """Delete work dirs and temp files left by a process that was killed; returns the count.

        Only entries older than ``max_age_s`` go, so a concurrent run's files are left alone.
        """
        if not self.root.is_dir():
            return 0
        now = time.time()
        stale = [p for p in self.root.glob(".work-*") if now - p.stat().st_mtime >= max_age_s]
        stale += [p for p in self.root.rglob(".*.tmp") if now - p.stat().st_mtime >= max_age_s]
        for path in stale:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        return len(stale)

    def evict(self, key: str) -> None:
        self.record_path(key).unlink(missing_ok=True)
