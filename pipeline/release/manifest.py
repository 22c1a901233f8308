"""``manifest.json``: what a release holds and why each file can be trusted.

For every file: its path in the release, bytes and sha256, its role (an artifact, the report,
a sidecar) and, for an artifact, the node that made it (target, precision, parity verdict and
reason, accuracy, latency, the runtime the checks ran on and whether that was a proxy for the
deployment runtime). Around them: the reference model's digest, the run's config, the toolchain
versions and the machine. ``release_sha256`` is the digest of the file list alone, so the same
files give the same release whatever else changed; it is also the default version.

The manifest is read back from storage by ``verify-release``: it is validated (unknown keys
refused, every path a plain relative path, every digest 64 hex characters) before use.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.errors import UserInputError
from pipeline.release.storage import safe_relpath

FORMAT = "mobile-export release"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "model.sig"
COMPLETE = "COMPLETE"
#: files of a release that the manifest does not list (it cannot list itself; the signature and
#: the marker are written after it)
UNLISTED = (MANIFEST, SIGNATURE, COMPLETE)
#: a manifest of thousands of files is a few MB
MAX_MANIFEST_BYTES = 16 << 20
_DIGEST = r"^[0-9a-f]{64}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NodeFacts(_Strict):
    """The checks of the node that made an artifact, as its run's report recorded them."""

    name: str
    target: str
    precision: str
    verdict: str
    reason: str | None = None
    artifact_sha256: str = Field(pattern=_DIGEST)
    accuracy: dict[str, Any] | None = None
    latency: dict[str, Any] | None = None
    checked_on: str
    proxy: bool


class FileEntry(_Strict):
    path: str
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=_DIGEST)
    role: Literal["artifact", "report", "sidecar"]
    verified: bool
    node: NodeFacts | None = None

    @field_validator("path")
    @classmethod
    def _plain(cls, value: str) -> str:
        if value in UNLISTED:
            raise ValueError(f"{value} cannot be listed in the manifest")
        return safe_relpath(value)


class Manifest(_Strict):
    format: Literal["mobile-export release"] = FORMAT
    format_version: Literal[1] = FORMAT_VERSION
    name: str
    version: str
    release_sha256: str = Field(pattern=_DIGEST)
    verified: bool
    unverified_nodes: list[str]
    signed: bool
    tool: dict[str, Any]
    model: dict[str, Any]
    reference_sha256: str | None = Field(default=None, pattern=_DIGEST)
    config: dict[str, Any]
    toolchain: dict[str, str]
    machine: dict[str, Any]
    run: dict[str, Any]
    files: list[FileEntry]

    def to_bytes(self) -> bytes:
        """Canonical bytes: the same release gives the same manifest, byte for byte."""
        return (json.dumps(self.model_dump(mode="json"), indent=1, sort_keys=True) + "\n").encode()


def release_digest(files: list[FileEntry]) -> str:
    """sha256 of the sorted (path, bytes, sha256) list: the identity of a release's content."""
    rows = sorted([f.path, f.bytes, f.sha256] for f in files)
    return hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode()).hexdigest()


def parse_manifest(data: bytes, where: str) -> Manifest:
    """A manifest read back from storage, validated; a clear error naming ``where`` otherwise."""
    try:
        manifest = Manifest.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise UserInputError(f"{where}: not a {FORMAT} manifest ({exc.error_count()} problem(s); "
                             f"first at {loc}: {first['msg']})") from None
    if len({f.path for f in manifest.files}) != len(manifest.files):
        raise UserInputError(f"{where}: lists a path twice")
    return manifest


def complete_marker(manifest_bytes: bytes, manifest: Manifest) -> bytes:
    """The ``COMPLETE`` marker, written last: which release and which manifest it completes."""
    return (json.dumps({"release_sha256": manifest.release_sha256,
                        "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
                        "format": FORMAT}, indent=1, sort_keys=True) + "\n").encode()
