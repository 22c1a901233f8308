"""Structured (torch-pruning) and unstructured (torch.nn.utils.prune) pruning of zoo models."""
from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from pipeline.errors import UserInputError
from pipeline.models.counting import count_macs, count_params
from pipeline.models.registry import ModelSpec, build
from pipeline.program import export_program
from pipeline.pruned_format import PRUNED_FORMAT, load_pruned, save_pruned
from pipeline.pruning import (
    ROUND_TO,
    PruneConfig,
    prune,
    prune_structured,
    prune_unstructured,
    weight_sparsity,
)
from pipeline.pruning_protect import protected_modules, protected_names

V2 = ModelSpec("mobilenet_v2", 0.35, 64, 10)
V3 = ModelSpec("mobilenet_v3_small", 0.75, 64, 10)


pytestmark = pytest.mark.usefixtures("one_torch_thread")

def _build(spec: ModelSpec, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build(spec)


def _example(spec: ModelSpec, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, spec.resolution, spec.resolution, generator=torch.Generator().manual_seed(1))


def _convs(model: nn.Module) -> dict[str, nn.Conv2d]:
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


@pytest.fixture(scope="module")
def v2_uniform():
    original = _build(V2)
    model = copy.deepcopy(original)
    summary = prune_structured(model, torch.zeros(1, 3, 64, 64), PruneConfig(0.3))
    return V2, original, model, summary


@pytest.fixture(scope="module")
def v3_global():
    """MobileNetV3-Small (SE blocks, hardswish), global ranking, one extra protected block."""
    original = _build(V3)
    model = copy.deepcopy(original)
    cfg = PruneConfig(0.3, scope="global", protect=("features.2",))
    summary = prune_structured(model, torch.zeros(1, 3, 64, 64), cfg)
    return V3, original, model, summary


@pytest.fixture(params=["v2_uniform", "v3_global"])
def pruned(request):
    return request.getfixturevalue(request.param)


# --- config -------------------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", [0, 1, -0.2, 1.5, 0.0, 1.0, math.nan, math.inf])
def test_ratio_outside_open_interval_is_a_clear_error(ratio):
    with pytest.raises(UserInputError) as info:
        PruneConfig(ratio)
    message = str(info.value)
    assert "(0, 1)" in message and repr(ratio) in message


@pytest.mark.parametrize("ratio", [True, "0.3", None])
def test_ratio_must_be_a_number(ratio):
    with pytest.raises(UserInputError, match=r"\(0, 1\)"):
        PruneConfig(ratio)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs, word",
    [({"mode": "channel"}, "mode"), ({"scope": "local"}, "scope"), ({"importance": "taylor"}, "importance"),
     ({"protect": ("",)}, "protect")],
)
def test_other_bad_settings_are_clear_errors(kwargs, word):
    with pytest.raises(UserInputError, match=word):
        PruneConfig(0.3, **kwargs)


def test_config_normalises_ratio_and_protect():
    cfg = PruneConfig(1 / 2, protect=["features.1"])  # type: ignore[arg-type]
    assert cfg.ratio == 0.5 and cfg.protect == ("features.1",)
    assert PruneConfig(0.3, protect="features.1").protect == ("features.1",)  # type: ignore[arg-type]


# --- protected layers ---------------------------------------------------------------------------


def test_stem_and_classifier_are_always_protected():
    assert protected_names(build(V2)) == ["features.0.0", "classifier.1"]
    assert protected_names(build(V3)) == ["features.0.0", "classifier.3"]
    model = build(ModelSpec("mobilenet_v1", 0.25, 64, 10))
    modules = protected_modules(model)
    assert modules[0] is model.features[0][0] and modules[1] is model.classifier[1]


def test_protect_entries_match_names_and_patterns():
    model = build(V2)
    names = protected_names(model, ("features.2.conv.1", "features.1*.conv.2"))
    assert "features.2.conv.1" in names
    assert {"features.1.conv.2", "features.10.conv.2", "features.17.conv.2"} <= set(names)


def test_protect_entry_matching_nothing_is_an_error():
    with pytest.raises(UserInputError, match="features.99"):
        protected_names(build(V2), ("features.99",))


# --- structured ---------------------------------------------------------------------------------


