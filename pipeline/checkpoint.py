"""Safe checkpoint loading: safetensors, or torch.load(weights_only=True) — never arbitrary pickles.

The file's magic bytes are checked before any loader touches it, so a truncated download, a
TorchScript archive or a pickled whole module gets a specific message instead of a stack trace.
"""
from __future__ import annotations

import json
import pickle
import re
import struct
import zipfile
from pathlib import Path

import torch
from torch import nn

from pipeline.errors import UserInputError

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
_LIST_LIMIT = 8
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")
_UNPICKLER_REASON = re.compile(r"WeightsUnpickler error: ([^\n]+)")


def _first_line(exc: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's text, without terminal colour codes."""
    lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:limit]


def _fail(path: Path, problem: str, fix: str) -> UserInputError:
    return UserInputError(f"weights file {path}: {problem}; {fix}")


def sniff_format(path: Path) -> str:
    """'safetensors', 'torch-zip' or 'torch-legacy', judged by content (not by extension)."""
    if not path.is_file():
        raise _fail(path, "does not exist", "pass the path of a .safetensors or .pt/.pth file")
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(9)
    if head[:4] == b"PK\x03\x04":
        return "torch-zip"
    if head[:1] == b"\x80" and len(head) > 1 and head[1] in (2, 3, 4, 5):
        return "torch-legacy"
    if len(head) >= 9 and head[8:9] == b"{":
        (header_len,) = struct.unpack("<Q", head[:8])
        if 8 + header_len > size:
            raise _fail(path, f"safetensors header claims {header_len} bytes but the file has "
                        f"{size}: it is truncated", "download or save it again")
        return "safetensors"
    raise _fail(path, "is neither safetensors nor a PyTorch checkpoint (unrecognised magic bytes)",
                "save the weights with safetensors.torch.save_file or torch.save(model.state_dict())")


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, json.JSONDecodeError, ValueError) as exc:
        raise _fail(path, f"is a damaged safetensors file ({exc})", "save it again") from None


def _check_zip(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            bad = archive.testzip()
    except Exception as exc:  # BadZipFile, EOFError, NotImplementedError, UnicodeDecodeError…
        raise _fail(path, f"is a truncated or damaged zip archive ({_first_line(exc)})",
                    "download or save it again") from None
    if bad is not None:
        raise _fail(path, f"member {bad} is corrupt", "download or save it again")
    if any(n.split("/", 1)[-1].startswith("code/") or n.endswith("constants.pkl") for n in names):
        raise _fail(path, "is a TorchScript archive, not a state_dict",
                    "save model.state_dict() with torch.save or safetensors instead")


def _load_torch(path: Path, fmt: str) -> dict[str, torch.Tensor]:
    if fmt == "torch-zip":
        _check_zip(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = _ANSI.sub("", str(exc))
        found = _UNSUPPORTED_GLOBAL.search(text)
        if found is None:  # a damaged pickle stream, or content the safe loader cannot rebuild
            reason = _UNPICKLER_REASON.search(text)
            detail = reason.group(1).strip()[:200] if reason else _first_line(exc)
            raise _fail(path, f"cannot be read safely ({detail})",
                        "save model.state_dict() again with torch.save or safetensors") from None
        raise _fail(path, f"holds pickled Python objects, not only tensors (it needs "
                    f"{found.group(1)}): a pickled whole module (torch.save(model)) is refused "
                    "because unpickling runs arbitrary code",
                    "save model.state_dict() instead") from None
    except Exception as exc:  # truncated legacy files: EOFError, IndexError, struct.error…
        raise _fail(path, f"cannot be read, it is truncated or damaged ({_first_line(exc)})",
                    "download or save it again") from None
    return _unwrap(path, obj)


def _unwrap(path: Path, obj: object) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise _fail(path, f"does not contain a state_dict (got {type(obj).__name__})",
                    "save model.state_dict() (a mapping of names to tensors)")
    others = [f"{k} ({type(v).__name__})" for k, v in obj.items()
              if not isinstance(v, torch.Tensor)]
    if others:
        raise _fail(path, f"does not contain a state_dict: entries {_listing(others)} are not "
                    "tensors", "save model.state_dict(), or wrap it as {'state_dict': ...}")
    return obj


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read a state_dict from ``path`` safely, with a specific error for each kind of bad file."""
    path = Path(path)
    fmt = sniff_format(path)
    return _load_safetensors(path) if fmt == "safetensors" else _load_torch(path, fmt)


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_LIST_LIMIT])
    return shown + (f" (+{len(items) - _LIST_LIMIT} more)" if len(items) > _LIST_LIMIT else "")


def apply_state_dict(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Load ``state`` strictly; list missing, unexpected and mis-shaped keys in one error."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches: {_listing(shapes)}")
    if problems:
        raise _fail(path, "does not match the model — " + "; ".join(problems),
                    "check --model, --width and --num-classes match the checkpoint")
    model.load_state_dict(state, strict=True)
