"""``srkit export``: ONNX that matches PyTorch, and safetensors the community loaders accept."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

import srkit
from repo_scripts import load_script
from srkit.cli import main
from srkit.infer.export import export_onnx, export_safetensors, spandrel_problems
from srkit.nets import build_network
from srkit.weights import save_weights

# Where spandrel is (SRKIT_SPANDREL_PATH) and the torchvision stand-in it needs: one module,
# shared with benchmarks/vs_spandrel.py.
_spandrel = load_script("benchmarks/_spandrel.py", "bench_spandrel")

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

SMALL = {
    "compact": {"scale": 3, "num_feat": 8, "num_conv": 2},
    "rrdb": {"scale": 4, "nf": 8, "nb": 2, "gc": 8},
    "spsr": {"scale": 2, "nf": 8, "nb": 4, "gc": 4},
    "srg2": {
        "scale": 2,
        "nf": 8,
        "depth": 2,
        "transforms": 3,
        "mux_filters": 8,
        "temperature": 1.0,
    },
}


def _model(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_network(kind, **SMALL[kind]).eval()


@pytest.mark.parametrize("kind", sorted(SMALL))
def test_onnx_matches_pytorch_on_two_sizes(tmp_path, kind):
    model = _model(kind)
    report = export_onnx(model, tmp_path / f"{kind}.onnx", input_size=24)
    assert len(report.differences) == 2  # 24x24 and 37x30
    assert report.max_difference <= 1e-4, report.differences
    session = onnxruntime.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    (output,) = session.run(None, {"input": np.zeros((2, 3, 9, 17), np.float32)})
    assert output.shape == (2, 3, 9 * model.scale, 17 * model.scale)  # dynamic batch/H/W
    props = {p.key: p.value for p in onnx.load(str(report.path)).metadata_props}
    assert json.loads(props["srkit_arch"])["type"] == kind and props["scale"] == str(model.scale)


def test_onnx_fp16_has_half_io_and_stays_close(tmp_path):
    model = _model("rrdb")
    report = export_onnx(model, tmp_path / "half.onnx", fp16=True, input_size=24)
    assert report.passed and 0 < report.max_difference <= report.tolerance
    session = onnxruntime.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(float16)"
    assert session.get_outputs()[0].type == "tensor(float16)"


def test_onnx_static_shape(tmp_path):
    report = export_onnx(_model("rrdb"), tmp_path / "s.onnx", dynamic=False, input_size=16)
    assert list(report.differences) == ["1x3x16x16"] and report.passed
    graph = onnx.load(str(report.path)).graph
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [1, 3, 16, 16]


def test_export_cli(tmp_path, capsys):
    save_weights(tmp_path / "g.safetensors", _model("rrdb"))
    args = ["export", str(tmp_path / "g.safetensors"), "--onnx", str(tmp_path / "g.onnx")]
    assert (
        main([*args, "--input-size", "16", "--safetensors", str(tmp_path / "c.safetensors")]) == 0
    )
    out = capsys.readouterr().out
    assert "max abs difference" in out and (tmp_path / "g.onnx").is_file()
    assert main(["export", str(tmp_path / "g.safetensors")]) == 2
    assert "nothing to export" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# safetensors for spandrel / chaiNNer
# ---------------------------------------------------------------------------------------------

# spandrel.architectures.ESRGAN.ESRGANArch.detect: any one of these key sets must be present.
SPANDREL_ESRGAN_KEYSETS = (
    {"model.0.weight", "model.1.sub.0.RDB1.conv1.0.weight"},
    {"conv_first.weight", "body.0.rdb1.conv1.weight", "conv_body.weight", "conv_last.weight"},
)


def _keys(path: Path) -> tuple[set[str], dict[str, str]]:
    with safe_open(str(path), framework="pt") as handle:
        return set(handle.keys()), dict(handle.metadata())


@pytest.mark.parametrize("layout", ["new", "old"])
def test_rrdb_safetensors_has_a_layout_spandrel_detects(tmp_path, layout):
    model = build_network("rrdb", scale=4, nf=8, nb=2, gc=32).eval()
    problems = export_safetensors(model, tmp_path / "m.safetensors", layout=layout)
    assert problems == []
    keys, metadata = _keys(tmp_path / "m.safetensors")
    assert any(required <= keys for required in SPANDREL_ESRGAN_KEYSETS)
    if layout == "old":
        assert {"model.3.weight", "model.6.weight", "model.8.weight", "model.10.weight"} <= keys
        assert "model.1.sub.2.weight" in keys  # body conv after the nb=2 blocks
    assert metadata["format"] == "pt" and json.loads(metadata["srkit_arch"])["type"] == "rrdb"
    loaded = srkit.load_model(tmp_path / "m.safetensors")
    image = torch.rand(1, 3, 10, 12)
    with torch.no_grad():
        assert torch.allclose(model(image), loaded(image), atol=1e-6)


def test_fp16_safetensors_and_other_generators(tmp_path):
    export_safetensors(_model("rrdb"), tmp_path / "h.safetensors", fp16=True)
    with safe_open(str(tmp_path / "h.safetensors"), framework="pt") as handle:
        assert handle.get_tensor("conv_first.weight").dtype == torch.float16
    assert srkit.load_model(tmp_path / "h.safetensors").scale == 4
    problems = export_safetensors(_model("spsr"), tmp_path / "s.safetensors")
    assert problems and "spandrel has no srkit spsr" in problems[0]
    assert srkit.load_model(tmp_path / "s.safetensors").srkit_arch["type"] == "spsr"


def test_non_default_growth_channels_are_flagged_for_spandrel():
    assert "gc=32" in spandrel_problems(_model("rrdb"))[0]  # the small test model has gc=8


# spandrel.architectures.Compact.CompactArch.detect: both keys (a conv, then PReLU slopes).
SPANDREL_COMPACT_KEYS = {"body.0.weight", "body.1.weight"}


def test_compact_safetensors_is_the_community_layout(tmp_path):
    model = _model("compact")
    assert export_safetensors(model, tmp_path / "c.safetensors") == []
    keys, metadata = _keys(tmp_path / "c.safetensors")
    assert keys == set(model.state_dict()) and keys >= SPANDREL_COMPACT_KEYS
    # body: conv, PReLU, conv, PReLU, conv, PReLU, last conv (27 = 3 channels * 3^2).
    with safe_open(str(tmp_path / "c.safetensors"), framework="pt") as handle:
        assert handle.get_tensor("body.5.weight").shape == (8,)
        assert handle.get_tensor("body.6.weight").shape == (27, 8, 3, 3)
    assert json.loads(metadata["srkit_arch"])["type"] == "compact" and metadata["scale"] == "3"
    loaded = srkit.load_model(tmp_path / "c.safetensors")
    image = torch.rand(1, 3, 10, 12)
    with torch.no_grad():
        assert torch.equal(model(image), loaded(image))


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"act_type": "relu"}, "by their PReLU weights; this one uses relu"),
        # 1 -> 4 channels at x2: 16 output maps, which spandrel reads as x4 with 1 channel.
        (
            {"in_channels": 1, "out_channels": 4, "scale": 2},
            "as scale 4 with 1 output channels; this model is x2 with 4 output channels",
        ),
    ],
)
def test_compact_models_spandrel_would_misread_are_flagged(arguments, problem):
    model = build_network("compact", num_feat=4, num_conv=1, **arguments)
    assert any(problem in found for found in spandrel_problems(model)), spandrel_problems(model)
    assert spandrel_problems(build_network("compact", num_feat=4, num_conv=1, scale=8)) == []


_SPANDREL_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from spandrel import ModelLoader
    descriptor = ModelLoader().load_from_file(sys.argv[1])
    model = descriptor.model.eval()
    image = torch.load(sys.argv[2])
    with torch.no_grad():
        out = model(image)
    torch.save({"out": out, "arch": descriptor.architecture.id, "scale": descriptor.scale},
               sys.argv[3])
    """
)


