"""Resolve ``--model`` into an ``nn.Module``: a zoo name, ``package.module:factory`` or
``path/to/file.py:factory``."""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import site
import sys
import sysconfig
import traceback
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import torch
from torch import nn

from pipeline import memory_model
from pipeline.errors import UserInputError
from pipeline.memory_model import is_memory_ref
from pipeline.onnx_input import is_onnx_ref
from pipeline.models.registry import (CROP_FRACTION, IMAGENET_MEAN, IMAGENET_STD, ZOO_NAMES,
                                      ModelSpec, Preprocessing, build, min_resolution,
                                      preprocessing_for)
from pipeline.models.nas_space import NasChoice


@dataclass(frozen=True)
class ModelSource:
    """What the run's model is: its identity, its preprocessing, and how to build it."""

    ref: str
    width: float
    resolution: int
    num_classes: int
    #: the NAS-space point of ``mobilenet_nas`` (None: its defaults; refused for other models)
    nas: NasChoice | None = None
    #: the user's input normalisation (--mean / --std), replacing the declared one
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    @classmethod
    def from_config(cls, config: Any) -> "ModelSource":
        """The source a :class:`~pipeline.config.PipelineConfig` names (its ``nas`` section
        becomes a :class:`NasChoice`)."""
        nas = NasChoice(**config.nas.model_dump()) if config.nas is not None else None
        return cls(config.model, config.width, config.resolution, config.num_classes, nas,
                   config.mean, config.std)

    @property
    def is_zoo(self) -> bool:
        return self.ref in ZOO_NAMES

    @property
    def is_onnx(self) -> bool:
        """An ONNX file (pipeline.onnx_input): no PyTorch model, ONNX Runtime is the reference."""
        return is_onnx_ref(self.ref)

    @property
    def label(self) -> str:
        if self.is_zoo:
            return self.spec.label
        if is_memory_ref(self.ref):
            return f"{memory_model.class_name(self.ref)}_{self.resolution}"
        if self.is_onnx:
            return f"{Path(self.ref).stem}_{self.resolution}"
        return self.ref.rsplit(":", 1)[-1] + f"_{self.resolution}"

    @property
    def spec(self) -> ModelSpec:
        nas = self.nas if self.is_zoo else None   # a non-zoo ref never builds from a spec
        return ModelSpec(self.ref, self.width, self.resolution, self.num_classes, nas)

    @property
    def nas_identity(self) -> dict[str, Any] | None:
        """The NAS choice as a dict for cache keys and the report (None for other models);
        ``mobilenet_nas`` without a ``nas`` section gets its defaults, so both share a key."""
        if self.is_zoo and self.spec.nas is not None:
            return asdict(self.spec.nas)
        return None

    @property
    def preprocessing(self) -> Preprocessing:
        """The zoo's declaration; ImageNet evaluation preprocessing for a user's model; the
        user's ``mean`` / ``std`` in place of either's when given."""
        if self.is_zoo:
            declared = preprocessing_for(self.spec)
        else:
            declared = Preprocessing(resize=int(round(self.resolution / CROP_FRACTION)),
                                     crop=self.resolution, mean=IMAGENET_MEAN, std=IMAGENET_STD)
        return replace(declared, mean=self.mean or declared.mean, std=self.std or declared.std)

    def input_shape(self, batch: int = 1) -> tuple[int, int, int, int]:
        return (batch, 3, self.resolution, self.resolution)

    def build(self) -> nn.Module:
        """A fresh model in eval mode (weights are loaded separately)."""
        if self.is_zoo:
            try:
                model = build(self.spec)
            except ValueError as exc:
                raise UserInputError(f"--model {self.ref}: {exc}") from None
        elif is_memory_ref(self.ref):
            model = memory_model.build(self.ref)
        elif self.is_onnx:
            raise UserInputError(f"{self.ref} is an ONNX model: the stages that need a PyTorch "
                                 "model (fine-tuning, pruning) cannot run on it")
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
        except SystemExit as exc:  # not an Exception: it would end the run with no report
            raise UserInputError(f"--model {self.ref}: the model's code called "
                                 f"{describe_exit(exc)} in its forward on a {self.resolution}x"
                                 f"{self.resolution} input; a model must not exit the process"
                                 ) from None
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


