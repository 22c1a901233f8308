"""pipeline.model_source: resolving --model (zoo name, package.module:factory, file.py:factory)
and refusing an input resolution the model cannot take, each with a one-line UserInputError."""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from pipeline.config import PipelineConfig
from pipeline.context import RunContext
from pipeline.errors import EXIT_BAD_INPUT, UserInputError
from pipeline.model_source import ModelSource
from pipeline.models.registry import ZOO_NAMES
from pipeline.plan import preflight

USER_MODELS = textwrap.dedent('''
    import torch
    from torch import nn


    class Flat(nn.Module):
        """A Linear after flatten: it only takes the resolution it was built for."""

        def __init__(self, num_classes=10, resolution=32):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4 * resolution * resolution, num_classes)

        def forward(self, x):
            return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))


    class Pooled(nn.Module):
        def __init__(self, num_classes):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, stride=2)
            self.fc = nn.Linear(8, num_classes)

        def forward(self, x):
            return self.fc(self.conv(x).mean((2, 3)))


    def make(num_classes):
        return Pooled(num_classes)


    def make_fixed():
        return Pooled(7)


    def make_flat(num_classes=10):
        return Flat(num_classes)


    def not_a_module():
        return {"conv": nn.Conv2d(3, 4, 3)}


    def returns_class():
        return Pooled


    def broken():
        raise RuntimeError("weights server unreachable\\nsecond line")


    def needs_depth(depth):
        return Pooled(depth)


    LIMIT = 3
''')


def _error(call) -> str:
    with pytest.raises(UserInputError) as info:
        call()
    assert info.value.exit_code == EXIT_BAD_INPUT
    message = str(info.value)
    assert "\n" not in message, f"the error must be one line: {message!r}"
    return message


def _source(ref: str, resolution: int = 32, num_classes: int = 10, width: float = 0.35):
    return ModelSource(ref, width, resolution, num_classes)


@pytest.fixture()
def user_file(tmp_path: Path) -> Path:
    path = tmp_path / "my_models.py"
    path.write_text(USER_MODELS)
    return path


@pytest.fixture()
def user_package(tmp_path: Path, monkeypatch):
    """``mx_user_pkg.nets`` importable from sys.path, forgotten again afterwards."""
    root = tmp_path / "site"
    package = root / "mx_user_pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(USER_MODELS)
    (package / "needs_dep.py").write_text("import mx_missing_dependency_xyz\n")
    (package / "explodes.py").write_text("raise RuntimeError('cannot find CUDA')\n")
    monkeypatch.syspath_prepend(str(root))
    yield "mx_user_pkg"
    for name in [n for n in sys.modules if n == "mx_user_pkg" or n.startswith("mx_user_pkg.")]:
        del sys.modules[name]


# -- resolving models that exist ---------------------------------------------------------------


def test_zoo_name_builds_in_eval_mode() -> None:
    source = _source("mobilenet_v2", resolution=64)
    assert source.is_zoo
    model = source.build()
    assert not model.training
    assert source.label == "mobilenet_v2_0.35_64_10cls"
    with torch.inference_mode():
        assert model(torch.zeros(source.input_shape())).shape == (1, 10)


def test_file_factory_gets_num_classes(user_file: Path) -> None:
    source = _source(f"{user_file}:make", num_classes=13)
    assert not source.is_zoo
    model = source.build()
    assert isinstance(model, nn.Module) and not model.training
    with torch.inference_mode():
        assert model(torch.zeros(source.input_shape())).shape == (1, 13)
    assert source.label == "make_32"
    assert source.preprocessing.crop == 32


def test_file_factory_without_num_classes(user_file: Path) -> None:
    model = _source(f"{user_file}:make_fixed", num_classes=13).build()
    assert model.fc.out_features == 7


def test_package_factory(user_package: str) -> None:
    model = _source(f"{user_package}.nets:make", num_classes=5).build()
    assert model.fc.out_features == 5


def test_package_class_as_factory() -> None:
    model = _source("pipeline.models.mobilenet_v2:MobileNetV2", num_classes=3).build()
    assert type(model).__name__ == "MobileNetV2" and model.classifier[1].out_features == 3


# -- module or factory not found ---------------------------------------------------------------


def test_unknown_name_without_colon_lists_the_forms() -> None:
    message = _error(_source("mobilenet_v5").build)
    assert "'mobilenet_v5'" in message
    for name in ZOO_NAMES:
        assert name in message
    assert "package.module:factory" in message and "path/to/file.py:factory" in message


def test_missing_module() -> None:
    message = _error(_source("mx_no_such_package.models:make").build)
    assert "module 'mx_no_such_package.models' not found" in message
    assert "PYTHONPATH" in message


def test_missing_factory_in_module_lists_callables(user_package: str) -> None:
    message = _error(_source(f"{user_package}.nets:mkae").build)
    assert f"{user_package}.nets has no callable 'mkae'" in message
    assert "make" in message and "make_flat" in message
    assert "LIMIT" not in message, "a constant is not offered as a factory"


