"""Parity inputs: packaged sample photos, the user's images, and a few seeded random tensors.

Random inputs alone hide real bugs (a wrong mean/std or channel order still "agrees" on noise),
so every parity set starts with real photos that ship inside scikit-image's wheel (no download).
Images are turned into model inputs the way torchvision's classic ImageNet transform does:
resize the shorter side (PIL), centre crop, scale to 0-1, normalise by mean/std.
"""
from __future__ import annotations

import hashlib
import logging
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
from PIL import Image

from pipeline.image_files import (  # re-exported: callers import these from here
    IMAGE_SUFFIXES,
    MAX_IMAGE_PIXELS,
    DataError,
    list_images,
    open_image_file,
    shown,
)

log = logging.getLogger(__name__)

#: scikit-image sample images bundled in the wheel (checked to load with the network absent).
#: Chosen for being real photographs; ``camera`` is grayscale and exercises the gray -> RGB path.
SAMPLE_PHOTOS: tuple[str, ...] = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "camera",
)

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


class PreprocessingLike(Protocol):
    """What :func:`preprocess` needs from a model's declared preprocessing.

    ``pipeline.models.registry.Preprocessing`` satisfies this; an optional ``interpolation``
    attribute (``"bilinear"`` by default) is honoured when present.
    """

    resize: int
    crop: int
    mean: Sequence[float]
    std: Sequence[float]


# -- preprocessing ---------------------------------------------------------------------------


