"""sweep.yaml -> a validated :class:`SweepSpec` -> the list of :class:`Job` it describes.

A sweep file names ``space``: a list of blocks, each a model with lists (or single values) of
``width``, ``resolution`` and, for ``mobilenet_nas``, ``nas`` axes; every block's axes are crossed
(a grid). ``sample: {n, seed}`` keeps a seeded random ``n`` of the grid's jobs instead. The shared
settings (``targets``, ``precisions``, ``dataset``, ``finetune_epochs``, ``options``) apply to
every job. The file is read through :mod:`pipeline.yaml_safe`, size-capped; a bad key is one
:class:`UserInputError` naming it.
"""
from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pipeline.config import NAS_MODEL, PRECISIONS
from pipeline.errors import UserInputError
from pipeline.yaml_safe import YamlLimitError, safe_load, short

#: a sweep file is a few kB; refuse anything larger unread
MAX_SWEEP_BYTES = 256 << 10
#: most jobs one sweep may expand to (a grid that multiplies out to more is a typo)
MAX_JOBS = 2000
#: the NAS axes in the order a job's point is crossed (the values: pipeline.models.nas_space)
NAS_AXES = ("depth_multiplier", "kernel_size", "activation")
DEFAULT_JOB_TIMEOUT_S = 1800.0


def _listed(value: Any) -> Any:
    """A single value where a list is expected is a list of one."""
    return value if isinstance(value, (list, tuple)) else [value]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NasAxes(_Strict):
    """The NAS space of ``mobilenet_nas``: each axis a value or a list of values."""

    depth_multiplier: tuple[Literal[0.5, 0.75, 1.0, 1.25], ...] = (1.0,)
    kernel_size: tuple[Literal[3, 5, 7], ...] = (3,)
    activation: tuple[Literal["relu6", "swish", "hard_swish"], ...] = ("relu6",)

    @field_validator("depth_multiplier", "kernel_size", "activation", mode="before")
    @classmethod
    def _as_list(cls, value: Any) -> Any:
        return _listed(value)


