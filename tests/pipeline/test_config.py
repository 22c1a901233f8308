"""pipeline.config: the YAML file and the CLI options fill one strict pydantic model; every
mistake is one UserInputError line naming the key, the value or the file."""
from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import pytest

import pipeline.config as config_module
from pipeline.config import PRECISIONS, PipelineConfig, load_config
from pipeline.errors import EXIT_BAD_INPUT, UserInputError
from pipeline.yaml_safe import MAX_DEPTH, MAX_NODES


def _yaml(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _error(path: Path | None, overrides: dict | None = None) -> str:
    with pytest.raises(UserInputError) as info:
        load_config(path, overrides or {})
    assert info.value.exit_code == EXIT_BAD_INPUT
    message = str(info.value)
    assert "\n" not in message, f"the error must be one line: {message!r}"
    return message


# -- valid configurations ----------------------------------------------------------------------


def test_defaults_without_file_or_options() -> None:
    config = load_config(None, {})
    assert config == PipelineConfig()
    assert config.targets == ("onnx",) and config.precisions == ("fp32",)


def test_yaml_is_read_and_cli_options_win(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "model: mobilenet_v3_small\nwidth: 0.75\nresolution: 96\n"
                           "bench:\n  batch: 2\nparity:\n  n_random: 1\n"
                           "tolerances:\n  fp16:\n    min_cosine: 0.99\n")
    config = load_config(path, {"resolution": 64, "width": None, "model": None})
    assert config.model == "mobilenet_v3_small"
    assert config.width == 0.75, "an option left out (None) does not erase the file's value"
    assert config.resolution == 64, "the command line wins"
    assert config.bench.batch == 2 and config.bench.runs == 50
    assert config.parity.n_random == 1
    assert config.tolerances["fp16"].min_cosine == 0.99


def test_empty_yaml_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(_yaml(tmp_path, ""), {}) == PipelineConfig()


def test_yaml_lists_and_comma_strings_agree(tmp_path: Path) -> None:
    """``targets: onnx`` and ``precisions: fp32,fp16`` mean what the CLI's comma lists mean."""
    as_list = load_config(_yaml(tmp_path, "targets: [onnx]\nprecisions: [fp32, fp16]\n", "a.yaml"),
                          {})
    as_text = load_config(_yaml(tmp_path, "targets: onnx\nprecisions: fp32, fp16\n", "b.yaml"),
                          {})
    assert as_list.targets == as_text.targets == ("onnx",)
    assert as_list.precisions == as_text.precisions == ("fp32", "fp16")


def test_every_run_option_has_a_config_key() -> None:
    """The module's promise: every CLI option of ``run`` has a key of the same name; a
    ``--<section>-<key>`` option, that key of the section (``--coreml-input-type``:
    ``coreml: {input_type}``); the training options, that key of ``train:``."""
    import typer.main

    from pipeline.cli import app

    run = typer.main.get_command(app).commands["run"]
    options = [p for p in run.params if p.name not in ("config", "debug")]
    assert options
    sections = {"coreml": PipelineConfig.model_fields["coreml"].annotation}
    #: the training options are unprefixed (``--lr``, as training tools spell them): train: {lr}
    training = PipelineConfig.model_fields["train"].annotation.model_fields
    for option in options:
        flag = max(option.opts, key=len).lstrip("-").replace("-", "_")
        section, _, key = flag.partition("_")
        if flag in ("lr", "batch_size", "weight_decay", "warmup_epochs"):
            assert flag in training, f"--{flag} has no train key"
        elif section in sections:
            assert key in sections[section].model_fields, f"--{flag} has no {section} key"
        else:
            assert flag in PipelineConfig.model_fields, f"--{flag} has no config key"


# -- unknown keys ------------------------------------------------------------------------------


def test_unknown_key_is_named_with_the_valid_keys(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "model: mobilenet_v2\nresoluton: 96\n")
    message = _error(path)
    assert f"invalid configuration in {path}" in message
    assert "unknown key 'resoluton'" in message
    assert "resolution" in message.split("unknown key 'resoluton'")[1], "offers the right key"


def test_cli_spelling_in_yaml_is_an_unknown_key(tmp_path: Path) -> None:
    message = _error(_yaml(tmp_path, "artifacts-dir: out\n"))
    assert "unknown key 'artifacts-dir'" in message and "artifacts_dir" in message


def test_unknown_nested_key_lists_that_section_s_keys(tmp_path: Path) -> None:
    """Regression: the listed 'valid keys' were the top-level ones for a key inside bench."""
    message = _error(_yaml(tmp_path, "bench:\n  warmup: 10\n  rnus: 50\n"))
    assert "unknown key 'bench.rnus' (valid keys here: warmup, runs, batch)" in message


def test_unknown_tolerance_field_lists_tolerance_fields(tmp_path: Path) -> None:
    message = _error(_yaml(tmp_path, "tolerances:\n  fp16:\n    max_abs: 0.1\n"))
    assert "unknown key 'tolerances.fp16.max_abs'" in message
    assert "max_rel, min_cosine, min_top1, min_top5" in message


def test_tolerance_for_unknown_precision(tmp_path: Path) -> None:
    message = _error(_yaml(tmp_path, "tolerances:\n  fp64:\n    min_cosine: 0.9\n"))
    assert "'tolerances'" in message and "fp64" in message
    assert all(p in message for p in PRECISIONS)


# -- bad values --------------------------------------------------------------------------------


@pytest.mark.parametrize("text, key, value", [
    ("resolution: big\n", "'resolution'", "'big'"),
    ("width: -1\n", "'width'", "-1"),
    ("threads: 0\n", "'threads'", "0"),
    ("bench:\n  runs: 3\n", "'bench.runs'", "3"),
    ("opset: 9\n", "'opset'", "9"),
])
def test_bad_value_names_key_and_value(tmp_path: Path, text: str, key: str, value: str) -> None:
    message = _error(_yaml(tmp_path, text))
    assert f"{key}: " in message
    assert f"(got {value})" in message
    assert "Value error," not in message


def test_several_problems_in_one_line(tmp_path: Path) -> None:
    message = _error(_yaml(tmp_path, "resolution: big\ncolour: red\n"))
    assert "'resolution'" in message and "unknown key 'colour'" in message


# -- the file itself ---------------------------------------------------------------------------


def test_missing_config_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    message = _error(path)
    assert f"config file {path} does not exist" in message
    assert "existing YAML file" in message


def test_invalid_yaml_is_one_line_with_its_position(tmp_path: Path) -> None:
    """Regression: the YAML parser's multi-line message was passed through as it was."""
    path = _yaml(tmp_path, "model: [unclosed\nwidth: 1\n")
    message = _error(path)
    assert f"config file {path} is not valid YAML at line 2" in message
    assert "fix the syntax" in message


def test_binary_config_file(tmp_path: Path) -> None:
    """Regression: a non-UTF-8 file escaped as UnicodeDecodeError."""
    path = tmp_path / "model.yaml"
    path.write_bytes(b"\xff\xfe\x00\x81\x93binary")
    message = _error(path)
    assert f"config file {path}" in message and "UTF-8" in message


def test_yaml_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "- mobilenet_v2\n- 224\n")
    message = _error(path)
    assert f"config file {path} must be a mapping" in message and "list" in message