def to_rgb(image: np.ndarray) -> np.ndarray:
    """HxW, HxWx1, HxWx3 or HxWx4 uint8 -> HxWx3 uint8 (gray repeated; alpha dropped, as PIL does)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise DataError(f"expected a uint8 image, got dtype {image.dtype}; convert it to 8-bit first")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise DataError(f"expected an HxW, HxWx1, HxWx3 or HxWx4 image, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise DataError(f"image has an empty side: shape {image.shape}")
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


def _resample(prep: PreprocessingLike) -> Image.Resampling:
    name = str(getattr(prep, "interpolation", "bilinear") or "bilinear").lower()
    try:
        return _RESAMPLE[name]
    except KeyError:
        raise DataError(f"unknown interpolation {name!r}; use one of {sorted(_RESAMPLE)}") from None


def _resized_size(height: int, width: int, short: int) -> tuple[int, int]:
    """(h, w) with the shorter side equal to ``short`` (torchvision ``Resize(int)`` rounding)."""
    if height <= width:
        return short, int(short * width / height)
    return int(short * height / width), short


def _centre_crop(image: np.ndarray, crop: int) -> np.ndarray:
    height, width = image.shape[:2]
    top = int(round((height - crop) / 2.0))
    left = int(round((width - crop) / 2.0))
    return image[top : top + crop, left : left + crop]


def _check_prep(prep: PreprocessingLike) -> tuple[np.ndarray, np.ndarray]:
    if int(prep.crop) < 1 or int(prep.resize) < int(prep.crop):
        raise DataError(f"preprocessing needs 1 <= crop <= resize, got resize={prep.resize} crop={prep.crop}")
    mean = np.asarray(prep.mean, dtype=np.float32).reshape(-1)
    std = np.asarray(prep.std, dtype=np.float32).reshape(-1)
    if mean.shape != (3,) or std.shape != (3,) or np.any(std <= 0):
        raise DataError(f"preprocessing needs 3 means and 3 positive stds, got mean={prep.mean} std={prep.std}")
    return mean, std


def preprocess(image: np.ndarray, prep: PreprocessingLike) -> np.ndarray:
    """uint8 HxWx{1,3,4} image -> float32 (3, crop, crop): resize shorter side, centre crop, normalise."""
    mean, std = _check_prep(prep)
    rgb = to_rgb(image)
    height, width = _resized_size(rgb.shape[0], rgb.shape[1], int(prep.resize))
    resized = np.asarray(Image.fromarray(rgb).resize((width, height), _resample(prep)))
    cropped = _centre_crop(resized, int(prep.crop)).astype(np.float32) / np.float32(255.0)
    normalised = (cropped - mean) / std
    return np.ascontiguousarray(normalised.transpose(2, 0, 1), dtype=np.float32)


# -- image sources ---------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _load_sample_photos() -> tuple[tuple[str, np.ndarray], ...]:
    from skimage import data as skdata  # lazy: only needed when photos are asked for

    photos = []
    for name in SAMPLE_PHOTOS:
        try:
            image = np.asarray(getattr(skdata, name)())
        except Exception as exc:  # a photo missing from this skimage build: skip, keep the rest
            log.warning("sample photo %r unavailable (%s); skipping it", name, exc)
            continue
        image.setflags(write=False)
        photos.append((f"skimage:{name}", image))
    return tuple(photos)


def sample_photos() -> list[tuple[str, np.ndarray]]:
    """Real photos bundled with scikit-image as ``("skimage:<name>", uint8 HxW[xC])``, read-only arrays."""
    photos = list(_load_sample_photos())
    if not photos:
        raise DataError("no sample photos could be loaded from scikit-image; reinstall scikit-image")
    return photos


def _pil_to_array(img: Image.Image) -> np.ndarray:
    if img.mode in ("L", "RGB", "RGBA"):
        return np.asarray(img)
    if img.mode.startswith("I;16"):  # 16-bit gray: keep the top 8 bits rather than clipping
        return (np.asarray(img, dtype=np.uint16) >> 8).astype(np.uint8)
    if img.mode in ("LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        return np.asarray(img.convert("RGBA"))
    return np.asarray(img.convert("RGB"))


def _pixel_cap() -> int:
    pil = Image.MAX_IMAGE_PIXELS  # honoured when lower (tests, stricter callers); never raised
    return MAX_IMAGE_PIXELS if pil is None else min(MAX_IMAGE_PIXELS, int(pil))


def _too_many_pixels(path: Path, size: str = "") -> DataError:
    return DataError(f"image '{shown(path)}' declares too many pixels ({size}over the {_pixel_cap():,} "
                     "limit; a decompression bomb?); shrink it or remove it")


def read_image(path: Path | str, *, root: Path | str | None = None) -> np.ndarray:
    """Decode one image file into uint8 HxW[xC]; raise :class:`DataError` naming the file.

    The file must lie inside ``root`` when given, be at most ``MAX_IMAGE_BYTES`` and declare at
    most ``MAX_IMAGE_PIXELS`` pixels (checked from the header, before decoding).
    """
    path = Path(path)
    try:
        with open_image_file(path, root) as fh, warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(fh) as img:
                if img.width * img.height > _pixel_cap():
                    raise _too_many_pixels(path, f"{img.width}x{img.height}, ")
                img.load()
                return _pil_to_array(img)
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # PIL's own checks
        raise _too_many_pixels(path) from None
    except Exception as exc:
        raise DataError(
            f"cannot read image '{shown(path)}' ({type(exc).__name__}: {shown(exc)}); "
            "fix or remove the file, or point the pipeline at another folder"
        ) from exc


def _spread(items: list[Path], limit: int | None) -> list[Path]:
    """At most ``limit`` items, evenly spaced over the sorted list (so every class folder is sampled)."""
    if limit is None or len(items) <= limit:
        return items
    picks = np.unique(np.linspace(0, len(items) - 1, limit).round().astype(int))
    return [items[i] for i in picks]


def image_folder(path: Path | str, *, limit: int | None = None,
                 what: str = "image folder") -> list[tuple[str, np.ndarray]]:
    """Every PNG/JPEG/BMP/WebP under ``path`` as ``(relative posix path, uint8 array)``, sorted.

    ``limit`` keeps at most that many files, evenly spaced over the sorted list; only the kept files
    are decoded. An unreadable file, an empty folder or a missing folder raises :class:`DataError`,
    as do links leading outside the folder and oversized files (see :mod:`pipeline.image_files`).
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 or None, got {limit}")
    root = Path(path)
    files = _spread(list_images(root, what=what), limit)
    if not files:
        raise DataError(
            f"no images (PNG/JPEG/BMP/WebP) found under '{shown(root)}'; put calibration images there "
            "or leave the calibration folder unset"
        )
    return [(f.relative_to(root).as_posix(), read_image(f, root=root)) for f in files]


