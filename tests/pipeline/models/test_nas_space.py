"""mobilenet_nas: the NAS space (depth × kernel × activation) builds, counts, exports to ONNX
with fp32 parity, is validated with clear errors, and is part of the cache keys and the report."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from pipeline import export
from pipeline.api import ExportResult
from pipeline.cache import cache_key
from pipeline.config import PipelineConfig, load_config
from pipeline.context import RunContext
from pipeline.errors import UserInputError
from pipeline.graph import tool_versions
from pipeline.models import (
    MobileNetNAS,
    MobileNetV2,
    ModelSpec,
    NasChoice,
    build,
    count_macs,
    count_params,
    nas_space,
    stage_repeats,
)
from pipeline.models.mobilenet_v2 import V2_SETTING, InvertedResidual
from pipeline.models.nas_space import ACTIVATIONS, DEPTH_MULTIPLIERS, KERNEL_SIZES
from pipeline.stages.load import LoadStage
from pipeline.stages.trace import TraceStage
from pipeline.zoo_table import nas_rows

TINY = {"width": 0.35, "resolution": 32, "num_classes": 10}
FAST = {"bench": {"warmup": 10, "runs": 50, "batch": 1}, "parity": {"n_random": 2}}
#: three exports cover every kernel size and every activation
EXPORTS = ((3, "relu6"), (5, "swish"), (7, "hard_swish"))


def _spec(d: float = 1.0, k: int = 3, act: str = "relu6") -> ModelSpec:
    return ModelSpec("mobilenet_nas", TINY["width"], TINY["resolution"], TINY["num_classes"],
                     NasChoice(d, k, act))


def _depthwise(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules()
            if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels]


# -- the networks ------------------------------------------------------------------------------


@pytest.mark.parametrize("d", DEPTH_MULTIPLIERS)
def test_block_counts_follow_ceil_n_times_d(d: float) -> None:
    model = build(_spec(d))
    blocks = [m for m in model.features if isinstance(m, InvertedResidual)]
    expected = {0.5: [1, 1, 2, 2, 2, 2, 1], 0.75: [1, 2, 3, 3, 3, 3, 1],
                1.0: [1, 2, 3, 4, 3, 3, 1], 1.25: [2, 3, 4, 5, 4, 4, 2]}[d]
    assert stage_repeats(d) == expected
    assert len(blocks) == model.num_blocks == sum(expected)
    assert len(model.features) == sum(expected) + 2           # stem + blocks + last 1×1 conv
    # each stage's first block takes the stage's stride, the rest keep the size
    strides = [b.stride for b in blocks]
    firsts = [sum(expected[:i]) for i in range(len(expected))]
    assert [strides[i] for i in firsts] == [s for *_, s in V2_SETTING]
    assert all(strides[i] == 1 for i in range(len(blocks)) if i not in firsts)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_more_depth_means_more_blocks_params_and_macs() -> None:
    models = [build(_spec(d)) for d in DEPTH_MULTIPLIERS]
    counts = [(m.num_blocks, count_params(m), count_macs(m, 32)) for m in models]
    for smaller, larger in zip(counts, counts[1:]):
        assert all(a < b for a, b in zip(smaller, larger)), counts


@pytest.mark.parametrize("k", KERNEL_SIZES)
@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_every_kernel_and_activation_builds(k: int, act: str) -> None:
    model = build(_spec(0.5, k, act))
    depthwise = _depthwise(model)
    assert len(depthwise) == model.num_blocks
    assert all(m.kernel_size == (k, k) and m.padding == ((k - 1) // 2,) * 2 for m in depthwise)
    activations = [m for m in model.modules() if isinstance(m, (nn.ReLU6, nn.SiLU, nn.Hardswish))]
    assert activations and all(type(m) is ACTIVATIONS[act] for m in activations)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32))
    assert out.shape == (1, 10) and torch.isfinite(out).all()


def test_parameter_count_grows_with_the_kernel_by_the_depthwise_weights() -> None:
    """Only the depthwise filters change: (k² − 9) more weights per depthwise channel."""
    base = build(_spec(1.0, 3))
    channels = sum(m.out_channels for m in _depthwise(base))
    params = {k: count_params(build(_spec(1.0, k))) for k in KERNEL_SIZES}
    assert params[3] < params[5] < params[7]
    for k in KERNEL_SIZES:
        assert params[k] - params[3] == (k * k - 9) * channels
    macs = {k: count_macs(build(_spec(1.0, k)), 32) for k in KERNEL_SIZES}
    assert macs[3] < macs[5] < macs[7]
    # the activation has no parameters: same counts, different network
    assert count_params(build(_spec(1.0, 5, "swish"))) == params[5]


def test_the_default_point_is_mobilenet_v2() -> None:
    nas, v2 = build(ModelSpec("mobilenet_nas", 0.35)), MobileNetV2(width_mult=0.35)
    assert isinstance(nas, MobileNetNAS)
    assert {k: v.shape for k, v in nas.state_dict().items()} == \
        {k: v.shape for k, v in v2.state_dict().items()}
    assert count_params(nas) == count_params(v2)
    assert ModelSpec("mobilenet_nas") == ModelSpec("mobilenet_nas", nas=NasChoice())
    assert ModelSpec("mobilenet_nas", 0.35, 64, nas=NasChoice(0.5, 5, "hard_swish")).label == \
        "mobilenet_nas_0.35_64_d0.5_k5_hard_swish"


def test_the_whole_space_is_listed_with_counts() -> None:
    assert len(nas_space()) == 4 * 3 * 3 == len(set(nas_space()))
    rows = nas_rows(0.35, 32)
    assert len(rows) == 36 and len({r["label"] for r in rows}) == 36
    assert all(r["params"] > 0 and r["macs"] > 0 and r["fp32_bytes"] == 4 * r["params"]
               for r in rows)
    row = next(r for r in rows if (r["depth_multiplier"], r["kernel_size"], r["activation"])
               == (0.5, 7, "swish"))
    model = build(ModelSpec("mobilenet_nas", 0.35, 32, nas=NasChoice(0.5, 7, "swish")))
    assert (row["blocks"], row["params"], row["macs"]) == \
        (model.num_blocks, count_params(model), count_macs(model, 32))


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("nas", "message"), [
    ({"depth_multiplier": 0.6}, r"depth_multiplier must be one of 0\.5, 0\.75, 1\.0, 1\.25"),
    ({"kernel_size": 4}, "kernel_size must be one of 3, 5, 7"),
    ({"kernel_size": True}, "kernel_size must be one of 3, 5, 7"),
    ({"activation": "gelu"}, "activation must be one of relu6, swish, hard_swish, got 'gelu'"),
    ({"width": 2}, "unknown key 'nas.width'"),
])
def test_a_bad_nas_value_is_a_clear_error(tmp_path: Path, nas: dict, message: str) -> None:
    with pytest.raises(UserInputError, match=message):
        export("mobilenet_nas", nas=nas, artifacts_dir=tmp_path, **TINY)
    with pytest.raises(UserInputError, match=message):
        load_config(None, {"model": "mobilenet_nas", "nas": nas})
    assert not list(tmp_path.iterdir())


def test_nas_with_another_model_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="nas section is only for model mobilenet_nas, "
                                             "not 'mobilenet_v2'"):
        export("mobilenet_v2", nas={"kernel_size": 5}, artifacts_dir=tmp_path, **TINY)
    with pytest.raises(UserInputError, match="only for mobilenet_nas"):
        build(ModelSpec("mobilenet_v2", nas=NasChoice()))
    with pytest.raises(UserInputError, match="nas.kernel_size must be one of 3, 5, 7"):
        NasChoice(kernel_size=9)


def test_the_yaml_nas_section_is_the_config(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("model: mobilenet_nas\nwidth: 0.35\nnas:\n  kernel_size: 7\n"
                    "  activation: swish\n")
    config = load_config(path, {"nas": {"depth_multiplier": 0.75}})   # options join the section
    assert config.nas is not None and config.nas.model_dump() == {
        "depth_multiplier": 0.75, "kernel_size": 7, "activation": "swish"}
    assert RunContext(config).source.spec.nas == NasChoice(0.75, 7, "swish")


# -- cache keys --------------------------------------------------------------------------------


def _keys(**nas: object) -> tuple[str, str]:
    section = {"nas": nas} if nas else {}   # no nas section: the defaults
    config = PipelineConfig.model_validate({"model": "mobilenet_nas", **TINY, **section})
    ctx = RunContext(config)
    return tuple(cache_key(s.stage, s.version, s.config(), {}, tool_versions(s.tools))
                 for s in (LoadStage(ctx), TraceStage(ctx)))


def test_the_cache_keys_differ_with_every_choice() -> None:
    base = _keys(kernel_size=3)
    assert _keys(kernel_size=3) == base == _keys(), "defaults given or not: one network"
    for other in (_keys(kernel_size=5), _keys(kernel_size=7), _keys(activation="swish"),
                  _keys(depth_multiplier=1.25)):
        assert other[0] != base[0] and other[1] != base[1]


# -- export to ONNX, fp32 parity ---------------------------------------------------------------


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[int, str], ExportResult]:
    """One export per (kernel, activation) of EXPORTS into one shared artifacts folder."""
    root = tmp_path_factory.mktemp("nas")
    results = {}
    for k, act in EXPORTS:
        nas = {"depth_multiplier": 0.5, "kernel_size": k, "activation": act}
        results[(k, act)] = export("mobilenet_nas", nas=nas, targets=["onnx"],
                                   precisions=["fp32"], out_dir=root / f"report_k{k}",
                                   artifacts_dir=root / "artifacts", **TINY, **FAST)
    return results


@pytest.mark.parametrize(("k", "act"), EXPORTS)
def test_each_kernel_and_activation_exports_with_fp32_parity(exports, k: int, act: str) -> None:
    result = exports[(k, act)]
    assert result.passed and result.exit_code == 0, [(n.name, n.reason) for n in result.nodes]
    assert {n.name: n.status for n in result.nodes} == {
        "load": "ran", "trace": "ran", "fuse": "ran", "export_onnx": "ran"}, \
        "a different kernel or activation must not reuse another network's cache entry"
    node = result.node("export_onnx")
    assert node.passed and node.parity["max_rel"] <= 1e-4
    onnx = result.artifacts["onnx"]["fp32"]
    assert onnx.is_file() and onnx.parent.name == f"mobilenet_nas_0.35_32_d0.5_k{k}_{act}_10cls"
    model = result.report["model"]
    assert model["nas"] == {"depth_multiplier": 0.5, "kernel_size": k, "activation": act}
    assert model["params"] == count_params(build(_spec(0.5, k, act)))
    assert model["macs"] == count_macs(build(_spec(0.5, k, act)), 32)
    assert result.report["run"]["config"]["nas"]["kernel_size"] == k
