"""Which NVIDIA GPUs this machine has, asked of the CUDA driver itself.

Hand-written on purpose: the TensorRT target must say *why* it cannot run before anything heavy is
imported, and on a machine without a GPU there is nothing to import (our torch is a CPU build,
``cuda-python`` and ``pynvml`` would be extra dependencies for four driver calls). The driver API
(``libcuda.so.1``, installed with the NVIDIA driver, not with the CUDA toolkit) is stable across
driver versions, so ``ctypes`` calls to ``cuInit``, ``cuDeviceGetCount``, ``cuDeviceGetName``,
``cuDeviceGetAttribute`` and ``cuDeviceTotalMem_v2`` are enough.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys
from dataclasses import asdict, dataclass
from typing import Any

#: CUdevice_attribute values from cuda.h (stable since CUDA 2.x/3.x)
_COMPUTE_CAPABILITY_MAJOR = 75
_COMPUTE_CAPABILITY_MINOR = 76


@dataclass(frozen=True)
class CudaDevice:
    index: int
    name: str
    compute_capability: str      # e.g. "9.0" for an H100
    memory_mib: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class NoCudaDevice(RuntimeError):
    """No usable CUDA device; the message says what is missing."""


def _driver() -> ctypes.CDLL:
    names = ["nvcuda.dll"] if sys.platform.startswith("win") else ["libcuda.so.1", "libcuda.so"]
    found = ctypes.util.find_library("cuda")
    if found:
        names.append(found)
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise NoCudaDevice("no CUDA device: the NVIDIA driver library (libcuda.so.1) is not "
                       "installed on this machine")


def _check(status: int, call: str) -> None:
    if status != 0:
        raise NoCudaDevice(f"no CUDA device: {call} returned CUDA driver error {status} "
                           "(is the NVIDIA driver loaded and the GPU visible to this process?)")


def cuda_devices() -> list[CudaDevice]:
    """Every CUDA device the driver reports; raises :class:`NoCudaDevice` naming the problem."""
    lib = _driver()
    _check(lib.cuInit(0), "cuInit")
    count = ctypes.c_int(0)
    _check(lib.cuDeviceGetCount(ctypes.byref(count)), "cuDeviceGetCount")
    if count.value == 0:
        raise NoCudaDevice("no CUDA device: the driver is installed but reports 0 devices "
                           "(check CUDA_VISIBLE_DEVICES)")
    devices = []
    for index in range(count.value):
        handle = ctypes.c_int(0)
        _check(lib.cuDeviceGet(ctypes.byref(handle), index), "cuDeviceGet")
        name = ctypes.create_string_buffer(256)
        _check(lib.cuDeviceGetName(name, len(name), handle), "cuDeviceGetName")
        major, minor = ctypes.c_int(0), ctypes.c_int(0)
        _check(lib.cuDeviceGetAttribute(ctypes.byref(major), _COMPUTE_CAPABILITY_MAJOR, handle),
               "cuDeviceGetAttribute")
        _check(lib.cuDeviceGetAttribute(ctypes.byref(minor), _COMPUTE_CAPABILITY_MINOR, handle),
               "cuDeviceGetAttribute")
        memory = ctypes.c_size_t(0)
        _check(lib.cuDeviceTotalMem_v2(ctypes.byref(memory), handle), "cuDeviceTotalMem_v2")
        devices.append(CudaDevice(index, name.value.decode(errors="replace"),
                                  f"{major.value}.{minor.value}", memory.value // 2**20))
    return devices


def cuda_device_problem() -> str | None:
    """None when a CUDA device is usable here, else one line saying what is missing."""
    try:
        cuda_devices()
    except NoCudaDevice as exc:
        return str(exc)
    return None
