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
        "logical_cores": os.cpu_count(),
        "usable_cores": usable_cores(),
        "memory_gib": total_memory_gib(),
        "versions": package_versions(),
    }


def describe_machine() -> dict[str, Any]:
    """JSON-ready description: platform, python, cpu model, cores, memory GiB, runtime versions."""
    return copy.deepcopy(_describe())