#: The advice for code that exits while it is imported (e.g. a script's argparse at top level).
_NO_EXIT = ("a model file must not exit the process (keep script code under "
            "`if __name__ == \"__main__\":`)")


def _file_module_name(resolved: Path) -> str:
    """The ``sys.modules`` name a user's ``.py`` file is imported under (one per path)."""
    return "_mobile_export_user_" + hashlib.sha256(str(resolved).encode()).hexdigest()[:16]


def _import_location(location: str, ref: str) -> ModuleType:
    if location.endswith(".py"):
        path = Path(location)
        if not path.is_file():
            raise UserInputError(f"--model: file {location} not found; pass an existing .py file")
        resolved = path.resolve()
        name = _file_module_name(resolved)
        # Like `python file.py`: the file's folder is importable, so it may import its siblings.
        if str(resolved.parent) not in sys.path:
            sys.path.insert(0, str(resolved.parent))
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except SystemExit as exc:  # not an Exception: it would end the run with no report
            sys.modules.pop(name, None)
            raise UserInputError(f"--model {ref}: the model's code called "
                                 f"{describe_exit(exc)} while importing {location}; {_NO_EXIT}"
                                 ) from None
        except Exception as exc:
            sys.modules.pop(name, None)
            raise UserInputError(f"--model: importing {location} failed ({_describe(exc)}); "
                                 "fix the error in that file") from None
        except BaseException:  # KeyboardInterrupt: keeps its exit code, leaves no half module
            sys.modules.pop(name, None)
            raise
        return module
    try:
        return importlib.import_module(location)
    except SystemExit as exc:  # importlib has already dropped the half-imported module
        raise UserInputError(f"--model {ref}: the model's code called {describe_exit(exc)} "
                             f"while importing {location}; {_NO_EXIT}") from None
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


def describe_exit(exc: SystemExit) -> str:
    """``sys.exit(3) at models/net.py:12``: what the code asked for (``sys.exit()``,
    ``sys.exit('message')``), and the last line on the way there that is not of the Python
    environment or of mobile-export (the user's line; none when only libraries were involved)."""
    call = "sys.exit()" if exc.code is None else f"sys.exit({repr(exc.code)[:80]})"
    environment = _environment_folders()
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        path = Path(frame.filename)
        if not frame.filename.startswith("<") and \
                not any(path.resolve().is_relative_to(d) for d in environment):
            return f"{call} at {frame.filename}:{frame.lineno}"
    return call


def _resolve_factory(ref: str) -> Callable[..., object]:
    location, factory_name = _split(ref)
    module = _import_location(location, ref)
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
    except SystemExit as exc:  # not an Exception: it would end the run with no report
        raise UserInputError(f"--model {ref}: the model's code called {describe_exit(exc)} "
                             "while the factory built the model; a factory must return the "
                             "model, not exit the process") from None
    except Exception as exc:
        raise UserInputError(f"--model {ref}: calling the factory failed "
                             f"({_describe(exc)}); it must build the model with no arguments "
                             "other than an optional num_classes") from None
    if not isinstance(model, nn.Module):
        raise UserInputError(f"--model {ref}: the factory returned {type(model).__name__}, not a "
                             "torch.nn.Module; make it return the model instance")
    return model


# -- the user's code, for the model's cache identity ------------------------------------------

#: Bounds on the code hashed into the model's identity (a model folder that is really a home
#: directory or a monorepo is refused rather than hashed for minutes).
MAX_CODE_FILES = 5000
MAX_CODE_BYTES = 256 * 2**20


