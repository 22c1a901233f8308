"""One latency protocol for every runtime: warm-up, N timed runs, median/p90/min/mean, throughput.

:func:`benchmark` times one runner. :func:`benchmark_interleaved` times several A/B-style: all are
warmed up, then in each of ``rounds`` rounds every case (in a rotated order) does its share of the
timed runs, and samples are pooled per case, so drift (thermal, turbo, a noisy neighbour) hits every
case alike. It also measures the CPU time *other processes* used meanwhile, so a figure taken on a
busy machine can be recognised as such.
"""
from __future__ import annotations

import contextlib
import os
import random
import resource
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.machine import describe_machine
from targets.base import Runner

MIN_WARMUP = 10
MIN_RUNS = 50
#: A folder of lock files ``slot-0.lock`` ... ``slot-<N-1>.lock`` (``mobile-export sweep`` sets
#: it for its jobs): every timing below holds one of them (an exclusive ``fcntl.flock``) while it
#: runs, so at most N processes time at once, whatever launched them. Unset: no limit.
BENCH_SLOTS_ENV = "MOBILE_EXPORT_BENCH_SLOTS"


@contextlib.contextmanager
def timing_slot() -> Iterator[None]:
    """Hold one of the :data:`BENCH_SLOTS_ENV` slots for the block (waits for a free one)."""
    folder = os.environ.get(BENCH_SLOTS_ENV)
    slots = sorted(Path(folder).glob("slot-*.lock")) if folder else []
    if not slots:
        yield
        return
    import fcntl

    while True:
        for path in random.sample(slots, len(slots)):
            handle = open(path, "a+b")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
            return
        time.sleep(0.05)


@dataclass
class LatencyStats:
    """Latency of one runner on one input; times in milliseconds per ``infer`` call."""

    runtime: str
    batch: int
    threads: int
    warmup: int
    runs: int
    median_ms: float
    p90_ms: float
    min_ms: float
    mean_ms: float
    throughput_ips: float  # images/s at this batch = batch * 1000 / median_ms
    peak_rss_mb: float  # this process's peak resident set (high-water mark since start), MiB
    rounds: int = 1
    samples_ms: list[float] = field(default_factory=list, repr=False)

    @classmethod
    def from_samples(
        cls, runner: Runner, batch: int, samples_ms: list[float], *, warmup: int, rounds: int = 1
    ) -> LatencyStats:
        arr = np.asarray(samples_ms, dtype=np.float64)
        median = float(np.median(arr))
        return cls(
            runtime=runner.runtime,
            batch=batch,
            threads=int(runner.threads),
            warmup=warmup,
            runs=len(samples_ms),
            median_ms=median,
            p90_ms=float(np.percentile(arr, 90)),
            min_ms=float(arr.min()),
            mean_ms=float(arr.mean()),
            throughput_ips=batch * 1000.0 / median if median > 0 else float("inf"),
            peak_rss_mb=peak_rss_mb(),
            rounds=rounds,
            samples_ms=list(samples_ms),
        )

    def to_json(self, *, samples: bool = False) -> dict[str, Any]:
        """Summary fields; the raw per-run samples only when ``samples=True``."""
        out = asdict(self)
        if not samples:
            out.pop("samples_ms")
        return out


def unverified_latency(runtime: str, threads: int | None, reason: str) -> dict[str, Any]:
    """The latency record of a runtime that could not run here: no figure, and why."""
    return {"runtime": runtime, "median_ms": None, "p90_ms": None, "min_ms": None, "runs": 0,
            "threads": threads, "verdict": "unverified", "reason": reason}


