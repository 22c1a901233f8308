"""Layer sensitivity and the mixed-precision search, on the trained tiny model with three layers
made hostile to int8 on purpose (``planted_tiny`` in conftest): all-int8 fails, so does every
model that keeps fewer than the three in float, and the model with exactly those three in float
passes the fixture's gate — on every CPU, whatever weights training produced."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from pipeline.context import RunContext
from pipeline.int8.qdq import quantize_calibrated
from pipeline.int8.probe import Probe
from pipeline.int8.qdq import layer_costs, onnx_candidates, rank_layers
from pipeline.int8.search import search_float_layers
from pipeline.verify import Checks, check_gates
from targets.onnx import OrtRunner


@pytest.fixture(scope="module")
def tiny_int8(planted_tiny, tmp_path_factory: pytest.TempPathFactory):
    """The all-int8 model of the fixture's one calibration; its gate; the layer ranking."""
    workdir = tmp_path_factory.mktemp("sensitivity")
    calibrated, reference = planted_tiny["calibrated"], planted_tiny["reference"]
    int8 = workdir / "int8.onnx"
    quantize_calibrated(calibrated, int8, per_channel=True)
    ctx = RunContext(planted_tiny["config"])

    def gate(path: Path) -> Checks:
        return check_gates(OrtRunner(path), reference, ctx.tolerance("int8"),
                           ctx.accuracy_drop("int8"))

    ranking = rank_layers(calibrated, int8, reference, workdir / "rank", per_channel=True)
    return {"calibrated": calibrated, "int8": int8, "reference": reference, "gate": gate,
            "ranking": ranking, "workdir": workdir, "planted": planted_tiny["layers"]}


def nodes_by_rank(ranking) -> list[str]:
    """Layer names, most sensitive first."""
    return list(ranking.sensitivity)


def _float_weight_nodes(path: Path) -> set[str]:
    """Weighted nodes whose weight input is not produced by a DequantizeLinear."""
    model = onnx.load(str(path))
    producer = {out: node.op_type for node in model.graph.node for out in node.output}
    return {node.name for node in model.graph.node if node.op_type in ("Conv", "Gemm")
            and producer.get(node.input[1]) != "DequantizeLinear"}


def test_every_weighted_layer_is_ranked_and_the_top_ones_matter_most(tiny_int8) -> None:
    calibrated, ranking = tiny_int8["calibrated"], tiny_int8["ranking"]
    nodes = calibrated.weighted_nodes()
    assert len(nodes) == 53  # MobileNetV2: 52 convolutions and the classifier
    assert set(ranking.sensitivity) == set(nodes)
    errors = list(ranking.sensitivity.values())
    assert errors == sorted(errors, reverse=True) and errors[-1] >= 0 and errors[0] > 0
    probe, workdir = Probe.of(tiny_int8["reference"]), tiny_int8["workdir"]
    assert probe.error(tiny_int8["int8"]) == pytest.approx(ranking.int8_error)
    planted = tiny_int8["planted"]
    ranked = nodes_by_rank(ranking)
    assert set(ranked[:len(planted)]) == set(planted)      # the ranking finds the planted layers
    remaining = {}
    for label, chosen in (("most", ranked[:len(planted)]), ("least", ranked[-len(planted):])):
        path = workdir / f"without_{label}.onnx"
        quantize_calibrated(calibrated, path, per_channel=True, exclude=chosen)
        remaining[label] = probe.error(path)
    # keeping the most sensitive layers in float removes error; the least sensitive, far less
    assert remaining["most"] < 0.8 * ranking.int8_error
    assert remaining["most"] < remaining["least"]


