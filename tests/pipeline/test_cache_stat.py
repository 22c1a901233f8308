"""The stat memo: an unchanged blob is not hashed again; any change, or a doubt, hashes it."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from pipeline import cache as cache_module
from pipeline import cache_stat
from pipeline.cache import Cache, CorruptEntry
from pipeline.cache_stat import MEMO_NAME, StatMemo


@pytest.fixture()
def counted(monkeypatch) -> list[Path]:
    """Every file the cache hashes, in order (the real hash still runs)."""
    hashed: list[Path] = []
    real = cache_module.sha256_file

    def counting(path: Path) -> str:
        hashed.append(Path(path))
        return real(path)

    monkeypatch.setattr(cache_module, "sha256_file", counting)
    monkeypatch.setattr(cache_stat, "RACY_S", 0.0)   # files here are seconds old, not minutes
    return hashed


def _stored(tmp_path: Path, content: bytes = b"weights" * 100) -> tuple[Cache, str]:
    src = tmp_path / "src.bin"
    src.write_bytes(content)
    cache = Cache(tmp_path / "cache")
    return cache, cache.put_file(src, "blob").digest


def test_an_unchanged_blob_is_hashed_once_across_runs(tmp_path: Path, counted) -> None:
    cache, digest = _stored(tmp_path)
    counted.clear()
    cache.get(digest, "blob")
    cache.flush()
    assert len(counted) == 1
    again = Cache(tmp_path / "cache")                    # the next run reads the memo
    again.get(digest, "blob")
    again.get(digest, "blob")
    assert len(counted) == 1


def test_a_changed_blob_is_hashed_and_evicted_even_with_its_mtime_put_back(
        tmp_path: Path, counted) -> None:
    cache, digest = _stored(tmp_path)
    cache.get(digest, "blob")
    cache.flush()
    path = cache.object_path(digest)
    before = path.stat()
    path.write_bytes(b"W" + path.read_bytes()[1:])          # same size
    assert path.stat().st_size == before.st_size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))   # ctime still moves
    counted.clear()
    with pytest.raises(CorruptEntry, match="evicted"):
        Cache(tmp_path / "cache").get(digest, "blob")
    assert counted == [path] and not path.exists()


def test_a_file_changed_within_the_racy_window_is_never_remembered(tmp_path: Path,
                                                                   monkeypatch) -> None:
    cache, digest = _stored(tmp_path)
    monkeypatch.setattr(cache_stat, "RACY_S", 3600.0)
    cache.get(digest, "blob")
    cache.flush()
    assert not (tmp_path / "cache" / MEMO_NAME).exists()


def test_read_only_callers_always_hash(tmp_path: Path, counted) -> None:
    cache, digest = _stored(tmp_path)
    cache.get(digest, "blob")
    counted.clear()
    cache.get(digest, "blob", evict=False)
    assert len(counted) == 1


@pytest.mark.parametrize("content", [b"not json", b"[1, 2]", b'{"abc": [1, 2, 3, 4, 5]}',
                                     json.dumps({"a" * 64: [1, 2, 3, 4, "5"]}).encode(),
                                     json.dumps({"a" * 64: [1, 2, 3, 4, -5]}).encode(),
                                     b" " * (cache_stat.MAX_MEMO_BYTES + 1)])
def test_a_malformed_or_oversized_memo_is_ignored_and_everything_hashed(
        tmp_path: Path, counted, caplog, content: bytes) -> None:
    cache, digest = _stored(tmp_path)
    cache.get(digest, "blob")
    cache.flush()
    (tmp_path / "cache" / MEMO_NAME).write_bytes(content)
    counted.clear()
    with caplog.at_level(logging.WARNING, logger="pipeline.cache_stat"):
        Cache(tmp_path / "cache").get(digest, "blob")
    assert len(counted) == 1
    assert "malformed" in caplog.text


def test_save_keeps_only_blobs_that_still_exist_and_writes_only_on_change(
        tmp_path: Path, counted) -> None:
    cache, digest = _stored(tmp_path)
    memo = StatMemo(tmp_path / "cache")
    stat = cache.object_path(digest).stat()
    memo.remember(digest, stat)
    memo.remember("b" * 64, stat)
    memo.save(lambda d: d == digest)
    path = tmp_path / "cache" / MEMO_NAME
    assert list(json.loads(path.read_text())) == [digest]
    stamp = path.stat().st_mtime_ns
    memo.remember(digest, stat)                           # nothing new
    memo.save(lambda d: True)
    assert path.stat().st_mtime_ns == stamp