# -- targets and precisions --------------------------------------------------------------------


def test_unknown_target_from_the_command_line() -> None:
    message = _error(None, {"targets": ("onnx", "tensorrt9")})
    assert "--targets: unknown target(s) ['tensorrt9']" in message
    assert "available: [" in message and "'onnx'" in message
    assert "Value error" not in message


def test_unknown_precision_from_the_command_line() -> None:
    message = _error(None, {"precisions": ("fp32", "fp8")})
    assert "--precisions: unknown precision(s) ['fp8']" in message
    assert "available: ['fp32', 'fp16', 'int8']" in message


def test_unknown_target_from_the_file_names_the_key(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "targets: [onnx, coreml2]\n")
    message = _error(path)
    assert f"invalid configuration in {path}" in message
    assert "'targets': unknown target(s) ['coreml2']" in message


def test_cli_error_in_a_run_with_a_file_names_the_option(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "model: mobilenet_v2\n")
    message = _error(path, {"precisions": ("int4",)})
    assert "--precisions: unknown precision(s) ['int4']" in message
    assert str(path) in message and "command-line" in message


def test_empty_target_list() -> None:
    assert "at least one target" in _error(None, {"targets": ()})


def test_int8_fallback_options_reach_the_quant_recipe(tmp_path: Path) -> None:
    """The mixed-precision fallback's switch and cap are part of the int8 recipe (and so of the
    quantize stage's cache key)."""
    assert PipelineConfig().quant.fallback is True
    config = load_config(_yaml(tmp_path, "int8_max_float_layers: 3\n"), {"int8_fallback": False})
    assert config.quant.fallback is False and config.quant.max_float_layers == 3
    with pytest.raises(UserInputError, match="--int8-max-float-layers"):
        load_config(None, {"int8_max_float_layers": 0})


