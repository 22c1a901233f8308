"""Latency protocol: counts, minimums, interleaving. No assertions on speed."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.bench import (
    MIN_RUNS,
    MIN_WARMUP,
    BenchSession,
    CpuMonitor,
    LatencyStats,
    benchmark,
    benchmark_interleaved,
    round_sizes,
    rotated,
)
from targets.base import Runner


class MatmulRunner(Runner):
    """A tiny fake runtime: one small matmul per call, logging every call to a shared list."""

    runtime = "fake-numpy"

    def __init__(self, label: str, log: list[str] | None = None, threads: int = 2) -> None:
        super().__init__(threads=threads)
        self.label = label
        self.log = log if log is not None else []
        self.activations = 0
        self.weight = np.ones((16, 16), np.float32)

    def activate_impl(self) -> None:
        self.activations += 1

    def input_names_impl(self) -> list[str]:
        return ["x"]

    def infer_impl(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.log.append(self.label)
        x = feeds["x"].reshape(feeds["x"].shape[0], -1)[:, :16]
        return {"y": x @ self.weight}


def feeds(batch: int = 1) -> dict[str, np.ndarray]:
    return {"x": np.ones((batch, 3, 4, 4), np.float32)}


def test_benchmark_counts_and_fields() -> None:
    runner = MatmulRunner("a")
    stats = benchmark(runner, feeds(4), warmup=12, runs=55)
    assert len(runner.log) == 12 + 55
    assert runner.activations == 1 and not runner.is_active
    assert (stats.runtime, stats.batch, stats.threads, stats.warmup, stats.runs) == ("fake-numpy", 4, 2, 12, 55)
    assert len(stats.samples_ms) == 55
    assert stats.min_ms <= stats.median_ms <= stats.p90_ms
    assert stats.min_ms <= stats.mean_ms
    assert stats.throughput_ips == pytest.approx(4 * 1000 / stats.median_ms)
    assert stats.peak_rss_mb > 0
    out = stats.to_json()
    assert "samples_ms" not in out and len(stats.to_json(samples=True)["samples_ms"]) == 55
    json.dumps(out, allow_nan=False)


def test_benchmark_uses_an_active_runner_as_is() -> None:
    runner = MatmulRunner("a")
    with runner:
        benchmark(runner, feeds())
        assert runner.is_active
    assert runner.activations == 1


@pytest.mark.parametrize("warmup, runs", [(MIN_WARMUP - 1, MIN_RUNS), (MIN_WARMUP, MIN_RUNS - 1), (0, 0)])
def test_minimums_enforced(warmup: int, runs: int) -> None:
    runner = MatmulRunner("a")
    with pytest.raises(ValueError, match="warmup|runs"):
        benchmark(runner, feeds(), warmup=warmup, runs=runs)
    with pytest.raises(ValueError, match="warmup|runs"):
        benchmark_interleaved({"a": (runner, feeds())}, warmup=warmup, runs=runs)
    assert runner.log == []


def test_empty_feeds_rejected() -> None:
    with pytest.raises(ValueError, match="feeds"):
        benchmark(MatmulRunner("a"), {})


def test_round_sizes_and_rotation() -> None:
    assert round_sizes(50, 5) == [10] * 5
    assert round_sizes(53, 5) == [11, 11, 11, 10, 10]
    assert sum(round_sizes(97, 7)) == 97
    assert rotated(["a", "b", "c"], 0) == ["a", "b", "c"]
    assert rotated(["a", "b", "c"], 4) == ["b", "c", "a"]


def _blocks(log: list[str]) -> list[tuple[str, int]]:
    """Run-length encode a call log: [("a", 10), ("b", 10), ...]."""
    out: list[tuple[str, int]] = []
    for label in log:
        if out and out[-1][0] == label:
            out[-1] = (label, out[-1][1] + 1)
        else:
            out.append((label, 1))
    return out


def test_interleaved_protocol() -> None:
    log: list[str] = []
    a, b, c = MatmulRunner("a", log), MatmulRunner("b", log, threads=4), MatmulRunner("c", log)
    session = benchmark_interleaved(
        {"A": (a, feeds()), "B": (b, feeds(2)), "C": (c, feeds())}, warmup=10, runs=51, rounds=3
    )
    assert isinstance(session, BenchSession)
    assert list(session) == ["A", "B", "C"] and len(session) == 3
    assert all(r.activations == 1 and not r.is_active for r in (a, b, c))
    # warm-up of every case first, then 3 rounds of 17 timed runs each, order rotated per round
    assert _blocks(log) == [
        ("a", 10), ("b", 10), ("c", 10),
        ("a", 17), ("b", 17), ("c", 17),
        ("b", 17), ("c", 17), ("a", 17),
        ("c", 17), ("a", 17), ("b", 17),
    ]  # fmt: skip
    for name, stats in session.items():
        assert isinstance(stats, LatencyStats)
        assert stats.runs == 51 and stats.warmup == 10 and stats.rounds == 3
        assert len(stats.samples_ms) == 51
    assert session["B"].batch == 2 and session["B"].threads == 4
    assert session.wall_s > 0 and session.own_cpu_s >= 0 and session.other_cpu_s >= 0
    assert session.other_cores_busy >= 0 and isinstance(session.is_quiet(), bool)
    out = session.to_json()
    assert set(out["cases"]) == {"A", "B", "C"} and "cpu_model" in out["machine"]
    json.dumps(out, allow_nan=False)


def test_fresh_rounds_activate_each_case_anew_one_at_a_time() -> None:
    log: list[str] = []
    a, b = MatmulRunner("a", log), MatmulRunner("b", log)
    resident: list[int] = []
    original = MatmulRunner.infer_impl

    def infer(self, feeds):
        resident.append(sum(r.is_active for r in (a, b)))
        return original(self, feeds)

    MatmulRunner.infer_impl = infer
    try:
        session = benchmark_interleaved({"A": (a, feeds()), "B": (b, feeds())}, warmup=10,
                                        runs=60, rounds=3, fresh_rounds=True)
    finally:
        MatmulRunner.infer_impl = original
    assert a.activations == b.activations == 3 and not a.is_active and not b.is_active
    assert set(resident) == {1}                     # never two runners resident at once
    # each round: activate, 10 warm-ups, 20 timed calls, then the next case; rounds rotate
    # (a b | b a | a b), so a run-length log merges the neighbours of the same case
    assert _blocks(log) == [("a", 30), ("b", 60), ("a", 60), ("b", 30)]
    assert session["A"].runs == 60 and len(session["A"].samples_ms) == 60
    assert session["A"].warmup == 10


def test_interleaved_same_runner_twice_and_bad_rounds() -> None:
    log: list[str] = []
    shared = MatmulRunner("s", log)
    session = benchmark_interleaved({"b1": (shared, feeds(1)), "b8": (shared, feeds(8))})
    assert shared.activations == 1 and len(log) == 2 * (10 + 50)
    assert session["b8"].batch == 8
    with pytest.raises(ValueError, match="rounds"):
        benchmark_interleaved({"a": (shared, feeds())}, rounds=0)
    with pytest.raises(ValueError, match="rounds"):
        benchmark_interleaved({"a": (shared, feeds())}, runs=50, rounds=51)
    with pytest.raises(ValueError, match="no cases"):
        benchmark_interleaved({})


def test_cpu_monitor_measures_own_work() -> None:
    with CpuMonitor() as cpu:
        x = np.ones((200, 200))
        for _ in range(50):
            x = np.tanh(x @ x / 200)
    assert cpu.wall_s > 0 and cpu.own_cpu_s >= 0 and cpu.other_cpu_s >= 0
