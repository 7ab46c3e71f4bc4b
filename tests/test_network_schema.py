"""Every network's constructor signature is a complete config schema: types, defaults, ranges.

A new network type registered without ranges (or with ranges its constructor does not survive)
fails here: each type is built from its schema defaults, built and run at the smallest values
its ranges allow, and every range is tried with a value just outside it, which must be a
one-line error naming ``networks.<name>.<key>`` before anything is built.
"""

from __future__ import annotations

import math
import types
import typing
from typing import Annotated, Any

import pytest
import torch

from srkit.config import (
    _network_model,
    config_model,
    constructor_arguments,
    section_arguments,
    validate_config,
)
from srkit.data.reference import whole_image_inputs
from srkit.errors import ConfigError
from srkit.nets import constraints
from srkit.nets.constraints import (
    Above,
    AtLeast,
    AtMost,
    MultipleOf,
    NonNegative,
    Odd,
    Positive,
    choices_of,
    constraints_of,
    value_problem,
)
from srkit.nets.registry import (
    NetworkEntry,
    argument_problems,
    build_network,
    get_network_entry,
    network_names,
    supported_scales,
)
from srkit.schema_docs import constraint_text

NAMES = network_names()
INJECTED = {"scale"}


def raw_config(network: str, **arguments: Any) -> tuple[dict[str, Any], str]:
    """A config holding ``network`` (as the generator when it is one); (raw, its name there)."""
    generator = {"type": "rrdb", "nf": 4, "nb": 1, "gc": 4}
    slot = "generator" if get_network_entry(network).role == "generator" else "net"
    networks = {"generator": generator, slot: {"type": network, **arguments}}
    raw = {
        "name": "schema",
        "scale": 2,
        "data": {"train": {"hr": "unused", "patch_size": 32, "batch_size": 2}},
        "networks": networks,
        "losses": [{"type": "pixel", "weight": 1.0}],
        "train": {"iterations": 1},
    }
    return raw, slot


