"""The limits the issues set on ``make bench``'s ratios, and verdicts that say why one is missed.

Every int8 latency figure depends on the CPU: without an int8 dot-product instruction (x86 VNNI
or AMX, ARM dot product), int8 convolutions multiply at about the rate of fp32 FMA, so an int8
model gains little or loses. A verdict on such a CPU says so, with the CPU's int8 flags
(``pipeline.machine.cpu_int8_features``).
"""
from __future__ import annotations

from typing import Any

#: ratio name -> (limit, "max" when the ratio must stay at or below it, "min" at or above)
GATES: dict[str, tuple[float, str]] = {
    "int8_over_fp32": (0.45, "max"),                 # ORT int8 / ORT fp32 (quantize issue)
    "fp32_over_pruned30": (1.3, "min"),              # ORT speed-up of 30 % structured pruning
    "tflite_fp32_over_ort_fp32": (1.05, "max"),      # Android issue
    "tflite_int8_over_tflite_fp32": (0.45, "max"),   # Android issue
    "tflite_fp32_over_native_fp32": (1.02, "max"),   # speed issue: Keras-native reference
    "tflite_int8_over_native_int8": (1.05, "max"),   # speed issue: Keras-native reference
}


def figure(name: str, value: float, machine: dict[str, Any]) -> dict[str, Any]:
    """``{value, limit, verdict}`` of one gated ratio."""
    return {"value": value, "limit": GATES[name][0], "verdict": verdict(name, value, machine)}


def verdict(name: str, value: float, machine: dict[str, Any]) -> str:
    """``met``, ``not met``, or for an int8 miss on a CPU without an int8 dot product, that."""
    limit, kind = GATES[name]
    if (value <= limit) if kind == "max" else (value >= limit):
        return "met"
    int8 = machine.get("cpu_int8") or {}
    if "int8" in name and not int8.get("int8_dot_product", True):
        flags = ", ".join(int8.get("flags") or []) or "none"
        return (f"not met on this CPU: no int8 dot-product instruction (VNNI/AMX/ARM dotprod; "
                f"int8 flags: {flags}), so int8 multiplies at about the fp32 rate")
    return "not met"
