"""Parity inputs: preprocessing, packaged photos, image folders, random tensors."""
from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data import (
    DataError,
    ParityInputs,
    build_parity_inputs,
    image_folder,
    preprocess,
    random_inputs,
    sample_photos,
)
from pipeline.errors import UserInputError


@dataclass(frozen=True)
class Prep:
    resize: int = 8
    crop: int = 6
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"


PREP = Prep()


@pytest.mark.parametrize(
    "shape",
    [(10, 10), (10, 10, 1), (13, 7, 3), (7, 13, 4), (6, 6, 3), (31, 200, 3)],
)
def test_preprocess_constant_image_normalises(shape: tuple[int, ...]) -> None:
    image = np.full(shape, 128, np.uint8)
    if len(shape) == 3 and shape[2] == 4:
        image[..., 3] = 7  # alpha is dropped, not blended
    out = preprocess(image, PREP)
    assert out.shape == (3, 6, 6) and out.dtype == np.float32
    expected = (128 / 255 - np.array(PREP.mean)) / np.array(PREP.std)
    np.testing.assert_allclose(out, np.broadcast_to(expected[:, None, None], out.shape), rtol=1e-5)


def test_preprocess_keeps_channel_order_and_centre() -> None:
    image = np.zeros((20, 40, 3), np.uint8)
    image[..., 0] = 255  # pure red
    image[:, :10] = 0  # left quarter black: cropped away after resize 8 -> (8, 16), crop 6
    out = preprocess(image, Prep(mean=(0, 0, 0), std=(1, 1, 1)))
    np.testing.assert_allclose(out[0], 1.0)
    np.testing.assert_allclose(out[1:], 0.0)


def test_preprocess_rejects_bad_input() -> None:
    with pytest.raises(DataError, match="uint8"):
        preprocess(np.zeros((8, 8, 3), np.float32), PREP)
    with pytest.raises(DataError, match="shape"):
        preprocess(np.zeros((8, 8, 2), np.uint8), PREP)
    with pytest.raises(DataError, match="crop <= resize"):
        preprocess(np.zeros((8, 8, 3), np.uint8), Prep(resize=4, crop=6))
    with pytest.raises(DataError, match="interpolation"):
        preprocess(np.zeros((8, 8, 3), np.uint8), Prep(interpolation="magic"))


def test_data_error_is_a_value_error() -> None:
    assert issubclass(DataError, ValueError) and issubclass(DataError, UserInputError)


def test_sample_photos_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    from pipeline import data

    data._load_sample_photos.cache_clear()
    photos = sample_photos()
    assert len(photos) >= 6
    names = [n for n, _ in photos]
    assert len(set(names)) == len(names) and all(n.startswith("skimage:") for n in names)
    for _, image in photos:
        assert image.dtype == np.uint8 and min(image.shape[:2]) >= 64
        assert preprocess(image, PREP).shape == (3, 6, 6)


def _write(path: Path, size: tuple[int, int] = (9, 11), mode: str = "RGB", fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color=100 if mode == "L" else (10, 20, 30, 128)[: len(mode)]).save(path, format=fmt)


def test_image_folder_recursive_sorted(tmp_path: Path) -> None:
    _write(tmp_path / "b" / "z.png")
    _write(tmp_path / "a" / "y.JPG", fmt="JPEG")
    _write(tmp_path / "c.bmp", mode="L")
    _write(tmp_path / "d.webp", mode="RGBA")
    _write(tmp_path / ".hidden" / "x.png")
    (tmp_path / "notes.txt").write_text("not an image")
    images = image_folder(tmp_path)
    assert [n for n, _ in images] == ["a/y.JPG", "b/z.png", "c.bmp", "d.webp"]
    assert images[2][1].shape == (11, 9) and images[3][1].shape == (11, 9, 4)


def test_image_folder_limit_spreads_over_files(tmp_path: Path) -> None:
    for cls in ("cat", "dog"):
        for i in range(5):
            _write(tmp_path / cls / f"{i}.png")
    names = [n for n, _ in image_folder(tmp_path, limit=2)]
    assert names == ["cat/0.png", "dog/4.png"]


def test_image_folder_garbage_file_is_named(tmp_path: Path) -> None:
    _write(tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"this is not a png")
    with pytest.raises(DataError, match="broken.png") as err:
        image_folder(tmp_path)
    assert "fix or remove" in str(err.value)


def test_image_folder_empty_or_missing(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(DataError, match=str(tmp_path)):
        image_folder(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        image_folder(tmp_path / "nope")


def test_random_inputs_deterministic() -> None:
    a = random_inputs(3, (3, 4, 4), seed=7)
    b = random_inputs(3, (3, 4, 4), seed=7)
    c = random_inputs(3, (3, 4, 4), seed=8)
    assert len(a) == 3 and all(x.shape == (3, 4, 4) and x.dtype == np.float32 for x in a)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[0], a[1])


def test_build_parity_inputs(tmp_path: Path) -> None:
    _write(tmp_path / "one.png", size=(20, 30))
    _write(tmp_path / "two.jpg", size=(30, 20), fmt="JPEG")
    inputs = build_parity_inputs(PREP, calib_dir=tmp_path, n_random=2, seed=3)
    counts = inputs.counts()
    assert counts["calib"] == 2 and counts["random"] == 2 and counts["photo"] >= 6
    assert inputs.batch.shape == (len(inputs), 3, 6, 6) and inputs.batch.dtype == np.float32
    assert inputs.kinds[0] == "photo" and inputs.kinds[-1] == "random"
    assert "calib:one.png" in inputs.names
    again = build_parity_inputs(PREP, calib_dir=tmp_path, n_random=2, seed=3)
    assert again.digest() == inputs.digest()
    assert build_parity_inputs(PREP, n_random=2, seed=4).digest() != build_parity_inputs(PREP, n_random=2).digest()
    assert len(build_parity_inputs(PREP, calib_dir=tmp_path, max_calib=1)) == counts["photo"] + 1 + 4


def test_parity_inputs_validates_and_digest_covers_names() -> None:
    batch = np.zeros((2, 3, 4, 4), np.float32)
    with pytest.raises(ValueError):
        ParityInputs(names=["a"], kinds=["random"], batch=batch)
    with pytest.raises(ValueError):
        ParityInputs(names=["a"], kinds=["random"], batch=batch[0])
    a = ParityInputs(names=["a", "b"], kinds=["random"] * 2, batch=batch)
    b = ParityInputs(names=["a", "c"], kinds=["random"] * 2, batch=batch)
    assert a.digest() != b.digest()
    assert a.sample(1).shape == (1, 3, 4, 4)
