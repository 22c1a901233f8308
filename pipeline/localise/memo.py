"""Localisation records kept in the run's cache, so that a rerun of a failing run (every node
cached) does not localise the same artifact again: ``cache/localise/<key>.json``, the key a
digest of everything the record depends on. A record read back is treated as hostile: size
capped, parsed, checked for shape; anything else is recomputed."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pipeline.cache import canonical_json
from pipeline.files import PathOutsideRoot, atomic_write_bytes, contained, sweep_temp
from pipeline.version import __version__

MAX_BYTES = 4 * 1024 * 1024
#: bump when the record's meaning changes (metrics, verdict rule)
VERSION = 5


def _digest(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()


def memo_key(report: dict[str, Any], node: dict[str, Any], tolerance: dict[str, Any] | None,
             purpose: str = "localisation") -> str:
    """What a node's record for ``purpose`` (its localisation; its tensor names) depends on:
    its artifact, the run's layer map (and program) and reference, the layer tolerance, the
    node's naming facts, the tool."""
    by_name = {n.get("name"): n for n in report["nodes"]}
    export_info = (by_name.get("export_onnx") or {}).get("info") or {}
    return _digest({
        "version": VERSION, "purpose": purpose, "tool": __version__,
        "target": node.get("target"),
        "artifact": (node.get("artifact") or {}).get("sha256"),
        "layer_map": export_info.get("layer_map"),
        "reference": (report["run"].get("reference") or {}).get("sha256"),
        "precision": node.get("precision"), "tolerance": tolerance,
        "naming": _digest({k: (node.get("info") or {}).get(k)
                           for k in ("tensor_names", "source_onnx", "settings")})})


def _path(cache_dir: Path, key: str) -> Path:
    folder = Path(cache_dir) / "localise"
    return contained(folder, folder / f"{key}.json")


def recall(cache_dir: Path, key: str, fields: tuple[str, ...] = ("curve", "first_divergent")
           ) -> dict[str, Any] | None:
    """The stored record, or None when there is none, it lacks one of ``fields`` or it is
    not one we wrote."""
    try:
        path = _path(cache_dir, key)
        if not path.is_file() or path.stat().st_size > MAX_BYTES:
            return None
        record = json.loads(path.read_text())
    except (OSError, ValueError, PathOutsideRoot):
        return None
    if not isinstance(record, dict) or record.get("memo_key") != key or \
            any(name not in record for name in fields):
        return None
    return record


def remember(cache_dir: Path, key: str, record: dict[str, Any]) -> None:
    path = _path(cache_dir, key)
    sweep_temp(path.parent)
    atomic_write_bytes(path, (json.dumps({**record, "memo_key": key}) + "\n").encode())
