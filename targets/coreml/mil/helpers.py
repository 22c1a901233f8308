"""Argument helpers shared by the MIL op implementations."""
from __future__ import annotations

from typing import Any

import torch


# -- helpers for op implementations ----------------------------------------------------------


def _ints(value: Any) -> list[int]:
    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.reshape(-1).tolist()]
    return [int(v) for v in value]


def _int(value: Any) -> int:
    return int(value.item()) if isinstance(value, torch.Tensor) else int(value)


def _float(value: Any) -> float:
    return float(value.item()) if isinstance(value, torch.Tensor) else float(value)


def _bool(value: Any) -> bool:
    return bool(value.item()) if isinstance(value, torch.Tensor) else bool(value)


def _float_tensor(value: torch.Tensor) -> torch.Tensor:
    return value if value.is_floating_point() else value.to(torch.float32)


def _spatial_pads(pad_type: str, pad: Any, in_sizes: list[int], kernel: list[int],
                  strides: list[int], dilations: list[int]) -> list[tuple[int, int]]:
    """(begin, end) padding per spatial dim for MIL's ``pad_type``."""
    n = len(in_sizes)
    if pad_type == "valid":
        return [(0, 0)] * n
    if pad_type == "custom":
        values = _ints(pad) if pad is not None else [0] * (2 * n)
        return [(values[2 * i], values[2 * i + 1]) for i in range(n)]
    if pad_type in ("same", "same_lower"):
        pads = []
        for size, k, s, d in zip(in_sizes, kernel, strides, dilations):
            out = -(-size // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
            small, large = total // 2, total - total // 2
            pads.append((small, large) if pad_type == "same" else (large, small))
        return pads
    raise ValueError(f"unknown pad_type {pad_type!r}")


def _torch_pad(pads: list[tuple[int, int]]) -> list[int]:
    """(begin, end) per leading-to-trailing dim -> F.pad's trailing-first flat list."""
    flat: list[int] = []
    for begin, end in reversed(pads):
        flat += [begin, end]
    return flat


def _along(vector: torch.Tensor, axis: int | None, rank: int) -> torch.Tensor:
    """A scale/zero-point (scalar or vector along ``axis``) shaped to broadcast over rank dims."""
    if vector.dim() == 0 or vector.numel() == 1 and axis is None:
        return vector.reshape(())
    if vector.dim() == rank:
        return vector
    if axis is None:
        raise ValueError(f"a vector scale of shape {list(vector.shape)} needs an axis")
    shape = [1] * rank
    shape[axis % rank] = vector.numel()
    return vector.reshape(shape)