def test_a_layer_kept_in_float_computes_in_float_on_onnx_runtime(tiny_int8) -> None:
    """ONNX Runtime's WeightBiasQuantization transformer quantizes, at session creation, the float
    weights of any Conv fed by a DequantizeLinear. The quantizer's output must not give it the
    chance: the mixed model runs the same with the transformer on (default) and off."""
    import onnxruntime as ort

    path = tiny_int8["workdir"] / "mixed_planted.onnx"
    quantize_calibrated(tiny_int8["calibrated"], path, per_channel=True,
                        exclude=tiny_int8["planted"])
    batch = tiny_int8["reference"].inputs.batch[:8]
    outputs = []
    for disabled in ([], ["WeightBiasQuantization"]):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"],
                                       disabled_optimizers=disabled)
        outputs.append(session.run(None, {session.get_inputs()[0].name: batch})[0])
    np.testing.assert_array_equal(outputs[0], outputs[1])
    model = onnx.load(str(path))
    producer = {out: node.op_type for node in model.graph.node for out in node.output}
    for node in model.graph.node:
        if node.name in tiny_int8["planted"]:
            assert producer.get(node.input[0]) != "DequantizeLinear", node.name


def test_search_keeps_the_fewest_sensitive_layers_in_float_until_the_gates_pass(
        tiny_int8) -> None:
    gate = tiny_int8["gate"]
    assert gate(tiny_int8["int8"]).failed, "all-int8 should fail"
    ranking = tiny_int8["ranking"]
    make = onnx_candidates(tiny_int8["calibrated"], tiny_int8["workdir"] / "search",
                           per_channel=True)
    found = search_float_layers(ranking, make, gate, max_float_layers=8)
    assert found.passed
    k = len(found.float_layers)
    assert k == len(tiny_int8["planted"]) and found.float_layers == nodes_by_rank(ranking)[:k]
    assert set(found.float_layers) == set(tiny_int8["planted"])
    verdicts = {a["float_layers"]: a["verdict"] for a in found.attempts}
    assert verdicts[k] == "pass" and all(verdicts[j] == "fail" for j in verdicts if j < k)
    # k = 1, 2 fail and 4 passes; the bisection then tried 3, which passed
    assert [a["float_layers"] for a in found.attempts] == [1, 2, 4, 3]
    assert gate(found.path).passed
    # the kept layers really are float in the published graph, and only they
    assert _float_weight_nodes(found.path) == set(found.float_layers)
    assert found.info["float_nodes"] == sorted(found.float_layers)
    cost = found.cost(layer_costs(tiny_int8["calibrated"].model))
    assert cost["float_layers"] == k and cost["of_layers"] == 53
    assert 0 < cost["params_share"] < 1 and 0 < cost["macs_share"] < 1


def test_search_that_cannot_pass_within_its_cap_records_the_failure(tiny_int8) -> None:
    make = onnx_candidates(tiny_int8["calibrated"], tiny_int8["workdir"] / "capped",
                           per_channel=True)
    found = search_float_layers(tiny_int8["ranking"], make, tiny_int8["gate"],
                                max_float_layers=2)
    assert not found.passed and found.path is None and found.float_layers == []
    assert [a["float_layers"] for a in found.attempts] == [1, 2]
    assert all(a["verdict"] == "fail" and a["failures"] for a in found.attempts)


def test_layer_costs_add_up_to_the_models_multiply_adds(tiny_int8, trained_tiny) -> None:
    from pipeline.models.counting import count_macs
    from pipeline.models.registry import build

    costs = layer_costs(tiny_int8["calibrated"].model)
    spec = trained_tiny["spec"]
    assert sum(m for _, m in costs.values()) == count_macs(build(spec), spec.resolution)


def test_probe_survives_a_round_trip_through_a_file(tiny_int8, tmp_path: Path) -> None:
    """What a converter's child process measures on is exactly the parent's probe."""
    probe = Probe.of(tiny_int8["reference"])
    loaded = Probe.load(probe.save(tmp_path / "probe.npz"))
    np.testing.assert_array_equal(loaded.inputs.batch, probe.inputs.batch)
    np.testing.assert_array_equal(loaded.expected, probe.expected)
    assert loaded.error(tiny_int8["int8"]) == pytest.approx(tiny_int8["ranking"].int8_error)
