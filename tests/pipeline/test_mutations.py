"""Seeded mutation test over the files users hand in: ONNX, TFLite, safetensors and YAML.

Every mutant (flipped bytes, truncation, inserted or duplicated chunks, planted extreme integers)
must end as a parity verdict, a clean read, or one clean error line; never a traceback, a crash,
a hang, a write outside the mutant's own folder, or a call into pickle's unrestricted unpickler.
The worker (mutation_worker.py) runs in its own process so a native crash is caught as such;
TFLite mutants go through verify's child process, as the product runs them, because LiteRT does
not verify a model's flatbuffer and some mutants crash it. How many ran is printed and asserted.
"""
from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CLEAN = {"pass", "fail", "ok", "refused"}


@pytest.mark.slow
def test_every_mutant_ends_cleanly(tmp_path: Path) -> None:
    sys.path.insert(0, str(HERE))
    try:
        from mutation_worker import MUTANTS
    finally:
        sys.path.remove(str(HERE))
    root = tmp_path / "work"
    root.mkdir()
    done = subprocess.run([sys.executable, str(HERE / "mutation_worker.py"), str(root)],
                          capture_output=True, text=True, timeout=1500,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    last = records[-1] if records else None
    assert done.returncode == 0, f"worker died ({done.returncode}) at {last}: " \
                                 f"{done.stderr[-1500:]}"
    results = [r for r in records if r["outcome"] != "started"]
    seeds = {r["format"]: r["outcome"] for r in results if r["mutant"] == -1}
    assert seeds == {"onnx": "pass", "tflite": "pass", "safetensors": "ok", "yaml": "ok"}
    mutants = [r for r in results if r["mutant"] >= 0]
    counts = collections.Counter((r["format"], r["outcome"]) for r in mutants)
    print(f"\n{len(mutants)} mutants: " + ", ".join(f"{f} {o} {n}" for (f, o), n in
                                                    sorted(counts.items())))
    assert collections.Counter(r["format"] for r in mutants) == MUTANTS
    bad = [r for r in mutants if r["outcome"] not in CLEAN]
    assert not bad, "\n".join(f"{r['format']} #{r['mutant']}: {r['outcome']}: {r['detail']}"
                              for r in bad[:5])
    # the mutations really reach the readers: most are refused, none is taken silently
    for name in MUTANTS:
        assert counts[(name, "refused")] >= MUTANTS[name] // 3, counts
    # nothing was written outside the mutants' own folders (and the seeds the worker made)
    written = {p.relative_to(root).parts[0] for p in root.iterdir()}
    assert written == {"mutants", "seed.onnx", "reference.safetensors", "seed.tflite",
                       "reference_tflite.safetensors", "seed.safetensors", "seed.yaml"}
    extra = [p for p in (root / "mutants").rglob("*") if p.is_file() and p.name not in
             {"seed.onnx", "seed.tflite", "seed.safetensors", "seed.yaml"}]
    assert not extra, extra[:5]
