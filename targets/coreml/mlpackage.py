"""`.mlpackage` folders: safe reading, a canonical form, and a deterministic single-file archive.

An ML Program package is a folder::

    Model.mlpackage/
      Manifest.json                              item identifiers -> paths under Data/
      Data/com.apple.CoreML/model.mlmodel        the protobuf spec (program + description)
      Data/com.apple.CoreML/weights/weight.bin   MIL blob storage (weights)

The cache stores *files*, so a package travels as a zip. coremltools writes a fresh random UUID
for every manifest item and serialises protobuf maps in arbitrary order, so two conversions of
the same program differ byte for byte. The **canonical form** fixes both:

* ``model.mlmodel`` is re-serialised with ``SerializeToString(deterministic=True)`` (sorted maps);
* ``Manifest.json`` gets identifiers derived from each item's path (``uuid5``), sorted keys and
  fixed indentation;
* every other file is kept byte for byte.

The **archive** holds the canonical files, sorted by name, stored uncompressed (no dependence on
the zlib version), with a fixed timestamp (1980-01-01) and permissions (0644). The **canonical
digest** of a package is the sha256 of that archive's bytes, so a package folder, its archive in
the cache, and its published copy all have the same digest (:func:`artifact_digest`).

Reading is refused before any file other than ``Manifest.json`` is opened when the manifest (or
a zip member name) names an absolute path or a path that leaves the package (``..``, or a link
that resolves outside it).
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import io
import json
import os
import shutil
import sys
import tempfile
import types
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Iterator

from pipeline.errors import UserInputError
from pipeline.files import temp_dir

MANIFEST = "Manifest.json"
DATA = "Data"
SUFFIX = ".mlpackage"
MODEL_PATH_PREFIX = "@model_path/"
#: 1980-01-01 00:00:00, the earliest time a zip entry can hold.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_ID_NAMESPACE = uuid.UUID("6f1d3c52-5e2a-4c1b-9a57-2b8d3f0e7a11")


class PackageError(UserInputError):
    """An ``.mlpackage`` (or its archive) is malformed or unsafe to read."""


# -- protobuf definitions without importing coremltools (it imports TensorFlow) -----------------


_PROTO_PACKAGE = "_mobile_export_coreml_proto"


def proto_modules() -> types.SimpleNamespace:
    """coremltools' generated ``Model_pb2`` and ``MIL_pb2``, loaded without running
    ``coremltools/__init__.py`` (which imports TensorFlow: seconds and gigabytes).

    The ``proto`` folder of the installed coremltools is mounted as a private package; when
    coremltools itself is already imported, its own modules are used.
    """
    if "coremltools.proto.MIL_pb2" in sys.modules and "coremltools.proto.Model_pb2" in sys.modules:
        return types.SimpleNamespace(Model_pb2=sys.modules["coremltools.proto.Model_pb2"],
                                     MIL_pb2=sys.modules["coremltools.proto.MIL_pb2"])
    if _PROTO_PACKAGE not in sys.modules:
        spec = importlib.util.find_spec("coremltools")
        if spec is None or not spec.submodule_search_locations:
            raise PackageError("reading an .mlpackage needs coremltools' protobuf definitions, "
                               "but coremltools is not installed; run `make setup`")
        folder = Path(list(spec.submodule_search_locations)[0]) / "proto"
        package = types.ModuleType(_PROTO_PACKAGE)
        package.__path__ = [str(folder)]  # type: ignore[attr-defined]
        sys.modules[_PROTO_PACKAGE] = package
    return types.SimpleNamespace(
        Model_pb2=importlib.import_module(f"{_PROTO_PACKAGE}.Model_pb2"),
        MIL_pb2=importlib.import_module(f"{_PROTO_PACKAGE}.MIL_pb2"))


# -- path safety -------------------------------------------------------------------------------


def unsafe_reason(relative: str) -> str | None:
    """Why ``relative`` (a path from a manifest or a zip) may not be used, or None if it is safe."""
    if not relative or "\0" in relative:
        return "is empty or contains a NUL byte"
    posix, windows = PurePosixPath(relative), PureWindowsPath(relative)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or relative.startswith(("/", "\\")):
        return "is absolute"
    if ".." in posix.parts or ".." in windows.parts:
        return "leaves the package ('..')"
    return None


def _inside(root: Path, path: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class PackageLayout:
    """Where the pieces of a checked package are."""

    root: Path
    model: Path          # Data/<...>/model.mlmodel
    weights_dir: Path    # Data/<...>/weights (may not exist for a weightless model)
    manifest: dict


def check_manifest(package: Path) -> PackageLayout:
    """Validate ``Manifest.json`` and the paths it names; nothing else is opened.

    Raises :class:`PackageError` naming the offending item and path.
    """
    package = Path(package)
    if not package.is_dir():
        raise PackageError(f"{package} is not an .mlpackage folder")
    manifest_path = package / MANIFEST
    if not manifest_path.is_file() or manifest_path.is_symlink():
        raise PackageError(f"{package.name}: no {MANIFEST} (an .mlpackage folder has one at its top)")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackageError(f"{package.name}/{MANIFEST} is not valid JSON ({exc})") from None
    entries = manifest.get("itemInfoEntries") if isinstance(manifest, dict) else None
    if not isinstance(entries, dict) or not entries:
        raise PackageError(f"{package.name}/{MANIFEST} has no itemInfoEntries")
    data = package / DATA
    for key, entry in entries.items():
        path = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(path, str):
            raise PackageError(f"{package.name}/{MANIFEST}: item {key!r} has no path")
        reason = unsafe_reason(path)
        if reason:
            raise PackageError(f"{package.name}/{MANIFEST}: item {key!r} names path {path!r}, "
                               f"which {reason}; refusing to read this package")
        if not _inside(data, data / path):
            raise PackageError(f"{package.name}/{MANIFEST}: item {key!r} path {path!r} resolves "
                               "outside the package (a link?); refusing to read this package")
    root_id = manifest.get("rootModelIdentifier")
    if root_id not in entries:
        raise PackageError(f"{package.name}/{MANIFEST}: rootModelIdentifier {root_id!r} is not "
                           "one of its items")
    model = data / entries[root_id]["path"]
    if not model.is_file():
        raise PackageError(f"{package.name}: the root model {entries[root_id]['path']!r} named by "
                           f"{MANIFEST} is missing")
    weights = model.parent / "weights"
    for entry in entries.values():
        if entry.get("name") == "weights":
            weights = data / entry["path"]
    return PackageLayout(package, model, weights, manifest)


def blob_file(layout: PackageLayout, file_name: str) -> Path:
    """The file a ``BlobFileValue.fileName`` (``@model_path/weights/weight.bin``) names, checked."""
    relative = file_name[len(MODEL_PATH_PREFIX):] if file_name.startswith(MODEL_PATH_PREFIX) \
        else file_name
    reason = unsafe_reason(relative)
    if reason:
        raise PackageError(f"{layout.root.name}: the model names weight file {file_name!r}, "
                           f"which {reason}; refusing to read it")
    path = layout.model.parent / relative
    if not _inside(layout.root, path):
        raise PackageError(f"{layout.root.name}: weight file {file_name!r} resolves outside the "
                           "package; refusing to read it")
    if not path.is_file():
        raise PackageError(f"{layout.root.name}: weight file {file_name!r} is missing")
    return path


def load_spec(package: Path):
    """The checked package's ``Model`` protobuf (``Model_pb2.Model``) and its layout."""
    layout = check_manifest(package)
    spec = proto_modules().Model_pb2.Model()
    try:
        spec.ParseFromString(layout.model.read_bytes())
    except Exception as exc:  # DecodeError; the message names nothing useful
        raise PackageError(f"{layout.root.name}: {layout.model.name} is not a Core ML model spec "
                           f"({type(exc).__name__})") from None
    return spec, layout


