"""Resolve ``--model`` into an ``nn.Module``: a zoo name, ``package.module:factory`` or
``path/to/file.py:factory``."""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from pipeline.errors import UserInputError
from pipeline.models.registry import (CROP_FRACTION, IMAGENET_MEAN, IMAGENET_STD, ZOO_NAMES,
                                      ModelSpec, Preprocessing, build, min_resolution,
                                      preprocessing_for)


@dataclass(frozen=True)
class ModelSource:
    """What the run's model is: its identity, its preprocessing, and how to build it."""

    ref: str
    width: float
    resolution: int
    num_classes: int

    @property
    def is_zoo(self) -> bool:
        return self.ref in ZOO_NAMES

    @property
    def label(self) -> str:
        if self.is_zoo:
            return self.spec.label
        return self.ref.rsplit(":", 1)[-1] + f"_{self.resolution}"

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec(self.ref, self.width, self.resolution, self.num_classes)

    @property
    def preprocessing(self) -> Preprocessing:
        """The zoo's declaration; ImageNet evaluation preprocessing for a user's model."""
        if self.is_zoo:
            return preprocessing_for(self.spec)
        return Preprocessing(resize=int(round(self.resolution / CROP_FRACTION)),
                             crop=self.resolution, mean=IMAGENET_MEAN, std=IMAGENET_STD)

    def input_shape(self, batch: int = 1) -> tuple[int, int, int, int]:
        return (batch, 3, self.resolution, self.resolution)

    def build(self) -> nn.Module:
        """A fresh model in eval mode (weights are loaded separately)."""
        if self.is_zoo:
            try:
                model = build(self.spec)
            except ValueError as exc:
                raise UserInputError(f"--model {self.ref}: {exc}") from None
        else:
            model = _call_factory(self.ref, _resolve_factory(self.ref), self.num_classes)
        return model.eval()

    def check_resolution(self, model: nn.Module) -> None:
        """Refuse an input resolution the model cannot take, before any stage runs."""
        if self.is_zoo and self.resolution < (least := min_resolution(self.spec)):
            raise UserInputError(f"--resolution {self.resolution} is too small for {self.ref}: "
                                 f"it needs at least {least} px; pass --resolution {least} or more")
        try:
            with torch.inference_mode():
                model(torch.zeros(self.input_shape()))
        except Exception as exc:  # any failure here means the shape is wrong for this model
            first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise UserInputError(f"model {self.ref} cannot take a {self.resolution}x"
                                 f"{self.resolution} input ({first}); pass a --resolution "
                                 "it accepts") from None


def _split(ref: str) -> tuple[str, str]:
    if ":" not in ref:
        raise UserInputError(f"--model {ref!r} is not a zoo model ({', '.join(ZOO_NAMES)}) and "
                             "not of the form package.module:factory or path/to/file.py:factory")
    location, factory = ref.rsplit(":", 1)
    if not factory.isidentifier():
        raise UserInputError(f"--model {ref!r}: {factory!r} is not a valid factory name")
    return location, factory


def _import_location(location: str):
    if location.endswith(".py"):
        path = Path(location)
        if not path.is_file():
            raise UserInputError(f"--model: file {location} not found; pass an existing .py file")
        resolved = path.resolve()
        name = "_mobile_export_user_" + hashlib.sha256(str(resolved).encode()).hexdigest()[:16]
        # Like `python file.py`: the file's folder is importable, so it may import its siblings.
        if str(resolved.parent) not in sys.path:
            sys.path.insert(0, str(resolved.parent))
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise UserInputError(f"--model: importing {location} failed ({_describe(exc)}); "
                                 "fix the error in that file") from None
        return module
    try:
        return importlib.import_module(location)
    except ModuleNotFoundError as exc:
        parts = location.split(".")
        if exc.name is None or exc.name in {".".join(parts[:i]) for i in range(1, len(parts) + 1)}:
            raise UserInputError(f"--model: module {location!r} not found ({exc}); check the "
                                 "name and that its package is installed or on PYTHONPATH"
                                 ) from None
        raise UserInputError(f"--model: importing {location} failed ({_describe(exc)}); install "
                             f"{exc.name!r} or fix the import in {location}") from None
    except Exception as exc:  # the module exists but running it failed
        raise UserInputError(f"--model: importing {location} failed ({_describe(exc)}); "
                             f"fix the error in {location}") from None


def _describe(exc: BaseException) -> str:
    """``Type: first line of the message``, short enough for a one-line error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0][:200]}" if lines else type(exc).__name__


def _resolve_factory(ref: str) -> Callable[..., object]:
    location, factory_name = _split(ref)
    module = _import_location(location)
    factory = getattr(module, factory_name, None)
    if factory is None or not callable(factory):
        available = sorted(n for n, v in vars(module).items()
                           if callable(v) and not n.startswith("_"))[:10]
        raise UserInputError(f"--model: {location} has no callable {factory_name!r}; "
                             f"callables there: {', '.join(available) or 'none'}")
    return factory


def _call_factory(ref: str, factory: Callable[..., object], num_classes: int) -> nn.Module:
    kwargs = {}
    try:
        if "num_classes" in inspect.signature(factory).parameters:
            kwargs["num_classes"] = num_classes
    except (TypeError, ValueError):
        pass
    try:
        model = factory(**kwargs)
    except Exception as exc:
        raise UserInputError(f"--model {ref}: calling the factory failed "
                             f"({_describe(exc)}); it must build the model with no arguments "
                             "other than an optional num_classes") from None
    if not isinstance(model, nn.Module):
        raise UserInputError(f"--model {ref}: the factory returned {type(model).__name__}, not a "
                             "torch.nn.Module; make it return the model instance")
    return model