def random_inputs(n: int, shape: Sequence[int], seed: int) -> list[np.ndarray]:
    """``n`` seeded standard-normal float32 tensors of ``shape`` (already in normalised space)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(tuple(shape), dtype=np.float32) for _ in range(n)]


# -- the parity set --------------------------------------------------------------------------


@dataclass
class ParityInputs:
    """N model inputs with a name and a kind (``photo``/``calib``/``random``) each."""

    names: list[str]
    kinds: list[str]
    batch: np.ndarray  # (N, 3, H, W) float32

    def __post_init__(self) -> None:
        self.batch = np.ascontiguousarray(self.batch, dtype=np.float32)
        if self.batch.ndim != 4:
            raise ValueError(f"batch must be (N, C, H, W), got shape {self.batch.shape}")
        n = self.batch.shape[0]
        if len(self.names) != n or len(self.kinds) != n:
            raise ValueError(f"{n} inputs but {len(self.names)} names and {len(self.kinds)} kinds")

    def __len__(self) -> int:
        return int(self.batch.shape[0])

    def sample(self, index: int) -> np.ndarray:
        """Input ``index`` as a (1, C, H, W) array (a view)."""
        return self.batch[index : index + 1]

    def counts(self) -> dict[str, int]:
        """How many inputs of each kind, e.g. ``{"photo": 8, "random": 4}``."""
        out: dict[str, int] = {}
        for kind in self.kinds:
            out[kind] = out.get(kind, 0) + 1
        return out

    def digest(self) -> str:
        """sha256 over shape, dtype, array bytes, names and kinds: a cache key for these inputs."""
        h = hashlib.sha256()
        h.update(f"{self.batch.dtype.str}{self.batch.shape}".encode())
        h.update(self.batch.tobytes())
        for name, kind in zip(self.names, self.kinds):
            h.update(f"\0{kind}\0{name}".encode())
        return h.hexdigest()


def build_parity_inputs(
    prep: PreprocessingLike,
    calib_dir: Path | str | None = None,
    n_random: int = 4,
    seed: int = 0,
    max_calib: int = 64,
) -> ParityInputs:
    """Sample photos, then up to ``max_calib`` images from ``calib_dir``, then ``n_random`` random tensors."""
    names: list[str] = []
    kinds: list[str] = []
    tensors: list[np.ndarray] = []

    def add(items: list[tuple[str, np.ndarray]], kind: str) -> None:
        for name, array in items:
            names.append(name)
            kinds.append(kind)
            tensors.append(array)

    add([(n, preprocess(img, prep)) for n, img in sample_photos()], "photo")
    if calib_dir is not None:
        calib = image_folder(calib_dir, limit=max_calib)
        add([(f"calib:{n}", preprocess(img, prep)) for n, img in calib], "calib")
    crop = int(prep.crop)
    randoms = random_inputs(n_random, (3, crop, crop), seed)
    add([(f"random:{seed}:{i}", r) for i, r in enumerate(randoms)], "random")
    return ParityInputs(names=names, kinds=kinds, batch=np.stack(tensors).astype(np.float32))


# -- labelled data: calibration, evaluation and fine-tuning ---------------------------------------


@dataclass
class LabelledSet:
    """Images with integer labels; ``classes[i]`` names label ``i``."""

    names: list[str]
    images: list[np.ndarray]  # uint8 HxWx3
    labels: np.ndarray        # int64 (N,)
    classes: list[str]

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, prep: PreprocessingLike) -> np.ndarray:
        """(N, 3, crop, crop) float32 model inputs."""
        return np.stack([preprocess(image, prep) for image in self.images]).astype(np.float32)

    def subset(self, indices: Sequence[int]) -> "LabelledSet":
        return LabelledSet([self.names[i] for i in indices], [self.images[i] for i in indices],
                           self.labels[np.asarray(indices, dtype=np.int64)], self.classes)


DIGITS_SPLITS = ("train", "calib", "eval")
#: the digits' class names, in label order (known without loading the dataset)
DIGITS_CLASSES = tuple(str(d) for d in range(10))


def render_digit(image: np.ndarray, scale: int = 8) -> np.ndarray:
    """An 8x8 scikit-learn digit (0-16) as a black-on-white-free RGB uint8 image, upscaled."""
    gray = np.clip(image / 16.0 * 255.0, 0, 255).astype(np.uint8)
    big = np.kron(gray, np.ones((scale, scale), dtype=np.uint8))
    return np.repeat(big[..., None], 3, axis=2)


@lru_cache(maxsize=4)
def digits_splits(seed: int = 0) -> dict[str, LabelledSet]:
    """scikit-learn's handwritten digits (shipped in the package, 1,797 images, 10 classes),
    split stratified into train (70 %), calibration (10 %) and held-out evaluation (20 %)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    index = np.arange(len(digits.target))
    train, rest = train_test_split(index, test_size=0.3, random_state=seed,
                                   stratify=digits.target)
    calib, held_out = train_test_split(rest, test_size=2 / 3, random_state=seed,
                                       stratify=digits.target[rest])
    everything = LabelledSet([f"digits:{i}" for i in index],
                             [render_digit(img) for img in digits.images],
                             digits.target.astype(np.int64), list(DIGITS_CLASSES))
    return {name: everything.subset(sorted(part.tolist()))
            for name, part in zip(DIGITS_SPLITS, (train, calib, held_out))}


def labelled_folder(path: Path | str, *, limit: int | None = None,
                    what: str = "image folder") -> LabelledSet:
    """An image-folder dataset: ``root/<class>/<image>``; classes sorted by name."""
    root = Path(path)
    items = image_folder(root, limit=limit, what=what)
    class_of = [name.split("/", 1)[0] if "/" in name else None for name, _ in items]
    loose = [name for name, cls in zip((n for n, _ in items), class_of) if cls is None]
    if loose:
        raise DataError(f"'{shown(root)}' holds images outside class folders (e.g. {shown(loose[0])}); "
                        "arrange it as root/<class>/<image>")
    classes = sorted(set(class_of))
    labels = np.array([classes.index(c) for c in class_of], dtype=np.int64)
    return LabelledSet([n for n, _ in items], [to_rgb(img) for _, img in items], labels, classes)
