"""pipeline.context: the model's cache identity covers all of the user's code the model loaded
(the named file, its sibling modules, the other modules of its package), by relative name and
content, and nothing of the Python environment or of mobile-export itself."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.config import PipelineConfig
from pipeline.context import RunContext
from pipeline.errors import EXIT_BAD_INPUT, UserInputError

#: A model file whose layers come from a sibling module, and whose head is imported only when
#: the factory runs.
NET = textwrap.dedent('''
    from torch import nn

    from helper import Body


    def build(num_classes=10):
        from head import Head

        return nn.Sequential(Body(), Head(num_classes))
''')
HELPER = textwrap.dedent('''
    from torch import nn


    class Body(nn.Sequential):
        def __init__(self):
            super().__init__(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
''')
HEAD = textwrap.dedent('''
    from torch import nn


    class Head(nn.Sequential):
        def __init__(self, num_classes):
            super().__init__(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))
''')


def _write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def _model_folder(folder: Path) -> Path:
    return _write(folder, {"net.py": NET, "helper.py": HELPER, "head.py": HEAD,
                           "unused.py": "RAISE = 1\n"})


def _forget(folder: Path) -> None:
    """Drop what importing the model put in this process (its modules and its sys.path entry),
    as a new CLI run would start without them."""
    folder = folder.resolve()
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if isinstance(file, str) and Path(file).resolve().is_relative_to(folder):
            del sys.modules[name]
    sys.path[:] = [p for p in sys.path if not p or Path(p).resolve() != folder]


def _context(ref: str) -> RunContext:
    return RunContext(PipelineConfig.model_validate({"model": ref, "resolution": 32,
                                                     "num_classes": 10}))


def _code_identity(ref: str, folder: Path) -> str:
    """One run's identity, as after preflight: build the model, then compute it."""
    _forget(folder)
    try:
        ctx = _context(ref)
        ctx.source.build()
        return ctx.model_identity["code"]
    finally:
        _forget(folder)


@pytest.fixture()
def model_dir(tmp_path: Path) -> Path:
    return _model_folder(tmp_path / "models")


def test_zoo_model_has_no_code_identity() -> None:
    assert _context("mobilenet_v2").model_identity["code"] is None


def test_editing_an_imported_sibling_changes_the_identity(model_dir: Path) -> None:
    ref = f"{model_dir / 'net.py'}:build"
    before = _code_identity(ref, model_dir)
    assert _code_identity(ref, model_dir) == before, "nothing changed: the same identity"
    (model_dir / "helper.py").write_text(HELPER.replace("padding=1", "padding=1, bias=False"))
    edited = _code_identity(ref, model_dir)
    assert edited != before, "the model's layers changed: every stage must rerun"


def test_module_imported_by_the_factory_counts(model_dir: Path) -> None:
    ref = f"{model_dir / 'net.py'}:build"
    before = _code_identity(ref, model_dir)
    (model_dir / "head.py").write_text(HEAD + "\n# tuned\n")
    assert _code_identity(ref, model_dir) != before


def test_modules_the_model_does_not_load_do_not_count(model_dir: Path) -> None:
    ref = f"{model_dir / 'net.py'}:build"
    before = _code_identity(ref, model_dir)
    (model_dir / "unused.py").write_text("RAISE = 2\n")
    (model_dir / "notes.txt").write_text("not code\n")
    assert _code_identity(ref, model_dir) == before


def test_identity_is_the_same_from_another_folder(tmp_path: Path) -> None:
    first = _model_folder(tmp_path / "checkout-a" / "models")
    second = _model_folder(tmp_path / "elsewhere" / "b")
    assert _code_identity(f"{first / 'net.py'}:build", first) == \
        _code_identity(f"{second / 'net.py'}:build", second)


def test_code_files_lists_the_loaded_modules_by_relative_name(model_dir: Path) -> None:
    from pipeline.model_source import code_files

    ref = f"{model_dir / 'net.py'}:build"
    _forget(model_dir)
    try:
        _context(ref).source.build()
        files = code_files(ref)
    finally:
        _forget(model_dir)
    assert [name for name, _ in files] == ["head.py", "helper.py", "net.py"]
    assert all(path.is_absolute() and path.is_file() for _, path in files)


