"""The content-addressed store: keys, atomic writes, digest checks, eviction."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.artifact import sha256_file
from pipeline.cache import Cache, CorruptEntry, cache_key, canonical_json
from pipeline.files import atomic_write_bytes

KEY = "ab" * 32


def test_canonical_json_ignores_key_order() -> None:
    assert canonical_json({"b": 1, "a": [1, 2]}) == canonical_json({"a": [1, 2], "b": 1})


def test_cache_key_changes_with_each_component() -> None:
    base = dict(stage="s", version=1, config={"x": 1}, input_digests={"i": "d"},
                tools={"torch": "2"})
    key = cache_key(**base)
    assert key == cache_key(**base)
    for field, value in [("stage", "t"), ("version", 2), ("config", {"x": 2}),
                         ("input_digests", {"i": "e"}), ("tools", {"torch": "3"})]:
        assert cache_key(**{**base, field: value}) != key, field


def test_put_file_stores_by_content(tmp_path: Path) -> None:
    cache = Cache(tmp_path / "c")
    src = tmp_path / "a.bin"
    src.write_bytes(b"hello")
    art = cache.put_file(src, "blob")
    assert art.digest == sha256_file(src)
    assert art.path == cache.object_path(art.digest) and art.path.read_bytes() == b"hello"
    assert cache.get(art.digest, "blob").path == art.path


def test_corrupt_object_is_evicted_on_read(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    src = tmp_path / "a.bin"
    src.write_bytes(b"hello")
    art = cache.put_file(src, "blob")
    art.path.write_bytes(b"tampered")
    with pytest.raises(CorruptEntry, match="evicted"):
        cache.get(art.digest, "blob")
    assert not art.path.exists()


def test_lookup_miss_hit_and_corrupt_record(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    src = tmp_path / "a.bin"
    src.write_bytes(b"payload")
    art = cache.put_file(src, "blob")
    assert cache.lookup(KEY) is None
    cache.store(KEY, "stage", {"out": art}, {"parity": {"verdict": "pass"}})
    outputs, record = cache.lookup(KEY)
    assert outputs["out"].digest == art.digest and record["parity"]["verdict"] == "pass"
    cache.record_path(KEY).write_text("{not json")
    assert cache.lookup(KEY) is None
    assert not cache.record_path(KEY).exists()


def test_record_whose_blob_was_corrupted_is_a_miss(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    src = tmp_path / "a.bin"
    src.write_bytes(b"payload")
    art = cache.put_file(src, "blob")
    cache.store(KEY, "stage", {"out": art}, {})
    art.path.write_bytes(b"bit rot")
    assert cache.lookup(KEY) is None
    assert not cache.record_path(KEY).exists()


def test_atomic_write_leaves_no_temp_on_error(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    with pytest.raises(TypeError):
        atomic_write_bytes(target, object())  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
    atomic_write_bytes(target, json.dumps({"a": 1}).encode())
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


# -- hostile records and paths (issue: crafted digests must never name a file to delete) ------

def _victim(tmp_path: Path) -> Path:
    victim = tmp_path / "outside" / "precious.txt"
    victim.parent.mkdir()
    victim.write_text("keep me")
    return victim


@pytest.mark.parametrize("digest", ["../../outside/precious.txt", "/etc/passwd",
                                    "AB" * 32, "ab" * 31, 42])
def test_a_crafted_digest_in_a_record_is_evicted_and_touches_nothing(tmp_path: Path,
                                                                     digest) -> None:
    cache = Cache(tmp_path / "cache")
    victim = _victim(tmp_path)
    record = {"stage": "s", "key": KEY, "record": {},
              "outputs": {"out": {"digest": digest, "kind": "blob", "meta": {}}}}
    atomic_write_bytes(cache.record_path(KEY), json.dumps(record).encode())
    assert cache.lookup(KEY, ("out",)) is None
    assert not cache.record_path(KEY).exists()
    assert victim.read_text() == "keep me"


def test_object_paths_are_checked_before_use(tmp_path: Path) -> None:
    from pipeline.files import PathOutsideRoot

    cache = Cache(tmp_path / "cache")
    with pytest.raises(PathOutsideRoot, match="not a sha256 digest"):
        cache.object_path("../" * 3 + "x" * 55)
    with pytest.raises(PathOutsideRoot, match="not a sha256 digest"):
        cache.record_path("../../outside/precious")


def test_a_link_out_of_the_cache_is_refused_not_followed(tmp_path: Path) -> None:
    """objects/ab/ replaced by a link to another folder: reading an entry there (whose content
    would not match, and so be evicted) must not delete the file it leads to."""
    from pipeline.files import PathOutsideRoot

    cache = Cache(tmp_path / "cache")
    victim = _victim(tmp_path)
    digest = "ab" * 32
    (victim.parent / digest).write_text("not the blob")
    cache.objects.mkdir(parents=True)
    (cache.objects / "ab").symlink_to(victim.parent, target_is_directory=True)
    with pytest.raises(PathOutsideRoot, match="outside"):
        cache.get(digest, "blob")
    assert (victim.parent / digest).read_text() == "not the blob"
    assert cache.sweep_stale() == 0 and victim.exists()


@pytest.mark.parametrize("broken", [
    {"outputs": []},                                              # a list for a dict
    {"outputs": {"renamed": {"digest": "cd" * 32, "kind": "blob"}}},  # not the stage's output
    {"record": {"parity": ["pass"]}},                             # parity of the wrong type
    {"key": "ef" * 32},                                           # another key's record
])
def test_a_record_of_the_wrong_shape_is_evicted_and_the_stage_reruns(tmp_path: Path,
                                                                     broken, caplog) -> None:
    from pipeline.graph import Graph, OutputFile, Stage, StageOutput

    class Write(Stage):
        stage, tools, outputs = "write", (), ("out",)

        def config(self) -> dict:
            return {}

        def run(self, inputs, workdir: Path) -> StageOutput:
            (workdir / "out.txt").write_text("made")
            return StageOutput({"out": OutputFile(workdir / "out.txt", "text")},
                               {"parity": {"verdict": "pass"}})

    cache, graph = Cache(tmp_path / "cache"), Graph([Write()])
    [first] = graph.run(cache)
    path = cache.record_path(first.key)
    entry = json.loads(path.read_text())
    entry.update(broken)
    path.write_text(json.dumps(entry))
    [again] = graph.run(cache)
    assert again.status == "ran" and again.outputs["out"].path.read_text() == "made"
    assert "is corrupt" in caplog.text
    [third] = graph.run(cache)
    assert third.status == "cached"


def test_stale_temp_files_of_dead_processes_are_swept(tmp_path: Path) -> None:
    import os

    from pipeline.files import sweep_temp

    dead_pid = 4194305   # above Linux's largest pid_max (2**22): no process can have it
    folder = tmp_path / "published"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(b"published")
    (folder / f".model.onnx.{dead_pid}.abc123.tmp").write_bytes(b"half")
    staged = folder / f".Model.mlpackage.{dead_pid}.xyz.tmp"
    staged.mkdir()
    (staged / "half").write_bytes(b"x")
    mine = folder / f".model.onnx.{os.getpid()}.live.tmp"
    mine.write_bytes(b"in progress")
    assert sweep_temp(folder) == 2
    assert sorted(p.name for p in folder.iterdir()) == sorted(["model.onnx", mine.name])
