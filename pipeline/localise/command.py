"""``localise`` on one file: find its node in the run, then localise it
(pipeline.localise.locate)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.errors import UserInputError
from pipeline.localise.locate import localise
from pipeline.report.writer import read_report
from pipeline.verify_artifact import check_suffix, node_for, recorded_digest


def localise_artifact(artifact: Path, run_dir: Path, node_name: str | None = None,
                      threads: int = 1) -> dict[str, Any]:
    """The localisation record of ``artifact`` against the run in ``run_dir``."""
    artifact = Path(artifact)
    if not artifact.exists():
        raise UserInputError(f"{artifact} does not exist; pass an artifact file")
    if artifact.suffix == ".pt2":
        raise UserInputError(f"{artifact.name}: a .pt2 is the reference side; localise takes "
                             "a converted artifact (.onnx, .tflite, .mlpackage, .engine)")
    report = read_report(run_dir)
    if node_name is not None:
        node = next((n for n in report["nodes"] if n.get("name") == node_name), None)
        if node is None:
            names = [n.get("name") for n in report["nodes"]]
            raise UserInputError(f"the run has no node '{node_name}'; it has {names}")
    else:       # a failed node's artifact stays a cache object (no suffix): found by digest
        node = node_for(report, recorded_digest(artifact))
    if node is None or artifact.suffix:
        check_suffix(artifact)
    return localise(report, node, artifact, threads)
