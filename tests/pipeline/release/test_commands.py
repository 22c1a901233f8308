"""The commands: ``mobile-export keygen``, ``publish`` and ``verify-release`` exit codes and lines
(0 when everything holds; 1 with one line per problem; 2 for bad input)."""
from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from pipeline.cli import app

pytestmark = pytest.mark.slow


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_keygen_publish_verify_from_the_command_line(released_run, tmp_path):
    runner = CliRunner()
    keys = runner.invoke(app, ["keygen", str(tmp_path / "keys")])
    assert keys.exit_code == 0 and "release-key.pem" in keys.output
    url = f"file://{tmp_path}/releases"
    args = ["publish", str(released_run["run_dir"]), "--to", url,
            "--key", str(tmp_path / "keys" / "release-key.pem"), "--version", "2.1.0"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert _plain(first.output).startswith(f"published: {url}/{released_run['label']}/2.1.0")
    assert "already published, unchanged" in _plain(runner.invoke(app, args).output)
    release = f"{url}/{released_run['label']}/2.1.0"
    verify = ["verify-release", release, "--public-key", str(tmp_path / "keys" / "release-key.pub")]
    ok = runner.invoke(app, verify)
    assert ok.exit_code == 0 and "release OK" in ok.output, ok.output
    (tmp_path / "releases" / released_run["label"] / "2.1.0" / "onnx" / "model.onnx").unlink()
    bad = runner.invoke(app, verify)
    assert bad.exit_code == 1
    assert _plain(bad.output).splitlines() == ["problem: onnx/model.onnx: missing (listed in the "
                                               "manifest)"]


def test_a_refused_publish_exits_1_naming_the_node(run_copy, tmp_path):
    path = run_copy["run_dir"] / "report.json"
    report = json.loads(path.read_text())
    next(n for n in report["nodes"] if n["name"] == "coreml:fp32")["parity"]["verdict"] = "unverified"
    path.write_text(json.dumps(report))
    result = CliRunner().invoke(app, ["publish", str(run_copy["run_dir"]), "--to",
                                      str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "coreml:fp32 (unverified" in _plain(result.output)
    assert not (tmp_path / "out").exists()


def test_bad_input_exits_2_with_one_error_line(released_run, tmp_path):
    runner = CliRunner()
    bad_key = tmp_path / "key.pem"
    bad_key.write_text("nope")
    for args in (["publish", str(released_run["run_dir"]), "--to", "s3://id:secret@b/x"],
                 ["publish", str(tmp_path), "--to", str(tmp_path / "out")],
                 ["publish", str(released_run["run_dir"]), "--to", str(tmp_path / "o"),
                  "--key", str(bad_key)],
                 ["publish", str(released_run["run_dir"]), "--to", str(tmp_path / "o"),
                  "--version", "../1"]):
        result = runner.invoke(app, args)
        lines = [l for l in _plain(result.output).splitlines() if l.strip()]
        assert result.exit_code == 2, (args, result.output)
        assert len(lines) == 1 and lines[0].startswith("error:"), lines
        assert "secret" not in result.output
