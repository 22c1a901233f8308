"""pipeline.checkpoint: safe state_dict loading; one specific one-line error per kind of bad
file."""
from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from pipeline.checkpoint import apply_state_dict, read_state_dict, sniff_format
from pipeline.errors import EXIT_BAD_INPUT, UserInputError
from pipeline.models.registry import ModelSpec, build


class Tiny(nn.Module):
    """Two layers (plus a BatchNorm, so buffers are covered too)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(self.conv(x)).mean((2, 3)))


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


@pytest.fixture()
def trained() -> Tiny:
    """A Tiny whose weights (and BatchNorm statistics) differ from any fresh one."""
    torch.manual_seed(1)
    model = Tiny()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
    return model.eval()


def _error(path: Path) -> str:
    with pytest.raises(UserInputError) as info:
        read_state_dict(path)
    assert info.value.exit_code == EXIT_BAD_INPUT
    message = str(info.value)
    assert "\n" not in message, f"the error must be one line: {message!r}"
    assert "\x1b[" not in message, f"no terminal colour codes: {message!r}"
    assert str(path) in message, "the error names the file"
    return message


def _check_loads(path: Path, reference: nn.Module) -> None:
    state = read_state_dict(path)
    assert set(state) == set(reference.state_dict())
    fresh = Tiny().eval()
    apply_state_dict(fresh, state, path)
    x = torch.randn(2, 3, 8, 8)
    with torch.inference_mode():
        assert torch.equal(fresh(x), reference(x))


# -- files that load --------------------------------------------------------------------------


def test_safetensors_loads(tmp_path: Path, trained: Tiny) -> None:
    path = tmp_path / "tiny.safetensors"
    save_file(_state(trained), str(path))
    assert sniff_format(path) == "safetensors"
    _check_loads(path, trained)


def test_pt_state_dict_loads(tmp_path: Path, trained: Tiny) -> None:
    path = tmp_path / "tiny.pt"
    torch.save(trained.state_dict(), path)
    assert sniff_format(path) == "torch-zip"
    _check_loads(path, trained)


def test_legacy_pt_state_dict_loads(tmp_path: Path, trained: Tiny) -> None:
    path = tmp_path / "tiny_legacy.pth"
    torch.save(trained.state_dict(), path, _use_new_zipfile_serialization=False)
    assert sniff_format(path) == "torch-legacy"
    _check_loads(path, trained)


@pytest.mark.parametrize("wrapper", ["state_dict", "model_state_dict", "model"])
def test_wrapped_checkpoint_loads(tmp_path: Path, trained: Tiny, wrapper: str) -> None:
    """Training checkpoints ({"state_dict": ..., "epoch": ..., "optimizer": ...}) are unwrapped."""
    path = tmp_path / "checkpoint.pth"
    optimizer = torch.optim.SGD(trained.parameters(), lr=0.1, momentum=0.9)
    torch.save({"epoch": 7, wrapper: trained.state_dict(),
                "optimizer": optimizer.state_dict()}, path)
    _check_loads(path, trained)


def test_format_is_judged_by_content_not_extension(tmp_path: Path, trained: Tiny) -> None:
    path = tmp_path / "really_safetensors.pt"
    save_file(_state(trained), str(path))
    assert sniff_format(path) == "safetensors"
    _check_loads(path, trained)


def test_torchvision_style_keys_load_into_zoo_mobilenet_v2(tmp_path: Path) -> None:
    """A torchvision-layout mobilenet_v2 state_dict (features.N..., classifier.1...) saved with
    torch.save loads into the zoo's mobilenet_v2 and reproduces its outputs exactly."""
    spec = ModelSpec("mobilenet_v2", width=0.35, resolution=64, num_classes=10)
    torch.manual_seed(0)
    source = build(spec)
    with torch.no_grad():  # non-default BatchNorm statistics, so buffers must load too
        for module in source.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.9, 1.1)
    state = source.state_dict()
    for key in ("features.0.0.weight", "features.0.1.running_var", "features.1.conv.0.0.weight",
                "features.2.conv.1.0.weight", "features.18.1.num_batches_tracked",
                "classifier.1.weight", "classifier.1.bias"):
        assert key in state, f"torchvision key {key} missing from the zoo's mobilenet_v2"
    path = tmp_path / "mobilenet_v2_035.pth"
    torch.save(state, path)

    torch.manual_seed(1)
    target = build(spec)
    loaded = read_state_dict(path)
    apply_state_dict(target, loaded, path)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(target(x), source(x))


