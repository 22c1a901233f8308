"""Storage URLs and names read back from a store: what is refused, and why."""
from __future__ import annotations

import pytest

from pipeline.errors import UserInputError
from pipeline.release.storage import Store, safe_relpath


@pytest.mark.parametrize("name", ["a.tflite", "ios/Model.mlpackage/Data/weight.bin", "x..y"])
def test_plain_relative_paths_pass(name):
    assert safe_relpath(name) == name


@pytest.mark.parametrize("name", ["", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a/",
                                  "a\\..\\b", "a\x00b", "a\nb"])
def test_paths_that_could_leave_the_release_are_refused(name):
    with pytest.raises(UserInputError, match="not a plain relative path"):
        safe_relpath(name)


@pytest.mark.parametrize("url, match", [
    ("s3://AKIA:secret@bucket/x", "credentials or options in the URL are refused"),
    ("s3://bucket/x?endpoint=evil", "credentials or options in the URL are refused"),
    ("ftp://host/x", "storage 'ftp://' is not supported"),
    ("file://host/x", "file:// URL names an absolute path"),
    ("s3://", "name a bucket or folder"),
])
def test_bad_urls_are_one_clear_error(url, match):
    with pytest.raises(UserInputError, match=match):
        Store(url)


def test_a_refused_url_never_echoes_its_secret():
    with pytest.raises(UserInputError) as info:
        Store("s3://AKIAEXAMPLE:wJalrXUtnFEMI@bucket/releases")
    assert "wJalrXUtnFEMI" not in str(info.value) and "AKIAEXAMPLE" not in str(info.value)


def test_local_store_lists_writes_and_reads(tmp_path):
    store = Store(str(tmp_path / "r"))
    store.write_bytes("a/b.txt", b"hello")
    assert store.files() == {"a/b.txt": 5}
    assert store.read_bytes("a/b.txt", 10) == b"hello"
    with pytest.raises(UserInputError, match="over the 4"):
        store.read_bytes("a/b.txt", 4)
    assert Store(f"file://{tmp_path}/r").files() == {"a/b.txt": 5}
    assert Store(str(tmp_path / "absent")).files() == {}


def test_a_local_link_is_seen_as_a_link(tmp_path):
    (tmp_path / "r").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "r" / "sub").symlink_to(tmp_path / "outside")
    assert Store(str(tmp_path / "r")).is_link("sub/file")
