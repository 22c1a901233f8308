"""pipeline.image_files: hostile folders are walked safely (inputs crafted in tmp_path)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from pipeline.image_files import DataError, list_images, open_image_file, shown


def test_shown_cuts_and_flattens_untrusted_text() -> None:
    assert shown("plain name.png") == "plain name.png"
    assert shown("a\nb\tc\x1b") == "a?b?c?"
    assert shown("猫.png") == "猫.png"  # printable non-ASCII names are kept
    cut = shown("x" * 10_000)
    assert len(cut) == 200 and cut.endswith("...")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_named_like_an_image_is_skipped_and_never_blocks(tmp_path: Path) -> None:
    Image.new("RGB", (2, 2)).save(tmp_path / "a.png")
    os.mkfifo(tmp_path / "pipe.png")
    assert list_images(tmp_path) == [tmp_path / "a.png"]
    with pytest.raises(DataError, match="'.*pipe.png' is not a regular file"):
        open_image_file(tmp_path / "pipe.png", tmp_path)  # O_NONBLOCK: returns instead of hanging


def test_file_swapped_for_an_outside_link_after_listing_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "calib"
    root.mkdir()
    Image.new("RGB", (2, 2)).save(root / "a.png")
    Image.new("RGB", (2, 2)).save(tmp_path / "secret.png")
    (listed,) = list_images(root)
    listed.unlink()
    listed.symlink_to(tmp_path / "secret.png")
    with pytest.raises(DataError, match=r"image '.*a.png' lies at .*secret.png, outside '.*calib'; copy"):
        open_image_file(listed, root)
    with open_image_file(listed) as fh:  # with no folder to stay inside, a named file may be a link
        assert fh.read(4) == b"\x89PNG"


def test_dangling_and_non_image_links_are_ignored_but_outside_images_are_not(tmp_path: Path) -> None:
    root = tmp_path / "calib"
    root.mkdir()
    Image.new("RGB", (2, 2)).save(root / "a.png")
    (root / "notes.txt").symlink_to("/etc/hostname")  # never read: not an image
    (root / "gone.png").symlink_to("missing.png")  # dangling, inside: nothing to read
    (root / ".hidden.png").symlink_to("/etc/hostname")  # hidden: skipped like any hidden file
    assert list_images(root) == [root / "a.png"]
    (root / "gone2.png").symlink_to(tmp_path / "missing.png")  # dangling but aimed outside
    with pytest.raises(DataError, match="'gone2.png' is a link to .* outside the folder"):
        list_images(root)


def test_missing_folder_and_file_are_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="calibration folder '.*nope' does not exist"):
        list_images(tmp_path / "nope", what="calibration folder")
    (tmp_path / "f.png").write_bytes(b"x")
    with pytest.raises(DataError, match="is not a folder"):
        list_images(tmp_path / "f.png")
    with pytest.raises(DataError, match="cannot open image '.*absent.png' \\(FileNotFoundError"):
        open_image_file(tmp_path / "absent.png")
