"""Parity inputs: preprocessing, packaged photos, image folders, random tensors."""
from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pytest
from PIL import Image

from pipeline.data import (
    DataError,
    ParityInputs,
    build_parity_inputs,
    image_folder,
    labelled_folder,
    list_images,
    preprocess,
    random_inputs,
    read_image,
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


# -- hostile folders: links, sizes, bombs (each input crafted in tmp_path) ----------------------


def _png_declaring(path: Path, width: int, height: int) -> None:
    """A real 1x1 PNG whose IHDR is patched (CRC fixed) to declare ``width`` x ``height`` pixels."""
    import io
    import struct
    import zlib

    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


def _one_line(err: pytest.ExceptionInfo[DataError]) -> str:
    message = str(err.value)
    assert "\n" not in message and len(message) < 700
    return message


def test_image_folder_refuses_link_to_file_outside(tmp_path: Path) -> None:
    _write(tmp_path / "outside" / "secret.png")
    root = tmp_path / "calib"
    _write(root / "a" / "good.png")
    (root / "a" / "b.png").symlink_to(tmp_path / "outside" / "secret.png")
    with pytest.raises(DataError) as err:
        image_folder(root, what="calibration folder")
    message = _one_line(err)
    assert message.startswith(f"calibration folder '{root}': 'a/b.png' is a link to ")
    assert str((tmp_path / "outside" / "secret.png").resolve()) in message
    assert "outside the folder; copy the image into the folder instead" in message
    with pytest.raises(DataError, match="'a/b.png' is a link to"):  # also when only listing
        list_images(root)


def test_image_folder_refuses_link_to_folder_outside(tmp_path: Path) -> None:
    _write(tmp_path / "elsewhere" / "x.png")
    root = tmp_path / "calib"
    _write(root / "ok.png")
    (root / "more").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(DataError, match=r"'more' is a link to .*elsewhere outside the folder; "
                                        r"copy the folder into the folder instead") as err:
        image_folder(root)
    _one_line(err)


def test_image_folder_link_inside_is_allowed_and_read_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline import data

    _write(tmp_path / "real.png", size=(5, 7))
    _write(tmp_path / "sub" / "x.png", size=(3, 4))
    (tmp_path / "alias.png").symlink_to("real.png")  # a file link inside: listed under its name
    (tmp_path / "again").symlink_to("sub", target_is_directory=True)  # a folder link inside: not followed
    opened: list[str] = []
    real_open = data.open_image_file

    def counting_open(p: Path, root: Path | None = None) -> BinaryIO:
        opened.append(Path(p).name)
        return real_open(p, root)

    monkeypatch.setattr(data, "open_image_file", counting_open)
    images = image_folder(tmp_path)
    assert [n for n, _ in images] == ["alias.png", "real.png", "sub/x.png"]
    assert images[0][1].shape == (7, 5, 3) and images[2][1].shape == (4, 3, 3)
    assert sorted(opened) == ["alias.png", "real.png", "x.png"]  # each listed file opened exactly once


def test_image_folder_symlink_cycle_terminates(tmp_path: Path) -> None:
    """Folder links inside the root (a cycle included) are skipped; a file link loop is refused."""
    _write(tmp_path / "sub" / "x.png")
    (tmp_path / "sub" / "up").symlink_to("..", target_is_directory=True)  # sub/up -> root: a cycle
    (tmp_path / "sub" / "me").symlink_to(".", target_is_directory=True)  # sub/me -> sub
    (tmp_path / "sub" / "p").symlink_to("q")  # p <-> q: a loop, but not image-named: ignored
    (tmp_path / "sub" / "q").symlink_to("p")
    assert [n for n, _ in image_folder(tmp_path)] == ["sub/x.png"]
    (tmp_path / "sub" / "loop.png").symlink_to("loop.png")
    with pytest.raises(DataError, match="'sub/loop.png' is a link loop; replace it with the image") as err:
        image_folder(tmp_path)
    _one_line(err)


def test_image_folder_cycle_through_outside_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "calib"
    _write(root / "x.png")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "back").symlink_to(root, target_is_directory=True)
    (root / "out").symlink_to(tmp_path / "other", target_is_directory=True)
    with pytest.raises(DataError, match="'out' is a link to .* outside the folder"):
        image_folder(root)


