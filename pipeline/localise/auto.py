"""Localisation of every node that fails its parity gate, as part of a run: the node's report
entry gets ``localisation`` (the record of pipeline.localise.verdict, or ``{"error": ...}``
naming why it could not be made)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline.errors import UserInputError
from pipeline.localise.locate import layer_tolerance_of, localise
from pipeline.localise.memo import memo_key, recall, remember

log = logging.getLogger(__name__)


#: the run's ``localise`` setting -> the parity verdicts of the nodes it localises
VERDICTS = {"failed": ("fail",), "all": ("fail", "pass"), "off": ()}


def needs_localisation(node: dict[str, Any], which: str = "failed") -> bool:
    """A converted artifact (not a trunk stage's program) whose gate verdict ``which`` names:
    ``failed`` those that failed it, ``all`` every one a runtime here checked."""
    return ((node.get("parity") or {}).get("verdict") in VERDICTS[which]
            and node.get("status") in ("ran", "cached")
            and bool((node.get("artifact") or {}).get("path"))
            and is_converted(node))


def is_converted(node: dict[str, Any]) -> bool:
    """A node of a deployment target (export_onnx included), not one of the trunk's torch
    programs (load, trace, fuse, prune, finetune: target ``torch``)."""
    from targets.base import registered_targets

    return node.get("target") in registered_targets()


def well_formed(record: dict[str, Any]) -> bool:
    """A remembered record has the shape report.json's schema gives a localisation."""
    from pydantic import ValidationError

    from pipeline.report.schema import LocalisationEntry

    try:
        LocalisationEntry.model_validate(record)
    except ValidationError:
        return False
    return True


def localise_failures(report: dict[str, Any], threads: int = 1, which: str = "failed") -> None:
    """Add ``localisation`` to each node of ``report`` that ``which`` selects (in place; by
    default the failed ones); a record made for the same inputs by an earlier run is reused
    (pipeline.localise.memo)."""
    cache_dir = Path(report["run"]["cache_dir"])
    for node in report["nodes"]:
        if not needs_localisation(node, which):
            continue
        try:
            key = memo_key(report, node,
                           layer_tolerance_of(report, node["precision"]).model_dump())
            record = recall(cache_dir, key)
            if record is None or not well_formed(record):
                record = localise(report, node, Path(node["artifact"]["path"]), threads)
                remember(cache_dir, key, record)
            record.pop("memo_key", None)
            node["localisation"] = record
        except UserInputError as exc:
            log.warning("%s: not localised: %s", node["name"], exc)
            node["localisation"] = {"error": str(exc)}