def code_files(ref: str) -> list[tuple[str, Path]]:
    """The user's code a ``file.py:factory`` or ``package.module:factory`` model depends on, as
    ``(relative name, file)`` sorted by name; empty for a zoo model.

    That is the named file plus every loaded module (in ``sys.modules``, with a ``__file__``)
    whose file lies in the model's folder: a file's own folder, or the top-level package's
    folder(s) of ``package.module`` (named ``package/...``). Call it after the model was built
    (``preflight`` does): what the code imports at import time, in its factory or in its
    forward is loaded by then; a model whose module is not loaded yet is imported first.
    Folders of the Python environment (a ``.venv``, site-packages, the standard library) and of
    mobile-export itself are left out when they lie inside the model's folder; one that holds
    the model's folder leaves it alone (an installed package's own modules count)."""
    if ":" not in ref or is_memory_ref(ref) or is_onnx_ref(ref):   # digests of their own
        return []
    location = ref.rsplit(":", 1)[0]
    main, roots = _code_roots(location, ref)
    chosen: dict[Path, str] = {main: _relative_name(main, roots) or main.name} if main else {}
    loaded, environment = _loaded_files(), _environment_folders()
    for root, prefix in roots:
        blocking = [d for d in environment if not (d != root and root.is_relative_to(d))]
        for file in loaded:
            if file not in chosen and file.is_relative_to(root) \
                    and not any(file.is_relative_to(d) for d in blocking):
                chosen[file] = _relative_name(file, [(root, prefix)]) or file.name
    files = sorted((name, path) for path, name in chosen.items() if path.is_file())
    where = ", ".join(str(root) for root, _ in roots)
    if len(files) > MAX_CODE_FILES:
        raise UserInputError(f"--model {ref}: {len(files)} loaded modules lie in the model's "
                             f"folder {where} (at most {MAX_CODE_FILES} are hashed for the "
                             "cache); keep the model's code in a folder or package of its own")
    size = sum(path.stat().st_size for _, path in files)
    if size > MAX_CODE_BYTES:
        raise UserInputError(f"--model {ref}: the loaded modules in the model's folder {where} "
                             f"hold {size / 2**20:.0f} MiB (at most {MAX_CODE_BYTES // 2**20} "
                             "MiB are hashed for the cache); keep the model's code in a folder "
                             "or package of its own")
    return files


def _code_roots(location: str, ref: str) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The model's own file and the folders (with the name prefix) whose modules are its code."""
    if location.endswith(".py"):
        main = Path(location).resolve()
        if _file_module_name(main) not in sys.modules:
            _import_location(location, ref)
        return main, [(main.parent, "")]
    module = sys.modules.get(location) or _import_location(location, ref)
    main = _module_file(module)
    top_name = location.split(".")[0]
    top = sys.modules.get(top_name, module)
    portions = getattr(top, "__path__", None)
    if portions is not None:  # a package, perhaps a namespace package of several folders
        return main, [(Path(p).resolve(), top_name) for p in portions]
    top_file = _module_file(top)  # a plain top-level module: like a file, its folder
    return main, [(top_file.parent, "")] if top_file else []


def _module_file(module: ModuleType) -> Path | None:
    file = getattr(module, "__file__", None)
    return Path(file).resolve() if isinstance(file, str) else None


def _relative_name(file: Path, roots: list[tuple[Path, str]]) -> str | None:
    for root, prefix in roots:
        if file.is_relative_to(root):
            rel = file.relative_to(root).as_posix()
            return f"{prefix}/{rel}" if prefix else rel
    return None


def _loaded_files() -> set[Path]:
    """The resolved files of every module loaded in this process."""
    files = set()
    for module in list(sys.modules.values()):
        file = getattr(module, "__file__", None)
        if isinstance(file, str):
            files.add(Path(file).resolve())
    return files


def _environment_folders() -> set[Path]:
    """Folders whose modules are never the user's model code: the interpreter's prefixes, the
    standard library, site-packages, and mobile-export's own packages."""
    paths = sysconfig.get_paths()
    folders = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
               *(paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths),
               *getattr(site, "getsitepackages", lambda: [])()]
    if site.ENABLE_USER_SITE and site.USER_SITE:
        folders.append(site.USER_SITE)
    tool = Path(__file__).resolve().parent
    return {Path(f).resolve() for f in folders} | {tool, tool.parent / "targets"}
