"""Shared fixtures: one tiny end-to-end run reused by the stage, run and target tests."""
from __future__ import annotations

from pathlib import Path

import pytest

#: The slowest test files, slowest first, with their seconds (setup included) in one xdist run
#: on 2 cores (AMD EPYC Zen 4, 2026-12-02). `make test` hands files to the workers in
#: collection order (--dist loadfile), so these go first: a long file started last would
#: leave the other worker idle at the end. Files not listed keep pytest's order after them.
SLOW_FILES = {
    "tests/pipeline/localise/test_seeded_faults.py": 150,
    "tests/pipeline/localise/test_mobilenet_v3.py": 140,
    "tests/targets/tflite/test_convert.py": 133,
    "tests/targets/coreml/test_target.py": 127,
    "tests/targets/test_conformance.py": 95,
    "tests/targets/onnx/test_quantize.py": 75,
    "tests/pipeline/test_kill_rerun.py": 50,
    "tests/pipeline/test_api.py": 45,
    "tests/targets/tensorrt/test_target.py": 44,
    "tests/pipeline/stages/test_export_onnx.py": 43,
    "tests/pipeline/release/test_commands.py": 41,
    "tests/pipeline/test_onnx_input.py": 40,
    "tests/pipeline/int8/test_search.py": 39,
    "tests/pipeline/release/test_publish_verify.py": 37,
    "tests/targets/tensorrt/test_check.py": 34,
    "tests/pipeline/test_run.py": 33,
    "tests/pipeline/test_timings.py": 31,
    "tests/pipeline/localise/test_layer_map.py": 30,
    "tests/pipeline/test_finetune.py": 28,
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slowest files first (SLOW_FILES); the order inside a file is left alone."""
    root = Path(str(config.rootpath))

    def weight(item: pytest.Item) -> int:
        try:
            name = Path(str(item.path)).resolve().relative_to(root).as_posix()
        except ValueError:
            return 0
        return SLOW_FILES.get(name, 0)

    items.sort(key=weight, reverse=True)   # stable: equal weights keep their order


TINY = {"model": "mobilenet_v2", "width": 0.35, "resolution": 64, "num_classes": 10,
        "bench": {"warmup": 10, "runs": 50, "batch": 4}, "parity": {"n_random": 2}}


@pytest.fixture(scope="session")
def tiny_settings() -> dict:
    """The tiny model's settings (a copy of TINY), for fixtures in other folders."""
    return dict(TINY)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory):
    """A cold run of the whole trunk on a tiny model (MobileNetV2 α 0.35, 64 px, 10 classes)."""
    from pipeline.config import PipelineConfig
    from pipeline.run import execute

    root = tmp_path_factory.mktemp("tiny")
    config = PipelineConfig.model_validate({**TINY, "artifacts_dir": root / "artifacts",
                                            "out": root / "report"})
    return execute(config)


@pytest.fixture()
def tiny_config(tmp_path: Path):
    """A fresh config for the tiny model with its own artifacts folder."""
    from pipeline.config import PipelineConfig

    def make(**overrides):
        data = {**TINY, "artifacts_dir": tmp_path / "artifacts", "out": tmp_path / "report"}
        data.update(overrides)
        return PipelineConfig.model_validate(data)

    return make


def _trained_on_digits(spec, root: Path) -> dict:
    """``spec`` built and trained on the digits' train split by the pipeline's own training
    loop (4 epochs, seed 0, one thread): its safetensors file and held-out accuracy."""
    import torch
    from safetensors.torch import save_file

    from pipeline.data import digits_splits
    from pipeline.finetune import TrainConfig, accuracy, train
    from pipeline.models.registry import build, preprocessing_for

    prep = preprocessing_for(spec)
    splits = digits_splits(0)
    fit, held_out = splits["train"], splits["eval"]
    torch.manual_seed(0)
    model = build(spec)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)        # the same float summation order on any core count
    try:
        train(model, fit.batch(prep), fit.labels, held_out.batch(prep)[:100],
              held_out.labels[:100], TrainConfig(epochs=4, seed=0))
    finally:
        torch.set_num_threads(threads)
    value = accuracy(model, torch.from_numpy(held_out.batch(prep)),
                     torch.from_numpy(held_out.labels))
    weights = root / "digits.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return {"weights": weights, "accuracy": value, "spec": spec}


