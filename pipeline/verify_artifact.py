"""``mobile-export verify``: re-check one artifact file against a finished run's reference."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.artifact import sha256_file
from pipeline.cache import Cache, CorruptEntry
from pipeline.errors import UserInputError
from pipeline.parity import Tolerance, compare_outputs, judge, run_outputs, tolerance_for
from pipeline.program import load_program
from pipeline.reference import Reference
from pipeline.report.writer import read_report
from targets.base import Runner, registered_targets
from targets.torch_ref import TorchRunner


def runner_for(path: Path, threads: int) -> Runner:
    """The runner of the registered target that runs this file type (or torch.export for .pt2)."""
    if path.suffix == ".pt2":
        return TorchRunner(load_program(path).module(), threads, "torch-export")
    for target_cls in registered_targets().values():
        if path.suffix in target_cls.suffixes:
            target = target_cls()
            reason = target.unavailable_reason()
            if reason:
                raise UserInputError(f"cannot run {path.name} here: {reason}")
            return target.runner(path, threads)
    raise UserInputError(f"{path.name}: no runner for '{path.suffix}' files; "
                         "verify takes .pt2 files and the files of a registered target "
                         f"({', '.join(sorted(_suffixes()))})")


def _suffixes() -> set[str]:
    return {s for t in registered_targets().values() for s in t.suffixes}


def _node_for(report: dict[str, Any], digest: str) -> dict[str, Any] | None:
    for node in report["nodes"]:
        if (node.get("artifact") or {}).get("sha256") == digest:
            return node
    return None


def verify_artifact(artifact: Path, run_dir: Path, threads: int = 1) -> dict[str, Any]:
    """Parity of ``artifact`` against the run's reference, judged at the node's precision."""
    if not artifact.exists():
        raise UserInputError(f"{artifact} does not exist; pass an artifact file")
    report = read_report(run_dir)
    ref_info = report["run"].get("reference")
    if not ref_info:
        raise UserInputError(f"{run_dir}/report.json records no reference; rerun the pipeline")
    try:
        reference_file = Cache(Path(report["run"]["cache_dir"])).get(ref_info["sha256"],
                                                                    "reference")
    except CorruptEntry as exc:
        raise UserInputError(f"the run's reference is gone from the cache ({exc}); "
                             "rerun the pipeline to recreate it") from None
    reference = Reference.load(reference_file.path)
    if artifact.suffix == ".mlpackage":
        from pipeline.mlpackage import artifact_digest

        digest = artifact_digest(artifact)   # checks the manifest's paths before reading
    else:
        digest = sha256_file(artifact)
    node = _node_for(report, digest)
    precision = node["precision"] if node else "fp32"
    overrides = {p: Tolerance.model_validate(t)
                 for p, t in report["run"]["config"].get("tolerances", {}).items()}
    tolerance = tolerance_for(precision, overrides)
    with runner_for(artifact, threads) as runner:
        outputs = run_outputs(runner, reference.inputs)
    result = judge(compare_outputs(reference.outputs, outputs), tolerance, len(reference.inputs))
    return {"artifact": str(artifact), "sha256": digest,
            "node": node["name"] if node else None,
            "matches_run": node is not None, "precision": precision, **result.to_json()}
