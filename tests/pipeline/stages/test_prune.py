"""The prune stage in the DAG: structured pruning + distillation on a trained tiny model."""
from __future__ import annotations

import pytest

from pipeline.errors import UserInputError
from pipeline.run import execute


def test_unrecovered_structured_prune_is_caught_by_the_accuracy_gate(trained_tiny,
                                                                     tiny_config) -> None:
    """30 % of the channels gone and no recovery: the prune node must fail on accuracy, while
    every later stage is exact against the pruned model it deploys (distillation itself is
    tested in tests/pipeline/test_distill.py; recovery figures come from `make bench`)."""
    outcome = execute(tiny_config(weights=trained_tiny["weights"], dataset="digits", prune=0.3))
    nodes = {n["name"]: n for n in outcome.report["nodes"]}
    assert list(nodes)[:2] == ["prune", "load"]
    prune = nodes["prune"]
    assert prune["params"]["after"] < prune["params"]["before"]
    assert prune["macs"]["after"] < 0.8 * prune["macs"]["before"]
    assert prune["accuracy"]["n"] == 360 and prune["accuracy"]["delta"] < -0.01
    assert prune["parity"]["verdict"] == "fail" and "pt below the reference" in \
        prune["parity"]["reason"]
    assert prune["info"]["summary"]["mode"] == "structured"
    assert outcome.exit_code == 1
    # the pruned model is the deployed one: every later stage is exact against it
    for name in ("load", "trace", "fuse", "export_onnx"):
        assert nodes[name]["parity"]["verdict"] == "pass", nodes[name]["parity"]
    assert outcome.report["model"]["params"] == prune["params"]["after"]
    # named for its pruning, so the unpruned model's published files are never overwritten
    label = outcome.report["model"]["label"]
    assert label.endswith("-pruned30") and outcome.out_dir.name == "report"


def test_pruned_models_get_their_own_label() -> None:
    from pipeline.config import PipelineConfig
    from pipeline.context import RunContext

    base = RunContext(PipelineConfig(width=0.35, resolution=64, num_classes=10)).label
    assert base == "mobilenet_v2_0.35_64_10cls"
    pruned = RunContext(PipelineConfig(width=0.35, resolution=64, num_classes=10, prune=0.3))
    sparse = RunContext(PipelineConfig(width=0.35, resolution=64, num_classes=10, prune=0.5,
                                       prune_mode="unstructured"))
    assert pruned.label == f"{base}-pruned30" and sparse.label == f"{base}-sparse50"


@pytest.mark.parametrize("ratio", [0, 1, -0.2, 1.5])
def test_ratio_outside_unit_interval_is_refused(ratio: float) -> None:
    from pipeline.config import load_config

    with pytest.raises(UserInputError, match="outside \\(0, 1\\)"):
        load_config(None, {"prune": ratio})
