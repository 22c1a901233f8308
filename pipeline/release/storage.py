"""Where releases live: any storage fsspec reaches (a folder, ``file://``, ``s3://``, ``gs://``).

Credentials come only from the environment or the storage library's own configuration (for S3:
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_PROFILE``, ``AWS_ENDPOINT_URL_S3`` or
``AWS_ENDPOINT_URL`` for a non-AWS endpoint); a URL that carries them is refused, so they can
never reach a manifest, a report or a log line.

Every key read back from a store is a hostile name: :func:`safe_relpath` admits only plain
relative paths (no ``..``, no absolute path, no backslash or control character) before one is
joined to a local folder, and a local store never follows a link out of its folder.
"""
from __future__ import annotations

import copy
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from pipeline.errors import UserInputError

#: schemes a release may be published to or read from (plain paths are local folders)
SCHEMES = {"file": "file", "s3": "s3", "gs": "gcs", "gcs": "gcs"}
#: what to install for a scheme whose fsspec implementation is a separate package
INSTALL_HINT = {"s3": "s3fs", "gcs": "gcsfs"}
_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")
#: the most files a listing may hold (a release has a few dozen)
MAX_FILES = 10_000


class StoreError(UserInputError):
    """A store that cannot be reached or read: the URL, and what to check."""


def safe_relpath(name: str) -> str:
    """``name`` if it is a plain relative POSIX path inside its folder; else :class:`UserInputError`."""
    parts = PurePosixPath(name).parts
    if (not name or _BAD_CHARS.search(name) or name.startswith("/") or not parts
            or any(p in ("", ".", "..") for p in parts) or name != "/".join(parts)):
        raise UserInputError(f"{name!r} is not a plain relative path inside the release "
                             "(absolute, '..', or odd characters); refusing to touch it")
    return name


def _endpoint_from_env() -> str | None:
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if os.environ.get(name) == "":   # an unset CI variable: botocore would take "" as a URL
            del os.environ[name]
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


class Store:
    """One folder or key prefix of a storage: paths below it are ``/``-separated and relative."""

    def __init__(self, url: str, endpoint_url: str | None = None) -> None:
        import fsspec

        self.url = url.rstrip("/") or url
        parts = urlsplit(url)
        if "://" not in url:
            protocol, root = "file", str(Path(url).absolute())
        else:
            scheme = parts.scheme.lower()
            if scheme not in SCHEMES:
                raise UserInputError(f"{url}: storage '{scheme}://' is not supported; use a "
                                     f"folder or one of {', '.join(s + '://' for s in SCHEMES)}")
            if parts.username or parts.password or parts.query or parts.fragment:
                raise UserInputError(f"{parts.scheme}://{parts.hostname or ''}…: credentials "
                                     "or options in the URL are refused; pass credentials "
                                     "through the environment (e.g. AWS_ACCESS_KEY_ID) and the "
                                     "endpoint with --endpoint-url")
            protocol = SCHEMES[scheme]
            if protocol == "file" and parts.netloc not in ("", "localhost"):
                raise UserInputError(f"{url}: a file:// URL names an absolute path "
                                     "(file:///path/to/folder)")
            root = url.split("://", 1)[1] if protocol != "file" else parts.path
        # a fresh instance that lists the store each time: another process may have changed it
        options: dict[str, Any] = {} if protocol == "file" else {
            "skip_instance_cache": True, "use_listings_cache": False}
        if protocol == "s3":
            endpoint = endpoint_url or _endpoint_from_env()
            if endpoint:
                options["endpoint_url"] = endpoint
        try:
            self.fs = fsspec.filesystem(protocol, **options)
        except ImportError:
            raise UserInputError(f"{url}: {protocol}:// needs the '{INSTALL_HINT[protocol]}' "
                                 f"package: pip install {INSTALL_HINT[protocol]}") from None
        self.protocol = protocol
        self.root = root.rstrip("/")
        if not self.root:
            raise UserInputError(f"{url}: name a bucket or folder, not the storage's root")

    @property
    def local(self) -> bool:
        return self.protocol == "file"

    def _full(self, rel: str) -> str:
        return f"{self.root}/{safe_relpath(rel)}"

    def child(self, rel: str) -> Store:
        """The store of a folder/prefix below this one."""
        sub = copy.copy(self)
        sub.root, sub.url = self._full(rel), f"{self.url}/{rel}"
        return sub

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as exc:   # botocore/aiohttp errors derive from these too
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise StoreError(f"{self.url}: cannot {what} ({type(exc).__name__}: {first}); check "
                             "the URL, the endpoint and the credentials in the environment"
                             ) from None

    def exists(self, rel: str) -> bool:
        return bool(self._call("read", self.fs.exists, self._full(rel)))

    def files(self) -> dict[str, int]:
        """Every file below this prefix: relative name -> size (names not yet checked)."""
        if not self._call("list", self.fs.exists, self.root):
            return {}
        found = self._call("list", self.fs.find, self.root, detail=True)
        if len(found) > MAX_FILES:
            raise StoreError(f"{self.url} holds over {MAX_FILES} files; not a release")
        prefix = self.root.rstrip("/") + "/"
        out: dict[str, int] = {}
        for path, info in found.items():     # fsspec lists paths without the protocol
            if path.startswith(prefix):
                out[path[len(prefix):]] = int(info.get("size") or 0)
        return out

    def is_link(self, rel: str) -> bool:
        """A local entry that is a link (never followed: it could lead out of the folder)."""
        if not self.local:
            return False
        path = Path(self.root)
        for part in PurePosixPath(rel).parts:
            path = path / part
            if path.is_symlink():
                return True
        return False

    def read_bytes(self, rel: str, max_bytes: int) -> bytes:
        size = int(self._call("read", self.fs.size, self._full(rel)) or 0)
        if size > max_bytes:
            raise StoreError(f"{self.url}/{rel} is {size:,} bytes, over the {max_bytes:,} a "
                             "release's metadata may take")
        return self._call("read", self.fs.cat_file, self._full(rel))

    def write_bytes(self, rel: str, data: bytes) -> None:
        """One object, whole (a local file through a temp file and a rename)."""
        if self.local:
            from pipeline.files import atomic_write_bytes

            atomic_write_bytes(Path(self._full(rel)), data)
            return
        self._call("write", self.fs.pipe_file, self._full(rel), data)

    def put_file(self, local: Path, rel: str) -> None:
        full = self._full(rel)
        if self.local:
            self.fs.makedirs(full.rsplit("/", 1)[0], exist_ok=True)
        self._call("upload to", self.fs.put_file, str(local), full)

    def get_file(self, rel: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        self._call("download from", self.fs.get_file, self._full(rel), str(local))

    def copy(self, src_rel: str, dst_rel: str) -> None:
        """A copy inside the store (server-side on object stores)."""
        dst = self._full(dst_rel)
        if self.local:
            self.fs.makedirs(dst.rsplit("/", 1)[0], exist_ok=True)
        self._call("copy in", self.fs.copy, self._full(src_rel), dst)

    def remove(self, rel: str) -> None:
        self._call("delete in", self.fs.rm_file, self._full(rel))

    def remove_tree(self, rel: str) -> None:
        if self.exists(rel):
            self._call("delete in", self.fs.rm, self._full(rel), recursive=True)
