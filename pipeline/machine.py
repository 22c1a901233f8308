"""Describe the machine a latency figure was measured on (recorded next to every figure).

Cheap and side-effect free: reads /proc, ``platform`` and package metadata; never imports torch,
onnxruntime or other heavy modules just to learn their versions.
"""
from __future__ import annotations

import copy
import os
import platform
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

#: Distributions whose versions are recorded when installed; alternatives share one key.
RUNTIME_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "numpy": ("numpy",),
    "torch": ("torch",),
    "onnx": ("onnx",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "tensorflow": ("tensorflow", "tensorflow-cpu"),
    "ai-edge-litert": ("ai-edge-litert",),
    "coremltools": ("coremltools",),
    "tensorrt": ("tensorrt",),
}


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _cpuinfo_field(text: str, keys: tuple[str, ...]) -> str | None:
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in keys and value.strip():
            return value.strip()
    return None


def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (x86 ``model name``, ARM ``Hardware``/``Model``), else platform."""
    text = _read("/proc/cpuinfo")
    found = _cpuinfo_field(text, ("model name", "Hardware", "Model", "cpu model", "Processor"))
    return found or platform.processor() or platform.machine() or "unknown"


#: CPU flags that decide how fast int8 runs: x86 dot-product / matrix extensions (VNNI, AMX)
#: and their AVX2/AVX-512 base; ARM dot product (``asimddp``) and int8 matrix multiply (``i8mm``).
INT8_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8",
              "asimddp", "i8mm")
#: Of those, the ones with an int8 dot-product instruction (4 int8 products summed per lane).
INT8_DOT_PRODUCT = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


def cpu_int8_features(text: str | None = None) -> dict[str, Any]:
    """The :data:`INT8_FLAGS` this CPU has (from /proc/cpuinfo, or ``text``) and whether one of
    them is an int8 dot product. Without one (e.g. AVX2 alone), int8 convolutions multiply at
    roughly the rate of fp32 FMA, so int8 gains little latency over fp32 on CPU runtimes."""
    text = _read("/proc/cpuinfo") if text is None else text
    flags = set((_cpuinfo_field(text, ("flags", "Features")) or "").split())
    present = [flag for flag in INT8_FLAGS if flag in flags]
    return {"flags": present, "int8_dot_product": any(f in flags for f in INT8_DOT_PRODUCT)}


def total_memory_gib() -> float | None:
    """Physical memory in GiB (psutil when present, else /proc/meminfo)."""
    try:
        import psutil

        return round(psutil.virtual_memory().total / 2**30, 2)
    except ImportError:
        pass
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 2**20, 2)  # kB -> GiB
    return None


def usable_cores() -> int | None:
    """Cores this process may run on (CPU affinity / cgroup cpuset), where the OS says."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def package_versions() -> dict[str, str]:
    """Versions of the runtimes in :data:`RUNTIME_DISTRIBUTIONS` that are installed (metadata only)."""
    versions: dict[str, str] = {}
    for key, dists in RUNTIME_DISTRIBUTIONS.items():
        for dist in dists:
            try:
                versions[key] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return versions


@lru_cache(maxsize=1)
def _describe() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "system": platform.system(),
        "arch": platform.machine(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "cpu_model": cpu_model(),
        "cpu_int8": cpu_int8_features(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "memory_gib": total_memory_gib(),
        "versions": package_versions(),
    }


def describe_machine() -> dict[str, Any]:
    """JSON-ready description: platform, python, cpu model, cores, memory GiB, runtime versions."""
    return copy.deepcopy(_describe())
