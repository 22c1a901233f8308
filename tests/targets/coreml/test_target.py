"""Core ML target end to end on the digits-trained tiny MobileNetV2: fp32 / fp16 / int8 gates on
the MIL reference evaluator, published .mlpackage folders, a canonical digest that a fresh
conversion reproduces, a check that fails when a weight changes, unknown ops never passing,
refused manifests, and a model coremltools cannot convert.

Cost: each coremltools process pays ~15 s of imports (it imports TensorFlow), so conversions are
shared: one run converts the three precisions, one child converts every extra case.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from targets.coreml import mlpackage
from targets.coreml.mil import LABEL

pytestmark = pytest.mark.skipif(importlib.util.find_spec("coremltools") is None,
                                reason="coremltools is not installed")

TINY = {"model": "mobilenet_v2", "width": 0.35, "resolution": 64, "num_classes": 10,
        "bench": {"warmup": 10, "runs": 50, "batch": 4}, "parity": {"n_random": 2}}
PRECISIONS = ("fp32", "fp16", "int8")
LINUX_ONLY = pytest.mark.skipif(sys.platform == "darwin",
                                reason="on macOS Core ML itself verifies; these check the "
                                       "Linux path (MIL reference evaluator)")


@pytest.fixture(scope="module")
def coreml_run(trained_tiny, tmp_path_factory):
    from pipeline.config import PipelineConfig
    from pipeline.run import execute

    root = tmp_path_factory.mktemp("coreml")
    config = PipelineConfig.model_validate({
        **TINY, "weights": trained_tiny["weights"], "calib": trained_tiny["calib"],
        "targets": ["coreml"], "precisions": list(PRECISIONS),
        "artifacts_dir": root / "artifacts", "out": root / "report"})
    return execute(config)


def _node(run, name: str) -> dict:
    return next(n for n in run.report["nodes"] if n["name"] == name)


def _reference(run):
    from pipeline.cache import Cache
    from pipeline.reference import Reference

    ref = run.report["run"]["reference"]
    return Reference.load(Cache(Path(run.report["run"]["cache_dir"])).get(ref["sha256"],
                                                                         "reference").path)


@LINUX_ONLY
def test_every_precision_passes_its_gate_on_the_evaluator(coreml_run) -> None:
    assert coreml_run.exit_code == 0
    figures = {}
    for precision in PRECISIONS:
        node = _node(coreml_run, f"coreml:{precision}")
        parity = node["parity"]
        assert node["status"] == "ran" and node["stage"] == "convert_coreml"
        assert parity["verdict"] == "pass", parity
        assert parity["runtime"] == LABEL and parity["reason"].startswith(LABEL)
        assert parity["n_inputs"] > 8 + 2                  # photos + random + the digits
        assert node["latency"]["verdict"] == "unverified"
        assert node["latency"]["reason"] == "Core ML runtime requires macOS"
        assert node["latency"]["median_ms"] is None
        assert node["info"]["verified_by"] == LABEL and node["info"]["format"] == "mlprogram"
        figures[precision] = (parity["max_rel"], parity["cosine"], parity["top1_agreement"])
    print("coreml parity (max_rel, centred cosine, top-1):", figures)
    assert figures["fp32"][0] <= 1e-4 and figures["fp32"][2] == 1.0
    assert figures["fp16"][1] >= 0.999   # top-1: the verdict's, which leaves out near-ties
    assert figures["int8"][1] >= 0.99 and figures["int8"][2] >= 0.95
    fp16, int8 = (_node(coreml_run, f"coreml:{p}")["info"] for p in ("fp16", "int8"))
    assert fp16["compute_precision"] == "fp16" and fp16["ops"]["cast"] == 2
    assert int8["ops"]["constexpr_affine_dequantize"] > 0
    assert "weight-only" in int8["quantization"]["activations"]


def test_published_as_mlpackage_folders_with_the_cached_digest(coreml_run) -> None:
    label = coreml_run.report["model"]["label"]
    for precision in PRECISIONS:
        node = _node(coreml_run, f"coreml:{precision}")
        path = Path(node["artifact"]["path"])
        assert path.parts[-3:] == ("ios", label, f"Model_{precision}.mlpackage")
        assert path.is_dir() and (path / "Manifest.json").is_file()
        assert mlpackage.artifact_digest(path) == node["artifact"]["sha256"]
        assert not list(path.parent.glob(".*.tmp"))


def test_republishing_replaces_the_folder(coreml_run, tmp_path: Path) -> None:
    from pipeline.cache import Cache
    from targets.coreml import CoremlTarget

    node = _node(coreml_run, "coreml:fp16")
    archive = Cache(Path(coreml_run.report["run"]["cache_dir"])).object_path(
        node["artifact"]["sha256"])
    dst = tmp_path / "Model_fp16.mlpackage"
    dst.mkdir()
    (dst / "stale.txt").write_text("old")
    CoremlTarget().publish_artifact(archive, dst)
    assert not (dst / "stale.txt").exists()
    assert mlpackage.artifact_digest(dst) == node["artifact"]["sha256"]


@pytest.fixture(scope="module")
def extra_conversions(coreml_run, tmp_path_factory):
    """One child process converts: the run's fp32 node again (same kwargs, fresh process), the
    zoo's other architectures (random weights, fp32; V3 large has V3 small's ops), the tiny model
    with an image input and class labels, and iOS18 int8 (blockwise weights)."""
    from pipeline.config import PipelineConfig
    from pipeline.context import RunContext
    from pipeline.isolate import run_isolated
    from pipeline.models.registry import ModelSpec, build
    from pipeline.program import export_program, save_program
    from pipeline.stages.fuse import fold_batchnorm
    from targets.coreml import CoremlTarget

    import torch

    root = tmp_path_factory.mktemp("coreml_extra")
    config = PipelineConfig.model_validate(coreml_run.report["run"]["config"])
    ctx = RunContext(config)
    fused = Path(_node(coreml_run, "fuse")["artifact"]["path"])
    stage = CoremlTarget().stages(ctx, ("fp32",))[0]
    jobs = {"again": stage.convert_kwargs(fused, root / "again.zip")}
    jobs["image_labels"] = {**jobs["again"], "out": str(root / "image_labels.zip"),
                            "input_type": "image", "class_labels": [f"digit {i}" for i in range(10)]}
    jobs["ios18_int8"] = {**jobs["again"], "out": str(root / "ios18.zip"), "precision": "int8",
                          "deployment_target": "iOS18"}
    from pipeline.calibration import calibration_batch

    np.save(root / "calib.npy", calibration_batch(ctx))
    jobs["w8a8"] = {**jobs["again"], "out": str(root / "w8a8.zip"), "precision": "int8",
                    "int8_activations": True, "calib": str(root / "calib.npy")}
    models = {}
    for name, width in (("mobilenet_v1", 0.25), ("mobilenet_v3_small", 0.75)):
        torch.manual_seed(0)
        model = build(ModelSpec(name, width, 64, 10)).eval()
        program, _ = export_program(model, 64)
        module = program.module()
        fold_batchnorm(module)
        save_program(export_program(module, 64)[0], root / f"{name}.pt2")
        models[name] = model
        jobs[name] = {**jobs["again"], "program": str(root / f"{name}.pt2"),
                      "out": str(root / f"{name}.zip"), "model_name": name}
    results = run_isolated("targets.coreml.convert:convert_many", {"jobs": list(jobs.values())},
                           stage="test", model="zoo", timeout_s=900, env={"PYTHONHASHSEED": "7"})
    return {"infos": dict(zip(jobs, results)), "paths": {k: Path(j["out"]) for k, j in jobs.items()},
            "models": models}


def test_a_fresh_conversion_gives_the_same_canonical_digest(coreml_run, extra_conversions) -> None:
    info = extra_conversions["infos"]["again"]
    node = _node(coreml_run, "coreml:fp32")
    assert info["canonical_sha256"] == node["artifact"]["sha256"]
    assert mlpackage.artifact_digest(extra_conversions["paths"]["again"]) == info["canonical_sha256"]


@LINUX_ONLY
def test_the_evaluator_covers_every_zoo_architecture(extra_conversions) -> None:
    """V1 and V3 (random weights) here; V2 is the run's own model."""
    import torch

    from pipeline.parity import compare_outputs
    from targets.coreml import MilEvaluatorRunner

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 3, 64, 64)).astype(np.float32)
    seen = set(extra_conversions["infos"]["again"]["ops"])       # MobileNetV2
    for name, model in extra_conversions["models"].items():
        info = extra_conversions["infos"][name]
        assert "error" not in info, info
        seen |= set(info["ops"])
        with torch.inference_mode():
            ref = model(torch.from_numpy(x)).numpy()
        with MilEvaluatorRunner(extra_conversions["paths"][name]) as runner:
            assert runner.unsupported_ops == []
            out = runner.infer({"input": x})
        metrics = compare_outputs({"output": ref}, out)[0]
        assert metrics.max_rel <= 1e-4, (name, metrics)
    assert {"conv", "linear", "add", "mul", "relu", "clip", "sigmoid_hard", "thresholded_relu",
            "reduce_mean", "reshape"} <= seen


