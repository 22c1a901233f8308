"""`verify`: the published ONNX passes again; a deliberately perturbed copy must fail."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from pipeline.errors import UserInputError
from pipeline.verify_artifact import verify_artifact


def _published_onnx(tiny_run) -> Path:
    node = next(n for n in tiny_run.report["nodes"] if n["name"] == "export_onnx")
    return Path(node["artifact"]["path"])


def test_published_artifact_verifies(tiny_run) -> None:
    result = verify_artifact(_published_onnx(tiny_run), tiny_run.out_dir)
    assert result["verdict"] == "pass" and result["matches_run"]
    assert result["node"] == "export_onnx"


def test_perturbed_weights_fail(tiny_run, tmp_path: Path) -> None:
    model = onnx.load(_published_onnx(tiny_run))
    largest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    weights = numpy_helper.to_array(largest).copy()
    weights.flat[: weights.size // 10] *= 1.5          # a converter that "silently changes numbers"
    largest.CopyFrom(numpy_helper.from_array(weights, largest.name))
    bad = tmp_path / "perturbed.onnx"
    onnx.save(model, bad)
    result = verify_artifact(bad, tiny_run.out_dir)
    assert result["verdict"] == "fail" and not result["matches_run"]
    assert any("max_rel" in f for f in result["failures"])


def test_verify_refuses_unknown_files(tiny_run, tmp_path: Path) -> None:
    other = tmp_path / "model.bin"
    other.write_bytes(b"\0" * 16)
    with pytest.raises(UserInputError, match="no target runs '.bin' files"):
        verify_artifact(other, tiny_run.out_dir)
    with pytest.raises(UserInputError, match="holds no report.json"):
        verify_artifact(_published_onnx(tiny_run), tmp_path)


# -- hostile inputs: a crafted report, artifact or cache never runs code or deletes a file ----

def _copy_run(tiny_run, tmp_path: Path, change) -> Path:
    import json

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    report = json.loads((tiny_run.out_dir / "report.json").read_text())
    change(report)
    (run_dir / "report.json").write_text(json.dumps(report))
    return run_dir


@pytest.mark.parametrize("change, words", [
    (lambda r: r["run"]["reference"].update(sha256="../../outside/precious"), "shape"),
    (lambda r: r.update(nodes={"a": 1}), "shape"),
    (lambda r: r.pop("run"), "shape"),
    (lambda r: r["nodes"][0]["parity"].update(cosine="high"), "shape"),
])
def test_a_report_of_the_wrong_shape_is_one_clear_error(tiny_run, tmp_path, change,
                                                        words) -> None:
    run_dir = _copy_run(tiny_run, tmp_path, change)
    with pytest.raises(UserInputError, match=words):
        verify_artifact(_published_onnx(tiny_run), run_dir)


def test_a_crafted_cache_is_read_but_nothing_in_it_is_deleted(tiny_run, tmp_path) -> None:
    """The report points the reference at a cache the attacker made, holding a file whose
    content does not match its digest: verify refuses it and deletes nothing."""
    digest = "ab" * 32
    planted = tmp_path / "fake_cache" / "objects" / "ab" / digest
    planted.parent.mkdir(parents=True)
    planted.write_text("not the reference")

    def change(report: dict) -> None:
        report["run"]["cache_dir"] = str(tmp_path / "fake_cache")
        report["run"]["reference"]["sha256"] = digest

    with pytest.raises(UserInputError, match="not in its cache"):
        verify_artifact(_published_onnx(tiny_run), _copy_run(tiny_run, tmp_path, change))
    assert planted.read_text() == "not the reference"


@pytest.mark.parametrize("data", [b"garbage", b"\x08\x07\x12\x04\xff\xff\xff\xff"])
def test_an_onnx_that_does_not_parse_is_one_clear_error(tiny_run, tmp_path, data) -> None:
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(data)
    with pytest.raises(UserInputError, match="not a valid ONNX model|holds no graph"):
        verify_artifact(bad, tiny_run.out_dir)


def test_a_pt2_with_a_payload_is_refused_and_never_runs(tiny_run, tmp_path) -> None:
    import json
    import os
    import pickle
    import zipfile

    marker = tmp_path / "owned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    fused = next(n for n in tiny_run.report["nodes"] if n["name"] == "fuse")
    with zipfile.ZipFile(fused["artifact"]["path"]) as archive:
        members = {i.filename: archive.read(i) for i in archive.infolist()}
    config_name = next(m for m in members if m.endswith("model_weights_config.json"))
    config = json.loads(members[config_name])
    meta = next(iter(config["config"].values()))
    meta["use_pickle"] = True
    members[config_name] = json.dumps(config).encode()
    members[config_name.rsplit("/", 1)[0] + "/" + meta["path_name"]] = pickle.dumps(Payload())
    crafted = tmp_path / "fused.pt2"
    with zipfile.ZipFile(crafted, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(UserInputError, match="pickled weight"):
        verify_artifact(crafted, tiny_run.out_dir)
    assert not marker.exists()


def test_a_runtime_that_does_not_finish_in_time_is_one_clear_error(tiny_run) -> None:
    with pytest.raises(UserInputError, match="timed out"):
        verify_artifact(_published_onnx(tiny_run), tiny_run.out_dir, timeout_s=0.01)
