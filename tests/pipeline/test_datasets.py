"""The built-in digits splits and labelled image folders."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data import DataError, digits_splits, labelled_folder


def test_digits_splits_are_disjoint_stratified_and_rgb() -> None:
    splits = digits_splits(0)
    sizes = {k: len(v) for k, v in splits.items()}
    assert sizes == {"train": 1257, "calib": 180, "eval": 360}
    names = [set(s.names) for s in splits.values()]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    for split in splits.values():
        assert set(split.labels.tolist()) == set(range(10))
        assert split.images[0].shape == (64, 64, 3) and split.images[0].dtype == np.uint8


def test_labelled_folder_converts_and_labels(tmp_path: Path) -> None:
    for cls, mode in (("cat", "L"), ("dog", "RGBA")):
        (tmp_path / cls).mkdir()
        Image.new(mode, (20, 10)).save(tmp_path / cls / "a.png")
    data = labelled_folder(tmp_path)
    assert data.classes == ["cat", "dog"] and data.labels.tolist() == [0, 1]
    assert all(img.shape == (10, 20, 3) for img in data.images)


def test_labelled_folder_refuses_loose_images(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8)).save(tmp_path / "loose.png")
    with pytest.raises(DataError, match="outside class folders"):
        labelled_folder(tmp_path)
