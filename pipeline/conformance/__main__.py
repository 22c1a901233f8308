"""``python -m pipeline.conformance [--fast] [--out DIR] [CASE ...]`` (``make conformance``)."""
from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.conformance.run import run_suite


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.conformance",
                                     description="ONNX node tests through ONNX -> TFLite")
    parser.add_argument("--fast", action="store_true", help="only the fast subset")
    parser.add_argument("--out", type=Path, default=Path("artifacts/conformance"))
    parser.add_argument("cases", nargs="*", help="run only these case names")
    args = parser.parse_args(argv)
    document = run_suite(args.out, fast=args.fast, names=args.cases or None)
    s = document["summary"]
    print(f"{s['run']} cases: {s['pass']} pass ({100 * (s['pass_rate'] or 0):.1f} %), "
          f"{s['fail']} fail, {s['expected-fail']} expected-fail -> "
          f"{args.out / 'conformance.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