def test_structured_reduces_params_and_macs(pruned):
    _, original, model, summary = pruned
    assert summary.mode == "structured" and summary.ratio == 0.3
    assert summary.params_before == count_params(original)
    assert summary.params_after == count_params(model) < summary.params_before
    assert summary.macs_before == count_macs(original, 64)
    assert summary.macs_after == count_macs(model, 64) < 0.8 * summary.macs_before
    assert summary.channels_removed == sum(b - a for b, a in summary.layers.values()) > 0
    assert summary.to_dict()["layers"]


def test_uniform_removes_about_ratio_of_each_pruned_layer(v2_uniform):
    *_, summary = v2_uniform
    for name, (before, after) in summary.layers.items():
        assert after % ROUND_TO == 0, name
        # int(c * 0.7) rounded down to a multiple of 8
        assert after == int(before * 0.7) // ROUND_TO * ROUND_TO, name
    # params of 1x1 convs shrink ~quadratically; the untouched classifier keeps it above 0.49
    assert 0.4 < summary.params_fraction < 0.75
    assert 0.4 < summary.macs_fraction < 0.75  # type: ignore[operator]


def test_forward_works_and_depthwise_groups_stay_consistent(pruned):
    spec, original, model, _ = pruned
    x = _example(V2, batch=2)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 10) and torch.isfinite(y).all()
    before, after = _convs(original), _convs(model)
    assert before.keys() == after.keys()
    depthwise = [n for n, c in before.items() if c.groups > 1]
    assert depthwise, "the zoo model has depthwise convs"
    for name in depthwise:
        conv = after[name]
        assert conv.groups == conv.in_channels == conv.out_channels, name
        assert conv.weight.shape[1] == 1, name
    assert any(after[n].out_channels < before[n].out_channels for n in depthwise)
    for name, m in model.named_modules():  # BatchNorm follows its conv
        if isinstance(m, nn.Sequential) and len(m) >= 2 and isinstance(m[0], nn.Conv2d) \
                and isinstance(m[1], nn.BatchNorm2d):
            assert m[1].num_features == m[0].out_channels, name


def test_stem_and_classifier_are_untouched(pruned):
    _, original, model, summary = pruned
    orig_modules = dict(original.named_modules())
    for name in summary.protected:
        kept = dict(model.named_modules())[name]
        for key, tensor in orig_modules[name].state_dict().items():
            assert torch.equal(kept.state_dict()[key], tensor), f"{name}.{key}"
    assert "features.0.0" in summary.protected
    assert summary.protected[-1].startswith("classifier")


def test_user_protected_block_keeps_its_shapes(v3_global):
    _, original, model, summary = v3_global
    assert "features.2" in summary.protected
    for key, tensor in original.features[2].state_dict().items():
        assert model.features[2].state_dict()[key].shape == tensor.shape, key


def test_residual_blocks_still_add(v2_uniform):
    _, _, model, _ = v2_uniform
    x = _example(V2)
    with torch.no_grad():
        for block in model.features:
            y = block(x)
            if getattr(block, "use_res_connect", False):
                assert y.shape == x.shape
            x = y


def test_pruned_model_exports_with_dynamic_batch(v3_global):
    """torch.export as pipeline/program.py does it (batch-2 example, dynamic batch dim); on the
    SE/hardswish model, whose gates multiply pruned feature maps. (~15 s, so one model only: the
    V2 graph has no op the V3 one lacks.)"""
    _, _, model, _ = v3_global
    program, dynamic = export_program(model, 64)
    assert dynamic
    x = _example(V2, batch=3)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x), model(x), rtol=1e-5, atol=1e-5)


def test_save_and_load_round_trip_gives_identical_outputs(pruned, tmp_path):
    spec, original, model, _ = pruned
    path = save_pruned(model, tmp_path / "pruned.safetensors", spec)
    restored = load_pruned(path, spec)
    assert not restored.training
    x = _example(spec, batch=2)
    with torch.no_grad():
        assert torch.equal(restored(x), model.eval()(x))
    assert {k: v.shape for k, v in restored.state_dict().items()} == \
        {k: v.shape for k, v in model.state_dict().items()}
    assert not list(tmp_path.glob(".*.tmp"))


