"""Artifacts: files identified by the sha256 of their bytes."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Artifact:
    """One stage output: ``kind`` (``weights``, ``pt2``, ``onnx``, ...), content digest and location."""

    kind: str
    digest: str
    path: Path
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        return self.path.stat().st_size

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "sha256": self.digest, "bytes": self.bytes}
