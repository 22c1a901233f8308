"""``make timings``: how long a user waits, measured as a user runs it, into ``timings.json``.

Three figures, each the wall time of a whole command in a fresh process, with the machine named
(timings are comparable only on one machine):

* ``floor``: starting Python and importing torch and onnxruntime, what any run of the tool
  pays (median of 5);
* ``rerun``: the run again with nothing changed, every node cached (median of 3), against the
  goal of at most the floor + 0.5 s;
* ``cold`` (``--cold``): the same run into an empty artifacts folder (training included for the
  built-in model), against the goal of 3 minutes on 2 cores.

``python -m pipeline.timings [--cold] --out FILE -- RUN_ARGS...`` (RUN_ARGS as ``mobile-export
run`` takes them; the Makefile passes the built-in model's).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RERUN_OVER_FLOOR_S = 0.5
COLD_GOAL_S = 180.0
FLOOR_CODE = "import torch, onnxruntime"


def _timed(argv: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    code = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    return time.perf_counter() - start, code


def _median(argv: list[str], repeats: int) -> dict[str, Any]:
    runs = [_timed(argv) for _ in range(repeats)]
    return {"median_s": round(statistics.median(s for s, _ in runs), 3),
            "runs_s": [round(s, 3) for s, _ in runs], "exit_codes": [c for _, c in runs]}


def measure(run_args: list[str], cold: bool) -> dict[str, Any]:
    """The figures of the module doc for ``mobile-export run RUN_ARGS``."""
    from pipeline.machine import describe_machine

    script = Path(sys.executable).parent / "mobile-export"     # what a user types
    cli = [str(script) if script.is_file() else sys.executable, *([] if script.is_file() else
                                                                  ["-m", "pipeline.cli"]),
           "run", *run_args]
    result: dict[str, Any] = {"machine": describe_machine(), "command": ["mobile-export", "run",
                                                                        *run_args]}
    result["floor"] = _median([sys.executable, "-c", FLOOR_CODE], 5)
    with tempfile.TemporaryDirectory(prefix="mobile-export-timings-") as tmp:
        where = ["--artifacts-dir", f"{tmp}/artifacts", "--out", f"{tmp}/report"] if cold else []
        if cold:
            seconds, code = _timed([*cli, *where])
            result["cold"] = {"seconds": round(seconds, 1), "exit_code": code,
                              "goal_s": COLD_GOAL_S, "met": code == 0 and seconds <= COLD_GOAL_S}
        else:
            _timed(cli)                   # fill the cache if it is not yet
        rerun = _median([*cli, *where], 3)
    goal = result["floor"]["median_s"] + RERUN_OVER_FLOOR_S
    rerun.update(goal_s=round(goal, 3), met=rerun["median_s"] <= goal,
                 over_floor_s=round(rerun["median_s"] - result["floor"]["median_s"], 3))
    result["rerun"] = rerun
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cold", action="store_true", help="also time a run into an empty "
                        "artifacts folder")
    parser.add_argument("run_args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    run_args = args.run_args[1:] if args.run_args[:1] == ["--"] else args.run_args
    result = measure(run_args, args.cold)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from pipeline.files import atomic_write_bytes

    atomic_write_bytes(args.out, (json.dumps(result, indent=1) + "\n").encode())
    machine = result["machine"]["cpu_model"]
    lines = [f"machine: {machine}, {result['machine'].get('usable_cores')} cores",
             f"floor (python + import torch, onnxruntime): {result['floor']['median_s']:.2f} s",
             f"rerun, all cached: {result['rerun']['median_s']:.2f} s "
             f"(goal <= {result['rerun']['goal_s']:.2f} s: "
             f"{'met' if result['rerun']['met'] else 'missed'})"]
    if "cold" in result:
        cold = result["cold"]
        lines.append(f"cold run: {cold['seconds']:.0f} s, exit {cold['exit_code']} "
                     f"(goal <= {COLD_GOAL_S:.0f} s: {'met' if cold['met'] else 'missed'})")
    print("\n".join(lines + [f"written: {args.out}"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
