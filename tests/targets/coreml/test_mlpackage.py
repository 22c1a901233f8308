"""`.mlpackage` handling: unsafe manifests refused before anything is read, zip-slip refused,
canonical digest independent of coremltools' random UUIDs and protobuf map order, atomic
folder replacement."""
from __future__ import annotations

import hashlib
import json
import os
import uuid
import zipfile
from pathlib import Path

import pytest

from targets.coreml import mlpackage
from pipeline.errors import UserInputError
from targets.coreml.mlpackage import PackageError


def make_package(folder: Path, metadata: dict[str, str] | None = None, reverse: bool = False,
                 weights: bytes = b"\x01\x02" * 40) -> Path:
    """A small package as coremltools lays it out, with random item identifiers."""
    pb = mlpackage.proto_modules()
    spec = pb.Model_pb2.Model()
    spec.specificationVersion = 8
    items = list((metadata or {"a": "1", "b": "2", "c": "3", "d": "4"}).items())
    for key, value in (reversed(items) if reverse else items):
        spec.description.metadata.userDefined[key] = value
    spec.mlProgram.version = 1
    data = folder / "Data" / "com.apple.CoreML"
    (data / "weights").mkdir(parents=True)
    (data / "model.mlmodel").write_bytes(spec.SerializeToString())
    (data / "weights" / "weight.bin").write_bytes(weights)
    ids = [str(uuid.uuid4()).upper() for _ in range(2)]
    entries = {ids[0]: {"author": "com.apple.CoreML", "description": "CoreML Model Specification",
                        "name": "model.mlmodel", "path": "com.apple.CoreML/model.mlmodel"},
               ids[1]: {"author": "com.apple.CoreML", "description": "CoreML Model Weights",
                        "name": "weights", "path": "com.apple.CoreML/weights"}}
    if reverse:
        entries = dict(reversed(list(entries.items())))
    manifest = {"fileFormatVersion": "1.0.0", "itemInfoEntries": entries,
                "rootModelIdentifier": ids[0]}
    (folder / "Manifest.json").write_text(json.dumps(manifest, indent=2 if reverse else None))
    return folder


def _set_path(package: Path, path: str) -> None:
    manifest = json.loads((package / "Manifest.json").read_text())
    root = manifest["rootModelIdentifier"]
    manifest["itemInfoEntries"][root]["path"] = path
    (package / "Manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("path, problem", [
    ("/etc/passwd", "is absolute"),
    ("C:\\Windows\\model.mlmodel", "is absolute"),
    ("../../outside/model.mlmodel", "leaves the package"),
    ("com.apple.CoreML/../../../secret", "leaves the package"),
])
def test_unsafe_manifest_paths_are_refused_before_reading(tmp_path: Path, path: str,
                                                          problem: str, monkeypatch) -> None:
    package = make_package(tmp_path / "Model.mlpackage")
    _set_path(package, path)
    read: list[Path] = []
    original = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda self: read.append(self) or original(self))
    with pytest.raises(PackageError, match=problem) as info:
        mlpackage.load_spec(package)
    assert isinstance(info.value, UserInputError) and "refusing to read" in str(info.value)
    assert read == []                       # neither the model nor the weights were opened


def test_a_link_leaving_the_package_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "model.mlmodel").write_bytes(b"")
    package = make_package(tmp_path / "Model.mlpackage")
    (package / "Data/escape").symlink_to(outside)
    _set_path(package, "escape/model.mlmodel")
    with pytest.raises(PackageError, match="resolves outside the package"):
        mlpackage.check_manifest(package)


def test_weight_file_names_are_checked(tmp_path: Path) -> None:
    layout = mlpackage.check_manifest(make_package(tmp_path / "Model.mlpackage"))
    assert mlpackage.blob_file(layout, "@model_path/weights/weight.bin").is_file()
    with pytest.raises(PackageError, match="leaves the package"):
        mlpackage.blob_file(layout, "@model_path/../../../etc/passwd")
    with pytest.raises(PackageError, match="is absolute"):
        mlpackage.blob_file(layout, "/etc/passwd")


def test_missing_or_broken_manifest(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match="not an .mlpackage folder"):
        mlpackage.check_manifest(tmp_path / "nothing.mlpackage")
    package = make_package(tmp_path / "Model.mlpackage")
    (package / "Manifest.json").write_text("{not json")
    with pytest.raises(PackageError, match="not valid JSON"):
        mlpackage.check_manifest(package)


def test_canonical_digest_ignores_uuids_and_map_order(tmp_path: Path) -> None:
    one = make_package(tmp_path / "one.mlpackage")
    two = make_package(tmp_path / "two.mlpackage", reverse=True)
    assert (one / "Manifest.json").read_bytes() != (two / "Manifest.json").read_bytes()
    assert mlpackage.artifact_digest(one) == mlpackage.artifact_digest(two)
    other = make_package(tmp_path / "three.mlpackage", weights=b"\x01\x03" * 40)
    assert mlpackage.artifact_digest(other) != mlpackage.artifact_digest(one)


def test_archive_is_deterministic_and_round_trips(tmp_path: Path) -> None:
    package = make_package(tmp_path / "Model.mlpackage")
    first = mlpackage.pack(package, tmp_path / "a.zip")
    os.utime(package / "Data/com.apple.CoreML/weights/weight.bin", (0, 2_000_000_000))
    os.chmod(package / "Data/com.apple.CoreML/weights/weight.bin", 0o600)
    assert mlpackage.pack(package, tmp_path / "b.zip") == first
    assert hashlib.sha256((tmp_path / "a.zip").read_bytes()).hexdigest() == first
    with zipfile.ZipFile(tmp_path / "a.zip") as archive:
        infos = archive.infolist()
    assert [i.filename for i in infos] == sorted(i.filename for i in infos)
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {i.compress_type for i in infos} == {zipfile.ZIP_STORED}
    assert {(i.external_attr >> 16) & 0o777 for i in infos} == {0o644}
    restored = mlpackage.unpack(tmp_path / "a.zip", tmp_path / "restored.mlpackage")
    assert mlpackage.artifact_digest(restored) == first
    assert mlpackage.artifact_digest(tmp_path / "a.zip") == first
    mlpackage.normalise(package)
    assert mlpackage.pack(package, tmp_path / "c.zip") == first


@pytest.mark.parametrize("member", ["../evil.txt", "/abs.txt", "Data/../../evil.txt"])
def test_unpack_refuses_members_leaving_the_folder(tmp_path: Path, member: str) -> None:
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("Manifest.json", "{}")
        archive.writestr(member, "x")
    with pytest.raises(PackageError, match="refusing to extract"):
        mlpackage.unpack(bad, tmp_path / "out.mlpackage")
    assert not (tmp_path / "out.mlpackage").exists() and not (tmp_path / "evil.txt").exists()


def test_replace_dir_swaps_an_existing_package(tmp_path: Path) -> None:
    dst = make_package(tmp_path / "Model.mlpackage", weights=b"old")
    new = make_package(tmp_path / ".staged" / "Model.mlpackage", weights=b"new")
    mlpackage.replace_dir(new, dst)
    assert (dst / "Data/com.apple.CoreML/weights/weight.bin").read_bytes() == b"new"
    assert not new.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".staged", "Model.mlpackage"]
