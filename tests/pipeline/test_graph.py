"""The DAG engine: ordering, cache hits and misses, --force, failures, a kill mid-write."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from pipeline.artifact import Artifact
from pipeline.cache import Cache
from pipeline.errors import UserInputError
from pipeline.graph import Graph, OutputFile, Stage, StageOutput

REPO = Path(__file__).resolve().parents[2]


class TextStage(Stage):
    """Writes its name plus its inputs' text; counts how often it really ran."""

    version = 1
    tools = ()

    def __init__(self, name: str, inputs: tuple[str, ...], output: str, setting: int = 0,
                 fail: bool = False) -> None:
        self._name, self.inputs, self.outputs = name, inputs, (output,)
        self.setting, self.fail, self.calls = setting, fail, 0

    stage = "text"

    @property
    def name(self) -> str:
        return self._name

    def config(self) -> dict[str, Any]:
        return {"setting": self.setting}

    def run(self, inputs: dict[str, Artifact], workdir: Path) -> StageOutput:
        self.calls += 1
        if self.fail:
            (workdir / "partial").write_text("half")
            raise RuntimeError("converter crashed")
        text = self._name + "".join(a.path.read_text() for a in inputs.values())
        path = workdir / "out.txt"
        path.write_text(text + str(self.setting))
        return StageOutput({self.outputs[0]: OutputFile(path, "text")},
                           {"parity": {"verdict": "pass"}})


def chain(setting: int = 0, fail_b: bool = False) -> tuple[Graph, list[TextStage]]:
    a = TextStage("a", (), "x")
    b = TextStage("b", ("x",), "y", setting=setting, fail=fail_b)
    c = TextStage("c", ("y",), "z")
    d = TextStage("d", ("x",), "w")
    return Graph([c, b, d, a]), [a, b, c, d]


def test_order_follows_inputs() -> None:
    graph, _ = chain()
    names = [s.name for s in graph.order()]
    assert names.index("a") < names.index("b") < names.index("c")
    assert names.index("a") < names.index("d")


def test_invalid_graphs_are_refused() -> None:
    with pytest.raises(ValueError, match="no stage produces"):
        Graph([TextStage("b", ("x",), "y")])
    with pytest.raises(ValueError, match="produced by both"):
        Graph([TextStage("a", (), "x"), TextStage("b", (), "x")])


def test_second_run_is_all_cached(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    graph, stages = chain()
    first = graph.run(cache)
    assert {r.status for r in first} == {"ran"}
    graph2, stages2 = chain()
    second = graph2.run(cache)
    assert {r.status for r in second} == {"cached"}
    assert all(s.calls == 0 for s in stages2)
    assert [r.outputs for r in first] == [r.outputs for r in second]


def test_config_change_reruns_only_that_stage_and_downstream(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    chain()[0].run(cache)
    graph, stages = chain(setting=1)
    status = {r.stage.name: r.status for r in graph.run(cache)}
    assert status == {"a": "cached", "b": "ran", "c": "ran", "d": "cached"}


def test_force_reruns_stage_and_dependents(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    chain()[0].run(cache)
    graph, stages = chain()
    status = {r.stage.name: r.status for r in graph.run(cache, force={"b"})}
    assert status == {"a": "cached", "b": "ran", "c": "ran", "d": "cached"}
    with pytest.raises(UserInputError, match="unknown stage"):
        graph.run(cache, force={"nope"})


def test_corrupt_entry_is_recomputed(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    first = chain()[0].run(cache)
    blob = next(r for r in first if r.stage.name == "b").outputs["y"].path
    blob.write_text("tampered")
    graph, stages = chain()
    status = {r.stage.name: r.status for r in graph.run(cache)}
    assert status["b"] == "ran" and stages[1].calls == 1
    assert status["a"] == "cached"


def test_failed_stage_leaves_nothing_and_skips_dependents(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    graph, stages = chain(fail_b=True)
    results = {r.stage.name: r for r in graph.run(cache)}
    assert results["b"].status == "failed" and "converter crashed" in results["b"].error
    assert results["c"].status == "skipped" and "'b'" in results["c"].error
    assert results["d"].status == "ran"          # independent branch still completes
    assert not cache.record_path(results["b"].key).exists()
    leftovers = [p for p in tmp_path.rglob("*") if p.name == "partial"]
    assert leftovers == []
    graph_ok, _ = chain()
    status = {r.stage.name: r.status for r in graph_ok.run(cache)}
    assert status == {"a": "cached", "b": "ran", "c": "ran", "d": "cached"}


KILLED_STAGE = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from pipeline.cache import Cache
    from pipeline.graph import Graph, OutputFile, Stage, StageOutput

    class Big(Stage):
        stage = "big"
        tools = ()
        outputs = ("blob",)
        def config(self):
            return {}
        def run(self, inputs, workdir):
            path = workdir / "blob.bin"
            with open(path, "wb") as handle:
                handle.write(b"x" * 1_000_000)
                handle.flush()
                os.kill(os.getpid(), signal.SIGKILL)   # dies mid-write
            return StageOutput({"blob": OutputFile(path, "bin")})

    Graph([Big()]).run(Cache(Path(sys.argv[1])))
""")


def test_stage_killed_mid_write_leaves_no_visible_artifact(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", KILLED_STAGE, str(cache_dir)], env=env,
                          capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    cache = Cache(cache_dir)
    visible = [p for p in cache_dir.rglob("*") if p.is_file()
               and not any(part.startswith(".") for part in p.relative_to(cache_dir).parts)]
    assert visible == []
    cache.sweep_stale(max_age_s=0)
    assert list(cache_dir.glob(".work-*")) == []

    class Small(Stage):
        stage = "big"
        tools = ()
        outputs = ("blob",)

        def config(self) -> dict[str, Any]:
            return {}

        def run(self, inputs: dict[str, Artifact], workdir: Path) -> StageOutput:
            path = workdir / "blob.bin"
            path.write_bytes(b"complete")
            return StageOutput({"blob": OutputFile(path, "bin")})

    (result,) = Graph([Small()]).run(cache)
    assert result.status == "ran" and result.outputs["blob"].path.read_bytes() == b"complete"


def test_a_stage_whose_code_calls_sys_exit_is_an_error_not_a_silent_exit(tmp_path: Path) -> None:
    """e.g. a model whose forward calls sys.exit(0) only while torch.export traces it: the run
    must not end with exit code 0 and no report."""

    class Exits(TextStage):
        def run(self, inputs, workdir):
            sys.exit(0)

    graph = Graph([TextStage("a", (), "x"), Exits("b", ("x",), "y")])
    with pytest.raises(UserInputError, match=r"stage 'b': sys.exit\(0\) at .*test_graph.py"):
        graph.run(Cache(tmp_path))
    assert not list(Path(tmp_path).glob(".work-*"))      # its work folder is gone too