# -- canonical form ----------------------------------------------------------------------------


def canonical_manifest(manifest: dict) -> bytes:
    """The manifest with path-derived identifiers, sorted keys and fixed layout."""
    entries = manifest["itemInfoEntries"]
    new_ids = {old: str(uuid.uuid5(_ID_NAMESPACE, entry["path"])).upper()
               for old, entry in entries.items()}
    out = dict(manifest)
    out["itemInfoEntries"] = {new_ids[old]: entry for old, entry in entries.items()}
    out["rootModelIdentifier"] = new_ids[manifest["rootModelIdentifier"]]
    return (json.dumps(out, indent=4, sort_keys=True, ensure_ascii=True) + "\n").encode()


def canonical_files(package: Path) -> dict[str, bytes | Path]:
    """Relative posix path -> canonical bytes (manifest, spec) or the file to copy as it is."""
    spec, layout = load_spec(package)
    root = layout.root
    files: dict[str, bytes | Path] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if path.is_symlink():
            raise PackageError(f"{root.name}: {relative} is a symbolic link; a package holds "
                               "plain files only")
        if path.is_file():
            files[relative] = path
    files[MANIFEST] = canonical_manifest(layout.manifest)
    files[layout.model.relative_to(root).as_posix()] = spec.SerializeToString(deterministic=True)
    return files


