"""``mobile-export publish``: one run's verified artifacts as a signed release at ``URL/NAME/V/``.

Nothing is written in place. The release is assembled and signed in a local temp folder,
uploaded under ``URL/NAME/.staging/V-<digest>/``, then moved to ``URL/NAME/V/`` (a rename on a
local disk; server-side copies on an object store) and completed by a last ``COMPLETE`` marker.
Readers (``verify-release``) treat a release without the marker as absent, so an upload killed
at any point never looks published, and publishing again finishes it. Publishing the same
content again is a no-op; different content under an existing version is refused.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import UserInputError
from pipeline.artifact import sha256_file
from pipeline.files import remove
from pipeline.release.collect import collect, unpassed_nodes
from pipeline.release.manifest import (COMPLETE, MANIFEST, MAX_MANIFEST_BYTES, Manifest,
                                       complete_marker, parse_manifest, release_digest)
from pipeline.release.signing import check_private_key, sign
from pipeline.release.storage import Store

STAGING = ".staging"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


@dataclass
class Published:
    url: str
    manifest: Manifest
    files: int
    bytes: int
    seconds: float
    already: bool   # the same release was already complete there: nothing was written


def check_name(value: str, what: str) -> str:
    if not _NAME.fullmatch(value):
        raise UserInputError(f"{what} {value!r}: use letters, digits and . _ + - (at most 128, "
                             "not starting with a dot)")
    return value


def _manifest(report: dict, files: list, name: str | None, version: str | None,
              signed: bool) -> Manifest:
    entries = [f.entry for f in files]
    digest = release_digest(entries)
    machine = dict(report["machine"])
    toolchain = {str(k): str(v) for k, v in (machine.pop("versions", None) or {}).items()}
    run = report["run"]
    unverified = sorted(n["name"] for n in unpassed_nodes(report))
    return Manifest(name=check_name(name or str(report["model"]["label"]), "--name"),
                    version=check_name(version or digest[:12], "--version"),
                    release_sha256=digest, verified=not unverified, unverified_nodes=unverified,
                    signed=signed, tool=report.get("tool") or {}, model=report["model"],
                    reference_sha256=(run.get("reference") or {}).get("sha256"),
                    config=run.get("config") or {}, toolchain=toolchain, machine=machine,
                    run={k: run.get(k) for k in ("finished", "content_sha256")},
                    files=sorted(entries, key=lambda e: e.path))


def _stage(folder: Path, files: list, manifest: Manifest, key: Path | None) -> bytes:
    for item in files:
        dst = folder / item.entry.path
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(item.source, dst)
        if sha256_file(dst) != item.entry.sha256:   # what is uploaded is what was checked
            raise UserInputError(f"{item.source} changed while it was being published; "
                                 "publish again once nothing writes to it")
    data = manifest.to_bytes()
    (folder / MANIFEST).write_bytes(data)
    if key is not None:
        sign(folder, key)
    return data


def _existing(release: Store, manifest: Manifest) -> bool:
    """True when ``release`` is already this release, complete; refuse other content there."""
    if not release.exists(COMPLETE):
        return False
    try:
        there = parse_manifest(release.read_bytes(MANIFEST, MAX_MANIFEST_BYTES), release.url)
    except (UserInputError, FileNotFoundError):
        there = None
    if there is None or there.release_sha256 != manifest.release_sha256:
        raise UserInputError(f"{release.url} is already published with other content; a "
                             "version is never overwritten: publish under a new --version")
    return True


def _promote(store: Store, staging: str, final: str, names: list[str]) -> None:
    """Move the uploaded files from the staging prefix to the release's own."""
    if store.local:
        src, dst = Path(store.root) / staging, Path(store.root) / final
        remove(dst)                      # an earlier, unfinished upload: absent to readers
        os.replace(src, dst)
        try:
            src.parent.rmdir()              # the staging folder, when no other upload uses it
        except OSError:
            pass
        return
    release = store.child(final)
    for leftover in sorted(set(release.files()) - set(names)):
        release.remove(leftover)
    for rel in names:
        store.copy(f"{staging}/{rel}", f"{final}/{rel}")
    store.remove_tree(staging)


def publish_release(run_dir: Path, to: str, *, key: Path | None = None, name: str | None = None,
                    version: str | None = None, allow_unverified: bool = False,
                    artifacts_dir: Path | None = None,
                    endpoint_url: str | None = None) -> Published:
    """Build, sign and upload the release of ``run_dir`` (see the module doc)."""
    start = time.perf_counter()
    if key is not None:
        check_private_key(key)      # before anything is read or written
    store = Store(to, endpoint_url)
    report, files = collect(run_dir, artifacts_dir, allow_unverified)
    manifest = _manifest(report, files, name, version, key is not None)
    final = f"{manifest.name}/{manifest.version}"
    release = store.child(final)
    total = sum(f.entry.bytes for f in files)
    if _existing(release, manifest):
        return Published(release.url, manifest, len(files), total,
                         time.perf_counter() - start, already=True)
    with tempfile.TemporaryDirectory(prefix="mobile-export-release-") as tmp:
        folder = Path(tmp) / manifest.version
        folder.mkdir()
        manifest_bytes = _stage(folder, files, manifest, key)
        names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        staging = f"{manifest.name}/{STAGING}/{manifest.version}-{manifest.release_sha256[:16]}"
        store.remove_tree(staging)      # what a killed earlier upload of it left
        for rel in names:
            store.child(staging).put_file(folder / rel, rel)
    _promote(store, staging, final, names)
    release.write_bytes(COMPLETE, complete_marker(manifest_bytes, manifest))
    return Published(release.url, manifest, len(files), total, time.perf_counter() - start,
                     already=False)