def test_a_venv_inside_the_model_folder_does_not_count(tmp_path: Path, monkeypatch) -> None:
    """A model file at a project's root next to its .venv: the venv's packages are not the
    user's code, even though they lie in the model's folder."""
    project = _write(tmp_path / "project", {
        "net.py": "import mx_fake_dep\nfrom torch import nn\n\n\ndef build():\n"
                  "    return nn.Linear(3, mx_fake_dep.N)\n"})
    site_packages = project / ".venv" / "lib" / "site-packages"
    _write(site_packages, {"mx_fake_dep.py": "N = 2\n"})
    monkeypatch.syspath_prepend(str(site_packages))
    monkeypatch.setattr("site.getsitepackages", lambda: [str(site_packages)])
    ref = f"{project / 'net.py'}:build"
    before = _code_identity(ref, project)
    (site_packages / "mx_fake_dep.py").write_text("N = 2  # upgraded\n")
    assert _code_identity(ref, project) == before


def test_package_model_covers_the_packages_other_modules(tmp_path: Path, monkeypatch) -> None:
    from pipeline.model_source import code_files

    root = tmp_path / "site"
    package = _write(root / "mx_ident_pkg", {
        "__init__.py": "",
        "nets.py": "from torch import nn\nfrom mx_ident_pkg.layers import width\n\n\n"
                   "def make(num_classes):\n    return nn.Linear(width(), num_classes)\n",
        "layers.py": "def width():\n    return 4\n",
        "unused.py": "X = 1\n"})
    monkeypatch.syspath_prepend(str(root))
    ref = "mx_ident_pkg.nets:make"

    def identity() -> str:
        for name in [n for n in sys.modules if n.split(".")[0] == "mx_ident_pkg"]:
            del sys.modules[name]
        ctx = _context(ref)
        ctx.source.build()
        return ctx.model_identity["code"]

    try:
        before = identity()
        assert [name for name, _ in code_files(ref)] == [
            "mx_ident_pkg/__init__.py", "mx_ident_pkg/layers.py", "mx_ident_pkg/nets.py"]
        (package / "unused.py").write_text("X = 2\n")
        assert identity() == before, "a module the model does not load does not count"
        (package / "layers.py").write_text("def width():\n    return 4  # same\n")
        assert identity() != before
    finally:
        for name in [n for n in sys.modules if n.split(".")[0] == "mx_ident_pkg"]:
            del sys.modules[name]


def test_mobile_export_modules_are_not_the_models_code() -> None:
    from pipeline.model_source import code_files

    ref = "pipeline.models.mobilenet_v2:MobileNetV2"
    _context(ref).source.build()
    assert [name for name, _ in code_files(ref)] == ["pipeline/models/mobilenet_v2.py"]


@pytest.mark.parametrize("bound, value", [("MAX_CODE_FILES", 2), ("MAX_CODE_BYTES", 100)])
def test_too_much_code_is_refused(model_dir: Path, monkeypatch, bound: str, value: int) -> None:
    monkeypatch.setattr(f"pipeline.model_source.{bound}", value)
    ref = f"{model_dir / 'net.py'}:build"
    with pytest.raises(UserInputError) as info:
        _code_identity(ref, model_dir)
    message = str(info.value)
    assert info.value.exit_code == EXIT_BAD_INPUT and "\n" not in message
    assert f"--model {ref}" in message and str(model_dir.resolve()) in message
    assert "folder or package of its own" in message


#: One CLI run's model identity, in a fresh interpreter: preflight, then the first stage's key.
RUN = textwrap.dedent('''
    import json, sys
    from pipeline.config import PipelineConfig
    from pipeline.context import RunContext
    from pipeline.plan import preflight

    ctx = RunContext(PipelineConfig.model_validate(
        {"model": sys.argv[1], "resolution": 32, "num_classes": 10, "artifacts_dir": "art"}))
    preflight(ctx)
    print(json.dumps(ctx.model_identity))
''')


def _cli_identity(folder: Path, ref: str = "net.py:build") -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    proc = subprocess.run([sys.executable, "-c", RUN, ref], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_two_runs_see_a_sibling_edit_and_not_the_checkout_location(tmp_path: Path) -> None:
    """As two `mobile-export run --model net.py:build` in a row: the second run, after the
    sibling was edited, gets another identity; the same files elsewhere get the same one."""
    first = _model_folder(tmp_path / "a")
    copy = _model_folder(tmp_path / "b")
    before = _cli_identity(first)
    assert before["code"] and _cli_identity(copy) == before
    (first / "helper.py").write_text(HELPER.replace("nn.ReLU()", "nn.ReLU6()"))
    assert _cli_identity(first)["code"] != before["code"]
