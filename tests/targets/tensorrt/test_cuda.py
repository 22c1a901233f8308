"""CUDA device discovery through the driver API: what it says when there is no GPU."""
from __future__ import annotations

import ctypes

import pytest

from targets.tensorrt import cuda as cuda_device
from targets.tensorrt.cuda import NoCudaDevice, cuda_device_problem, cuda_devices


class _FakeDriver:
    """Stands in for libcuda with a chosen device count or error (the real calls are ctypes)."""

    def __init__(self, count: int = 0, init_status: int = 0) -> None:
        self.count, self.init_status = count, init_status

    def cuInit(self, flags: int) -> int:  # noqa: N802 - the driver's name
        return self.init_status

    def cuDeviceGetCount(self, ref) -> int:  # noqa: N802
        ctypes.cast(ref, ctypes.POINTER(ctypes.c_int))[0] = self.count
        return 0


def test_without_the_driver_library_the_problem_names_it(monkeypatch) -> None:
    monkeypatch.setattr(cuda_device.ctypes, "CDLL", _raise_oserror)
    monkeypatch.setattr(cuda_device.ctypes.util, "find_library", lambda name: None)
    with pytest.raises(NoCudaDevice, match="libcuda.so.1"):
        cuda_devices()


def _raise_oserror(name: str):
    raise OSError(f"{name}: cannot open shared object file")


def test_zero_devices_and_driver_errors_are_explained(monkeypatch) -> None:
    monkeypatch.setattr(cuda_device, "_driver", lambda: _FakeDriver(count=0))
    assert "reports 0 devices" in cuda_device_problem()
    monkeypatch.setattr(cuda_device, "_driver", lambda: _FakeDriver(init_status=100))
    assert "cuInit returned CUDA driver error 100" in cuda_device_problem()


def test_this_machine_answers_without_raising() -> None:
    problem = cuda_device_problem()
    if problem is None:
        device = cuda_devices()[0]
        assert device.name and device.memory_mib > 0
        assert device.compute_capability.count(".") == 1
    else:
        assert problem.startswith("no CUDA device")