def test_module_whose_dependency_is_missing_names_the_dependency(user_package: str) -> None:
    """Regression: this said "module 'mx_user_pkg.needs_dep' not found" although it exists."""
    message = _error(_source(f"{user_package}.needs_dep:make").build)
    assert "mx_missing_dependency_xyz" in message
    assert f"module '{user_package}.needs_dep' not found" not in message
    assert "install" in message


def test_module_that_raises_on_import(user_package: str) -> None:
    """Regression: an error raised while importing package.module escaped as a traceback."""
    message = _error(_source(f"{user_package}.explodes:make").build)
    assert f"importing {user_package}.explodes failed" in message
    assert "RuntimeError: cannot find CUDA" in message


def test_missing_py_file(tmp_path: Path) -> None:
    missing = tmp_path / "nets" / "absent.py"
    message = _error(_source(f"{missing}:make").build)
    assert f"file {missing} not found" in message
    assert "existing .py file" in message


def test_missing_factory_in_file(user_file: Path) -> None:
    message = _error(_source(f"{user_file}:build_model").build)
    assert f"{user_file} has no callable 'build_model'" in message
    assert "make_fixed" in message


def test_non_callable_attribute_is_not_a_factory(user_file: Path) -> None:
    message = _error(_source(f"{user_file}:LIMIT").build)
    assert "has no callable 'LIMIT'" in message


def test_file_with_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_text("def make(:\n    pass\n")
    message = _error(_source(f"{path}:make").build)
    assert f"importing {path} failed" in message and "SyntaxError" in message


def test_file_import_leaves_no_half_module(tmp_path: Path) -> None:
    path = tmp_path / "half.py"
    path.write_text("X = 1\nraise ValueError('bad')\n")
    before = {n for n in sys.modules if n.startswith("_mobile_export_user_")}
    assert "ValueError: bad" in _error(_source(f"{path}:make").build)
    assert {n for n in sys.modules if n.startswith("_mobile_export_user_")} == before


def test_invalid_factory_name(user_file: Path) -> None:
    message = _error(_source(f"{user_file}:make-net").build)
    assert "'make-net' is not a valid factory name" in message


# -- the factory itself ------------------------------------------------------------------------


@pytest.mark.parametrize("factory, returned", [("not_a_module", "dict"),
                                               ("returns_class", "type")])
def test_factory_returning_a_non_module(user_file: Path, factory: str, returned: str) -> None:
    message = _error(_source(f"{user_file}:{factory}").build)
    assert f"the factory returned {returned}, not a torch.nn.Module" in message
    assert "return the model instance" in message


def test_factory_that_raises(user_file: Path) -> None:
    message = _error(_source(f"{user_file}:broken").build)
    assert "calling the factory failed (RuntimeError: weights server unreachable)" in message
    assert "second line" not in message


def test_factory_needing_other_arguments(user_file: Path) -> None:
    message = _error(_source(f"{user_file}:needs_depth").build)
    assert "depth" in message and "num_classes" in message


# -- input resolution --------------------------------------------------------------------------


@pytest.mark.parametrize("resolution", [1, 16, 31])
def test_zoo_model_below_32_px(resolution: int) -> None:
    source = _source("mobilenet_v2", resolution=resolution)
    message = _error(lambda: source.check_resolution(source.build()))
    assert f"--resolution {resolution} is too small for mobilenet_v2" in message
    assert "at least 32 px" in message and "--resolution 32 or more" in message


def test_zoo_model_at_32_px_is_accepted() -> None:
    source = _source("mobilenet_v2", resolution=32)
    source.check_resolution(source.build())


def test_fixed_size_linear_refuses_another_resolution(user_file: Path) -> None:
    ref = f"{user_file}:make_flat"
    _source(ref, resolution=32).check_resolution(_source(ref, resolution=32).build())
    source = _source(ref, resolution=64)
    message = _error(lambda: source.check_resolution(source.build()))
    assert f"model {ref} cannot take a 64x64 input" in message
    assert "mat1 and mat2" in message, "quotes the operation that failed"
    assert "pass a --resolution it accepts" in message


def test_preflight_refuses_resolution_before_any_stage(user_file: Path, tmp_path: Path) -> None:
    config = PipelineConfig(model=f"{user_file}:make_flat", resolution=48, num_classes=10,
                            artifacts_dir=tmp_path / "artifacts")
    message = _error(lambda: preflight(RunContext(config)))
    assert "cannot take a 48x48 input" in message
    assert not (tmp_path / "artifacts").exists()


def test_preflight_reports_weights_that_do_not_match(user_file: Path, tmp_path: Path) -> None:
    weights = tmp_path / "five.pt"
    torch.save(_source(f"{user_file}:make", num_classes=5).build().state_dict(), weights)
    config = PipelineConfig(model=f"{user_file}:make", num_classes=10, resolution=32,
                            weights=weights, artifacts_dir=tmp_path / "artifacts")
    message = _error(lambda: preflight(RunContext(config)))
    assert f"weights file {weights}" in message
    assert "shape mismatches: fc.weight (5, 8) vs model (10, 8)" in message