class Block(_Strict):
    """One model and the axes crossed for it."""

    model: str = Field(min_length=1)
    width: tuple[float, ...] = (1.0,)
    resolution: tuple[int, ...] = (224,)
    nas: NasAxes | None = None

    @field_validator("width", "resolution", mode="before")
    @classmethod
    def _as_list(cls, value: Any) -> Any:
        return _listed(value)

    @field_validator("width")
    @classmethod
    def _widths(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(w <= 0 for w in value):
            raise ValueError(f"widths must be positive numbers, got {list(value)}")
        return value

    @field_validator("resolution")
    @classmethod
    def _resolutions(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(r < 1 for r in value):
            raise ValueError(f"resolutions must be positive integers, got {list(value)}")
        return value


class Sample(_Strict):
    """A seeded random sample of ``n`` of the grid's jobs."""

    n: int = Field(ge=1)
    seed: int = 0


class SweepSpec(_Strict):
    """A whole sweep file."""

    title: str = "sweep"
    space: tuple[Block, ...] = Field(min_length=1)
    sample: Sample | None = None
    targets: tuple[str, ...] = ("onnx",)
    precisions: tuple[str, ...] = ("fp32",)
    dataset: Literal["digits"] | None = None
    finetune_epochs: int = Field(0, ge=0)
    job_timeout_s: float = Field(DEFAULT_JOB_TIMEOUT_S, gt=0)
    latency_budget_ms: float | None = Field(None, gt=0)
    target_fps: float | None = Field(None, gt=0)
    #: further export() options given to every job (e.g. calib_images, num_classes)
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("targets", "precisions", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @field_validator("targets")
    @classmethod
    def _known_targets(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from targets.base import target_names

        unknown = [t for t in value if t not in target_names()]
        if unknown or not value:
            raise ValueError(f"unknown or no target(s) {unknown}; available: "
                             f"{sorted(target_names())}")
        return value

    @field_validator("precisions")
    @classmethod
    def _known_precisions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [p for p in value if p not in PRECISIONS]
        if unknown or not value:
            raise ValueError(f"unknown or no precision(s) {unknown}; available: {list(PRECISIONS)}")
        return value

    @field_validator("options")
    @classmethod
    def _free_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        taken = {"model", "width", "resolution", "nas", "targets", "precisions", "dataset",
                 "finetune_epochs", "out", "out_dir", "artifacts_dir", "threads"}
        clash = sorted(set(value) & taken)
        if clash:
            raise ValueError(f"options {clash} are set by the sweep itself; set them at the top "
                             "level of the file (or leave them to the sweep)")
        return value


@dataclass(frozen=True)
class Job:
    """One pipeline run of the sweep."""

    model: str
    width: float
    resolution: int
    nas: dict[str, Any] | None

    @property
    def id(self) -> str:
        """Stable id: ``mobilenet_v1-w0.25-r128`` (NAS jobs add ``-d0.75-k5-hard_swish``)."""
        name = self.model
        if ":" in name:   # file.py:factory or package.module:factory
            location, factory = name.rsplit(":", 1)
            name = f"{Path(location).stem}.{factory}"
        name = re.sub(r"[^A-Za-z0-9_.]+", "_", name).strip("._") or "model"
        text = f"{name}-w{float(self.width)}-r{self.resolution}"
        if self.nas is not None:
            text += (f"-d{self.nas['depth_multiplier']}-k{self.nas['kernel_size']}"
                     f"-{self.nas['activation']}")
        return text

    def to_json(self) -> dict[str, Any]:
        return {"model": self.model, "width": self.width, "resolution": self.resolution,
                "nas": dict(self.nas) if self.nas is not None else None}


def _block_jobs(block: Block) -> list[Job]:
    if block.model == NAS_MODEL:
        axes = block.nas or NasAxes()
        spaces = [dict(zip(NAS_AXES, combo)) for combo in
                  itertools.product(axes.depth_multiplier, axes.kernel_size, axes.activation)]
    elif block.nas is not None:
        raise UserInputError(f"sweep: 'nas' is for model {NAS_MODEL} only, not {block.model!r}; "
                             "remove it from that block")
    else:
        spaces = [None]
    return [Job(block.model, float(w), int(r), nas) for w in block.width
            for r in block.resolution for nas in spaces]


def expand(spec: SweepSpec) -> list[Job]:
    """Every job of the spec's grid (or its seeded sample), in file order; duplicate ids are an
    error."""
    jobs: list[Job] = []
    seen: dict[str, int] = {}
    for index, block in enumerate(spec.space):
        for job in _block_jobs(block):
            if job.id in seen:
                raise UserInputError(f"sweep: job {job.id} appears twice (space blocks "
                                     f"{seen[job.id] + 1} and {index + 1}); remove one")
            seen[job.id] = index
            jobs.append(job)
            if len(jobs) > MAX_JOBS:
                raise UserInputError(f"sweep: the space expands to more than {MAX_JOBS} jobs; "
                                     "use sample: {n, seed} or fewer values per axis")
    if spec.sample is not None:
        if spec.sample.n > len(jobs):
            raise UserInputError(f"sweep: sample.n is {spec.sample.n} but the space has only "
                                 f"{len(jobs)} jobs; lower sample.n")
        picked = set(random.Random(spec.sample.seed).sample(range(len(jobs)), spec.sample.n))
        jobs = [job for i, job in enumerate(jobs) if i in picked]
    return jobs


def _problems(exc: ValidationError, source: str) -> str:
    problems = []
    for err in exc.errors(include_url=False)[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown key '{short(where, 80)}'")
        else:
            problems.append(f"'{short(where, 80)}': {short(err['msg'], 200)}")
    more = f" (+{exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
    return f"invalid sweep file {source}: {'; '.join(problems)}{more}"


def parse_spec(data: Any, source: str = "the sweep") -> SweepSpec:
    """Validate a loaded sweep document."""
    if not isinstance(data, dict):
        raise UserInputError(f"sweep file {source} must be a mapping of keys to values, not "
                             f"a {type(data).__name__}")
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as exc:
        raise UserInputError(_problems(exc, source)) from None


def load_spec(path: Path) -> SweepSpec:
    """Read, size-check and validate the sweep file at ``path``."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"sweep file {path} does not exist; pass --config a YAML file")
    with open(path, "rb") as stream:
        raw = stream.read(MAX_SWEEP_BYTES + 1)
    if len(raw) > MAX_SWEEP_BYTES:
        raise UserInputError(f"sweep file {path} is larger than {MAX_SWEEP_BYTES >> 10} KiB; "
                             "a sweep file is a few kB")
    try:
        data = safe_load(raw.decode("utf-8"))
    except YamlLimitError as exc:
        raise UserInputError(f"sweep file {path} {exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserInputError(f"sweep file {path} is not valid UTF-8 YAML: "
                             f"{short(str(exc).splitlines()[0] if str(exc) else '', 200)}"
                             ) from None
    return parse_spec(data or {}, str(path))