def test_image_folder_root_may_be_a_link(tmp_path: Path) -> None:
    _write(tmp_path / "real" / "cat" / "a.png")
    _write(tmp_path / "real" / "b.png")
    (tmp_path / "real" / "cat" / "c.png").symlink_to("../b.png")  # inside the resolved root
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "real", target_is_directory=True)
    assert [n for n, _ in image_folder(link)] == ["b.png", "cat/a.png", "cat/c.png"]
    assert list_images(link)[0] == link / "b.png"  # paths stay under the folder as given


def test_image_folder_refuses_oversize_file_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.image_files import MAX_IMAGE_BYTES

    _write(tmp_path / "small.png")
    with open(tmp_path / "huge.png", "wb") as f:
        f.truncate(MAX_IMAGE_BYTES + 1)  # sparse: no disk used

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("an oversize file reached the decoder")

    monkeypatch.setattr(Image, "open", no_decoding)
    with pytest.raises(DataError, match=r"'huge.png' is 64.0 MiB, over the 64 MiB limit per image; "
                                        r"shrink the image or remove it") as err:
        image_folder(tmp_path)
    _one_line(err)
    with pytest.raises(DataError, match=r"image '.*huge.png' is 64.0 MiB, over the 64 MiB limit"):
        read_image(tmp_path / "huge.png")  # read on its own: checked on the opened file


def test_image_folder_file_grown_after_listing_is_refused(tmp_path: Path) -> None:
    from pipeline.image_files import MAX_IMAGE_BYTES

    _write(tmp_path / "a.png")
    (listed,) = list_images(tmp_path)
    with open(listed, "r+b") as f:
        f.truncate(MAX_IMAGE_BYTES + 1)
    with pytest.raises(DataError, match="over the 64 MiB limit"):
        read_image(listed, root=tmp_path)


@pytest.mark.parametrize(
    ("width", "height", "pil_cap"),
    [
        (100_000, 100_000, "default"),  # past 2x PIL's cap: PIL's own DecompressionBombError
        (10_000, 9_000, "default"),  # past 1x only: PIL merely warns; refused all the same
        (10_000, 9_000, None),  # some library cleared PIL's cap: ours still holds
        (10, 10, 50),  # a caller lowered PIL's cap: honoured
    ],
)
def test_read_image_refuses_decompression_bomb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, width: int, height: int, pil_cap: object
) -> None:
    if pil_cap != "default":
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pil_cap)
    _write(tmp_path / "fine.png")
    if width == 10:
        _write(tmp_path / "bomb.png", size=(width, height))
    else:
        _png_declaring(tmp_path / "bomb.png", width, height)
    assert (tmp_path / "bomb.png").stat().st_size < 1000
    with pytest.raises(DataError, match=r"image '.*bomb.png' declares too many pixels \(.*over the .* limit; "
                                        r"a decompression bomb\?\); shrink it or remove it") as err:
        image_folder(tmp_path)
    _one_line(err)
    if pil_cap is None:
        assert "10000x9000" in str(err.value)


def test_labelled_folder_refuses_class_folder_link_outside(tmp_path: Path) -> None:
    _write(tmp_path / "dogs" / "d.png")
    root = tmp_path / "train"
    _write(root / "cat" / "a.png")
    (root / "dog").symlink_to(tmp_path / "dogs", target_is_directory=True)
    with pytest.raises(DataError, match=r"^training folder '.*train': 'dog' is a link to .*dogs outside the "
                                        r"folder; copy the folder into the folder instead$") as err:
        labelled_folder(root, what="training folder")
    _one_line(err)


def test_list_images_caps_how_many_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline import image_files

    for i in range(4):
        _write(tmp_path / f"{i}.png")
    monkeypatch.setattr(image_files, "MAX_IMAGES", 4)
    assert len(list_images(tmp_path)) == 4
    monkeypatch.setattr(image_files, "MAX_IMAGES", 3)
    with pytest.raises(DataError, match="holds more than 3 images; point at a smaller folder"):
        image_folder(tmp_path, limit=1)
    monkeypatch.setattr(image_files, "MAX_ENTRIES", 2)
    with pytest.raises(DataError, match="holds more than 2 entries"):
        list_images(tmp_path)


def test_error_messages_cut_untrusted_names(tmp_path: Path) -> None:
    long_name = "n" * 240 + ".png"
    (tmp_path / long_name).write_bytes(b"not a png")
    with pytest.raises(DataError) as err:
        image_folder(tmp_path)
    assert "n" * 240 not in _one_line(err) and "..." in str(err.value)
    (tmp_path / long_name).unlink()
    (tmp_path / "two\nlines.png").write_bytes(b"not a png either")
    with pytest.raises(DataError, match=r"two\?lines.png") as err:
        image_folder(tmp_path)
    _one_line(err)
