"""What one run's release holds: its published artifacts, proved to be the checked ones.

The report is hostile input like any other: artifact files are looked up by the folder the run
publishes to (``<artifacts>/<platform>/<model label>/<file name>``), never by a path the report
names; each one is checked to lie inside that folder, to be no link, and to have the digest the
report recorded for the node that checked it (for a Core ML package, its canonical digest), so a
file changed after the run, or written by another run, is refused rather than released.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from pipeline.artifact import sha256_file
from pipeline.errors import MobileExportError, UserInputError
from pipeline.files import contained
from pipeline.release.manifest import FileEntry, NodeFacts
from pipeline.release.storage import safe_relpath
from pipeline.report.writer import REPORT_HTML, REPORT_JSON, REPORT_MD, read_report

REPORT_FILES = (REPORT_JSON, REPORT_MD, REPORT_HTML)
#: the largest file a release takes (a full-size fp32 model is tens of MB)
MAX_FILE_BYTES = 4 << 30


class ReleaseRefused(MobileExportError):
    """The run has nodes whose gates failed or were not verified (exit 1): the message lists them."""


@dataclass(frozen=True)
class ReleaseFile:
    """A local file and its entry in the manifest."""

    source: Path
    entry: FileEntry


def _single_name(value: object, what: str) -> str:
    name = str(value)
    if "/" in name or safe_relpath(name) != name:
        raise UserInputError(f"{what} {name!r} is not a plain file name")
    return name


def default_artifacts_dir(run_dir: Path) -> Path:
    """``<artifacts>`` for the default report folder ``<artifacts>/reports/<model>``."""
    run_dir = Path(run_dir).absolute()
    if run_dir.parent.name != "reports":
        raise UserInputError(f"{run_dir} is not <artifacts>/reports/<model>; pass "
                             "--artifacts-dir, the folder the run published to")
    return run_dir.parent.parent


def unpassed_nodes(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Nodes whose gate did not pass (failed, skipped, unavailable, unverified)."""
    return [n for n in report["nodes"] if n["parity"]["verdict"] != "pass"]


def _why(node: dict[str, Any]) -> str:
    reason = str(node["parity"].get("reason") or node.get("error") or "")[:100]
    return f"{node['name']} ({node['parity']['verdict']}: {reason})"


def _facts(node: dict[str, Any], target: Any) -> NodeFacts:
    checked_on, proxy = target.checked_on(node)
    latency = node.get("latency") or None
    return NodeFacts(name=node["name"], target=node["target"], precision=node["precision"],
                     verdict=node["parity"]["verdict"], reason=node["parity"].get("reason"),
                     artifact_sha256=node["artifact"]["sha256"], accuracy=node.get("accuracy"),
                     latency={k: latency.get(k) for k in ("runtime", "median_ms", "p90_ms",
                                                          "threads", "verdict", "reason")
                              if k in latency} if latency else None,
                     checked_on=checked_on, proxy=proxy)


def _tree(root: Path, rel: str) -> list[tuple[Path, str]]:
    """The files of an artifact (one file, or a package folder), none of them a link."""
    if root.is_symlink():
        raise UserInputError(f"{root} is a link; a release takes the files the run wrote")
    if not root.is_dir():
        return [(root, rel)]
    files = []
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            raise UserInputError(f"{path} is a link inside a package; refusing to release it")
        if path.is_file():
            files.append((path, f"{rel}/{path.relative_to(root).as_posix()}"))
    return files


def _entry(path: Path, rel: str, role: str, verified: bool, node: NodeFacts | None = None,
           sha256: str | None = None) -> ReleaseFile:
    """``sha256``: the file's digest where it was just computed (not read twice)."""
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise UserInputError(f"{path} is {size:,} bytes, over the {MAX_FILE_BYTES:,} a release "
                             "file may take")
    return ReleaseFile(path, FileEntry(path=safe_relpath(rel), bytes=size,
                                       sha256=sha256 or sha256_file(path),
                                       role=role,  # type: ignore[arg-type]
                                       verified=verified, node=node))


def collect(run_dir: Path, artifacts_dir: Path | None,
            allow_unverified: bool) -> tuple[dict[str, Any], list[ReleaseFile]]:
    """The run's report and the files of its release; :class:`ReleaseRefused` when a node did
    not pass and ``allow_unverified`` is off."""
    from targets.base import registered_targets

    run_dir = Path(run_dir)
    report = read_report(run_dir)
    blocking = unpassed_nodes(report)
    if blocking and not allow_unverified:
        raise ReleaseRefused(f"refusing to publish {run_dir}: {len(blocking)} node(s) did not "
                             f"pass their gates: {'; '.join(map(_why, blocking))}. Fix them "
                             "and rerun, or "
                             "pass --allow-unverified (the manifest then marks those files)")
    root = Path(artifacts_dir) if artifacts_dir is not None else default_artifacts_dir(run_dir)
    label = _single_name(report["model"].get("label"), "the report's model label")
    targets = registered_targets()
    files: list[ReleaseFile] = []
    used: dict[str, Any] = {}
    for node in report["nodes"]:
        target_cls = targets.get(node["target"])
        artifact = node.get("artifact")
        if target_cls is None or not artifact or node["status"] not in ("ran", "cached"):
            continue
        target = target_cls()
        folder = root / target.platform / label
        name = _single_name(PurePosixPath(str(artifact["path"]).replace("\\", "/")).name,
                            f"node {node['name']}'s artifact name")
        path = folder / name
        passed = node["parity"]["verdict"] == "pass"
        if not path.exists() and not path.is_symlink():
            if passed:
                raise UserInputError(f"{path} is missing but node {node['name']} passed; rerun "
                                     "the pipeline or pass --artifacts-dir the folder it "
                                     "published to")
            continue          # a node that did not pass was never published
        contained(folder, path)
        files_of = _tree(path, f"{target.platform}/{name}")
        digest = target.artifact_digest(path)
        if digest != artifact["sha256"]:
            raise UserInputError(f"{path} is not the file node {node['name']} checked (sha256 "
                                 f"{digest[:12]}…, the report says {artifact['sha256'][:12]}…): "
                                 "it changed after the run; rerun the pipeline")
        facts = _facts(node, target)
        single = None if path.is_dir() else digest   # a file's digest is its sha256
        files += [_entry(p, rel, "artifact", passed, facts, single) for p, rel in files_of]
        used.setdefault(target.name, (target, folder, []))[2].append(passed)
    for target, folder, verdicts in used.values():
        for sidecar in target.sidecars:
            path = folder / sidecar
            if path.is_file() and not path.is_symlink():
                contained(folder, path)
                files.append(_entry(path, f"{target.platform}/{sidecar}", "sidecar",
                                    all(verdicts)))
    for name in REPORT_FILES:
        path = run_dir / name
        if path.is_symlink() or not path.is_file():
            raise UserInputError(f"{path} is missing; run `mobile-export report {run_dir}` to "
                                 "render it")
        files.append(_entry(path, name, "report", not blocking))
    return report, files