def test_a_tensorrt_batch_range_out_of_order_is_refused() -> None:
    from pipeline.config import load_config
    from pipeline.errors import UserInputError

    with pytest.raises(UserInputError, match="min_batch <= opt_batch <= max_batch"):
        load_config(None, {"tensorrt": {"opt_batch": 16, "max_batch": 8}})
    assert load_config(None, {"tensorrt": {"opt_batch": 8}}).tensorrt.opt_batch == 8


# -- hostile files: sizes are capped before anything walks the data ---------------------------


def _alias_bomb(key: str, levels: int = 10) -> str:
    """``key`` holding a billion laughs: level i repeats level i-1 nine times, 9**levels values
    in all (3.5e9 for 10 levels) from under 500 bytes."""
    lines = [f"{key}:", "  - &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"  - &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def _peak_mib(call: Any) -> float:
    """Peak of Python's allocations while ``call()`` runs, in MiB."""
    tracemalloc.start()
    try:
        call()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak / 2**20


@pytest.mark.parametrize("key", ["model", "targets", "tolerances"])
def test_an_alias_bomb_under_a_known_key_is_refused_in_little_memory(tmp_path: Path,
                                                                     key: str) -> None:
    """Regression: validation walked, and the error message repr()'d, the expanded structure:
    80 MiB and 17-25 s for a 7-level bomb, so gigabytes for this one."""
    path = _yaml(tmp_path, _alias_bomb(key))
    messages = []
    peak = _peak_mib(lambda: messages.append(_error(path)))
    assert peak < 20, f"refusing the bomb took {peak:.0f} MiB"
    message = messages[0]
    assert f"config file {path} holds more than {MAX_NODES:,} YAML values" in message
    assert "alias" in message and "remove the nested aliases" in message
    assert len(message) < 400


def test_a_long_list_without_aliases_is_refused_by_the_same_limit(tmp_path: Path) -> None:
    path = _yaml(tmp_path, f"force: [{', '.join(['convert'] * (MAX_NODES + 1))}]\n")
    message = _error(path)
    assert f"holds more than {MAX_NODES:,} YAML values" in message
    assert "alias uses" not in message and "remove the long lists" in message


def test_an_oversize_config_file_is_refused_naming_the_cap(tmp_path: Path) -> None:
    """Only the cap's worth is read: a 256 MiB (sparse) file costs about 1 MiB."""
    path = tmp_path / "huge.yaml"
    with open(path, "wb") as stream:
        stream.write(b"# a comment\n")
        stream.truncate(256 << 20)
    messages = []
    peak = _peak_mib(lambda: messages.append(_error(path)))
    assert f"config file {path} is larger than the 1 MiB limit" in messages[0]
    assert "a few kB" in messages[0]
    assert peak < 8, f"refusing the file took {peak:.0f} MiB"


def test_the_size_cap_is_inclusive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config_module, "MAX_CONFIG_BYTES", 64)
    text = "model: mobilenet_v2\n".ljust(63) + "\n"
    assert load_config(_yaml(tmp_path, text, "at.yaml"), {}).model == "mobilenet_v2"
    assert "larger than the 64 bytes limit" in _error(_yaml(tmp_path, text + "\n", "over.yaml"))


