"""The ``labels`` option and the ``coreml`` section: read by the TFLite sidecar and the Core ML
package (they were getattr reads of keys the config did not have, so no user could set them)."""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import load_config
from pipeline.context import RunContext
from pipeline.errors import UserInputError
from pipeline.labels import explicit_labels, known_labels


def test_a_labels_file_names_each_class(tiny_config, tmp_path: Path) -> None:
    names = tmp_path / "labels.txt"
    names.write_text("".join(f"class {i}\n" for i in range(10)) + "\n")
    config = tiny_config(labels=str(names))
    assert explicit_labels(config) == [f"class {i}" for i in range(10)]
    assert known_labels(config) == explicit_labels(config)


@pytest.mark.parametrize("content, words", [("a\nb\n", "names 2 classes"),
                                            (None, "does not exist"),
                                            (b"\xff\xfe\x00", "not UTF-8")])
def test_a_bad_labels_file_is_one_clear_error(tiny_config, tmp_path: Path, content,
                                              words) -> None:
    path = tmp_path / "labels.txt"
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(UserInputError, match=words):
        explicit_labels(tiny_config(labels=str(path)))


def test_dataset_labels_and_the_fallback(tiny_config) -> None:
    digits = tiny_config(dataset="digits")
    assert explicit_labels(digits) is None                      # not asked for
    assert known_labels(digits) == [str(i) for i in range(10)]  # the sidecar still shows them
    assert explicit_labels(tiny_config(dataset="digits", labels="dataset")) == \
        [str(i) for i in range(10)]
    with pytest.raises(UserInputError, match="labelled evaluation set"):
        explicit_labels(tiny_config(labels="dataset"))
    assert known_labels(tiny_config()) is None


def test_core_ml_takes_the_section_and_the_labels(tiny_config, tmp_path: Path) -> None:
    from targets.coreml import CoremlTarget

    default = CoremlTarget().options(RunContext(tiny_config()))
    assert default == {"deployment_target": "iOS17", "input_type": "tensor",
                       "class_labels": None, "int8_activations": False}
    config = tiny_config(dataset="digits", labels="dataset",
                         coreml={"deployment_target": "iOS18", "input_type": "image"})
    options = CoremlTarget(deployment_target="iOS16").options(RunContext(config))
    assert options["deployment_target"] == "iOS18" and options["input_type"] == "image"
    assert options["class_labels"] == [str(i) for i in range(10)]
    # a section key the config leaves unset keeps the target's own setting
    kept = CoremlTarget(deployment_target="iOS16").options(RunContext(tiny_config()))
    assert kept["deployment_target"] == "iOS16"


def test_cli_options_join_the_yaml_section(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("coreml:\n  deployment_target: iOS16\n  int8_activations: true\n")
    config = load_config(path, {"coreml": {"input_type": "image"}, "labels": None})
    assert (config.coreml.deployment_target, config.coreml.input_type,
            config.coreml.int8_activations) == ("iOS16", "image", True)
    with pytest.raises(UserInputError, match="coreml.deployment_target"):
        load_config(None, {"coreml": {"deployment_target": "iOS12"}})
