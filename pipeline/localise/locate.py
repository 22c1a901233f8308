"""Find what a localisation needs in a finished run, and run it in a child process.

Everything comes from the run's report and its cache, read-only and by digest: the layer map
and the program the exporter translated (``export_onnx``'s ``info.layer_map``), the reference
inputs. The artifact itself runs in a child (pipeline.isolate), so a file that
crashes or hangs a runtime becomes one clear error line.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.cache import Cache, CorruptEntry
from pipeline.errors import UserInputError
from pipeline.files import PathOutsideRoot
from pipeline.localise.tolerance import LayerTolerance, layer_tolerance_for

LOCALISE_TIMEOUT_S = 900


def _node(report: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((n for n in report["nodes"] if n.get("name") == name), None)


def cached_object(cache: Cache, digest: Any, kind: str, what: str) -> Path:
    """A cache object of the run, checked by digest, never evicted (a reader)."""
    if not isinstance(digest, str):
        raise UserInputError(f"the run records no {what}; rerun the pipeline (a run from "
                             "before localisation, or one that started from an ONNX file)")
    try:
        return cache.get(digest, kind, evict=False).path
    except (CorruptEntry, PathOutsideRoot, ValueError) as exc:
        raise UserInputError(f"the run's {what} is not in its cache ({exc}); rerun the "
                             "pipeline to recreate it") from None


def layer_map_path(report: dict[str, Any]) -> Path:
    """The run's layer map, checked by digest."""
    return cached_object(Cache(Path(report["run"]["cache_dir"])),
                         _layer_map_info(report).get("sha256"), "layer_map", "layer map")


def _layer_map_info(report: dict[str, Any]) -> dict[str, Any]:
    export = _node(report, "export_onnx")
    return ((export or {}).get("info") or {}).get("layer_map") or {}


def localisation_inputs(report: dict[str, Any]) -> dict[str, Path]:
    """The run's exporter program, layer map and reference, checked by digest."""
    cache = Cache(Path(report["run"]["cache_dir"]))
    return {"program": cached_object(cache, _layer_map_info(report).get("program_sha256"),
                                     "pt2", "exporter's program"),
            "layer_map": layer_map_path(report),
            "reference": cached_object(cache,
                                       (report["run"].get("reference") or {}).get("sha256"),
                                       "reference", "reference")}


def layer_tolerance_of(report: dict[str, Any], precision: str) -> LayerTolerance:
    try:
        overrides = {p: LayerTolerance.model_validate(t) for p, t in
                     (report["run"]["config"].get("layer_tolerances") or {}).items()}
    except (ValueError, AttributeError) as exc:
        raise UserInputError(f"the run's layer_tolerances have the wrong shape "
                             f"({str(exc).splitlines()[0][:160]}); rerun the pipeline") from None
    return layer_tolerance_for(precision, overrides)


def localise(report: dict[str, Any], node: dict[str, Any] | None, artifact: Path,
             threads: int = 1, timeout_s: float = LOCALISE_TIMEOUT_S) -> dict[str, Any]:
    """The localisation record of ``artifact``, judged at ``node``'s precision (fp32 when the
    artifact is no node of the run's)."""
    from pipeline.isolate import run_on_users_file

    inputs = localisation_inputs(report)
    precision = node["precision"] if node else "fp32"
    tolerance = layer_tolerance_of(report, precision)
    record = run_on_users_file("pipeline.localise.engine:localise_in_child", {
        "artifact": str(Path(artifact).resolve()), **{k: str(v) for k, v in inputs.items()},
        "precision": precision, "tolerance": tolerance.model_dump(),
        "info": (node or {}).get("info") or {}, "threads": threads,
        "target": node.get("target") if node else None,
        "stage": node.get("stage") if node else None,
        "cache_dir": str(report["run"]["cache_dir"])},
        command="localise", path=Path(artifact), timeout_s=timeout_s)
    record["node"] = node["name"] if node else None
    return record
