"""Content-addressed store of stage outputs, in the manner of DVC's run cache and Hamilton's keys.

Layout under the cache root::

    objects/ab/<sha256>     blobs, each stored once by content
    runs/<key>.json         one record per stage execution: output digests plus its parity/latency

Every write goes to a temp file in the same directory and is renamed into place, so a reader never
sees half a file (pipeline.files). A digest or key is joined into a path only when it is 64 hex
characters, and the path must resolve inside the cache before it is read, written or deleted.
Blobs are verified against their digest on read (skipping the hash when the file's stat
fingerprint is the one it had when it last hashed right: pipeline.cache_stat); a record is validated against the stage's
declared outputs. A corrupt entry is evicted with a warning and the caller recomputes it.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.artifact import Artifact, sha256_file
from pipeline.cache_stat import StatMemo
from pipeline.files import (STALE_AFTER_S, atomic_copy, atomic_write_bytes, check_digest,
                            contained, is_stale, remove, sweep_temp)

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


class CorruptEntry(Exception):
    """A cached blob or record does not match its digest or its stage's outputs."""


class _OutputRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    kind: str = Field(max_length=64)
    meta: dict[str, Any] = {}


class _StageRecord(BaseModel):
    """The parts of a stage's record the engine and the report read (more keys may follow)."""

    model_config = ConfigDict(extra="allow")

    parity: dict[str, Any] | None = None
    latency: dict[str, Any] | None = None
    accuracy: dict[str, Any] | None = None
    info: dict[str, Any] = {}
    warnings: list[str] = []


class _RunEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: str
    key: str
    outputs: dict[str, _OutputRef]
    record: _StageRecord


#: ``.work-<stage>-<pid>-<random>``: a stage's private folder while it runs
_WORK = re.compile(r"\.work-.*-(?P<pid>[0-9]+)-[^-/]+")


class Cache:
    """Blob store plus run records under one root directory."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.objects = self.root / "objects"
        self.runs = self.root / "runs"
        self.memo = StatMemo(self.root)

    # -- blobs ---------------------------------------------------------------------------------
    def object_path(self, digest: str) -> Path:
        """Where the blob ``digest`` lives, checked to lie inside the cache."""
        check_digest(digest)
        return contained(self.objects, self.objects / digest[:2] / digest)

    def put_file(self, src: Path, kind: str, meta: dict[str, Any] | None = None) -> Artifact:
        """Store a file by content and return the stored artifact."""
        digest = sha256_file(src)
        dst = self.object_path(digest)
        if not dst.exists():
            atomic_copy(src, dst)
        return Artifact(kind=kind, digest=digest, path=dst, meta=dict(meta or {}))

    def get(self, digest: str, kind: str, meta: dict[str, Any] | None = None, *,
            evict: bool = True) -> Artifact:
        """Return a stored blob after checking its digest; raise CorruptEntry if it is wrong
        (and delete it, unless ``evict`` is false: a read-only caller such as ``verify``)."""
        path = self.object_path(digest)
        try:
            stat = path.stat()
        except FileNotFoundError:
            stat = None
        if stat is None or not path.is_file():
            raise CorruptEntry(f"object {digest[:12]} is missing")
        if not (evict and self.memo.unchanged(digest, stat)):   # read-only callers always hash
            actual = sha256_file(path)
            if actual != digest:
                self.memo.forget(digest)
                if evict:
                    path.unlink(missing_ok=True)
                raise CorruptEntry(f"object {digest[:12]} has digest {actual[:12]}"
                                   + ("; evicted" if evict else ""))
            self.memo.remember(digest, stat)
        return Artifact(kind=kind, digest=digest, path=path, meta=dict(meta or {}))

    def flush(self) -> None:
        """Write what this run learnt about intact blobs (pipeline.cache_stat); a memo that
        cannot be written costs the next run its hashing, not this run its result."""
        try:
            self.memo.save(lambda digest: self.object_path(digest).is_file())
        except OSError as exc:
            log.warning("cache stat memo not written (%s): the next run hashes every blob", exc)

    # -- run records ---------------------------------------------------------------------------
    def record_path(self, key: str) -> Path:
        check_digest(key, "cache key")
        return contained(self.runs, self.runs / f"{key}.json")

    def lookup(self, key: str, outputs: tuple[str, ...] | None = None
               ) -> tuple[dict[str, Artifact], dict[str, Any]] | None:
        """Outputs and record of a cached execution, or None on a miss or a corrupt entry.

        A record is valid when it is this key's, has the shape the engine writes and names
        exactly ``outputs`` (the stage's declared outputs, when given); otherwise it is
        evicted with a warning and the stage runs again."""
        path = self.record_path(key)
        if not path.is_file():
            return None
        try:
            raw = json.loads(path.read_bytes())
            entry = _RunEntry.model_validate(raw)
            if entry.key != key:
                raise CorruptEntry(f"it is the record of key {entry.key[:12]}")
            if outputs is not None and set(entry.outputs) != set(outputs):
                raise CorruptEntry(f"it names outputs {sorted(entry.outputs)}, the stage "
                                   f"declares {sorted(outputs)}")
            found = {name: self.get(o.digest, o.kind, o.meta)
                     for name, o in entry.outputs.items()}
        except (CorruptEntry, ValidationError, ValueError) as exc:   # ValueError: bad JSON
            reason = str(exc).splitlines()[0][:200]
            log.warning("cache entry %s is corrupt (%s): evicted, recomputing", key[:12], reason)
            path.unlink(missing_ok=True)
            return None
        return found, raw["record"]

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
        atomic_write_bytes(self.record_path(key),
                           json.dumps(entry, indent=1, default=str).encode())

    def work_dir(self, stage: str) -> Path:
        """A private folder for one stage execution, named so :meth:`sweep_stale` can tell
        whether its process is gone."""
        self.root.mkdir(parents=True, exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9_.]", "_", stage)
        return Path(tempfile.mkdtemp(dir=self.root, prefix=f".work-{safe}-{os.getpid()}-"))

    def sweep_stale(self, max_age_s: float = STALE_AFTER_S) -> int:
        """Delete work dirs and temp files left by processes that are gone (killed); returns
        the count. A live process's entries are left alone; entries without a pid (older
        versions) go when older than ``max_age_s``."""
        if not self.root.is_dir():
            return 0
        swept = 0
        for path in self.root.glob(".work-*"):
            match = _WORK.fullmatch(path.name)
            if is_stale(path, int(match["pid"]) if match else None, max_age_s):
                remove(path)
                swept += 1
        folders = [self.root, self.runs, *self.objects.glob("*")]
        for folder in folders:   # never a link: sweeping follows no link out of the cache
            if folder.is_dir() and not folder.is_symlink():
                swept += sweep_temp(folder)
        return swept

    def evict(self, key: str) -> None:
        self.record_path(key).unlink(missing_ok=True)