@pytest.mark.parametrize("text, shown", [
    (f"model: [{', '.join(f'name{i}' for i in range(9000))}]\n", "(got ['name0', 'name1', "),
    (f"precisions: [{', '.join(str(i) for i in range(9000))}]\n", "and 8995 more problem(s)"),
    (f"targets: [{'x' * 200_000}, {'y' * 200_000}]\n", "unknown target(s) ['xxxx"),
    (f"tolerances: {{{', '.join(f'fp{i}: {{}}' for i in range(3000))}}}\n", "'fp0', 'fp1', "),
    ("".join(f"? {'k' * 5000}{i}\n: 1\n" for i in range(100)), "and 95 more problem(s)"),
    (f"bench:\n  ? {'k' * 50_000}\n  : 1\n", "unknown key 'bench.kkkk"),
])
def test_a_huge_wrong_value_gives_a_short_message(tmp_path: Path, text: str, shown: str) -> None:
    """Regression: the whole input was repr()'d before being cut to 60 characters, and every
    element of a list was a problem of its own in the message."""
    message = _error(_yaml(tmp_path, text))
    assert message.startswith("invalid configuration in ")
    assert shown in message
    assert len(message) < 2000, f"{len(message)} characters: {message[:300]}..."


def test_legitimate_anchors_and_aliases_still_load(tmp_path: Path) -> None:
    path = _yaml(tmp_path, "precisions: &all [fp32, fp16]\n"
                           "force: *all\n"
                           "tolerances:\n"
                           "  fp16: &strict {min_cosine: 0.999, min_top1: 0.99}\n"
                           "  prune: *strict\n"
                           "  int8: {<<: *strict, min_top1: 0.9}\n")
    config = load_config(path, {})
    assert config.precisions == config.force == ("fp32", "fp16")
    assert config.tolerances["fp16"] == config.tolerances["prune"]
    assert config.tolerances["int8"].min_cosine == 0.999
    assert config.tolerances["int8"].min_top1 == 0.9, "an explicit key wins over the merge"


@pytest.mark.parametrize("text, expected", [
    ("model: &a [x, *a]\n", "uses the alias *a inside its own anchor at line 1"),
    ("model: a\nwidth: 0.5\nmodel: b\n", "the key 'model' twice in one mapping (lines 1 and 3)"),
    ("bench:\n  runs: 60\n  runs: 70\n", "has the key 'runs' twice"),
    (f"model: {'[' * 1000}{']' * 1000}\n", f"nests lists or mappings more than {MAX_DEPTH} deep"),
    ("model: !!python/object/apply:os.system [echo hi]\n", "could not determine a constructor"),
    (f"model: !!python/name:{'a' * 100_000}\n", "could not determine a constructor"),
    (f"resolution: {'9' * 5000}\n", "an integer of 5000 characters (at most 4300 digits)"),
    ("model: 2024-13-45\n", "cannot read the value '2024-13-45' (month must be in 1..12)"),
    ("model: *nowhere\n", "found undefined alias"),
])
def test_hostile_yaml_is_one_short_line(tmp_path: Path, text: str, expected: str) -> None:
    message = _error(_yaml(tmp_path, text))
    assert expected in message
    assert len(message) < 500
