"""Refuse a ``.pt2`` archive that could make ``torch.export.load`` run code.

``torch.export.load`` is not a safe loader (its own docstring: "never load data from an
untrusted source"). Reading torch 2.13's loader (``torch/export/pt2_archive/_package.py``,
``torch/_export/serde/serialize.py``), a crafted archive can make it:

* unpickle: weights or constants marked ``use_pickle`` (``torch.load(weights_only=False)``),
  custom and opaque objects (``pickle.loads``), legacy ``<model>.pt`` weight files, AOTInductor
  payloads, and the sample inputs, which are retried with ``weights_only=False`` when the safe
  loader refuses them;
* ``eval``: every symbolic-shape string goes through ``sympy.sympify``, which evaluates Python;
* call anything: a node's target is resolved by an attribute chain from ``torch`` (so
  ``torch.os.system`` resolves), and the graph calls it when the program runs;
* compile code: ``guards_code`` strings become a Python function in ``.module()``.

So every ``.pt2`` this tool loads, its own cache entries and a file handed to ``verify`` alike,
passes :func:`check_pt2` first: no pickled entry of any kind (the sample inputs must load with
the restricted ``weights_only=True`` unpickler, so torch never reaches its fallback), symbolic
expressions from a small grammar (symbol names, numbers, arithmetic, sympy's named functions),
node targets from ATen/prims and Python's operators only, no guards code, no custom objects,
identifier-like names, stored (uncompressed) members within the file's size, paths inside the
archive. Nothing in an archive is loaded before all of it is checked.
"""
from __future__ import annotations

import io
import json
import re
import tokenize
import zipfile
from pathlib import PurePosixPath
from typing import Any, Iterator

from pipeline.errors import UserInputError

#: Largest .pt2 this tool reads (a full-size vision model is tens of MB).
MAX_PT2_BYTES = 2 << 30
MAX_MEMBERS = 100_000

_TARGET = re.compile(r"torch\.ops\.(aten|prims)\.[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = frozenset({
    "getitem", "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg", "pos", "abs",
    "eq", "ne", "lt", "le", "gt", "ge", "and_", "or_", "xor", "not_", "invert"})
_MATH = frozenset({"ceil", "floor", "trunc", "sqrt"})
#: Names a symbolic-shape expression may use: sympy's printed forms and torch's sympy functions
#: (the deserializer's own ``sympy_functions`` table), plus Symbol's assumption keywords.
_EXPR_NAMES = frozenset({
    "Symbol", "Integer", "Rational", "Float", "Max", "Min", "Abs", "Mod", "floor", "ceiling",
    "sqrt", "Eq", "Ne", "Lt", "Le", "Gt", "Ge", "And", "Or", "Not", "True", "False", "oo",
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt",
    "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow", "TruncToFloat", "TruncToInt",
    "RoundToInt", "RoundDecimal", "ToFloat", "FloatTrueDiv", "IntTrueDiv", "IsNonOverlappingAndDenseIndicator",
    "BitwiseFn_bitwise_and", "BitwiseFn_bitwise_or", "OpaqueUnaryFn_log2", "Identity",
    "positive", "negative", "integer", "nonnegative", "nonpositive", "real", "finite",
    "zero", "nonzero"})
_SYMBOL = re.compile(r"[a-z]+[0-9]+")
_EXPR_OPS = frozenset({"+", "-", "*", "/", "//", "**", "%", "(", ")", ",", "=", "<", ">",
                       "<=", ">=", "==", "!=", "&", "|", "~"})
_NAME = re.compile(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*")
#: JSON keys whose string values become Python names (attributes, graph values, submodules)
_NAME_KEYS = frozenset({"name", "parameter_name", "buffer_name", "tensor_constant_name",
                        "custom_obj_name", "fqn", "target_name"})
_CONFIG_DIRS = {"data/weights/": "weight", "data/constants/": "constant"}


class UnsafeArchive(UserInputError):
    """A .pt2 archive holds something that loading it could execute."""


def _refuse(source: str, problem: str) -> UnsafeArchive:
    return UnsafeArchive(f"{source}: {problem}; mobile-export loads only torch.export programs "
                         "without pickled or executable content (re-export the model with "
                         "torch.export.save from plain tensors)")


def _short(value: object, limit: int = 80) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def check_expression(expr: str) -> str | None:
    """Why ``expr`` (a symbolic-shape string sympify would evaluate) is refused, or None."""
    if len(expr) > 4096:
        return "an over-long symbolic expression"
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(expr).readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return f"a symbolic expression that does not parse ({_short(expr)!r})"
    for token in tokens:
        kind, text = token.type, token.string
        if kind in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER) or not text.strip():
            continue
        if kind == tokenize.NUMBER and re.fullmatch(r"[0-9]+(\.[0-9]+)?(e[-+]?[0-9]+)?", text):
            continue
        if kind == tokenize.NAME and (text in _EXPR_NAMES or _SYMBOL.fullmatch(text)):
            continue
        if kind == tokenize.STRING and re.fullmatch(r"'[a-z]+[0-9]+'|\"[a-z]+[0-9]+\"", text):
            continue
        if kind == tokenize.OP and text in _EXPR_OPS:
            continue
        return f"a symbolic expression with {text!r} in it ({_short(expr)!r})"
    return None