@LINUX_ONLY
@pytest.mark.parametrize("case, check", [
    ("image_labels", lambda info, ops: "ImageType" in info["input"] and ops["classify"] == 1
     and info["class_labels"] == 10),
    ("ios18_int8", lambda info, ops: ops["constexpr_blockwise_shift_scale"] > 0),
])
def test_options_convert_and_pass_on_the_evaluator(coreml_run, extra_conversions, case,
                                                   check) -> None:
    from pipeline.parity import tolerance_for
    from targets.coreml.stage import verify_package

    info = extra_conversions["infos"][case]
    assert "error" not in info, info
    assert check(info, info["ops"])
    precision = "int8" if case == "ios18_int8" else "fp32"
    record = verify_package(extra_conversions["paths"][case], _reference(coreml_run),
                            tolerance_for(precision), None, 1, time_evaluator=False).to_record()
    assert record["parity"]["verdict"] == "pass", record["parity"]


@LINUX_ONLY
def test_int8_activations_are_quantized_with_evaluator_ranges(coreml_run, extra_conversions) -> None:
    """W8A8 (opt-in) converts and runs; its figures are reported, not gated: per-tensor int8
    activations are too coarse for this tiny depthwise network (see targets/coreml/convert.py)."""
    from pipeline.parity import tolerance_for
    from targets.coreml.stage import verify_package

    info = extra_conversions["infos"]["w8a8"]
    assert "error" not in info, info
    assert info["ops"]["quantize"] > 0 and info["ops"]["dequantize"] > 0
    assert "measured by the MIL reference evaluator" in info["quantization"]["activations"]
    record = verify_package(extra_conversions["paths"]["w8a8"], _reference(coreml_run),
                            tolerance_for("int8"), None, 1, time_evaluator=False).to_record()
    parity = record["parity"]
    print("coreml W8A8 (max_rel, centred cosine, top-1):",
          (parity["max_rel"], parity["cosine"], parity["top1_agreement"]))
    assert parity["verdict"] in ("pass", "fail") and parity["cosine"] > 0.8


