"""``mobile-export verify-release``: prove a release is complete, untouched and signed.

Reads the release at a URL (or folder) into a temp folder and checks, in this order: the
``COMPLETE`` marker (without it the release is absent: an unfinished upload), the manifest's
shape and its own digests, the signature over every file (with ``--public-key``), then each
file against the manifest. Every problem is one line naming the file: tampered, missing,
extra, edited after signing, wrong key, no signature. Exit 0 only when nothing is wrong.

Names read from the store are hostile: only plain relative paths are downloaded, a local link
is reported and never followed, and the release's size is capped.
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.artifact import sha256_file
from pipeline.errors import UserInputError
from pipeline.release.collect import MAX_FILE_BYTES
from pipeline.release.manifest import (COMPLETE, MANIFEST, MAX_MANIFEST_BYTES, SIGNATURE,
                                       UNLISTED, Manifest, parse_manifest, release_digest)
from pipeline.release.signing import signature_problems
from pipeline.release.storage import Store, safe_relpath

#: the most a release may hold in all (a few full-size models and their reports)
MAX_RELEASE_BYTES = 32 << 30
#: the COMPLETE marker is two digests
MAX_MARKER_BYTES = 4 << 10


@dataclass
class Verified:
    url: str
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    manifest: Manifest | None = None
    files: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


def _download(release: Store, folder: Path, found: Verified) -> dict[str, Path]:
    """The release's files in ``folder``; unsafe names and links become problems."""
    listing = release.files()
    if sum(listing.values()) > MAX_RELEASE_BYTES:
        raise UserInputError(f"{release.url} holds {sum(listing.values()):,} bytes, over the "
                             f"{MAX_RELEASE_BYTES:,} a release may take")
    local: dict[str, Path] = {}
    for rel, size in sorted(listing.items()):
        try:
            safe_relpath(rel)
        except UserInputError:
            found.problems.append(f"{rel!r}: extra: a name that leads out of the release")
            continue
        if release.is_link(rel):
            found.problems.append(f"{rel}: extra: a link (not followed)")
            continue
        if size > MAX_FILE_BYTES:
            found.problems.append(f"{rel}: {size:,} bytes, over the {MAX_FILE_BYTES:,} a file "
                                  "may take")
            continue
        path = folder / rel
        release.get_file(rel, path)
        local[rel] = path
    return local


def _check_marker(local: dict[str, Path], manifest: Manifest, found: Verified) -> None:
    import hashlib

    try:
        if local[COMPLETE].stat().st_size > MAX_MARKER_BYTES:
            raise ValueError("too large")
        marker = json.loads(local[COMPLETE].read_bytes())
        said = (marker["release_sha256"], marker["manifest_sha256"])
    except (ValueError, KeyError, TypeError):
        found.problems.append(f"{COMPLETE}: not a release marker")
        return
    if said != (manifest.release_sha256, hashlib.sha256(local[MANIFEST].read_bytes()).hexdigest()):
        found.problems.append(f"{MANIFEST}: edited after publishing (the {COMPLETE} marker names "
                              "another manifest)")


def _check_files(local: dict[str, Path], digests: dict[str, str], manifest: Manifest,
                 found: Verified) -> set[str]:
    """Each file against the manifest; returns the names found wrong."""
    listed = {e.path: e for e in manifest.files}
    wrong: set[str] = set()
    for rel, entry in sorted(listed.items()):
        if rel not in local:
            found.problems.append(f"{rel}: missing (listed in the manifest)")
        elif local[rel].stat().st_size != entry.bytes or digests[rel] != entry.sha256:
            found.problems.append(f"{rel}: tampered (its sha256 differs from the manifest's)")
        else:
            continue
        wrong.add(rel)
    for rel in sorted(set(local) - set(listed) - set(UNLISTED)):
        found.problems.append(f"{rel}: extra (not in the manifest)")
        wrong.add(rel)
    return wrong


def verify_release(url: str, public_key: Path | None = None, *, endpoint_url: str | None = None,
                   require_verified: bool = False) -> Verified:
    """Check the release at ``url`` (see the module doc); problems are in the result."""
    start = time.perf_counter()
    release = Store(url, endpoint_url)
    found = Verified(release.url)
    if not release.exists(COMPLETE):
        found.problems.append(f"{COMPLETE}: missing: no complete release at {release.url} (an "
                              "upload that did not finish, or a wrong URL); publish it again")
        return found
    with tempfile.TemporaryDirectory(prefix="mobile-export-verify-") as tmp:
        folder = Path(tmp) / "release"
        folder.mkdir()
        local = _download(release, folder, found)
        if MANIFEST not in local:
            found.problems.append(f"{MANIFEST}: missing")
            return found
        if local[MANIFEST].stat().st_size > MAX_MANIFEST_BYTES:
            found.problems.append(f"{MANIFEST}: over the {MAX_MANIFEST_BYTES:,} bytes a "
                                  "manifest may take")
            return found
        try:
            manifest = parse_manifest(local[MANIFEST].read_bytes(), f"{release.url}/{MANIFEST}")
        except UserInputError as exc:
            found.problems.append(f"{MANIFEST}: {exc}")
            return found
        found.manifest, found.files = manifest, len(manifest.files)
        if release_digest(manifest.files) != manifest.release_sha256:
            found.problems.append(f"{MANIFEST}: edited (its release_sha256 does not match its "
                                  "file list)")
        if COMPLETE in local:
            _check_marker(local, manifest, found)
        digests = {rel: sha256_file(path) for rel, path in local.items()}   # each read once
        wrong = _check_files(local, digests, manifest, found)
        if public_key is not None:
            for rel, problem in signature_problems(folder, Path(public_key), digests):
                if rel not in wrong:           # the same file already has its line
                    found.problems.append(f"{rel}: {problem}")
        elif manifest.signed:
            found.notes.append(f"signature not checked: pass --public-key to check {SIGNATURE}")
        else:
            found.notes.append("the release is unsigned")
        trusted = not any(p.startswith(f"{MANIFEST}:") for p in found.problems)
        if not manifest.verified and trusted:
            line = (f"published with --allow-unverified: nodes "
                    f"{', '.join(manifest.unverified_nodes) or '(none named)'} did not pass "
                    "their gates")
            (found.problems if require_verified else found.notes).append(
                f"{MANIFEST}: {line}" if require_verified else line)
    found.seconds = time.perf_counter() - start
    return found
