"""``mobile-export run`` on bad input: exit code 2 and exactly one ``error:`` line on stderr,
before any stage runs; a traceback only with ``--debug``."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import EXIT_BAD_INPUT
from pipeline.models.registry import ModelSpec, build

REPO = Path(__file__).resolve().parents[1]

USER_MODELS = textwrap.dedent('''
    import torch
    from torch import nn


    class Flat(nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 32 * 32, num_classes)

        def forward(self, x):
            return self.fc(torch.flatten(self.conv(x), 1))


    def make_flat(num_classes=10):
        return Flat(num_classes)


    def make_dict():
        return {"not": "a module"}
''')


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean((2, 3)))


@pytest.fixture()
def user_file(tmp_path: Path) -> Path:
    path = tmp_path / "nets.py"
    path.write_text(USER_MODELS)
    return path


def _run(tmp_path: Path, *args: str, model: str = "mobilenet_v2", debug: bool = False):
    argv = ["run", "--model", model, "--width", "0.35", "--resolution", "64",
            "--artifacts-dir", str(tmp_path / "artifacts"), "--out", str(tmp_path / "r"), *args]
    if debug:
        argv.append("--debug")
    return CliRunner().invoke(app, argv)


def _plain(text: str) -> str:
    """Without colour codes (rich adds them where FORCE_COLOR is set)."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _one_error_line(result, tmp_path: Path) -> str:
    """Exit code 2, one ``error:`` line on stderr, nothing else, no stage ran."""
    assert result.exit_code == EXIT_BAD_INPUT, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    lines = [line for line in _plain(result.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, f"expected exactly one line, got: {result.stderr!r}"
    assert lines[0].startswith("error: ")
    assert not result.stdout.strip(), "nothing on stdout"
    assert not (tmp_path / "artifacts").exists(), "nothing is written before the input is checked"
    assert not (tmp_path / "r").exists()
    return lines[0]


def _half(path: Path) -> Path:
    data = path.read_bytes()
    half = path.with_name("half_" + path.name)
    half.write_bytes(data[: len(data) // 2])
    return half


# -- --model -----------------------------------------------------------------------------------


def test_module_not_found(tmp_path: Path) -> None:
    line = _one_error_line(_run(tmp_path, model="mx_nonexistent_pkg.nets:make"), tmp_path)
    assert "module 'mx_nonexistent_pkg.nets' not found" in line and "PYTHONPATH" in line


def test_py_file_not_found(tmp_path: Path) -> None:
    missing = tmp_path / "absent.py"
    line = _one_error_line(_run(tmp_path, model=f"{missing}:make"), tmp_path)
    assert f"file {missing} not found" in line and "existing .py file" in line


def test_factory_not_found_in_file(tmp_path: Path, user_file: Path) -> None:
    line = _one_error_line(_run(tmp_path, model=f"{user_file}:make_net"), tmp_path)
    assert "has no callable 'make_net'" in line and "make_flat" in line


def test_factory_not_found_in_module(tmp_path: Path) -> None:
    line = _one_error_line(_run(tmp_path, model="pipeline.models.mobilenet_v2:MobileNetV9"),
                           tmp_path)
    assert "pipeline.models.mobilenet_v2 has no callable 'MobileNetV9'" in line
    assert "MobileNetV2" in line


def test_factory_returning_a_non_module(tmp_path: Path, user_file: Path) -> None:
    line = _one_error_line(_run(tmp_path, model=f"{user_file}:make_dict"), tmp_path)
    assert "returned dict, not a torch.nn.Module" in line


def test_unknown_zoo_name(tmp_path: Path) -> None:
    line = _one_error_line(_run(tmp_path, model="mobilenet_v4"), tmp_path)
    assert "'mobilenet_v4' is not a zoo model" in line and "mobilenet_v2" in line


# -- --weights ---------------------------------------------------------------------------------


def test_weights_with_wrong_keys_and_shapes(tmp_path: Path) -> None:
    state = build(ModelSpec("mobilenet_v2", 0.35, 64, 10)).state_dict()
    state = {k: v for k, v in state.items() if not k.startswith("features.18.")}
    state["head.weight"] = torch.zeros(3)
    path = tmp_path / "ten_classes.pt"
    torch.save(state, path)
    line = _one_error_line(_run(tmp_path, "--weights", str(path)), tmp_path)
    assert f"weights file {path}" in line
    assert "missing keys: features.18.0.weight" in line
    assert "unexpected keys: head.weight" in line
    assert "shape mismatches: classifier.1.weight (10, 1280) vs model (1000, 1280)" in line
    assert "--num-classes" in line


def test_pickled_whole_module(tmp_path: Path) -> None:
    path = tmp_path / "whole.pt"
    torch.save(Tiny(), path)
    line = _one_error_line(_run(tmp_path, "--weights", str(path)), tmp_path)
    assert "torch.save(model)" in line and "save model.state_dict()" in line


def test_torchscript_file(tmp_path: Path) -> None:
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(Tiny()), str(path))
    line = _one_error_line(_run(tmp_path, "--weights", str(path)), tmp_path)
    assert "TorchScript archive" in line and "state_dict()" in line


def test_truncated_pt(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    torch.save(Tiny().state_dict(), path)
    half = _half(path)
    line = _one_error_line(_run(tmp_path, "--weights", str(half)), tmp_path)
    assert str(half) in line and "truncated" in line and "save it again" in line


def test_truncated_safetensors(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in Tiny().state_dict().items()}, str(path))
    half = _half(path)
    line = _one_error_line(_run(tmp_path, "--weights", str(half)), tmp_path)
    assert str(half) in line and "damaged safetensors" in line and "save it again" in line


def test_garbage_weights(tmp_path: Path) -> None:
    path = tmp_path / "random.pth"
    path.write_bytes(b"\x17" + bytes(range(256)) * 8)
    line = _one_error_line(_run(tmp_path, "--weights", str(path)), tmp_path)
    assert "unrecognised magic bytes" in line and "state_dict()" in line


def test_missing_weights_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.safetensors"
    line = _one_error_line(_run(tmp_path, "--weights", str(path)), tmp_path)
    assert f"weights file {path}: does not exist" in line


def test_brackets_in_a_path_are_printed_as_they_are(tmp_path: Path) -> None:
    path = tmp_path / "ckpt[v2]" / "w[/best].pt"
    result = _run(tmp_path, "--weights", str(path))
    line = _one_error_line(result, tmp_path)
    assert str(path) in line


# -- --resolution ------------------------------------------------------------------------------


def test_zoo_model_below_32_px(tmp_path: Path) -> None:
    line = _one_error_line(_run(tmp_path, "--resolution", "16"), tmp_path)
    assert "--resolution 16 is too small for mobilenet_v2" in line and "32" in line


def test_user_model_fixed_linear_at_another_resolution(tmp_path: Path, user_file: Path) -> None:
    line = _one_error_line(_run(tmp_path, model=f"{user_file}:make_flat"), tmp_path)
    assert "cannot take a 64x64 input" in line and "mat1 and mat2" in line
    assert "--resolution" in line


# -- --config, --targets, --precisions ---------------------------------------------------------


def test_config_with_unknown_key(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("model: mobilenet_v2\nwarmup: 20\n")
    line = _one_error_line(_run(tmp_path, "--config", str(config)), tmp_path)
    assert f"invalid configuration in {config}" in line
    assert "unknown key 'warmup'" in line and "bench" in line


def test_config_with_bad_value(tmp_path: Path) -> None:
    config = tmp_path / "run.yaml"
    config.write_text("num_classes: many\n")
    line = _one_error_line(_run(tmp_path, "--config", str(config)), tmp_path)
    assert "'num_classes'" in line and "(got 'many')" in line


def test_missing_config_file(tmp_path: Path) -> None:
    config = tmp_path / "absent.yaml"
    line = _one_error_line(_run(tmp_path, "--config", str(config)), tmp_path)
    assert f"config file {config} does not exist" in line


def test_unknown_target(tmp_path: Path) -> None:
    line = _one_error_line(_run(tmp_path, "--targets", "onnx,tflight"), tmp_path)
    assert "--targets: unknown target(s) ['tflight']" in line and "'onnx'" in line


def test_unknown_precision(tmp_path: Path) -> None:
    line = _one_error_line(_run(tmp_path, "--precisions", "fp32,bf16"), tmp_path)
    assert "--precisions: unknown precision(s) ['bf16']" in line
    assert "['fp32', 'fp16', 'int8']" in line


def test_zoo_command_bad_format(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["zoo", "--format", "xml"])
    assert result.exit_code == EXIT_BAD_INPUT
    assert _plain(result.stderr).strip() == "error: --format 'xml': use table or json"


def test_zoo_nas_lists_the_search_space_as_json() -> None:
    import json

    result = CliRunner().invoke(app, ["zoo", "--nas", "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 36 and {r["kernel_size"] for r in rows} == {3, 5, 7}
    default = next(r for r in rows if r["label"] == "mobilenet_nas_1.0_224_d1.0_k3_relu6")
    v2 = build(ModelSpec("mobilenet_v2"))
    assert default["params"] == sum(p.numel() for p in v2.parameters())


# -- --debug -----------------------------------------------------------------------------------


@pytest.mark.parametrize("args, model", [
    (("--precisions", "fp8"), "mobilenet_v2"),
    (("--resolution", "16"), "mobilenet_v2"),
    ((), "mx_nonexistent_pkg.nets:make"),
])
def test_debug_shows_the_traceback(tmp_path: Path, args: tuple[str, ...], model: str) -> None:
    result = _run(tmp_path, *args, model=model, debug=True)
    assert result.exit_code == EXIT_BAD_INPUT
    assert "Traceback" in result.stderr
    assert "UserInputError" in result.stderr
    last = _plain(result.stderr).rstrip().splitlines()[-1]
    assert last.startswith("error: "), "the error line still ends the output"


# -- end to end: the installed entry point's exit code -----------------------------------------


def test_exit_code_and_stderr_of_a_real_process(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "PYTHONWARNINGS")}
    env.update(NO_COLOR="1", PYTHONPATH=os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", "--model", "mx_nonexistent_pkg.nets:make",
         "--width", "0.35", "--resolution", "64", "--artifacts-dir", str(tmp_path / "artifacts"),
         "--out", str(tmp_path / "r")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == EXIT_BAD_INPUT
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "error: --model: module 'mx_nonexistent_pkg.nets' not found (No module named "
        "'mx_nonexistent_pkg'); check the name and that its package is installed or on "
        "PYTHONPATH"]
    assert not (tmp_path / "artifacts").exists()