# -- model code that exits the process ---------------------------------------------------------

EXITING = textwrap.dedent('''
    import argparse
    import os
    import sys

    from torch import nn

    if os.environ.get("MX_EXIT_ON_IMPORT"):
        sys.exit(0)
    if os.environ.get("MX_PARSE_ARGS_ON_IMPORT"):
        argparse.ArgumentParser(prog="train").parse_args(["--epochs"])  # exits 2
    if os.environ.get("MX_INTERRUPT_ON_IMPORT"):
        raise KeyboardInterrupt

    class Acts(nn.Module):
        def __init__(self, act):
            super().__init__()
            self.act = act

        def forward(self, x):
            return self.act()

    def interrupted_in_factory():
        raise KeyboardInterrupt

    def exits_in_factory():
        sys.exit(0)

    def exits_without_code():
        sys.exit()

    def exits_in_forward():
        return Acts(lambda: sys.exit(3))

    def interrupted_in_forward():
        return Acts(interrupted_in_factory)
''')


def _line(text: str, snippet: str) -> int:  # 1-based, of the first line holding snippet
    return next(i for i, line in enumerate(text.splitlines(), 1) if snippet in line)


@pytest.fixture()
def exiting_file(tmp_path: Path) -> Path:
    path = tmp_path / "exiting.py"
    path.write_text(EXITING)
    return path


@pytest.mark.parametrize("variable, call, site", [
    ("MX_EXIT_ON_IMPORT", "sys.exit(0)", "    sys.exit(0)"),
    ("MX_PARSE_ARGS_ON_IMPORT", "sys.exit(2)", "parse_args(")])  # the line calling argparse
def test_file_that_exits_while_imported(exiting_file: Path, monkeypatch, variable: str,
                                        call: str, site: str) -> None:
    """Regression: sys.exit(0) at import time ended the run with exit code 0 and no report."""
    monkeypatch.setenv(variable, "1")
    ref = f"{exiting_file}:exits_in_factory"
    before = {n for n in sys.modules if n.startswith("_mobile_export_user_")}
    message = _error(_source(ref).build)
    assert message.startswith(f"--model {ref}: the model's code called {call} at "
                              f"{exiting_file}:{_line(EXITING, site)} while importing "
                              f"{exiting_file}; a model file must not exit the process")
    assert "__main__" in message, "says how to keep script code from running on import"
    assert {n for n in sys.modules if n.startswith("_mobile_export_user_")} == before


def test_package_module_that_exits_while_imported(user_package: str, tmp_path: Path) -> None:
    quits = tmp_path / "site" / user_package / "quits.py"
    quits.write_text("X = 1\nraise SystemExit('no GPU')\n")
    message = _error(_source(f"{user_package}.quits:make").build)
    assert f"--model {user_package}.quits:make: the model's code called sys.exit('no GPU') " \
           f"at {quits}:2 while importing {user_package}.quits" in message
    assert f"{user_package}.quits" not in sys.modules, "no half-imported module is left"


@pytest.mark.parametrize("factory, call, when", [
    ("exits_in_factory", "sys.exit(0)", "while the factory built the model"),
    ("exits_without_code", "sys.exit()", "while the factory built the model"),
    ("exits_in_forward", "sys.exit(3)", "in its forward on a 32x32 input")])
def test_preflight_refuses_code_that_exits(exiting_file: Path, tmp_path: Path, factory: str,
                                           call: str, when: str) -> None:
    """The factory or the forward (check_resolution) exiting: one line, before any stage."""
    ref = f"{exiting_file}:{factory}"
    config = PipelineConfig(model=ref, resolution=32, num_classes=10,
                            artifacts_dir=tmp_path / "artifacts")
    message = _error(lambda: preflight(RunContext(config)))
    line = _line(EXITING, f"def {factory}():") + 1
    assert message.startswith(f"--model {ref}: the model's code called {call} at "
                              f"{exiting_file}:{line} {when}; a ")
    assert "not exit the process" in message
    assert not (tmp_path / "artifacts").exists()


@pytest.mark.parametrize("factory", ["interrupted_in_factory", "interrupted_in_forward", None])
def test_keyboard_interrupt_is_not_caught(exiting_file: Path, monkeypatch, factory) -> None:
    """Ctrl-C keeps its meaning (exit code 130), wherever the model's code is interrupted."""
    if factory is None:  # at import time
        monkeypatch.setenv("MX_INTERRUPT_ON_IMPORT", "1")
    source = _source(f"{exiting_file}:{factory or 'exits_in_factory'}")
    with pytest.raises(KeyboardInterrupt):
        source.check_resolution(source.build())
