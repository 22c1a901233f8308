"""The content-addressed store: keys, atomic writes, digest checks, eviction."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.artifact import sha256_file
from pipeline.cache import Cache, CorruptEntry, atomic_write_bytes, cache_key, canonical_json


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
    assert cache.lookup("k") is None
    cache.store("k", "stage", {"out": art}, {"parity": {"verdict": "pass"}})
    outputs, record = cache.lookup("k")
    assert outputs["out"].digest == art.digest and record["parity"]["verdict"] == "pass"
    cache.record_path("k").write_text("{not json")
    assert cache.lookup("k") is None
    assert not cache.record_path("k").exists()


def test_record_whose_blob_was_corrupted_is_a_miss(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    src = tmp_path / "a.bin"
    src.write_bytes(b"payload")
    art = cache.put_file(src, "blob")
    cache.store("k", "stage", {"out": art}, {})
    art.path.write_bytes(b"bit rot")
    assert cache.lookup("k") is None
    assert not cache.record_path("k").exists()


def test_atomic_write_leaves_no_temp_on_error(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    with pytest.raises(TypeError):
        atomic_write_bytes(target, object())  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
    atomic_write_bytes(target, json.dumps({"a": 1}).encode())
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]
