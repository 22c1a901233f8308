"""Same inputs, same bytes: stage outputs written by two processes from two folders are equal.

Two things broke it: safetensors keeps its metadata in a hash map whose order changes per process
(the reference record, the pruned weights), and a program that went through an FX pass (the fused
program) records provenance with ``graph_id = id(graph)``, an object address, plus stack traces
with the source files' absolute paths.
"""
from __future__ import annotations

import json
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import hashlib, json, sys
    from pathlib import Path

    import numpy as np
    import torch
    from torch import nn

    from pipeline.data import ParityInputs
    from pipeline.program import export_program, load_program, save_program
    from pipeline.reference import EvalSet, Reference
    from pipeline.stages.fuse import fold_batchnorm

    out = Path(sys.argv[1])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU6()).eval()
    program, _ = export_program(model, 16)
    save_program(program, out / "program.pt2")
    module = load_program(out / "program.pt2").module()
    fold_batchnorm(module)
    fused, _ = export_program(module, 16)
    save_program(fused, out / "fused.pt2")
    batch = np.random.default_rng(0).standard_normal((3, 3, 16, 16)).astype(np.float32)
    inputs = ParityInputs(["a", "b", "c"], ["photo", "calib", "random"], batch)
    labels = np.array([0, 1, 2])
    Reference(inputs, {"logits": batch[:, 0, :2, 0]},
              EvalSet(batch, labels, batch[:, 0, :2, 0], "digits")).save(out / "ref.st")
    print(json.dumps({p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                      for p in sorted(out.iterdir())}))
""")


def _digests(folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True)
    script = folder / "make_outputs.py"
    script.write_text(SCRIPT)
    out = folder / "out"
    out.mkdir()
    done = subprocess.run([sys.executable, str(script), str(out)], capture_output=True,
                          text=True, timeout=300, env={"PYTHONPATH": str(REPO),
                                                       "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_two_processes_in_two_folders_write_the_same_bytes(tmp_path: Path) -> None:
    first = _digests(tmp_path / "checkout_one")
    second = _digests(tmp_path / "elsewhere" / "checkout_two")
    assert set(first) == {"program.pt2", "fused.pt2", "ref.st"}
    assert first == second


def test_canonical_safetensors_still_load_everywhere(tmp_path: Path) -> None:
    import numpy as np
    from safetensors import safe_open
    from safetensors.numpy import load_file, save

    from pipeline.safetensors_io import canonical

    blob = save({"b": np.arange(3, dtype=np.float32), "a": np.ones((2, 2), np.int64)},
                metadata={"z": "1", "a": "2", "m": "3"})
    fixed = canonical(blob)
    assert canonical(fixed) == fixed
    assert (8 + struct.unpack("<Q", fixed[:8])[0]) % 8 == 0    # tensor data stays aligned
    path = tmp_path / "x.safetensors"
    path.write_bytes(fixed)
    loaded = load_file(str(path))
    assert loaded["b"].tolist() == [0.0, 1.0, 2.0] and loaded["a"].shape == (2, 2)
    with safe_open(str(path), framework="numpy") as handle:
        assert handle.metadata() == {"z": "1", "a": "2", "m": "3"}