def peak_rss_mb() -> float:
    """Peak resident set size of this process image in MiB: ``VmHWM`` where there is /proc,
    else ``ru_maxrss`` (KiB on Linux, bytes on macOS). Not ``ru_maxrss`` on Linux: it carries
    the pre-``exec`` image's high-water mark (the parent's, for a child started by fork/vfork +
    exec), so a small child of a large process would report the parent's peak."""
    hwm = proc_status_mb("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def proc_status_mb(field: str) -> float | None:
    """A ``Vm*`` line of /proc/self/status in MiB; None where there is no /proc."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(f"{field}:"):
                    return round(int(line.split()[1]) / 2**10, 1)  # kB
    except OSError:
        pass
    return None


# -- CPU time of other processes ---------------------------------------------------------------


def _system_busy_s() -> float:
    """CPU seconds all CPUs spent busy since boot (everything but idle and iowait; guest counted once)."""
    import psutil

    t = psutil.cpu_times()._asdict()
    total = sum(t.values()) - t.get("guest", 0.0) - t.get("guest_nice", 0.0)  # guest is inside user/nice
    return total - t["idle"] - t.get("iowait", 0.0)


def _own_cpu_s() -> float:
    """CPU seconds used by this process (all threads) and its waited-for children."""
    import psutil

    t = psutil.Process().cpu_times()
    return t.user + t.system + t.children_user + t.children_system


class CpuMonitor:
    """Context manager: wall time, this process's CPU time, and everyone else's, over its block.

    ``other_cpu_s`` = system-wide busy CPU time (psutil.cpu_times, all CPUs) minus this process's
    CPU time. It includes other processes and kernel work not charged to us (interrupts);
    resolution is the kernel's tick (about 10 ms per CPU), and it is clamped at 0.
    """

    def __enter__(self) -> CpuMonitor:
        self._t0, self._sys0, self._own0 = time.perf_counter(), _system_busy_s(), _own_cpu_s()
        self.wall_s = self.own_cpu_s = self.other_cpu_s = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.perf_counter() - self._t0
        self.own_cpu_s = _own_cpu_s() - self._own0
        self.other_cpu_s = max(0.0, (_system_busy_s() - self._sys0) - self.own_cpu_s)


@dataclass
class BenchSession(Mapping[str, LatencyStats]):
    """Results of :func:`benchmark_interleaved`: a read-only mapping case -> :class:`LatencyStats`,
    plus the conditions they were measured under."""

    stats: dict[str, LatencyStats]
    rounds: int
    wall_s: float
    own_cpu_s: float
    other_cpu_s: float
    machine: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> LatencyStats:
        return self.stats[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.stats)

    def __len__(self) -> int:
        return len(self.stats)

    @property
    def other_cores_busy(self) -> float:
        """Average number of cores other processes kept busy while we measured."""
        return self.other_cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    def is_quiet(self, max_other_cores: float = 0.5) -> bool:
        """True when other processes used less than ``max_other_cores`` cores on average."""
        return self.other_cores_busy < max_other_cores

    def to_json(self, *, samples: bool = False) -> dict[str, Any]:
        return {
            "cases": {name: s.to_json(samples=samples) for name, s in self.stats.items()},
            "rounds": self.rounds,
            "wall_s": self.wall_s,
            "own_cpu_s": self.own_cpu_s,
            "other_cpu_s": self.other_cpu_s,
            "other_cores_busy": self.other_cores_busy,
            "machine": self.machine,
        }


# -- protocol --------------------------------------------------------------------------------


def _check_protocol(warmup: int, runs: int) -> None:
    if warmup < MIN_WARMUP:
        raise ValueError(f"warmup must be >= {MIN_WARMUP} runs, got {warmup}")
    if runs < MIN_RUNS:
        raise ValueError(f"runs must be >= {MIN_RUNS} timed runs, got {runs}")


def batch_of(feeds: Mapping[str, np.ndarray]) -> int:
    """Batch size: first dimension of the first feed (1 for a scalar feed)."""
    if not feeds:
        raise ValueError("feeds is empty; pass {input_name: array}")
    first = np.asarray(next(iter(feeds.values())))
    return int(first.shape[0]) if first.ndim else 1


def _enter(stack: contextlib.ExitStack, runner: Runner) -> None:
    """Activate ``runner`` for the stack's lifetime unless it is already active (or entered twice)."""
    if not runner.is_active:
        stack.enter_context(runner)


def _time_once(runner: Runner, feeds: dict[str, np.ndarray]) -> float:
    start = time.perf_counter_ns()
    runner.infer(feeds)  # Runner.infer returns numpy arrays, so device work has finished
    return (time.perf_counter_ns() - start) / 1e6


def benchmark(runner: Runner, feeds: dict[str, np.ndarray], *, warmup: int = 10, runs: int = 50) -> LatencyStats:
    """Warm up ``warmup`` times, then time ``runs`` calls of ``runner.infer(feeds)``."""
    _check_protocol(warmup, runs)
    batch = batch_of(feeds)
    with contextlib.ExitStack() as stack:
        stack.enter_context(timing_slot())
        _enter(stack, runner)
        for _ in range(warmup):
            runner.infer(feeds)
        samples = [_time_once(runner, feeds) for _ in range(runs)]
    return LatencyStats.from_samples(runner, batch, samples, warmup=warmup)


def round_sizes(runs: int, rounds: int) -> list[int]:
    """Split ``runs`` over ``rounds`` as evenly as possible (earlier rounds take the remainder)."""
    base, extra = divmod(runs, rounds)
    return [base + (1 if r < extra else 0) for r in range(rounds)]


def rotated(names: list[str], shift: int) -> list[str]:
    """``names`` rotated left by ``shift`` (round r starts with case r mod len)."""
    k = shift % len(names)
    return names[k:] + names[:k]


def benchmark_interleaved(
    cases: Mapping[str, tuple[Runner, dict[str, np.ndarray]]],
    *,
    warmup: int = 10,
    runs: int = 50,
    rounds: int = 5,
    fresh_rounds: bool = False,
) -> BenchSession:
    """Interleaved A/B timing of several ``name -> (runner, feeds)`` cases; see the module docstring.

    Every case gets exactly ``warmup`` warm-up calls and ``runs`` timed calls. With
    ``fresh_rounds`` each round activates each runner anew (a new interpreter, new buffers),
    warms it up ``warmup`` times and deactivates it after its share, so only one case is
    resident at a time and its median pools several memory placements: two LiteRT models of
    the same ops measured up to 8 % apart in sessions with every runner resident, and within
    1.5 % (three processes) this way.
    """
    _check_protocol(warmup, runs)
    if not cases:
        raise ValueError("no cases to benchmark")
    if not 1 <= rounds <= runs:
        raise ValueError(f"rounds must be between 1 and runs ({runs}), got {rounds}")
    names = list(cases)
    batches = {name: batch_of(feeds) for name, (_, feeds) in cases.items()}
    samples: dict[str, list[float]] = {name: [] for name in names}
    with contextlib.ExitStack() as stack:
        stack.enter_context(timing_slot())
        if not fresh_rounds:
            for runner, _ in cases.values():
                _enter(stack, runner)
        with CpuMonitor() as cpu:
            if not fresh_rounds:
                for runner, feeds in cases.values():
                    for _ in range(warmup):
                        runner.infer(feeds)
            for r, size in enumerate(round_sizes(runs, rounds)):
                for name in rotated(names, r):
                    runner, feeds = cases[name]
                    with contextlib.ExitStack() as fresh:
                        if fresh_rounds:
                            _enter(fresh, runner)
                            for _ in range(warmup):
                                runner.infer(feeds)
                        samples[name].extend(_time_once(runner, feeds) for _ in range(size))
    stats = {
        name: LatencyStats.from_samples(cases[name][0], batches[name], samples[name], warmup=warmup, rounds=rounds)
        for name in names
    }
    return BenchSession(
        stats=stats,
        rounds=rounds,
        wall_s=cpu.wall_s,
        own_cpu_s=cpu.own_cpu_s,
        other_cpu_s=cpu.other_cpu_s,
        machine=describe_machine(),
    )
