"""sweep.yaml -> spec -> jobs: grid sizes, seeded samples, NAS ids, refused keys."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.errors import UserInputError
from pipeline.sweep.spec import MAX_SWEEP_BYTES, expand, load_spec, parse_spec

DEFAULT = Path(__file__).parents[3] / "pipeline" / "sweep" / "default.yaml"


def _spec(**extra):
    return parse_spec({"space": [{"model": "mobilenet_v1", "width": [0.25, 0.5, 0.75, 1.0],
                                  "resolution": [128, 160]}], **extra})


def test_grid_crosses_every_axis_in_file_order():
    jobs = expand(_spec())
    assert len(jobs) == 8
    assert jobs[0].id == "mobilenet_v1-w0.25-r128"
    assert jobs[-1].id == "mobilenet_v1-w1.0-r160"
    assert len({job.id for job in jobs}) == 8


def test_default_sweep_is_the_issues_ten_jobs():
    spec = load_spec(DEFAULT)
    ids = [job.id for job in expand(spec)]
    assert len(ids) == 10
    assert "mobilenet_v2-w1.0-r128" in ids and "mobilenet_v3_small-w1.0-r128" in ids
    assert spec.targets == ("onnx", "tflite") and spec.precisions == ("fp32", "int8")
    assert spec.dataset == "digits" and spec.finetune_epochs >= 1


def test_nas_space_is_crossed_and_named():
    spec = parse_spec({"space": [{"model": "mobilenet_nas", "resolution": 96,
                                  "nas": {"depth_multiplier": [0.5, 0.75],
                                          "kernel_size": [3, 5, 7],
                                          "activation": "hard_swish"}}]})
    jobs = expand(spec)
    assert len(jobs) == 6
    assert jobs[1].id == "mobilenet_nas-w1.0-r96-d0.5-k5-hard_swish"
    assert jobs[1].nas == {"depth_multiplier": 0.5, "kernel_size": 5, "activation": "hard_swish"}


def test_seeded_sample_is_reproducible_and_a_subset():
    grid = {job.id for job in expand(_spec())}
    first = [job.id for job in expand(_spec(sample={"n": 3, "seed": 7}))]
    again = [job.id for job in expand(_spec(sample={"n": 3, "seed": 7}))]
    other = [job.id for job in expand(_spec(sample={"n": 3, "seed": 8}))]
    assert first == again and len(first) == 3 and set(first) <= grid
    assert first != other


def test_sample_larger_than_the_grid_is_refused():
    with pytest.raises(UserInputError, match="sample.n is 9"):
        expand(_spec(sample={"n": 9}))


@pytest.mark.parametrize("data, key", [
    ({"space": [{"model": "mobilenet_v1"}], "targts": ["onnx"]}, "targts"),
    ({"space": [{"model": "mobilenet_v1", "widht": 0.5}]}, "space.0.widht"),
    ({"space": [{"model": "mobilenet_nas", "nas": {"kernel": 3}}]}, "space.0.nas.kernel"),
    ({"space": [{"model": "mobilenet_nas", "nas": {"kernel_size": 4}}]}, "kernel_size"),
    ({"space": [{"model": "mobilenet_v1"}], "precisions": ["int4"]}, "precisions"),
    ({"space": [{"model": "mobilenet_v1"}], "targets": ["nope"]}, "targets"),
    ({"space": [{"model": "mobilenet_v1"}], "options": {"width": 2}}, "options"),
    ({"space": []}, "space"),
])
def test_bad_keys_are_named(data, key):
    with pytest.raises(UserInputError, match=key.replace(".", r"\.")):
        parse_spec(data)


def test_nas_on_another_model_and_duplicates_are_refused():
    with pytest.raises(UserInputError, match="'nas' is for model mobilenet_nas only"):
        expand(parse_spec({"space": [{"model": "mobilenet_v1", "nas": {}}]}))
    with pytest.raises(UserInputError, match="appears twice"):
        expand(parse_spec({"space": [{"model": "mobilenet_v1"}, {"model": "mobilenet_v1"}]}))


def test_file_limits(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * MAX_SWEEP_BYTES)
    with pytest.raises(UserInputError, match="larger than"):
        load_spec(big)
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcd", "bcde")))
    with pytest.raises(UserInputError, match="YAML values"):
        load_spec(bomb)
    code = tmp_path / "code.yaml"
    code.write_text("space: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(UserInputError, match="not valid"):
        load_spec(code)
    with pytest.raises(UserInputError, match="does not exist"):
        load_spec(tmp_path / "missing.yaml")
