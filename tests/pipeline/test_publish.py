"""publish: single-file artifacts are copied, package archives become folders, and nothing whose
own gate or an upstream gate failed is published."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from targets.coreml import mlpackage
from pipeline.artifact import Artifact, sha256_file
from pipeline.graph import Graph, NodeResult, Stage, StageOutput
from pipeline.publish import publish
from targets.base import Target


class _Stage(Stage):
    stage = "fake"
    tools = ()

    def __init__(self, name: str, inputs: tuple[str, ...], outputs: tuple[str, ...],
                 target: str = "torch", precision: str = "fp32") -> None:
        self._name, self.inputs, self.outputs = name, inputs, outputs
        self.target, self.precision = target, precision

    @property
    def name(self) -> str:
        return self._name

    def config(self) -> dict[str, Any]:
        return {}

    def run(self, inputs, workdir) -> StageOutput:  # pragma: no cover - never run here
        raise NotImplementedError


class _Target(Target):
    name = "fake"
    platform = "fakeos"
    precisions = ("fp32", "fp16")
    suffixes = (".mlpackage",)

    def stages(self, ctx, precisions):
        return []

    def runner(self, path, threads):  # pragma: no cover - never run here
        raise NotImplementedError

    def publish_name(self, output: str, precision: str, suffix: str) -> str:
        return f"Model_{precision}{suffix}" if suffix == ".mlpackage" else f"{output}{suffix}"

    def publish_artifact(self, src: Path, dst: Path) -> None:
        """Packages as Core ML publishes them, other files as every target does."""
        if dst.suffix == ".mlpackage":
            from targets.coreml import CoremlTarget

            return CoremlTarget().publish_artifact(src, dst)
        return super().publish_artifact(src, dst)


def _result(stage: Stage, verdict: str, outputs: dict[str, Artifact]) -> NodeResult:
    return NodeResult(stage, "ran", outputs, {"parity": {"verdict": verdict}})


def _make_package(folder: Path, weights: bytes) -> Path:
    """A minimal package: manifest, an empty ML Program spec, a weight file."""
    data = folder / "Data" / "com.apple.CoreML"
    (data / "weights").mkdir(parents=True)
    spec = mlpackage.proto_modules().Model_pb2.Model(specificationVersion=8)
    (data / "model.mlmodel").write_bytes(spec.SerializeToString())
    (data / "weights" / "weight.bin").write_bytes(weights)
    manifest = {"fileFormatVersion": "1.0.0", "rootModelIdentifier": "M",
                "itemInfoEntries": {"M": {"name": "model.mlmodel",
                                          "path": "com.apple.CoreML/model.mlmodel"},
                                    "W": {"name": "weights", "path": "com.apple.CoreML/weights"}}}
    (folder / "Manifest.json").write_text(json.dumps(manifest))
    return folder


def test_packages_become_folders_files_are_copied_failures_stay(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    archives = {}
    for precision, weights in (("fp32", b"32" * 8), ("fp16", b"16" * 8)):
        package = _make_package(work / f"{precision}.mlpackage", weights)
        archive = work / f"{precision}.zip"
        archives[precision] = Artifact("mlpackage", mlpackage.pack(package, archive), archive)
    onnx_file = work / "model.onnx"
    onnx_file.write_bytes(b"onnx bytes")
    onnx = Artifact("onnx", sha256_file(onnx_file), onnx_file)

    trunk = _Stage("trunk", (), ("program",))
    good = _Stage("fake:fp32", ("program",), ("fake_fp32",), "fake", "fp32")
    bad = _Stage("fake:fp16", ("program",), ("fake_fp16",), "fake", "fp16")
    single = _Stage("fake:onnx", ("program",), ("plain",), "fake", "fp32")
    graph = Graph([trunk, good, bad, single])
    results = [_result(trunk, "pass", {"program": onnx}),
               _result(good, "pass", {"fake_fp32": archives["fp32"]}),
               _result(bad, "fail", {"fake_fp16": archives["fp16"]}),
               _result(single, "pass", {"plain": onnx})]
    root = tmp_path / "artifacts"
    (root / "fakeos" / "label" / "Model_fp32.mlpackage").mkdir(parents=True)   # an old copy
    published = publish(graph, results, [_Target()], root, "label")

    folder = root / "fakeos" / "label" / "Model_fp32.mlpackage"
    assert published == {"fake:fp32": folder, "fake:onnx": root / "fakeos" / "label" / "plain.onnx"}
    assert folder.is_dir() and mlpackage.artifact_digest(folder) == archives["fp32"].digest
    assert (folder / "Data/com.apple.CoreML/weights/weight.bin").read_bytes() == b"32" * 8
    assert (root / "fakeos" / "label" / "plain.onnx").read_bytes() == b"onnx bytes"
    assert not (root / "fakeos" / "label" / "Model_fp16.mlpackage").exists()
    assert sorted(p.name for p in (root / "fakeos" / "label").iterdir()) == \
        ["Model_fp32.mlpackage", "plain.onnx"]                       # no temp folders left


def test_nothing_downstream_of_a_failed_gate_is_published(tmp_path: Path) -> None:
    package = _make_package(tmp_path / "p.mlpackage", b"w")
    archive = tmp_path / "p.zip"
    artifact = Artifact("mlpackage", mlpackage.pack(package, archive), archive)
    trunk = _Stage("trunk", (), ("program",))
    node = _Stage("fake:fp32", ("program",), ("fake_fp32",), "fake", "fp32")
    results = [_result(trunk, "fail", {"program": artifact}),
               _result(node, "pass", {"fake_fp32": artifact})]
    assert publish(Graph([trunk, node]), results, [_Target()], tmp_path / "artifacts", "x") == {}