def normalise(package: Path) -> None:
    """Rewrite ``package`` in place in its canonical form (idempotent)."""
    for relative, content in canonical_files(package).items():
        if isinstance(content, bytes):
            (Path(package) / relative).write_bytes(content)


def _zip_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
    info.compress_type = zipfile.ZIP_STORED
    info.create_system = 3                      # unix, so external_attr means mode bits
    info.external_attr = (0o100644 & 0xFFFF) << 16
    return info


def pack_bytes(package: Path) -> bytes:
    """The deterministic archive of ``package``'s canonical form."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", allowZip64=True) as archive:
        for relative, content in sorted(canonical_files(package).items()):
            data = content if isinstance(content, bytes) else content.read_bytes()
            archive.writestr(_zip_info(relative), data)
    return buffer.getvalue()


def pack(package: Path, zip_path: Path) -> str:
    """Write the deterministic archive of ``package`` to ``zip_path``; returns its sha256."""
    data = pack_bytes(package)
    Path(zip_path).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _check_members(zip_path: Path, archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    members = archive.infolist()
    for info in members:
        reason = unsafe_reason(info.filename.rstrip("/"))
        if reason:
            raise PackageError(f"{Path(zip_path).name}: archive member {info.filename!r} {reason}; "
                               "refusing to extract it")
        mode = (info.external_attr >> 16) & 0o170000
        if mode == 0o120000:
            raise PackageError(f"{Path(zip_path).name}: archive member {info.filename!r} is a "
                               "symbolic link; refusing to extract it")
    if MANIFEST not in {m.filename for m in members}:
        raise PackageError(f"{Path(zip_path).name} holds no {MANIFEST}: not an .mlpackage archive")
    return members


def unpack(zip_path: Path, dest: Path) -> Path:
    """Extract an archive made by :func:`pack` into the new folder ``dest`` (member names are
    checked before anything is written), then check the manifest. Returns ``dest``."""
    try:
        archive = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile:
        raise PackageError(f"{Path(zip_path).name} is not a zip archive of an .mlpackage") from None
    with archive:
        members = _check_members(zip_path, archive)
        dest.mkdir(parents=True, exist_ok=False)
        for info in members:
            target = dest / info.filename
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
    check_manifest(dest)
    return dest


def is_archive(path: Path) -> bool:
    return Path(path).is_file() and zipfile.is_zipfile(path)


@contextlib.contextmanager
def opened(path: Path) -> Iterator[Path]:
    """A package folder for ``path`` (a folder, or an archive extracted to a temp folder)."""
    path = Path(path)
    if path.is_dir():
        check_manifest(path)
        yield path
        return
    if not path.is_file():
        raise PackageError(f"{path} does not exist")
    with tempfile.TemporaryDirectory(prefix="mobile-export-mlpackage-") as tmp:
        yield unpack(path, Path(tmp) / "Model.mlpackage")


def artifact_digest(path: Path) -> str:
    """Canonical digest of a package folder or archive: sha256 of its deterministic archive.

    For an archive made by :func:`pack` (e.g. a cache object) this is the sha256 of its bytes.
    """
    path = Path(path)
    if path.is_dir():
        return hashlib.sha256(pack_bytes(path)).hexdigest()
    with opened(path) as folder:
        return hashlib.sha256(pack_bytes(folder)).hexdigest()


def replace_dir(src: Path, dst: Path) -> None:
    """Move the folder ``src`` to ``dst``, replacing an existing ``dst``.

    Two renames: the old folder is moved aside (same parent, so the rename is atomic), the new one
    takes its name, the old one is deleted. A reader sees the old or the new package, or — for
    the instant between the renames — none, never a half-written one.
    """
    dst = Path(dst)
    old = None
    if dst.exists():
        old = temp_dir(dst.parent, dst.name, "old-")
        os.replace(dst, old / dst.name)
    try:
        os.replace(src, dst)
    except BaseException:
        if old is not None:
            os.replace(old / dst.name, dst)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