@pytest.fixture(scope="session")
def trained_tiny(tmp_path_factory: pytest.TempPathFactory):
    """A tiny MobileNetV2 (α 0.35, 64 px, 10 classes) trained on the digits' train split by the
    pipeline's own training loop, plus a folder of the calibration split's images. int8 parity
    is only meaningful on trained weights."""
    from PIL import Image

    from pipeline.data import digits_splits
    from pipeline.models.registry import ModelSpec

    root = tmp_path_factory.mktemp("trained")
    trained = _trained_on_digits(ModelSpec("mobilenet_v2", 0.35, 64, 10), root)
    calib = root / "calib"
    splits = digits_splits(0)
    for name, image, label in zip(splits["calib"].names, splits["calib"].images,
                                  splits["calib"].labels):
        folder = calib / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{name.replace(':', '_')}.png")
    return {**trained, "calib": calib}


@pytest.fixture(scope="session")
def trained_tiny_v3(tmp_path_factory: pytest.TempPathFactory):
    """A tiny MobileNetV3-Small (α 0.5, 64 px, 10 classes) trained like :func:`trained_tiny`:
    residual adds, squeeze-excite and hard-swish with weights int8 can be judged on."""
    from pipeline.models.registry import ModelSpec

    return _trained_on_digits(ModelSpec("mobilenet_v3_small", 0.5, 64, 10),
                              tmp_path_factory.mktemp("trained_v3"))


@pytest.fixture(scope="session")
def trained_tiny_export(trained_tiny, tmp_path_factory: pytest.TempPathFactory):
    """The trained tiny model's fp32 ONNX and its reference record (digits evaluation set),
    from a run of the trunk: what the int8 stages start from."""
    import json

    from pipeline.cache import Cache
    from pipeline.config import PipelineConfig
    from pipeline.run import execute

    root = tmp_path_factory.mktemp("trained_export")
    config = PipelineConfig.model_validate({**TINY, "artifacts_dir": root / "artifacts",
                                            "out": root / "report", "dataset": "digits",
                                            "weights": trained_tiny["weights"]})
    outcome = execute(config)
    onnx_node = next(n for n in outcome.report["nodes"] if n["name"] == "export_onnx")
    cache = Cache(config.cache_dir)
    records = [json.loads(p.read_text()) for p in cache.runs.glob("*.json")]
    load = next(r for r in records if r["stage"] == "load")
    return {"onnx": Path(onnx_node["artifact"]["path"]), "config": config,
            "reference": cache.object_path(load["outputs"]["reference"]["digest"])}


#: Blocks of the tiny MobileNetV2 whose projection conv is made hostile to int8 by
#: :func:`plant_int8_outliers`. None of them feeds a residual add, so any one of them quantized
#: destroys the output: all-int8 fails, and so does every model that keeps fewer than all three
#: in float, on every CPU.
PLANTED_BLOCKS = (1, 7, 17)
#: A weighted layer is planted when its largest |weight| is this many times its median |weight|
#: (planted: >= 1000 x; trained layers: well under 100 x).
PLANTED_RATIO = 300.0


def plant_int8_outliers(state: dict, blocks=PLANTED_BLOCKS) -> dict:
    """A copy of a MobileNetV2 state_dict in which each block's depthwise output channel 0 is
    exactly zero (its BatchNorm scale and shift set to 0) and the projection conv reads that
    channel with a weight 1000x the largest of its output channel. In float the outlier
    multiplies an exact zero, so the function is unchanged by it; per-channel int8 gives every
    output channel of the projection a step so coarse that all its other weights round to 0.
    Keeping that layer in float removes the damage entirely."""
    planted = {key: value.clone() for key, value in state.items()}
    for block in blocks:
        prefix = f"features.{block}.conv"
        expand = f"{prefix}.3.weight" in planted       # t > 1: pw, dw, projection, BN
        depthwise_bn, projection = ((f"{prefix}.1.1", f"{prefix}.2") if expand
                                    else (f"{prefix}.0.1", f"{prefix}.1"))
        planted[f"{depthwise_bn}.weight"][0] = 0.0
        planted[f"{depthwise_bn}.bias"][0] = 0.0
        weight = planted[f"{projection}.weight"]
        weight[:, 0] = 1000 * weight.abs().amax(dim=(1, 2, 3)).view(-1, 1, 1)
    return planted


