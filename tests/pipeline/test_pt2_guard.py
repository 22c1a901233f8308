""".pt2 archives crafted to run code when torch.export.load reads them are refused before it does.

Each crafted archive starts from a real program saved by torch.export.save and changes one
member. The first test shows the payload is live: torch's own loader, in a child process, runs it.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from pipeline.errors import UserInputError
from pipeline.program import export_program, load_program, save_program
from pipeline.pt2_guard import UnsafeArchive, check_expression, check_pt2, check_target


class _Payload:
    """Unpickling this creates ``marker`` (standing in for any command)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def program_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    program, _ = export_program(model, 16)
    path = tmp_path_factory.mktemp("pt2") / "program.pt2"
    save_program(program, path)
    return path


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def _rewrite(src: Path, dst: Path, edit) -> Path:
    """Copy the archive at ``src`` to ``dst``, ``edit(members)`` changing it in between."""
    members = _members(src)
    edit(members)
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return dst


def _member(members: dict[str, bytes], suffix: str) -> str:
    return next(name for name in members if name.endswith(suffix))


def _pickled_weight(marker: Path):
    def edit(members: dict[str, bytes]) -> None:
        config_name = _member(members, "data/weights/model_weights_config.json")
        config = json.loads(members[config_name])
        fqn, meta = next(iter(config["config"].items()))
        meta["use_pickle"] = True
        members[config_name] = json.dumps(config).encode()
        folder = config_name.rsplit("/", 1)[0]
        members[f"{folder}/{meta['path_name']}"] = pickle.dumps(_Payload(marker))
    return edit


def test_the_crafted_archive_runs_code_in_torch_export_load(program_file, tmp_path) -> None:
    """The threat is real: torch's loader, unguarded, executes the pickled weight."""
    marker = tmp_path / "owned"
    crafted = _rewrite(program_file, tmp_path / "evil.pt2", _pickled_weight(marker))
    subprocess.run([sys.executable, "-c", "import sys, torch\n"
                    "try: torch.export.load(sys.argv[1])\nexcept Exception: pass",
                    str(crafted)], check=True, timeout=120)
    assert marker.exists()


def test_our_own_programs_load(program_file) -> None:
    program = load_program(program_file)
    out = program.module()(torch.zeros(2, 3, 16, 16))
    assert out.shape == (2, 4, 14, 14)


def _refused(path: Path, marker: Path, words: str) -> None:
    with pytest.raises(UnsafeArchive, match=words):
        load_program(path)
    assert not marker.exists()


def test_a_pickled_weight_is_refused_and_never_unpickled(program_file, tmp_path) -> None:
    marker = tmp_path / "owned"
    crafted = _rewrite(program_file, tmp_path / "evil.pt2", _pickled_weight(marker))
    _refused(crafted, marker, "pickled weight")


def test_sample_inputs_the_safe_unpickler_refuses_are_refused(program_file, tmp_path) -> None:
    """torch retries refused sample inputs with weights_only=False: never let it get there."""
    marker = tmp_path / "owned"

    def edit(members: dict[str, bytes]) -> None:
        buffer = io.BytesIO()
        torch.save({"x": _Payload(marker)}, buffer)
        members[_member(members, "data/sample_inputs/model.pt")] = buffer.getvalue()

    _refused(_rewrite(program_file, tmp_path / "evil.pt2", edit), marker,
             "restricted unpickler refuses")


def _edit_program(change):
    def edit(members: dict[str, bytes]) -> None:
        name = _member(members, "models/model.json")
        document = json.loads(members[name])
        change(document)
        members[name] = json.dumps(document).encode()
    return edit


def test_an_expression_sympify_would_evaluate_is_refused(program_file, tmp_path) -> None:
    marker = tmp_path / "owned"

    def change(document: dict) -> None:
        values = document["graph_module"]["graph"]["sym_int_values"]
        values["s99"] = {"as_expr": {"expr_str": f"__import__('os').system('touch {marker}')",
                                     "hint": None}}

    _refused(_rewrite(program_file, tmp_path / "evil.pt2", _edit_program(change)), marker,
             "symbolic expression")


