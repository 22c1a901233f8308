"""``conformance.json`` and ``conformance.md``: the suite's results, per case and per op."""
from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

STATUSES = ("pass", "fail", "expected-fail")


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts in all and per op family; ``pass_rate`` is passes over cases run."""
    total = Counter(r["tflite"]["status"] for r in rows)
    families: dict[str, Counter] = defaultdict(Counter)
    for row in rows:
        families[row["family"]][row["tflite"]["status"]] += 1
    run = len(rows)
    return {"run": run, **{s: total.get(s, 0) for s in STATUSES},
            "pass_rate": round(total.get("pass", 0) / run, 4) if run else None,
            "unexpected_passes": sorted(r["name"] for r in rows
                                        if r["tflite"].get("expected_fail")),
            "tensorrt_plan_ok": sum(1 for r in rows if r["tensorrt_plan"]["ok"]),
            "families": {f: {s: c.get(s, 0) for s in STATUSES}
                         for f, c in sorted(families.items())}}


def _why(row: dict[str, Any]) -> str:
    result = row["tflite"]
    text = result.get("expected_reason") or result.get("reason") or ""
    return text.replace("|", "/").replace("\n", " ")[:160]


def markdown(document: dict[str, Any]) -> str:
    """The per-op table, then every case that did not pass with its reason."""
    s = document["summary"]
    lines = [f"# ONNX backend node tests through ONNX -> TFLite ({document['subset']})", "",
             f"{s['run']} cases run: **{s['pass']} pass ({100 * (s['pass_rate'] or 0):.1f} %)**, "
             f"{s['fail']} fail, {s['expected-fail']} expected-fail; TensorRT plan checks "
             f"accept {s['tensorrt_plan_ok']}. Versions: "
             + ", ".join(f"{k} {v}" for k, v in document["versions"].items()) + ".", "",
             "| op | pass | fail | expected-fail |", "|---|---|---|---|"]
    for op, counts in s["families"].items():
        lines.append(f"| {op} | {counts['pass']} | {counts['fail']} | {counts['expected-fail']} |")
    lines += ["", "| case | status | reason |", "|---|---|---|"]
    for row in document["cases"]:
        if row["tflite"]["status"] != "pass":
            lines.append(f"| {row['name']} | {row['tflite']['status']} | {_why(row)} |")
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_reports(document: dict[str, Any], out_dir: Path) -> None:
    _write(out_dir / "conformance.json", json.dumps(document, indent=1, sort_keys=True) + "\n")
    _write(out_dir / "conformance.md", markdown(document))
