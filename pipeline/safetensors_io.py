"""safetensors files with the same bytes from every process.

The safetensors writer keeps ``__metadata__`` in a Rust ``HashMap``, whose order changes from one
process to the next, so the same tensors and metadata give different bytes (and digests, and
cache misses downstream). :func:`canonical` rewrites the header with sorted keys; the format is
unchanged (the header is JSON, tensor offsets count from its end, padding is spaces to 8 bytes),
so any safetensors reader loads the result.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

from pipeline.files import atomic_write_bytes


def canonical(data: bytes) -> bytes:
    """The safetensors bytes ``data`` with its header's keys (and metadata's) sorted."""
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-(8 + len(text)) % 8)
    return struct.pack("<Q", len(text)) + text + data[8 + length:]


def write_canonical(data: bytes, path: Path) -> None:
    """Write the canonical form of the safetensors bytes ``data`` to ``path`` atomically."""
    atomic_write_bytes(Path(path), canonical(data))