def planted_layers(model) -> list[int]:
    """Indices (in graph order, among the weighted layers) of an ONNX model's planted layers."""
    import numpy as np
    from onnx import numpy_helper

    from pipeline.int8.qdq import weighted_nodes

    weights = {init.name: init for init in model.graph.initializer}
    found = []
    for index, node in enumerate(weighted_nodes(model)):
        values = np.abs(numpy_helper.to_array(weights[node.input[1]]))
        if values.max() >= PLANTED_RATIO * max(float(np.median(values)), 1e-12):
            found.append(index)
    return found


@pytest.fixture(scope="session")
def planted_tiny(trained_tiny, tmp_path_factory: pytest.TempPathFactory):
    """The trained tiny model with :data:`PLANTED_BLOCKS` made hostile to int8, exported by the
    trunk, calibrated once, and an int8 gate constructed from what this CPU measures.

    The gate is the default int8 gate, loosened only as far as the model with exactly the
    planted layers in float needs (its ONNX Runtime metrics minus a margin): that model passes,
    and every model with a planted layer quantized fails by a wide margin — whatever weights
    training produced on this CPU. Tests of the mixed-precision search build on this."""
    from safetensors.torch import load_file, save_file

    from pipeline.cache import Cache
    from pipeline.calibration import calibration_set
    from pipeline.config import PipelineConfig
    from pipeline.context import RunContext
    from pipeline.int8.qdq import calibrate, quantize_calibrated
    from pipeline.reference import Reference
    from pipeline.run import execute
    from pipeline.verify import check_gates
    from targets.onnx import OrtRunner

    root = tmp_path_factory.mktemp("planted")
    weights = root / "planted.safetensors"
    save_file(plant_int8_outliers(load_file(str(trained_tiny["weights"]))), str(weights))
    settings = {**TINY, "artifacts_dir": root / "artifacts", "out": root / "report",
                "dataset": "digits", "weights": weights}
    config = PipelineConfig.model_validate(settings)
    outcome = execute(config)
    assert outcome.exit_code == 0, "the planted model's fp32 chain must pass"
    onnx_path = Path(next(n for n in outcome.report["nodes"]
                          if n["name"] == "export_onnx")["artifact"]["path"])
    reference = Reference.load(Cache(config.cache_dir).object_path(
        outcome.report["run"]["reference"]["sha256"]))
    workdir = root / "int8"
    workdir.mkdir()
    calibrated = calibrate(onnx_path, calibration_set(RunContext(config)).batch, "minmax",
                           workdir)
    indices = planted_layers(calibrated.model)
    assert len(indices) == len(PLANTED_BLOCKS), indices
    names = [calibrated.weighted_nodes()[i] for i in indices]

    def measure(exclude: list[str], ctx: RunContext) -> dict:
        path = workdir / f"excluding_{len(exclude)}.onnx"
        quantize_calibrated(calibrated, path, per_channel=True, exclude=exclude)
        return check_gates(OrtRunner(path), reference, ctx.tolerance("int8"),
                           ctx.accuracy_drop("int8")).to_record()

    healed = measure(names, RunContext(config))
    parity, delta = healed["parity"], healed["accuracy"]["delta"]
    tolerance = {"min_cosine": min(0.99, parity["cosine"] - 0.05),
                 "min_top1": min(0.95, parity["top1_agreement"] - 0.1)}
    max_drop = max(0.01, round(-delta + 0.05, 4))
    gated = PipelineConfig.model_validate({
        **settings, "tolerances": {"int8": tolerance},
        "accuracy_gates": {**config.accuracy_gates, "int8": max_drop}})
    broken = measure(names[:-1], RunContext(gated))
    assert broken["parity"]["verdict"] == "fail" and \
        broken["parity"]["cosine"] < tolerance["min_cosine"] - 0.2, \
        f"a planted layer left in int8 no longer breaks the model: {broken['parity']}"
    return {"weights": weights, "config": gated, "onnx": onnx_path, "reference": reference,
            "calibrated": calibrated, "layers": names, "indices": indices,
            "tolerance": tolerance, "max_drop": max_drop, "healed": healed}


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: one intra-op thread is faster than two, and immune to a busy second core.
    Use per module: ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