def config_error(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as caught:
        validate_config(raw, source="run.yml")
    message = str(caught.value)
    assert "\n" not in message
    return message


def base_type(annotation: Any) -> Any:
    """int / float / str / bool / Literal... under Annotated and Optional."""
    if typing.get_origin(annotation) is Annotated:
        return base_type(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return base_type(members[0]) if len(members) == 1 else annotation
    return annotation


def own_arguments(name: str) -> dict[str, tuple[Any, Any, str]]:
    """Constructor arguments that are config keys of the network's section."""
    entry = get_network_entry(name)
    return {
        key: value
        for key, value in constructor_arguments(entry).items()
        if key not in INJECTED and key not in entry.weight_source
    }


def outside(constraint: constraints.Constraint, default: Any) -> Any:
    """A value that breaks ``constraint`` (and only it, where the other markers allow)."""
    if isinstance(constraint, AtLeast):
        return type(default)(constraint.minimum - 1)
    if isinstance(constraint, Above):
        return type(default)(constraint.bound)
    if isinstance(constraint, AtMost):
        return type(default)(constraint.maximum + 1)
    if isinstance(constraint, MultipleOf):
        return default + 1
    if constraint is Odd:
        return default + 1
    raise AssertionError(f"no test value for {constraint!r}")


def smallest(annotation: Any, default: Any) -> Any:
    """The smallest integer an integer argument's markers allow (others keep the default)."""
    if base_type(annotation) is not int:
        return default
    low = None
    for constraint in constraints_of(annotation):
        if isinstance(constraint, AtLeast):
            low = math.ceil(constraint.minimum)
        elif isinstance(constraint, Above):
            low = math.floor(constraint.bound) + 1
    if low is None:
        return default
    factors = [c.factor for c in constraints_of(annotation) if isinstance(c, MultipleOf)]
    for factor in factors:
        low = math.ceil(low / factor) * factor
    if Odd in constraints_of(annotation) and low % 2 == 0:
        low += 1
    return low


# --------------------------------------------------------------------------- every type


@pytest.mark.parametrize("name", NAMES)
def test_every_network_builds_from_its_schema_defaults(name):
    """The section's defaults (as the config fills them in) are a network that builds."""
    raw, slot = raw_config(name)
    config = validate_config(raw)
    section = config.networks[slot]
    arguments = section_arguments(section, config.scale)
    entry = get_network_entry(name)
    # Initial weights (an ImageNet VGG) are not part of the shape: neutral values, no file.
    arguments.update(entry.weight_source)
    with torch.device("meta"):  # shapes only: the default sizes are tens of millions of weights
        module = build_network(name, **arguments)
    assert isinstance(module, torch.nn.Module)
    assert module.srkit_arch["type"] == name
    assert sum(p.numel() for p in module.parameters()) > 0


@pytest.mark.parametrize("name", NAMES)
def test_every_numeric_argument_has_a_range(name):
    """Widths, counts, steps and temperatures state their meaningful values in the signature."""
    entry = get_network_entry(name)
    for key, (annotation, default, description) in own_arguments(name).items():
        assert default is not ..., f"{name}.{key} has no default"
        assert description, f"{name}.{key} has no line in the Args: section"
        kind = base_type(annotation)
        if kind in (int, float):
            assert constraints_of(annotation) or choices_of(annotation), (
                f"{name}.{key} ({kind.__name__}) has no range: annotate it, e.g. "
                f"Annotated[{kind.__name__}, Positive]"
            )
            assert value_problem(annotation, default) is None, f"{name}.{key} default is out"
    if "scale" in constructor_arguments(entry):
        assert supported_scales(entry), f"{name}.scale must be a Literal of supported scales"


@pytest.mark.parametrize("name", NAMES)
def test_smallest_allowed_values_build_and_run(name):
    """The lower ends of the ranges are real networks (a range is not looser than the code)."""
    entry = get_network_entry(name)
    arguments = dict(entry.weight_source)
    for key, (annotation, default, _) in own_arguments(name).items():
        arguments[key] = smallest(annotation, default)
    scales = supported_scales(entry)
    if scales is not None:
        arguments["scale"] = 2 if 2 in scales else scales[0]
    assert argument_problems(entry, arguments) == []
    torch.manual_seed(0)
    module = build_network(name, **arguments).eval()
    image = torch.rand(2, arguments.get("in_channels", 3), 32, 32)
    with torch.no_grad():
        # Generators with extra inputs (SPSR3's reference) get them built from the image.
        output = module(image, **whole_image_inputs(module, image))
    output = output["sr"] if isinstance(output, dict) else output
    assert output.shape[0] == 2 and torch.isfinite(output).all()


def _range_cases() -> list[tuple[str, str, Any]]:
    cases = []
    for name in NAMES:
        for key, (annotation, default, _) in own_arguments(name).items():
            for constraint in constraints_of(annotation):
                cases.append((name, key, outside(constraint, default)))
            if base_type(annotation) is str and choices_of(annotation) is None:
                cases.append((name, key, "no_such_value"))
    return cases


RANGE_CASES = _range_cases()


def test_range_cases_cover_every_type():
    assert {name for name, _, _ in RANGE_CASES} == set(NAMES)


@pytest.mark.parametrize(("name", "key", "value"), RANGE_CASES, ids=lambda v: str(v))
def test_value_outside_a_range_is_a_one_line_error_naming_the_key(name, key, value):
    raw, slot = raw_config(name, **{key: value})
    message = config_error(raw)
    assert message.startswith(f"run.yml: networks.{slot}.{key}: "), message
    assert repr(value) in message or str(value) in message, message
    # Python callers get the same check, before any layer is made.
    with pytest.raises(ConfigError, match=f"^{name}: {key}: "):
        build_network(name, **get_network_entry(name).weight_source, **{key: value})


# --------------------------------------------------------------------------- rules and scales


GENERATORS = [n for n in NAMES if get_network_entry(n).role == "generator"]
RUN_SCALES = (1, 2, 3, 4, 8)  # the top-level `scale` choices


@pytest.mark.parametrize("name", GENERATORS)
def test_an_unsupported_scale_names_the_scale_and_the_network(name):
    supported = supported_scales(get_network_entry(name))
    for scale in RUN_SCALES:
        raw, _ = raw_config(name)
        raw["scale"] = scale
        raw["data"]["train"]["patch_size"] = 48  # a multiple of every scale
        if scale in supported:
            validate_config(raw, source="run.yml")
            continue
        message = config_error(raw)
        listed = ", ".join(map(str, supported))
        assert (
            f"scale: {scale} is not supported by networks.generator ({name} supports {listed})"
            in (message)
        )


def test_which_generators_support_which_scales():
    # x3 needs a single pixel shuffle by 3; the x2-stage upsamplers cannot do it.
    assert supported_scales(get_network_entry("compact")) == RUN_SCALES
    for name in ("rrdb", "spsr", "srg2"):
        assert supported_scales(get_network_entry(name)) == (1, 2, 4, 8), name


@pytest.mark.parametrize(
    ("name", "arguments", "expect"),
    [
        ("rrdb", {"pixel_unshuffle": True}, "pixel_unshuffle: true needs scale 1 or 2"),
        ("compact", {"in_channels": 3, "out_channels": 1}, "out_channels: 1 does not match"),
        (
            "srg2",
            {"temperature_min": 0.5, "temperature_final_step": 100, "temperature_min_step": 50},
            "temperature_min_step: 50 must come after temperature_final_step (100)",
        ),
        ("featurenet", {"arch": "vgg16", "layer": "conv5_4"}, "layer: 'conv5_4' is not a vgg16"),
        ("vgg16_features", {"layer": "conv5_4"}, "layer: 'conv5_4' is not a vgg16 layer"),
        ("vgg19_features", {"layer": "relu6_1"}, "layer: 'relu6_1' is not a vgg19 layer"),
    ],
)
def test_rules_between_arguments_name_the_key(name, arguments, expect):
    raw, slot = raw_config(name, **arguments)
    raw["scale"] = 4
    assert f"networks.{slot}.{expect}" in config_error(raw)


def test_the_same_values_pass_where_the_rules_allow_them():
    for name, arguments, scale in [
        ("rrdb", {"pixel_unshuffle": True}, 2),
        ("compact", {"in_channels": 1, "out_channels": 3}, 4),
        ("srg2", {"temperature_min": 0.5, "temperature_min_step": 30000}, 4),
        ("featurenet", {"arch": "vgg19", "layer": "conv5_4"}, 4),
    ]:
        raw, _ = raw_config(name, **arguments)
        raw["scale"] = scale
        validate_config(raw)


def test_the_issue_command_is_one_line(tmp_path, capsys):
    """`srkit train configs/quickstart.yml --set networks.generator.nf=-4` (issue 16)."""
    from pathlib import Path

    from srkit.cli import main

    quickstart = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yml"
    status = main(
        [
            "train",
            str(quickstart),
            "--set",
            f"output_dir={tmp_path / 'runs'}",
            "--set",
            "networks.generator.nf=-4",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert err == (
        f"srkit: error: {quickstart}: networks.generator.nf: input should be greater than 0, got -4"
    )
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- the markers


def _toy(
    *,
    kernel_size: Annotated[int, Positive, Odd] = 3,
    width: Annotated[int, AtLeast(8), MultipleOf(8)] | None = None,
    gain: Annotated[float, Above(0), AtMost(2)] = 1.0,
    blocks: Annotated[int, NonNegative] = 0,
) -> torch.nn.Module:
    """A toy network for the marker tests.

    Args:
        kernel_size: Kernel size.
        width: Width, or null for the default.
        gain: Output gain.
        blocks: Extra blocks.
    """
    return torch.nn.Identity()


def _toy_check(arguments: dict[str, Any]) -> list[tuple[str, str]]:
    """`width` must be at least 4 kernel sizes."""
    width = arguments["width"]
    if width is not None and width < 4 * arguments["kernel_size"]:
        return [("width", f"{width} is less than 4 x kernel_size ({arguments['kernel_size']})")]
    return []


TOY = NetworkEntry("toy", _toy, "generator", None, {}, _toy_check)


def test_markers_describe_and_judge_values():
    annotation = Annotated[int, AtLeast(4), MultipleOf(4)]
    assert value_problem(annotation, 8) is None
    assert value_problem(annotation, 6) == "must be a multiple of 4, got 6"
    assert value_problem(annotation, 0) == "must be greater than or equal to 4, got 0"
    assert value_problem(Annotated[int, Odd], 4) == "must be an odd number, got 4"
    assert value_problem(Annotated[int, Positive] | None, None) is None
    assert value_problem(Annotated[int, Positive] | None, 0) == "must be greater than 0, got 0"
    assert value_problem(typing.Literal[1, 2], 3) == "must be one of 1, 2, got 3"
    assert value_problem(bool, True) is None


def test_markers_become_pydantic_constraints_json_schema_and_docs():
    model = _network_model(TOY)
    assert model.model_validate({"type": "toy"}).kernel_size == 3
    properties = model.model_json_schema()["properties"]
    assert properties["kernel_size"]["exclusiveMinimum"] == 0
    assert properties["kernel_size"]["not"] == {"multipleOf": 2}
    assert constraint_text(properties["kernel_size"]) == "> 0, odd"
    assert constraint_text(properties["width"]) == "≥ 8, multiple of 8"
    assert constraint_text(properties["gain"]) == "> 0, ≤ 2"
    assert constraint_text(properties["blocks"]) == "≥ 0"
    for key, value in [("kernel_size", 4), ("kernel_size", -1), ("width", 12), ("gain", 0)]:
        with pytest.raises(Exception) as caught:
            model.model_validate({"type": "toy", key: value})
        assert caught.value.errors()[0]["loc"] == (key,)
    assert model.model_validate({"type": "toy", "width": None}).width is None


def test_the_check_runs_with_defaults_filled_in():
    assert argument_problems(TOY, {"width": 8}) == [("width", "8 is less than 4 x kernel_size (3)")]
    assert argument_problems(TOY, {"width": 16}) == []
    # A value outside its range is reported first; the check only sees valid values.
    assert argument_problems(TOY, {"kernel_size": 2, "width": 8}) == [
        ("kernel_size", "must be an odd number, got 2")
    ]


def test_generated_reference_shows_network_ranges():
    from srkit.schema_docs import config_markdown

    text = config_markdown()
    assert "| `networks.<name>.nf` | int (> 0) | `64` |" in text
    assert "| `networks.<name>.mux_filters` | int (≥ 4, multiple of 4) | `32` |" in text
    assert "Supported `scale`: 1, 2, 4, 8." in text
    schema = config_model().model_json_schema()
    rrdb = next(d for n, d in schema["$defs"].items() if n == "RrdbNetwork")
    assert rrdb["properties"]["nf"]["exclusiveMinimum"] == 0


def test_networks_import_without_pydantic():
    """The markers live in srkit.nets (torch only); turning them into pydantic is the config's."""
    import os
    import subprocess
    import sys

    code = "import sys, srkit.nets; print(sorted({'pydantic', 'srkit.config'} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, check=True
    )
    assert result.stdout.strip() == "[]"
