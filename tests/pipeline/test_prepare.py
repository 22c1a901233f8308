"""Side-by-side prepares: independent conversions overlap, their checks never do."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

import pipeline.prepare as prepare_module
from pipeline.artifact import Artifact
from pipeline.cache import Cache
from pipeline.graph import Graph, OutputFile, Stage, StageOutput
from pipeline.prepare import prepare_all, prepare_workers


class Events:
    """What happened, in order, across threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.log: list[tuple[str, str]] = []
        self.preparing = 0
        self.most_preparing = 0

    def add(self, what: str, name: str) -> None:
        with self.lock:
            self.log.append((what, name))


class Source(Stage):
    stage = "source"
    tools = ()
    outputs = ("x",)

    def config(self) -> dict[str, Any]:
        return {}

    def run(self, inputs: dict[str, Artifact], workdir: Path) -> StageOutput:
        path = workdir / "x.txt"
        path.write_text("x")
        return StageOutput({"x": OutputFile(path, "text")})


class Converting(Stage):
    """Prepares (a slow 'conversion' into the work folder), then checks it in run."""

    stage = "convert"
    tools = ()
    prepares = True
    inputs = ("x",)

    def __init__(self, name: str, events: Events, fail: bool = False,
                 barrier: threading.Barrier | None = None) -> None:
        self._name, self.events, self.fail, self.barrier = name, events, fail, barrier
        self.outputs = (f"out_{name}",)
        self.prepared_calls = 0

    @property
    def name(self) -> str:
        return self._name

    def config(self) -> dict[str, Any]:
        return {}

    def prepare(self, inputs: dict[str, Artifact], workdir: Path) -> None:
        self.prepared_calls += 1
        ev = self.events
        ev.add("prepare-start", self.name)
        with ev.lock:
            ev.preparing += 1
            ev.most_preparing = max(ev.most_preparing, ev.preparing)
        try:
            if self.barrier is not None:
                self.barrier.wait(timeout=20)   # breaks unless the others prepare at once
            time.sleep(0.05)
            if self.fail:
                raise RuntimeError(f"converter of {self.name} crashed")
            (workdir / "converted.txt").write_text(inputs["x"].path.read_text() + self.name)
        finally:
            with ev.lock:
                ev.preparing -= 1
            ev.add("prepare-end", self.name)

    def run(self, inputs: dict[str, Artifact], workdir: Path) -> StageOutput:
        if not (workdir / "converted.txt").is_file():
            self.prepare(inputs, workdir)
        with self.events.lock:
            assert self.events.preparing == 0, "a check ran while a conversion was running"
        self.events.add("run", self.name)
        return StageOutput({self.outputs[0]: OutputFile(workdir / "converted.txt", "text")},
                           {"parity": {"verdict": "pass"}})


@pytest.fixture
def two_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prepare_module, "usable_cores", lambda: 2)


def test_workers_follow_usable_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prepare_module, "usable_cores", lambda: 1)
    assert prepare_workers() == 1
    monkeypatch.setattr(prepare_module, "usable_cores", lambda: 64)
    assert prepare_workers() == prepare_module.MAX_WORKERS


def test_independent_conversions_overlap_and_checks_run_after(tmp_path: Path,
                                                               two_cores: None) -> None:
    events = Events()
    barrier = threading.Barrier(2)
    stages = [Converting(n, events, barrier=barrier) for n in ("a", "b")]
    results = Graph([Source(), *stages]).run(Cache(tmp_path / "cache"))
    assert [r.status for r in results] == ["ran", "ran", "ran"]
    assert not barrier.broken
    assert events.most_preparing == 2
    order = [what for what, _ in events.log]
    assert order.index("run") > max(i for i, w in enumerate(order) if w == "prepare-end")
    assert [r.outputs[f"out_{s.name}"].path.read_text() for r, s in zip(results[1:], stages)] \
        == ["xa", "xb"]
    assert all(s.prepared_calls == 1 for s in stages)
    assert not list((tmp_path / "cache").glob(".work-*"))


def test_cached_stages_are_not_prepared_again(tmp_path: Path, two_cores: None) -> None:
    cache = Cache(tmp_path / "cache")
    events = Events()
    stages = [Converting(n, events) for n in ("a", "b")]
    Graph([Source(), *stages]).run(cache)
    again = [Converting(n, events) for n in ("a", "b")]
    results = Graph([Source(), *again]).run(cache)
    assert [r.status for r in results] == ["cached"] * 3
    assert [s.prepared_calls for s in again] == [0, 0]


def test_a_failed_prepare_fails_its_own_node_only(tmp_path: Path, two_cores: None) -> None:
    events = Events()
    stages = [Converting("a", events, fail=True), Converting("b", events)]
    results = Graph([Source(), *stages]).run(Cache(tmp_path / "cache"))
    status = {r.stage.name: (r.status, r.error) for r in results}
    assert status["a"] == ("failed", "RuntimeError: converter of a crashed")
    assert status["b"] == ("ran", None)
    assert not list((tmp_path / "cache").glob(".work-*"))


def test_a_lone_stage_prepares_inside_its_run(tmp_path: Path, two_cores: None) -> None:
    events = Events()
    stage = Converting("a", events)
    results = Graph([Source(), stage]).run(Cache(tmp_path / "cache"))
    assert results[-1].status == "ran"
    assert [w for w, _ in events.log] == ["prepare-start", "prepare-end", "run"]


def test_one_core_prepares_one_at_a_time(tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prepare_module, "usable_cores", lambda: 1)
    events = Events()
    stages = [Converting(n, events) for n in ("a", "b", "c")]
    results = Graph([Source(), *stages]).run(Cache(tmp_path / "cache"))
    assert [r.status for r in results] == ["ran"] * 4
    assert events.most_preparing == 1


def test_prepare_all_gives_each_job_its_own_folder(tmp_path: Path, two_cores: None) -> None:
    events = Events()
    stages = [Converting(n, events) for n in ("a", "b")]
    source = tmp_path / "x.txt"
    source.write_text("x")
    artifact = Artifact("x", "", source)
    made = iter([tmp_path / "one", tmp_path / "two"])

    def folder(name: str) -> Path:
        path = next(made)
        path.mkdir()
        return path

    prepared = prepare_all([(s, {"x": artifact}) for s in stages], folder)
    assert {n: p.workdir.name for n, p in prepared.items()} == {"a": "one", "b": "two"}
    assert all(p.error is None and p.seconds > 0 for p in prepared.values())