def test_a_node_calling_outside_aten_is_refused(program_file, tmp_path) -> None:
    def change(document: dict) -> None:
        document["graph_module"]["graph"]["nodes"][0]["target"] = "torch.os.system"

    _refused(_rewrite(program_file, tmp_path / "evil.pt2", _edit_program(change)),
             tmp_path / "none", "torch.os.system")


def test_guards_code_and_custom_objects_are_refused(program_file, tmp_path) -> None:
    def guards(document: dict) -> None:
        document["guards_code"] = ["__import__('os').system('true')"]

    def custom(document: dict) -> None:
        document["graph_module"]["graph"]["custom_obj_values"] = {"obj": {"name": "obj"}}

    _refused(_rewrite(program_file, tmp_path / "a.pt2", _edit_program(guards)),
             tmp_path / "none", "guards code")
    _refused(_rewrite(program_file, tmp_path / "b.pt2", _edit_program(custom)),
             tmp_path / "none", "custom objects")


def test_an_object_constant_and_a_legacy_pickle_are_refused(program_file, tmp_path) -> None:
    def constant(members: dict[str, bytes]) -> None:
        name = _member(members, "data/constants/model_constants_config.json")
        members[name] = json.dumps({"config": {"c": {
            "path_name": "opaque_obj_0", "is_param": False, "use_pickle": True}}}).encode()

    def legacy(members: dict[str, bytes]) -> None:
        prefix = _member(members, "models/model.json").split("/", 1)[0]
        members[f"{prefix}/data/weights/model.pt"] = pickle.dumps(0)

    _refused(_rewrite(program_file, tmp_path / "a.pt2", constant), tmp_path / "none",
             "pickled constant")
    _refused(_rewrite(program_file, tmp_path / "b.pt2", legacy), tmp_path / "none",
             "legacy pickled file")


def test_member_paths_and_compression_are_checked(program_file, tmp_path) -> None:
    members = _members(program_file)
    escaping = tmp_path / "escaping.pt2"
    with zipfile.ZipFile(escaping, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
        archive.writestr("../outside.txt", b"x")
    with pytest.raises(UnsafeArchive, match="leaves the archive"):
        check_pt2(escaping.read_bytes(), "escaping.pt2")
    deflated = tmp_path / "deflated.pt2"
    with zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(UnsafeArchive, match="compressed or oversized"):
        check_pt2(deflated.read_bytes(), "deflated.pt2")


def test_a_file_that_is_not_an_archive_is_one_clear_error(tmp_path) -> None:
    path = tmp_path / "notes.pt2"
    path.write_bytes(b"not a zip at all")
    with pytest.raises(UserInputError, match="not a .pt2 archive"):
        load_program(path)


@pytest.mark.parametrize("expr", ["s0", "2*s0 + 1", "Max(1, s77)", "FloorDiv(s0, 2)",
                                  "Symbol('s77', positive=True, integer=True)", "s0**2 - 3"])
def test_expressions_torch_writes_are_accepted(expr: str) -> None:
    assert check_expression(expr) is None


@pytest.mark.parametrize("expr", ["__import__('os')", "s0.__class__", "[s0][0]",
                                  "lambda: 0", "'rm -rf'", "exec('x')", "s0; s1"])
def test_expressions_with_code_are_refused(expr: str) -> None:
    assert check_expression(expr) is not None


def test_targets() -> None:
    assert check_target("torch.ops.aten.conv2d.default") is None
    assert check_target("_operator.getitem") is None
    for bad in ("torch.os.system", "torch.ops.mylib.op.default", "builtins.eval",
                "torch.ops.aten.conv2d.default.__call__"):
        assert check_target(bad) is not None