def test_saved_file_is_plain_safetensors_without_pickle(v2_uniform, tmp_path):
    _, _, model, _ = v2_uniform
    path = save_pruned(model, tmp_path / "m.safetensors", V2)
    data = path.read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    meta = header.pop("__metadata__")
    assert meta["format"] == PRUNED_FORMAT and json.loads(meta["layers"])["features.1.conv.0.0"]["groups"] > 1
    assert set(header) == set(model.state_dict())
    # nothing but the JSON header and raw tensor bytes: no room for a pickle
    assert len(data) == 8 + header_len + max(t["data_offsets"][1] for t in header.values())


def test_load_pruned_rejects_wrong_spec_and_foreign_files(v2_uniform, tmp_path):
    _, _, model, _ = v2_uniform
    path = save_pruned(model, tmp_path / "m.safetensors", V2)
    with pytest.raises(UserInputError, match="pruned from"):
        load_pruned(path, ModelSpec("mobilenet_v2", 0.5, 64, 10))
    plain = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in build(V2).state_dict().items()}, str(plain))
    with pytest.raises(UserInputError, match="not a pruned model"):
        load_pruned(plain, V2)
    with pytest.raises(UserInputError, match="not found"):
        load_pruned(tmp_path / "missing.safetensors", V2)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(UserInputError):
        load_pruned(garbage, V2)


def test_save_without_spec_loads_into_matching_spec(v2_uniform, tmp_path):
    _, _, model, _ = v2_uniform
    path = save_pruned(model, tmp_path / "m.safetensors")
    restored = load_pruned(path, V2)
    with torch.no_grad():
        x = _example(V2)
        assert torch.equal(restored(x), model.eval()(x))
    with pytest.raises(UserInputError, match="does not match"):
        load_pruned(path, V3)


def test_structured_needs_square_example_input():
    with pytest.raises(UserInputError, match="square"):
        prune_structured(build(V2), torch.zeros(1, 3, 64, 48), PruneConfig(0.3))
    with pytest.raises(UserInputError, match="example input"):
        prune(build(V2), None, PruneConfig(0.3))


# --- unstructured -------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["uniform", "global"])
def test_unstructured_raises_sparsity_and_keeps_shapes(scope):
    original = _build(V2)
    model = copy.deepcopy(original)
    assert weight_sparsity(model) == 0.0
    summary = prune(model, torch.zeros(1, 3, 64, 64), PruneConfig(0.3, mode="unstructured", scope=scope))
    assert summary.mode == "unstructured" and summary.channels_removed == 0
    assert summary.sparsity == pytest.approx(0.3, abs=0.005)
    assert summary.params_after == summary.params_before == count_params(original)
    assert summary.macs_after == summary.macs_before == count_macs(original, 64)
    assert "unchanged" in summary.note
    # plain parameters again (prune.remove), same keys and shapes as before
    assert {k: v.shape for k, v in model.state_dict().items()} == \
        {k: v.shape for k, v in original.state_dict().items()}
    assert not any(hasattr(m, "weight_mask") for m in model.modules())
    protected = set(summary.protected)
    orig_modules = dict(original.named_modules())
    for name, m in model.named_modules():
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        zeros = float((m.weight == 0).float().mean())
        if name in protected:
            assert torch.equal(m.weight, orig_modules[name].weight), name
        elif scope == "uniform":
            assert zeros == pytest.approx(0.3, abs=0.5 / m.weight.numel() + 1e-9), name
        kept = m.weight != 0  # surviving weights are untouched
        assert torch.equal(m.weight[kept], orig_modules[name].weight[kept]), name
    with torch.no_grad():
        assert model(_example(V2, 2)).shape == (2, 10)


def test_unstructured_without_example_input_reports_no_macs():
    summary = prune_unstructured(_build(V2), PruneConfig(0.5, mode="unstructured"))
    assert summary.macs_before is None and summary.macs_fraction is None
    assert summary.sparsity == pytest.approx(0.5, abs=0.005)


def test_mode_mismatch_is_an_error():
    with pytest.raises(UserInputError):
        prune_unstructured(build(V2), PruneConfig(0.3))
    with pytest.raises(UserInputError):
        prune_structured(build(V2), torch.zeros(1, 3, 64, 64), PruneConfig(0.3, mode="unstructured"))
