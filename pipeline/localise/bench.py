"""``make bench-localise``: what a localisation costs, beside a ``verify`` of the same artifact.

For every artifact of one run (default: MobileNetV2 1.0-224, ONNX / TFLite / Core ML at fp32
and int8), ``verify`` and ``localise`` run alternately, each in a fresh process that makes the
same isolated call a user's command makes, three times: the figures are the median seconds of
the call and the peak memory of its runtime child (the child does all the work), and the ratio
localise / verify of both. Results go to ``artifacts/bench/localise.json`` with the machine.

``python -m pipeline.localise.bench --out FILE [--width 1.0] [--resolution 224] ...``
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPEATS = 3
NODES = ("export_onnx", "onnx:int8", "tflite:fp32", "tflite:int8", "coreml:fp32", "coreml:int8")


def one(kind: str, artifact: Path, run_dir: Path, node: str) -> dict[str, Any]:
    """One ``verify`` or ``localise`` call in this process; its child's peak memory."""
    started = time.perf_counter()
    if kind == "verify":
        from pipeline.verify_artifact import verify_artifact

        result = verify_artifact(artifact, run_dir)
        extra: dict[str, Any] = {"verdict": result["verdict"]}
    else:
        from pipeline.localise.command import localise_artifact

        record = localise_artifact(artifact, run_dir, node_name=node)
        first = record["first_divergent"]
        extra = {"compared": record["compared"], "samples": record["samples"],
                 "first_divergent": first["torch_module"] if first else None,
                 "reference_s": record["seconds"]["reference"]}
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"seconds": round(seconds, 3), "child_peak_rss_mib": round(peak, 1), **extra}


def _spawn(kind: str, artifact: str, run_dir: Path, node: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "pipeline.localise.bench", "--one", kind,
                          "--artifact", artifact, "--run", str(run_dir), "--node", node],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} {artifact} failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _named_copy(node: dict[str, Any], folder: Path) -> str:
    """The artifact with its file suffix: a failed node's artifact is a cache object (no
    suffix), which ``verify`` does not take."""
    import os
    import shutil

    from pipeline.files import atomic_copy, sweep_temp, temp_dir
    from targets.base import registered_targets

    path = Path(node["artifact"]["path"])
    if path.suffix:
        return str(path)
    suffix = registered_targets()[node["target"]].suffixes[0]
    copy = folder / f"{node['name'].replace(':', '_')}{suffix}"
    folder.mkdir(parents=True, exist_ok=True)
    sweep_temp(folder)                  # a copy a killed bench left half-made
    if path.is_dir() and not copy.exists():     # an .mlpackage: staged, then renamed
        staged = temp_dir(folder, copy.name)
        shutil.copytree(path, staged / copy.name)
        os.replace(staged / copy.name, copy)
        shutil.rmtree(staged)
    elif not copy.exists():
        atomic_copy(path, copy)
    return str(copy)


def measure(settings: dict[str, Any], root: Path) -> dict[str, Any]:
    from pipeline.config import PipelineConfig
    from pipeline.machine import describe_machine
    from pipeline.run import execute

    config = PipelineConfig.model_validate({**settings, "artifacts_dir": root / "artifacts",
                                            "out": root / "report"})
    started = time.perf_counter()
    outcome = execute(config)
    result: dict[str, Any] = {"machine": describe_machine(), "model": outcome.report["model"],
                              "run_s": round(time.perf_counter() - started, 1), "nodes": {}}
    for node in outcome.report["nodes"]:
        if node["name"] not in NODES or not node.get("artifact"):
            continue
        runs: dict[str, list[dict[str, Any]]] = {"verify": [], "localise": []}
        artifact = _named_copy(node, root / "named")
        for _ in range(REPEATS):             # alternately: drift hits both alike
            for kind in runs:
                runs[kind].append(_spawn(kind, artifact, outcome.out_dir, node["name"]))
        figures = {kind: {"median_s": statistics.median(r["seconds"] for r in rs),
                          "child_peak_rss_mib": max(r["child_peak_rss_mib"] for r in rs)}
                   for kind, rs in runs.items()}
        last = runs["localise"][-1]
        figures["localise"].update({k: last[k] for k in ("compared", "samples",
                                                         "first_divergent", "reference_s")})
        figures["ratio_s"] = round(figures["localise"]["median_s"]
                                   / figures["verify"]["median_s"], 2)
        figures["extra_mib"] = round(figures["localise"]["child_peak_rss_mib"]
                                     - figures["verify"]["child_peak_rss_mib"], 1)
        result["nodes"][node["name"]] = figures
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--work", type=Path, default=Path("artifacts/bench/localise-run"))
    parser.add_argument("--one", choices=("verify", "localise"))
    parser.add_argument("--artifact")
    parser.add_argument("--run", type=Path)
    parser.add_argument("--node")
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one, Path(args.artifact), args.run, args.node)))
        return 0
    if args.out is None:
        parser.error("--out is required")
    result = measure({"model": args.model, "width": args.width, "resolution": args.resolution,
                      "targets": ["onnx", "tflite", "coreml"], "precisions": ["fp32", "int8"]},
                     args.work)
    from pipeline.files import atomic_write_bytes

    atomic_write_bytes(args.out, (json.dumps(result, indent=1) + "\n").encode())
    print(json.dumps(result["nodes"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