def check_target(target: str) -> str | None:
    """Why a node target (an operator the graph calls) is refused, or None."""
    if _TARGET.fullmatch(target):
        return None
    module, _, name = target.partition(".")
    if (module == "_operator" and name in _OPERATORS) or (module == "math" and name in _MATH):
        return None
    return f"a call to {_short(target)!r} (only ATen/prims ops and Python's operators load)"


def _walk(value: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair of a JSON document, depth first."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield k, v
            yield from _walk(v, k)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item, key)


def check_program_json(document: Any) -> str | None:
    """Why a serialized ExportedProgram (``models/<name>.json``) is refused, or None."""
    if not isinstance(document, dict) or "graph_module" not in document:
        return "a models/*.json that is not a serialized program"
    if document.get("guards_code"):
        return "guards code (torch compiles it into a Python function)"
    for key, value in _walk(document):
        if key == "expr_str" and isinstance(value, str):
            reason = check_expression(value)
        elif key in ("target", "as_operator") and isinstance(value, str):
            reason = check_target(value)
        elif key == "custom_obj_values" and value:
            reason = "custom objects (they are unpickled)"
        elif key in ("as_graph", "as_custom_obj") and value:
            reason = f"a '{key}' argument (subgraphs and custom objects are not loaded)"
        elif key in _NAME_KEYS and isinstance(value, str) and value and \
                not _NAME.fullmatch(value):
            reason = f"a {key} that is not a dotted Python name ({_short(value)!r})"
        else:
            continue
        if reason:
            return reason
    return None


def _payload_problem(config: Any, kind: str) -> str | None:
    """Why a weights/constants payload config is refused, or None."""
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        return f"a {kind} config that is not a mapping"
    for fqn, meta in entries.items():
        if not isinstance(meta, dict):
            return f"a {kind} entry {_short(fqn)!r} that is not a mapping"
        if meta.get("use_pickle"):
            return f"the pickled {kind} {_short(fqn)!r}"
        path = str(meta.get("path_name", ""))
        if kind == "constant" and not path.startswith("tensor_"):
            return f"the {kind} {_short(fqn)!r} stored as an object ({_short(path)!r})"
        if "/" in path or "\\" in path or ".." in path:
            return f"the {kind} {_short(fqn)!r} at path {_short(path)!r}"
    return None


def _members(archive: zipfile.ZipFile, size: int, source: str) -> dict[str, zipfile.ZipInfo]:
    """Member path inside the archive's root folder -> its entry, after the layout checks."""
    infos = archive.infolist()
    if len(infos) > MAX_MEMBERS:
        raise _refuse(source, f"{len(infos)} members")
    members: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        path = PurePosixPath(info.filename)
        if info.filename.startswith("/") or ".." in path.parts or "\\" in info.filename:
            raise _refuse(source, f"a member path that leaves the archive "
                                  f"({_short(info.filename)!r})")
        if info.compress_type != zipfile.ZIP_STORED or info.file_size > size:
            raise _refuse(source, f"the compressed or oversized member {_short(info.filename)!r}")
        if info.is_dir():
            continue
        inner = "/".join(path.parts[1:])   # torch writes everything under "<archive name>/"
        members[inner] = info
    return members


def check_pt2(data: bytes, source: str) -> None:
    """Raise :class:`UnsafeArchive` unless the bytes of a .pt2 are safe to give torch."""
    import torch

    if len(data) > MAX_PT2_BYTES:
        raise _refuse(source, f"{len(data)} bytes, over the {MAX_PT2_BYTES} byte limit")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise UserInputError(f"{source} is not a .pt2 archive ({_short(exc, 120)}); pass a "
                             "file written by torch.export.save") from None
    with archive:
        members = _members(archive, len(data), source)
        models = [m for m in members if m.startswith("models/") and m.endswith(".json")]
        if not models:
            raise UserInputError(f"{source} holds no serialized program (models/*.json); pass "
                                 "a file written by torch.export.save")
        for member in members:
            if member.startswith(("data/aotinductor/", "data/executorch/", "data/mtia",
                                  "xl_model_weights/")):
                raise _refuse(source, f"compiled or external payloads ({_short(member)!r})")
            folder = next((d for d in _CONFIG_DIRS if member.startswith(d)), None)
            if folder and member.endswith(".pt"):
                raise _refuse(source, f"the legacy pickled file {_short(member)!r}")
            if folder and member.endswith(".json"):
                problem = _payload_problem(_json(archive, members[member], source),
                                           _CONFIG_DIRS[folder])
                if problem:
                    raise _refuse(source, problem)
        for member in models:
            problem = check_program_json(_json(archive, members[member], source))
            if problem:
                raise _refuse(source, problem)
        for member in (m for m in members if m.startswith("data/sample_inputs/")):
            try:
                torch.load(io.BytesIO(archive.read(members[member])), weights_only=True)
            except Exception as exc:  # noqa: BLE001 - any refusal of the restricted unpickler
                raise _refuse(source, f"sample inputs the restricted unpickler refuses "
                                      f"({_short(exc)})") from None


def _json(archive: zipfile.ZipFile, info: zipfile.ZipInfo, source: str) -> Any:
    try:
        return json.loads(archive.read(info))
    except (ValueError, UnicodeDecodeError) as exc:
        raise UserInputError(f"{source}: {info.filename} is not valid JSON "
                             f"({_short(exc, 120)}); the archive is damaged") from None
