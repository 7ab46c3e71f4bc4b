"""Config validation: every user mistake is one line naming the key; overrides; generated docs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from srkit.cli import main
from srkit.config import apply_override, load_config, validate_config
from srkit.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def error_of(raw: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        validate_config(raw, source="run.yml")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("run.yml: ")
    return message


def test_valid_config_fills_defaults(make_config):
    config = validate_config(make_config())
    assert config.train.megabatch == 1
    assert config.networks["generator"].nf == 8
    assert config.logging.keep_checkpoints == 3
    assert config.train.optim["generator"].betas == (0.9, 0.99)


def test_unknown_key_names_full_path_and_closest(make_config):
    raw = make_config()
    raw["train"]["iteratoins"] = 5
    message = error_of(raw)
    assert "train.iteratoins: unknown key 'iteratoins'" in message
    assert "did you mean 'iterations'" in message


def test_unknown_key_inside_network_section(make_config):
    raw = make_config()
    raw["networks"]["generator"]["nff"] = 5
    message = error_of(raw)
    assert "networks.generator.nff" in message and "'nf'" in message


def test_unknown_key_inside_loss_list(make_config):
    raw = make_config()
    raw["losses"][0]["wieght"] = 1
    assert "losses.0.wieght: unknown key 'wieght' (did you mean 'weight'?)" in error_of(raw)


def test_wrong_type_names_expected_and_given(make_config):
    raw = make_config()
    raw["data"]["train"]["batch_size"] = "many"
    message = error_of(raw)
    assert "data.train.batch_size: expected an integer, got 'many' (str)" in message


def test_missing_required_key(make_config):
    raw = make_config()
    del raw["train"]["iterations"]
    assert "train.iterations: required key missing" in error_of(raw)


def test_unknown_network_type_lists_valid_names(make_config):
    raw = make_config()
    raw["networks"]["generator"]["type"] = "rrbd"
    message = error_of(raw)
    assert "networks.generator.type: unknown network type 'rrbd'" in message
    assert "did you mean 'rrdb'" in message and "valid:" in message


def test_literal_choice_error(make_config):
    raw = make_config()
    raw["train"]["precision"] = "fp8"
    message = error_of(raw)
    assert "train.precision: expected one of" in message and "'fp8'" in message


def test_out_of_range_value(make_config):
    raw = make_config()
    raw["train"]["megabatch"] = 0
    assert "train.megabatch: " in error_of(raw)


def test_megabatch_must_divide_batch(make_config):
    raw = make_config()
    raw["train"]["megabatch"] = 3
    assert "train.megabatch: 3 does not divide data.train.batch_size 4" in error_of(raw)


def test_patch_size_multiple_of_scale(make_config):
    raw = make_config()
    raw["scale"] = 4
    raw["data"]["train"]["patch_size"] = 30
    assert "data.train.patch_size: 30 is not a multiple of scale 4" in error_of(raw)


def test_generator_is_required(make_config):
    raw = make_config()
    raw["networks"] = {"gen": raw["networks"]["generator"]}
    assert "a network named 'generator' is required" in error_of(raw)


def test_optimizer_for_unknown_network(make_config):
    raw = make_config()
    raw["train"]["optim"]["discriminator"] = {"lr": 1e-4}
    assert "train.optim.discriminator: 'discriminator' is not a trained network" in error_of(raw)


def test_unknown_function_in_expression(make_config):
    raw = make_config()
    raw["losses"][0]["input"] = "gard(sr)"
    message = error_of(raw)
    assert "losses.0.input" in message and "unknown function 'gard'" in message


def test_a_malformed_expression_names_its_key(make_config):
    raw = make_config()
    raw["losses"][0]["input"] = "detail(sr"
    message = error_of(raw)
    assert "losses.0.input" in message and "malformed tensor expression 'detail(sr'" in message


def test_overrides_set_nested_values_and_list_items(make_config, tmp_path):
    path = tmp_path / "run.yml"
    path.write_text(yaml.safe_dump(make_config()))
    config = load_config(path, ["train.iterations=7", "losses.0.weight=0.5", "train.ema.decay=0.9"])
    assert config.train.iterations == 7
    assert config.losses[0].weight == 0.5
    assert config.train.ema.decay == 0.9


def test_bad_overrides_are_one_line_errors(make_config):
    raw = make_config()
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_override(raw, "train.iterations")
    with pytest.raises(ConfigError, match="losses is a list of 1"):
        apply_override(raw, "losses.3.weight=1")


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yml"
    path.write_text("name: x\ntrain: {iterations: 3\n")
    with pytest.raises(ConfigError, match=r"broken.yml: line \d+: not valid YAML"):
        load_config(path)


def test_cli_prints_one_line_and_exits_2(make_config, tmp_path, capsys):
    raw = make_config()
    raw["train"]["iteratoins"] = 5
    path = tmp_path / "run.yml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith("srkit: error: ") and "train.iteratoins" in err
    assert not (tmp_path / "runs").exists()  # nothing written for a bad config


def test_missing_config_file(tmp_path, capsys):
    assert main(["train", str(tmp_path / "nope.yml")]) == 2
    assert "config file" in capsys.readouterr().err


def test_generated_reference_docs_are_current():
    from srkit.schema_docs import config_json_schema, config_markdown

    assert (REPO / "docs" / "config.md").read_text(encoding="utf-8") == config_markdown(), (
        "docs/config.md is stale: run `srkit schema`"
    )
    assert (REPO / "docs" / "config.schema.json").read_text(
        encoding="utf-8"
    ) == config_json_schema(), "docs/config.schema.json is stale: run `srkit schema`"


def test_every_network_argument_is_documented():
    """The constructor signature is the config schema: each argument needs a type and a line."""
    from srkit.config import constructor_arguments
    from srkit.nets.registry import _REGISTRY

    for entry in _REGISTRY.values():
        for name, (annotation, _default, description) in constructor_arguments(entry).items():
            assert description, f"{entry.name}.{name} has no description in the Args: section"
            assert annotation is not None, f"{entry.name}.{name} has no type annotation"


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    """Every ready-to-run config in configs/ is valid against the current schema."""
    config = load_config(path)
    assert config.name == path.stem
