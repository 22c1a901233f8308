"""Models handed over in memory (``export(module)``): a content digest, and the registry the
run's :class:`pipeline.model_source.ModelSource` builds them from.

A module object has no file the cache could hash, so its identity is computed from what
decides its outputs: the code of every class in it (source, or bytecode where the source is
gone, e.g. a class typed into a REPL), its state_dict (names, dtypes, shapes, bytes) and the
plain attributes of each submodule (strides, epsilons, flags). The digest goes into the
model's reference, ``memory:<Class>@<sha256>``, which every stage's cache key contains: an
unchanged model is cached, one changed weight is not. The registry keeps a private copy, so
what the user does with the object during the run does not change what is converted.
"""
from __future__ import annotations

import copy
import hashlib
import inspect
import threading
from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from pipeline.errors import UserInputError

PREFIX = "memory:"

#: ref -> private copy, the most recently registered last; a notebook that exports a changing
#: model again and again keeps only the last few copies in memory
_REGISTRY: OrderedDict[str, nn.Module] = OrderedDict()
MAX_REGISTERED = 8
_LOCK = threading.Lock()
#: plain attribute types that can change a module's forward and have a stable repr
_PLAIN = (bool, int, float, str, bytes, type(None))


def is_memory_ref(ref: str) -> bool:
    """Whether ``ref`` names a registered in-memory model."""
    return ref.startswith(PREFIX)


def register(module: nn.Module) -> str:
    """Register a private copy of ``module`` (in eval mode); returns its reference."""
    if not isinstance(module, nn.Module):
        raise UserInputError(f"export() takes a torch.nn.Module, a zoo name, a file.py:factory "
                             f"or an .onnx path, not a {type(module).__name__}")
    digest = module_digest(module)
    name = type(module).__name__
    ref = f"{PREFIX}{name if name.isidentifier() else 'model'}@{digest}"
    with _LOCK:
        if ref not in _REGISTRY:
            try:
                _REGISTRY[ref] = copy.deepcopy(module).eval()
            except Exception as exc:
                raise UserInputError(f"the model cannot be copied ({type(exc).__name__}: "
                                     f"{str(exc)[:200]}); export() keeps a private copy so "
                                     "the run converts what was passed") from None
        _REGISTRY.move_to_end(ref)
        while len(_REGISTRY) > MAX_REGISTERED:
            _REGISTRY.popitem(last=False)
    return ref


def class_name(ref: str) -> str:
    """The class name in a memory reference (its artifacts' label)."""
    return ref[len(PREFIX):].split("@", 1)[0]


def build(ref: str) -> nn.Module:
    """A fresh copy of the registered model (each stage may train or modify its own)."""
    with _LOCK:
        module = _REGISTRY.get(ref)
    if module is None:
        raise UserInputError(f"model {ref[:60]}… is an in-memory model of another process; "
                             "pass the module object to pipeline.export() in this process")
    return copy.deepcopy(module).eval()


def module_digest(module: nn.Module) -> str:
    """sha256 of the module's code, state and plain attributes (see the module doc)."""
    digest = hashlib.sha256()
    for cls in _classes(module):
        digest.update(f"class {cls.__module__}.{cls.__qualname__}\n".encode())
        digest.update(_class_code(cls))
    for name, sub in module.named_modules():
        plain = {k: v for k, v in sorted(vars(sub).items())
                 if not k.startswith("_") and k != "training" and _is_plain(v)}
        digest.update(f"attrs {name} {plain!r}\n".encode())
    for name, tensor in module.state_dict().items():
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"tensor {name} {t.dtype} {list(t.shape)}\n".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _classes(module: nn.Module) -> list[type]:
    """Every class of the module's submodules and their bases, below ``nn.Module``, except
    torch's own (their code is torch's, whose version every cache key already holds)."""
    found: dict[str, type] = {}
    for sub in module.modules():
        for cls in type(sub).__mro__:
            if cls is nn.Module or cls is object or cls.__module__.startswith("torch."):
                continue
            found.setdefault(f"{cls.__module__}.{cls.__qualname__}", cls)
    return [found[key] for key in sorted(found)]


def _class_code(cls: type) -> bytes:
    """The class's source; where there is none, the bytecode and constants of its methods."""
    try:
        return inspect.getsource(cls).encode()
    except (OSError, TypeError):
        parts = []
        for name, value in sorted(vars(cls).items()):
            function = getattr(value, "__func__", value)
            code = getattr(function, "__code__", None)
            if code is not None:
                parts.append(name.encode() + code.co_code + repr(_constants(code)).encode())
        return b"\0".join(parts)


def _constants(code: Any) -> tuple:
    """A code object's constants, nested code objects replaced by their own bytecode."""
    return tuple(_constants(c) + (c.co_code,) if inspect.iscode(c) else c
                 for c in code.co_consts)


def _is_plain(value: Any) -> bool:
    if isinstance(value, (tuple, list)):
        return all(_is_plain(v) for v in value)
    return isinstance(value, _PLAIN)