# -- files that are refused, each with its own message ----------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    message = _error(tmp_path / "nowhere.safetensors")
    assert "does not exist" in message
    assert ".safetensors or .pt" in message


def test_pickled_whole_module_is_refused(tmp_path: Path, trained: Tiny) -> None:
    path = tmp_path / "whole_model.pt"
    torch.save(trained, path)
    message = _error(path)
    assert "pickled" in message and "torch.save(model)" in message
    assert "Tiny" in message, "names the class the pickle would have to import"
    assert "save model.state_dict()" in message
    assert "add_safe_globals" not in message, "must not suggest bypassing the safe loader"


def test_pickled_zoo_module_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mobilenet.pt"
    torch.save(build(ModelSpec("mobilenet_v2", 0.35, 64, 10)), path)
    message = _error(path)
    assert "MobileNetV2" in message and "save model.state_dict()" in message


def test_torchscript_is_refused(tmp_path: Path, trained: Tiny, monkeypatch) -> None:
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(trained), str(path))
    monkeypatch.setattr(torch, "load", _must_not_load)
    message = _error(path)
    assert "TorchScript" in message
    assert "state_dict()" in message


def _must_not_load(*args, **kwargs):
    raise AssertionError("the loader ran on a file the magic-byte check should have refused")


def _half(path: Path) -> Path:
    data = path.read_bytes()
    cut = path.with_name("half_" + path.name)
    cut.write_bytes(data[: len(data) // 2])
    return cut


def test_truncated_pt_is_refused_before_loading(tmp_path: Path, trained: Tiny,
                                                monkeypatch) -> None:
    path = tmp_path / "tiny.pt"
    torch.save(trained.state_dict(), path)
    half = _half(path)
    monkeypatch.setattr(torch, "load", _must_not_load)
    message = _error(half)
    assert "truncated" in message and "save it again" in message


def test_truncated_safetensors_is_refused(tmp_path: Path, trained: Tiny) -> None:
    path = tmp_path / "tiny.safetensors"
    save_file(_state(trained), str(path))
    message = _error(_half(path))
    assert "safetensors" in message and "damaged" in message and "save it again" in message


def test_truncated_legacy_pt_is_refused(tmp_path: Path, trained: Tiny) -> None:
    """Regression: a half legacy-format (.pth, pre-1.6) file leaked an IndexError/EOFError."""
    path = tmp_path / "tiny_legacy.pth"
    torch.save(trained.state_dict(), path, _use_new_zipfile_serialization=False)
    message = _error(_half(path))
    assert "truncated" in message and "save it again" in message


def test_safetensors_header_longer_than_file_is_refused_before_loading(tmp_path: Path,
                                                                      monkeypatch) -> None:
    path = tmp_path / "short.safetensors"
    path.write_bytes((10_000).to_bytes(8, "little") + b'{"a": 1}')
    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "load_file", _must_not_load)
    message = _error(path)
    assert "truncated" in message and "10000" in message


@pytest.mark.parametrize("fmt", ["pt", "legacy", "safetensors"])
def test_every_truncation_is_a_user_error(tmp_path: Path, trained: Tiny, fmt: str) -> None:
    """Wherever the download stopped, the answer is a UserInputError, never a stack trace."""
    path = tmp_path / f"full.{fmt}"
    if fmt == "safetensors":
        save_file(_state(trained), str(path))
    else:
        torch.save(trained.state_dict(), path, _use_new_zipfile_serialization=fmt == "pt")
    data = path.read_bytes()
    cuts = sorted(set(range(0, 40)) | set(range(0, len(data) - 1, max(1, len(data) // 40))))
    cut = tmp_path / "cut.bin"
    for size in cuts:
        cut.write_bytes(data[:size])
        with pytest.raises(UserInputError) as info:
            read_state_dict(cut)
        assert "\n" not in str(info.value), (size, str(info.value))


@pytest.mark.parametrize("seed", range(5))
def test_garbage_is_refused_by_magic_bytes(tmp_path: Path, seed: int, monkeypatch) -> None:
    rng = random.Random(seed)
    data = bytearray(rng.randbytes(4096))
    data[0] = 0x17  # not "PK", not a pickle opcode; byte 8 then decides nothing on its own
    data[8] = 0x00
    path = tmp_path / "weights.safetensors"
    path.write_bytes(bytes(data))
    monkeypatch.setattr(torch, "load", _must_not_load)
    message = _error(path)
    assert "unrecognised magic bytes" in message
    assert "safetensors.torch.save_file" in message and "state_dict()" in message


def test_empty_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    assert "unrecognised magic bytes" in _error(path)


def test_zip_that_is_not_a_checkpoint(tmp_path: Path) -> None:
    import zipfile

    path = tmp_path / "images.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "not a model")
    message = _error(path)
    assert "cannot be read" in message and "save it again" in message


def test_list_is_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    message = _error(path)
    assert "does not contain a state_dict (got list)" in message
    assert "save model.state_dict()" in message


def test_dict_with_non_tensors_names_the_entries(tmp_path: Path) -> None:
    path = tmp_path / "meta.pt"
    torch.save({"epoch": 3, "lr": 0.1, "weight": torch.zeros(2)}, path)
    message = _error(path)
    assert "epoch (int)" in message and "lr (float)" in message
    assert "'state_dict'" in message, "says how to wrap it"


# -- apply_state_dict: the key sets and shapes --------------------------------------------------


def _apply_error(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> str:
    before = _state(model)
    with pytest.raises(UserInputError) as info:
        apply_state_dict(model, state, path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) in message
    assert "--num-classes" in message and "--model" in message, "suggests what to check"
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a refused load changes nothing"
    return message


def test_missing_keys_are_listed(tmp_path: Path, trained: Tiny) -> None:
    state = _state(trained)
    del state["fc.weight"], state["bn.running_var"]
    message = _apply_error(Tiny(), state, tmp_path / "w.pt")
    assert "missing keys: bn.running_var, fc.weight" in message
    assert "unexpected" not in message and "shape" not in message


def test_unexpected_keys_are_listed(tmp_path: Path, trained: Tiny) -> None:
    state = {("module." + k): v for k, v in _state(trained).items()}  # DataParallel prefix
    message = _apply_error(Tiny(), state, tmp_path / "w.pt")
    assert "unexpected keys: module.conv.weight" in message
    assert "missing keys: conv.weight" in message


def test_shape_mismatches_are_listed_with_both_shapes(tmp_path: Path) -> None:
    state = _state(Tiny(num_classes=5))
    message = _apply_error(Tiny(num_classes=10), state, tmp_path / "w.pt")
    assert "shape mismatches: fc.weight (5, 4) vs model (10, 4), fc.bias (5,) vs model (10,)" \
        in message
    assert "missing" not in message and "unexpected" not in message


def test_all_three_problems_in_one_message(tmp_path: Path) -> None:
    state = _state(Tiny(num_classes=5))
    del state["conv.bias"]
    state["head.weight"] = torch.zeros(1)
    message = _apply_error(Tiny(num_classes=10), state, tmp_path / "w.pt")
    assert message.index("missing keys: conv.bias") < message.index("unexpected keys: head.weight")
    assert "shape mismatches: fc.weight" in message


def test_long_key_lists_are_shortened(tmp_path: Path) -> None:
    model = build(ModelSpec("mobilenet_v2", 0.35, 64, 10))
    message = _apply_error(model, {}, tmp_path / "empty.safetensors")
    assert "missing keys: features.0.0.weight" in message
    assert f"(+{len(model.state_dict()) - 8} more)" in message
    assert len(message) < 1000


def test_zoo_class_count_mismatch_names_the_classifier(tmp_path: Path) -> None:
    path = tmp_path / "ten_classes.pt"
    torch.save(build(ModelSpec("mobilenet_v2", 0.35, 64, 10)).state_dict(), path)
    model = build(ModelSpec("mobilenet_v2", 0.35, 64, 1000))
    message = _apply_error(model, read_state_dict(path), path)
    assert "classifier.1.weight (10, 1280) vs model (1000, 1280)" in message
