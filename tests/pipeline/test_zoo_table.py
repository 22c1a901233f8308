"""`mobile-export zoo`: the standard grid, as a table and as JSON."""
from __future__ import annotations

import json

from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.models.registry import PAPER_TABLE, standard_grid


def test_zoo_json_lists_the_standard_grid() -> None:
    result = CliRunner().invoke(app, ["zoo", "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == len(standard_grid()) == 16 + 5 + 2 + 2
    assert all(set(r) == {"name", "width", "resolution", "params", "macs"} for r in rows)
    v2 = next(r for r in rows if (r["name"], r["width"]) == ("mobilenet_v2", 1.0))
    assert v2["params"] == 3_504_872 and v2["resolution"] == 224
    for row in rows:
        paper_params, paper_macs = PAPER_TABLE[(row["name"], row["width"], row["resolution"])]
        assert abs(row["macs"] / 1e6 - paper_macs) / paper_macs < 0.12   # tight checks: models/


def test_zoo_table_has_every_column() -> None:
    result = CliRunner().invoke(app, ["zoo"])
    assert result.exit_code == 0
    for column in ("name", "α", "resolution", "params", "MACs", "fp32 size"):
        assert column in result.stdout
    assert "mobilenet_v3_large" in result.stdout and "3,504,872" in result.stdout
