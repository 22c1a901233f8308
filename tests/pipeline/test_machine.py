"""Machine description recorded with latency figures."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pipeline.machine import cpu_int8_features, describe_machine


def test_describe_machine_fields() -> None:
    info = describe_machine()
    for key in ("platform", "python", "cpu_model", "logical_cores", "memory_gib", "versions"):
        assert key in info
    assert info["logical_cores"] >= 1
    assert info["memory_gib"] is None or info["memory_gib"] > 0
    assert "numpy" in info["versions"]
    json.dumps(info)


def test_describe_machine_returns_a_copy() -> None:
    describe_machine()["versions"]["numpy"] = "tampered"
    assert describe_machine()["versions"]["numpy"] != "tampered"


def test_does_not_import_heavy_modules() -> None:
    code = (
        "import sys; from pipeline.machine import describe_machine; describe_machine(); "
        "print(','.join(m for m in ('torch', 'onnxruntime', 'tensorflow') if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == ""


def test_int8_features_tell_a_dot_product_cpu_from_an_avx2_one() -> None:
    avx2 = "processor\t: 0\nflags\t\t: fpu sse2 fma avx f16c avx2\n"
    vnni = "flags\t\t: fma avx2 avx512f avx512bw avx512_vnni amx_int8\n"
    arm = "Features\t: fp asimd asimddp i8mm\n"
    assert cpu_int8_features(avx2) == {"flags": ["avx2", "fma"], "int8_dot_product": False}
    assert cpu_int8_features(vnni)["int8_dot_product"] is True
    assert cpu_int8_features(vnni)["flags"] == ["avx2", "fma", "avx512f", "avx512bw",
                                                "avx512_vnni", "amx_int8"]
    assert cpu_int8_features(arm) == {"flags": ["asimddp", "i8mm"], "int8_dot_product": True}
    assert cpu_int8_features("") == {"flags": [], "int8_dot_product": False}
    assert describe_machine()["cpu_int8"] == cpu_int8_features()