@pytest.mark.slow
@pytest.mark.skipif(not _spandrel.spandrel_available(), reason="spandrel is not installed")
@pytest.mark.parametrize(
    ("layout", "options"),
    [("new", {"scale": 4}), ("old", {"scale": 4}), ("new", {"scale": 2, "pixel_unshuffle": True})],
)
def test_spandrel_loads_the_export_as_esrgan_with_the_same_output(tmp_path, layout, options):
    """Run the real spandrel ModelLoader on an srkit export (in a subprocess).

    Install spandrel without its dependencies (``pip install --no-deps spandrel einops``), or
    into a folder named by ``SRKIT_SPANDREL_PATH``.
    """
    torch.manual_seed(0)
    model = build_network("rrdb", nf=16, nb=2, gc=32, **options).eval()
    export_safetensors(model, tmp_path / "m.safetensors", layout=layout)
    image = torch.rand(1, 3, 16, 20)
    result = _run_spandrel(tmp_path, tmp_path / "m.safetensors", image)
    assert result["arch"] == "ESRGAN" and result["scale"] == model.scale
    with torch.no_grad():
        assert torch.allclose(result["out"], model(image), atol=1e-5)


def _run_spandrel(tmp_path: Path, weights: Path, image: torch.Tensor) -> dict:
    """spandrel's ModelLoader on ``weights`` in a subprocess: its output, arch id and scale."""
    torch.save(image, tmp_path / "in.pt")
    (tmp_path / "check.py").write_text(_SPANDREL_SCRIPT)
    paths = _spandrel.spandrel_search_path(tmp_path / "stub")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")])}
    subprocess.run(
        [sys.executable, str(tmp_path / "check.py"), str(weights), str(tmp_path / "in.pt"),
         str(tmp_path / "out.pt")],
        check=True, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return torch.load(tmp_path / "out.pt")


@pytest.mark.slow
@pytest.mark.skipif(not _spandrel.spandrel_available(), reason="spandrel is not installed")
@pytest.mark.parametrize(
    "options",
    [{"scale": 4}, {"scale": 3, "num_conv": 0}, {"scale": 2, "in_channels": 1, "out_channels": 3}],
)
def test_spandrel_loads_the_compact_export_with_the_same_output(tmp_path, options):
    """The real spandrel ModelLoader reads srkit's compact export as "RealESRGAN Compact"."""
    torch.manual_seed(0)
    model = build_network("compact", num_feat=8, **{"num_conv": 2, **options}).eval()
    assert export_safetensors(model, tmp_path / "m.safetensors") == []
    image = torch.rand(1, model.body[0].in_channels, 16, 20)
    result = _run_spandrel(tmp_path, tmp_path / "m.safetensors", image)
    assert result["arch"] == "Compact" and result["scale"] == model.scale
    with torch.no_grad():
        assert torch.allclose(result["out"], model(image), atol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(not _spandrel.spandrel_available(), reason="spandrel is not installed")
def test_vs_spandrel_benchmark_times_both_sides_on_one_export(tmp_path):
    """benchmarks/vs_spandrel.py (issue 17's upscaling bar) on a tiny RRDB: spandrel reads the
    export as ESRGAN, srkit's default path gives the same picture, the JSON has the ratio."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "vs_spandrel.py"
    result = subprocess.run(
        [sys.executable, str(script), "--nf", "8", "--nb", "1", "--lr-size", "12",
         "--rounds", "1", "--warmup", "0", "--threads", "1", "--json", str(tmp_path / "r.json")],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["psnr_db"] >= 45 and report["ratio"] > 0
    assert report["chosen"]["precision"] in ("fp32", "bf16")
    assert "srkit / spandrel" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(SMALL))
def test_dynamo_exporter_matches_pytorch(tmp_path, kind):
    report = export_onnx(_model(kind), tmp_path / f"{kind}.onnx", exporter="dynamo", opset=18)
    assert report.max_difference <= 1e-4, report.differences
