"""Walking a user's image folder as hostile input: links kept inside it, sizes and counts capped.

A calibration, evaluation or training folder may hold links to files elsewhere (``/etc/shadow``,
another user's home), link cycles, a sparse terabyte file named ``.png`` or millions of entries.
:func:`list_images` walks the folder without following links to folders (so no cycle can loop)
and refuses any link, to an image or to a folder, whose target lies outside the resolved folder.
A link to an image inside the folder is listed under the link's own name; a link to a folder
inside it is not followed, since its target is walked where it really lies (each image read once).
:func:`open_image_file` repeats the containment check when a file is opened and caps its size
on the opened handle, so a file swapped for a link or grown after listing is still refused.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from pipeline.errors import UserInputError

#: File suffixes read by :func:`list_images` (case-insensitive).
IMAGE_SUFFIXES: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp"})

#: Largest image file read, in bytes. A 50-megapixel JPEG is ~25 MB and a 24-megapixel PNG ~50 MB;
#: parity and calibration images are resized to a few hundred pixels, so anything bigger is refused.
MAX_IMAGE_BYTES = 64 * 1024 * 1024

#: Most pixels an image may declare (PIL's own default warning threshold, ~0.25 GiB of RGB). Enforced
#: as an error before decoding even if some library has raised or cleared ``PIL.Image.MAX_IMAGE_PIXELS``.
MAX_IMAGE_PIXELS = 89_478_485

#: Most images one folder may list: ImageNet's whole validation set is 50,000.
MAX_IMAGES = 100_000

#: Most folder entries (of any kind) one walk may look at, so a huge tree cannot stall the run.
MAX_ENTRIES = 1_000_000

#: Untrusted names and messages are cut to this many characters in error messages.
MAX_SHOWN_CHARS = 200

_SUFFIX_NAMES = "PNG/JPEG/BMP/WebP"


class DataError(UserInputError):
    """An input image or folder cannot be used; the message names it and says what to do."""


def shown(text: object, limit: int = MAX_SHOWN_CHARS) -> str:
    """``text`` made safe for a one-line message: unprintable characters as ``?``, cut to ``limit``."""
    clean = "".join(ch if ch.isprintable() else "?" for ch in str(text)[: limit + 1])
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


def _resolve(path: Path | str) -> Path | None:
    """Where ``path`` really lies; ``None`` for a link loop (or a chain too deep to follow)."""
    try:
        return Path(path).resolve()
    except (OSError, RuntimeError):  # RuntimeError: "Symlink loop" before Python 3.13
        return None


def _real_root(root: Path, what: str) -> Path:
    if not root.exists():
        raise DataError(f"{what} '{shown(root)}' does not exist; pass a folder of {_SUFFIX_NAMES} images")
    if not root.is_dir():
        raise DataError(f"'{shown(root)}' is not a folder; pass a folder of {_SUFFIX_NAMES} images")
    real = _resolve(root)
    if real is None:
        raise DataError(f"{what} '{shown(root)}' is a link loop; pass the real folder")
    return real


def _check_link(root: Path, real_root: Path, name: str, link: str, what: str, kind: str) -> Path:
    """The inside target of the link ``name``; refuse a loop or a target outside ``real_root``."""
    target = _resolve(link)
    if target is None:
        raise DataError(f"{what} '{shown(root)}': '{shown(name)}' is a link loop; "
                        f"replace it with the {kind} itself or remove it")
    if not target.is_relative_to(real_root):
        raise DataError(f"{what} '{shown(root)}': '{shown(name)}' is a link to {shown(target)} outside "
                        f"the folder; copy the {kind} into the folder instead")
    return target


def _check_size(label: str, size: int) -> None:
    if size > MAX_IMAGE_BYTES:
        raise DataError(f"{label} is {size / 2**20:.1f} MiB, over the {MAX_IMAGE_BYTES // 2**20} MiB "
                        "limit per image; shrink the image or remove it")


def list_images(path: Path | str, *, what: str = "image folder") -> list[Path]:
    """Image files under ``path`` (recursive; hidden files/folders skipped), sorted by relative path.

    Paths are returned as ``Path(path) / <relative path>``. Links whose target lies outside the
    resolved folder, link loops, files over :data:`MAX_IMAGE_BYTES` and more than :data:`MAX_IMAGES`
    images raise :class:`DataError`; ``what`` names the folder in messages (``"calibration folder"``).
    """
    root = Path(path)
    real_root = _real_root(root, what)
    found: list[str] = []
    stack: list[tuple[str, str]] = [(str(real_root), "")]  # (folder on disk, its relative name)
    seen = 0
    while stack:
        folder, rel = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as exc:
            raise DataError(f"{what} '{shown(root)}': cannot list '{shown(rel or '.')}' "
                            f"({type(exc).__name__}); make it readable or remove it") from None
        seen += len(entries)
        if seen > MAX_ENTRIES:
            raise DataError(f"{what} '{shown(root)}' holds more than {MAX_ENTRIES:,} entries; "
                            "point at a smaller folder of images")
        for entry in entries:
            if entry.name.startswith("."):
                continue
            name = f"{rel}/{entry.name}" if rel else entry.name
            is_image = os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES
            if entry.is_symlink():
                try:
                    is_dir = entry.is_dir()  # follows the link
                except OSError:  # a loop (ELOOP) or an unreadable target: not a folder to walk
                    is_dir = False
                if not (is_dir or is_image):
                    continue  # a link to some other file is never read
                target = _check_link(root, real_root, name, entry.path, what, "folder" if is_dir else "image")
                if is_dir or not target.is_file():
                    continue  # folder: walked where it lies; dangling link: nothing to read
                size = target.stat().st_size
            elif entry.is_dir(follow_symlinks=False):
                stack.append((entry.path, name))
                continue
            elif is_image and entry.is_file(follow_symlinks=False):
                size = entry.stat(follow_symlinks=False).st_size
            else:
                continue
            _check_size(f"{what} '{shown(root)}': '{shown(name)}'", size)
            found.append(name)
            if len(found) > MAX_IMAGES:
                raise DataError(f"{what} '{shown(root)}' holds more than {MAX_IMAGES:,} images; "
                                "point at a smaller folder (a sample is enough for calibration)")
    return [root / name for name in sorted(found)]


def open_image_file(path: Path | str, root: Path | str | None = None) -> BinaryIO:
    """``path`` opened for reading, checked: inside ``root`` if given, a regular file, size capped.

    The size and type are checked on the opened handle (not a prior ``stat``), and the resolved
    path is opened without following a link, so nothing swapped in after listing slips through.
    """
    path = Path(path)
    real = _resolve(path)
    if real is None:
        raise DataError(f"image '{shown(path)}' is a link loop; replace it with the image itself")
    if root is not None and not real.is_relative_to(_real_root(Path(root), "image folder")):
        raise DataError(f"image '{shown(path)}' lies at {shown(real)}, outside '{shown(root)}'; "
                        "copy the image into the folder instead")
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:  # O_NONBLOCK: a FIFO named x.png must not hang the open
        fd = os.open(real, flags | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise DataError(f"cannot open image '{shown(path)}' ({type(exc).__name__}: {shown(exc.strerror)}); "
                        "make it readable or remove it") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DataError(f"image '{shown(path)}' is not a regular file; replace it with an image file")
        _check_size(f"image '{shown(path)}'", info.st_size)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
