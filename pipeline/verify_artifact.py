"""``mobile-export verify``: re-check one artifact file against a finished run's reference.

The artifact is whatever the user hands in, so it is treated as hostile: the report is checked
for shape, the reference is read from the run's cache without ever deleting anything there, a
``.pt2`` passes pipeline.pt2_guard and an ``.onnx`` pipeline.onnx_guard before any loader sees
them, and the runtime itself runs in a child process with a timeout (pipeline.isolate), so a
file that crashes or hangs a runtime's native code becomes one clear error line too.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

from pipeline.artifact import sha256_file
from pipeline.cache import Cache, CorruptEntry
from pipeline.errors import UserInputError
from pipeline.files import PathOutsideRoot
from pipeline.parity import Tolerance, compare_outputs, judge, run_outputs, tolerance_for
from pipeline.reference import Reference
from pipeline.report.writer import read_report
from targets.base import Runner, RuntimeLoadError, target_for_file

#: how long the runtime may take to load and run the reference inputs
VERIFY_TIMEOUT_S = 600


def runner_for(path: Path, threads: int) -> Runner:
    """The runner of the registered target that runs this file type (or torch.export for .pt2)."""
    if path.suffix == ".pt2":
        from pipeline.program import load_program
        from targets.torch_ref import TorchRunner

        return TorchRunner(load_program(path).module(), threads, "torch-export")
    check_suffix(path)
    target = target_for_file(path)
    reason = target.unavailable_reason()
    if reason:
        raise UserInputError(f"cannot run {path.name} here: {reason}")
    return target.runner(path, threads)


def check_suffix(path: Path) -> None:
    """Refuse a file no target runs before a child process is started for it."""
    try:
        target_for_file(path)
    except LookupError as exc:
        raise UserInputError(f"{path.name}: {exc}; pass one of those") from None


def node_for(report: dict[str, Any], digest: str) -> dict[str, Any] | None:
    for node in report["nodes"]:
        if (node.get("artifact") or {}).get("sha256") == digest:
            return node
    return None


@contextlib.contextmanager
def runtime_errors_as_user_input(path: Path) -> Iterator[None]:
    """A runtime's refusal of a user's artifact as one UserInputError line naming it."""
    try:
        yield
    except UserInputError:
        raise
    except RuntimeLoadError as exc:
        raise UserInputError(f"{path.name}: {exc}; pass an artifact this tool wrote") from None
    except (ValueError, RuntimeError) as exc:   # runtimes raise these on bad feeds/graphs
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:240]
        raise UserInputError(f"{path.name} does not run on the run's inputs "
                             f"({type(exc).__name__}: {first}); is it this run's model?") from None


def check_in_child(artifact: str, reference: str, tolerance: dict[str, Any],
                   threads: int) -> dict[str, Any]:
    """Run ``artifact`` on the reference inputs and judge it (the child process's half)."""
    path = Path(artifact)
    ref = Reference.load(Path(reference))
    with runtime_errors_as_user_input(path):
        with runner_for(path, threads) as runner:
            outputs = run_outputs(runner, ref.inputs)
    result = judge(compare_outputs(ref.outputs, outputs), Tolerance.model_validate(tolerance),
                   len(ref.inputs))
    return result.to_json()


def check_isolated(artifact: Path, reference: Path, tolerance: Tolerance, threads: int,
                   timeout_s: float = VERIFY_TIMEOUT_S) -> dict[str, Any]:
    """:func:`check_in_child` in a child process: a refusal comes back as the child's own
    UserInputError; a crash, a hang or any other failure as one UserInputError line."""
    from pipeline.isolate import run_on_users_file

    return run_on_users_file(f"{__name__}:check_in_child", {
        "artifact": str(Path(artifact).resolve()), "reference": str(reference),
        "tolerance": tolerance.model_dump(), "threads": threads},
        command="verify", path=Path(artifact), timeout_s=timeout_s)


def recorded_digest(artifact: Path) -> str:
    """The digest the run recorded for this file: its target's own (a Core ML package's is
    canonical), sha256 of the bytes for a .pt2."""
    if artifact.suffix == ".pt2":
        return sha256_file(artifact)
    try:
        return target_for_file(artifact).artifact_digest(artifact)
    except LookupError:
        return sha256_file(artifact)     # runner_for names the problem next


def verify_artifact(artifact: Path, run_dir: Path, threads: int = 1,
                    timeout_s: float = VERIFY_TIMEOUT_S) -> dict[str, Any]:
    """Parity of ``artifact`` against the run's reference, judged at the node's precision."""
    artifact = Path(artifact)
    if not artifact.exists():
        raise UserInputError(f"{artifact} does not exist; pass an artifact file")
    report = read_report(run_dir)
    ref_info = report["run"].get("reference")
    if not ref_info:
        raise UserInputError(f"{run_dir}/report.json records no reference; rerun the pipeline")
    try:
        reference_file = Cache(Path(report["run"]["cache_dir"])).get(
            ref_info["sha256"], "reference", evict=False)
    except (CorruptEntry, PathOutsideRoot) as exc:
        raise UserInputError(f"the run's reference is not in its cache ({exc}); "
                             "rerun the pipeline to recreate it") from None
    if artifact.suffix != ".pt2":
        check_suffix(artifact)
    digest = recorded_digest(artifact)
    node = node_for(report, digest)
    precision = node["precision"] if node else "fp32"
    try:
        overrides = {p: Tolerance.model_validate(t)
                     for p, t in report["run"]["config"].get("tolerances", {}).items()}
        tolerance = tolerance_for(precision, overrides)
    except ValueError as exc:
        raise UserInputError(f"{run_dir}/report.json has tolerances of the wrong shape "
                             f"({str(exc).splitlines()[0][:160]}); rerun the pipeline") from None
    result = check_isolated(artifact, reference_file.path, tolerance, threads, timeout_s)
    return {"artifact": str(artifact), "sha256": digest,
            "node": node["name"] if node else None,
            "matches_run": node is not None, "precision": precision, **result}