def _copy_published(run, tmp_path: Path, precision: str = "fp32") -> Path:
    src = Path(_node(run, f"coreml:{precision}")["artifact"]["path"])
    return Path(shutil.copytree(src, tmp_path / src.name))


@LINUX_ONLY
def test_a_changed_weight_fails_the_check(coreml_run, tmp_path: Path) -> None:
    from pipeline.parity import tolerance_for
    from targets.coreml.stage import verify_package

    package = _copy_published(coreml_run, tmp_path)
    spec, layout = mlpackage.load_spec(package)
    function = spec.mlProgram.functions["main"]
    blobs = [op.attributes["val"].blobFileValue for op in
             function.block_specializations[function.opset].operations
             if op.type == "const" and op.attributes["val"].WhichOneof("value") == "blobFileValue"]
    weights = layout.weights_dir / "weight.bin"
    data = bytearray(weights.read_bytes())
    largest = max(blobs, key=lambda b: struct.unpack_from("<Q", data, b.offset + 8)[0])
    size, start = struct.unpack_from("<QQ", data, largest.offset + 8)
    values = np.frombuffer(bytes(data[start:start + size]), np.float32).copy()
    values[: values.size // 10] *= 1.5          # a converter that "silently changes numbers"
    data[start:start + size] = values.tobytes()
    weights.write_bytes(bytes(data))
    record = verify_package(package, _reference(coreml_run), tolerance_for("fp32"), None, 1,
                            time_evaluator=False).to_record()
    assert record["parity"]["verdict"] == "fail"
    assert any("max_rel" in f for f in record["parity"]["failures"])


@LINUX_ONLY
def test_an_op_the_evaluator_lacks_is_unverified_never_pass(coreml_run, tmp_path: Path) -> None:
    from pipeline.parity import tolerance_for
    from targets.coreml.stage import verify_package

    package = _copy_published(coreml_run, tmp_path)
    spec, layout = mlpackage.load_spec(package)
    function = spec.mlProgram.functions["main"]
    ops = function.block_specializations[function.opset].operations
    next(op for op in ops if op.type == "clip").type = "clip_of_the_future"
    layout.model.write_bytes(spec.SerializeToString())
    record = verify_package(package, _reference(coreml_run), tolerance_for("fp32"), None, 1).to_record()
    assert record["parity"]["verdict"] == "unverified"
    assert "clip_of_the_future" in record["parity"]["reason"]
    assert record["latency"]["verdict"] == "unverified"


def test_verify_refuses_a_manifest_leaving_the_package(coreml_run, tmp_path: Path) -> None:
    from pipeline.errors import UserInputError
    from pipeline.verify_artifact import runner_for

    package = _copy_published(coreml_run, tmp_path)
    manifest = json.loads((package / "Manifest.json").read_text())
    root = manifest["rootModelIdentifier"]
    manifest["itemInfoEntries"][root]["path"] = "../../../../etc/passwd"
    (package / "Manifest.json").write_text(json.dumps(manifest))
    runner = runner_for(package, 1)
    with pytest.raises(UserInputError, match=r"leaves the package \('\.\.'\); refusing to read"):
        with runner:
            pass


def test_target_contract_and_options(tiny_config) -> None:
    from pipeline.context import RunContext
    from pipeline.errors import UserInputError
    from targets.base import registered_targets
    from targets.coreml import CoremlTarget

    target = registered_targets()["coreml"]()
    assert isinstance(target, CoremlTarget) and target.unavailable_reason() is None
    assert (target.platform, target.precisions, target.suffixes) == \
        ("ios", ("fp32", "fp16", "int8"), (".mlpackage",))
    assert target.publish_name("coreml_fp16", "fp16", ".mlpackage") == "Model_fp16.mlpackage"
    ctx = RunContext(tiny_config(targets=["coreml"], precisions=["fp32", "int8"]))
    stages = target.stages(ctx, ("fp32", "int8"))
    assert [s.name for s in stages] == ["coreml:fp32", "coreml:int8"]
    assert stages[0].inputs == ("fused_program", "reference")
    assert "calibration" not in stages[1].config()          # weight-only int8 needs none
    w8a8 = CoremlTarget(int8_activations=True).stages(ctx, ("int8",))[0]
    assert w8a8.config()["calibration"]["limit"] == 64
    with pytest.raises(UserInputError, match="int8 needs iOS16"):
        CoremlTarget(deployment_target="iOS15").stages(ctx, ("int8",))
    with pytest.raises(UserInputError, match="int8 activations .* need iOS17"):
        CoremlTarget(deployment_target="iOS16", int8_activations=True).stages(ctx, ("int8",))
    with pytest.raises(ValueError, match="iOS15, iOS16, iOS17, iOS18"):
        CoremlTarget(deployment_target="iOS14")
    with pytest.raises(UserInputError, match="3 class labels for a model with 10 classes"):
        CoremlTarget(class_labels=["a", "b", "c"]).stages(ctx, ("fp32",))


def test_an_op_coremltools_cannot_convert_is_named_and_other_targets_complete(
        tiny_config, tmp_path: Path) -> None:
    from pipeline.run import execute

    model_file = tmp_path / "oddmodel.py"
    model_file.write_text(
        "import torch\nfrom torch import nn\n\n\n"
        "class Odd(nn.Module):\n"
        "    def __init__(self, num_classes=10):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)\n"
        "        self.fc = nn.Linear(8, num_classes)\n\n"
        "    def forward(self, x):\n"
        "        y = self.conv(x)\n"
        "        return self.fc(torch.logaddexp(y, 0.5 * y).mean((2, 3)))\n\n\n"
        "def factory(num_classes=10):\n"
        "    return Odd(num_classes)\n")
    outcome = execute(tiny_config(model=f"{model_file}:factory", resolution=32,
                                  targets=["onnx", "coreml"], precisions=["fp32"]))
    nodes = {n["name"]: n for n in outcome.report["nodes"]}
    assert nodes["export_onnx"]["parity"]["verdict"] == "pass"
    failed = nodes["coreml:fp32"]
    assert failed["status"] == "failed" and failed["parity"]["verdict"] == "fail"
    assert "cannot convert op 'logaddexp'" in failed["error"], failed["error"]
    assert outcome.exit_code == 1


@pytest.mark.skipif(sys.platform != "darwin",
                    reason="MLModel.predict needs the Core ML runtime, which exists only on "
                           "macOS; on Linux the MIL reference evaluator checks parity")
def test_core_ml_itself_checks_and_times_on_macos(coreml_run) -> None:  # pragma: no cover
    for precision in PRECISIONS:
        node = _node(coreml_run, f"coreml:{precision}")
        assert node["parity"]["verdict"] == "pass", node["parity"]
        assert node["parity"]["runtime"].startswith("Core ML")
        assert set(node["latency"]["compute_units"]) == {"CPU_ONLY", "ALL"}
        assert node["latency"]["median_ms"] > 0
