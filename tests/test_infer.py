"""Inference: tiled upscaling, the Python API for numpy/PIL/tensors, and ``srkit upscale``."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import srkit
from srkit.cli import main
from srkit.data.io import read_image, write_image
from srkit.errors import SrkitError
from srkit.infer.api import PrecisionError, upscale_tensor
from srkit.infer.tiling import (
    activation_bytes_per_pixel,
    auto_tile,
    auto_tile_batch,
    plan_tiles,
    ramp,
    tile_alignment,
    tile_groups,
    tile_spans,
    tiled_forward,
    tiles_that_fit,
)
from srkit.nets import build_network
from srkit.weights import save_weights


def calibrated_rrdb(scale: int = 2, **kwargs) -> torch.nn.Module:
    """A small RRDB whose output looks like an image: mean ~0.5, std ~0.2 on random input.

    A freshly initialised RRDB outputs values near 0, which would make any tiling error look
    tiny; rescaling the last conv keeps the network's spatial behaviour (its effective
    receptive field) and gives its output an image's range.
    """
    torch.manual_seed(0)
    options = {"nf": 16, "nb": 2, "gc": 8, **kwargs}
    model = build_network("rrdb", scale=scale, **options).eval()
    probe = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model.conv_last.weight.mul_(0.2 / model(probe).std())
        model.conv_last.bias.add_(0.5 - model(probe).mean())
    return model


def photo_512x384() -> torch.Tensor:
    """The scikit-image astronaut cropped to 512x384 (a synthetic photo-like image without it)."""
    try:
        from skimage import data

        pixels = data.astronaut()[:384, :512].astype(np.float32) / 255.0
    except ImportError:
        y, x = np.mgrid[0:384, 0:512] / 512.0
        pixels = np.stack(
            [0.5 + 0.4 * np.sin(f * 6.28 * x) * np.cos(f * 6.28 * y) for f in (2, 3, 5)], axis=-1
        ).astype(np.float32)
    return torch.from_numpy(pixels.transpose(2, 0, 1).copy())[None]


@pytest.fixture(scope="module")
def photo_and_reference():
    model = calibrated_rrdb(scale=2)
    photo = photo_512x384()
    reference, _ = upscale_tensor(model, photo, tile=0)
    return model, photo, reference


# ---------------------------------------------------------------------------------------------
# Tiling
# ---------------------------------------------------------------------------------------------


def test_tiled_photo_matches_untiled_within_one_level(photo_and_reference):
    model, photo, reference = photo_and_reference
    tiled, _ = upscale_tensor(model, photo, tile=96, overlap=16)
    assert tiled.shape == reference.shape == (1, 3, 768, 1024)
    assert (tiled - reference).abs().max().item() <= 1 / 255


def test_tiles_without_overlap_show_seams(photo_and_reference):
    """The tiling test above can fail: cutting without overlap leaves visible seams."""
    model, photo, reference = photo_and_reference
    crop = photo[:, :, :160, :192]
    tiled, _ = upscale_tensor(model, crop, tile=96, overlap=0)
    assert (tiled - reference[:, :, :320, :384]).abs().max().item() > 10 / 255


@pytest.mark.parametrize("length", [7, 96, 100, 384, 512, 1001])
@pytest.mark.parametrize(("tile", "overlap", "alignment"), [(96, 16, 1), (64, 8, 4), (40, 0, 2)])
def test_tile_spans_cover_overlap_and_align(length, tile, overlap, alignment):
    spans = tile_spans(length, tile, overlap, alignment)
    assert spans[0][0] == 0 and spans[-1][1] == length
    for start, end in spans:
        assert start % alignment == 0
        assert end - start <= max(tile, alignment) + alignment - 1
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end - start >= overlap


def test_shrunk_tiles_keep_the_extra_work_small():
    # Two tiles of 400 on a 512 side would compute 800 columns; shrunk ones compute 528.
    plan = plan_tiles(512, 512, 400, 16)
    assert plan.count == 4
    assert plan.computed_fraction == pytest.approx((528 / 512) ** 2)


def test_ramps_of_neighbours_sum_to_one():
    fade = 16
    rising = ramp(40, fade, fade_start=True, fade_end=False)[:fade]
    falling = ramp(40, fade, fade_start=False, fade_end=True)[-fade:]
    assert torch.allclose(rising + falling, torch.ones(fade), atol=1e-5)
    assert rising[: fade // 4].max() < 1e-5  # the pixels next to a cut get no say
    assert rising[-(fade // 4) :].min() > 1 - 1e-5


@pytest.mark.parametrize(("tile", "overlap"), [(32, 16), (8, 2), (64, -1)])
def test_impossible_tile_settings_are_user_errors(tile, overlap):
    with pytest.raises(srkit.errors.SrkitError):
        plan_tiles(200, 200, tile, overlap)


def test_pixel_unshuffle_models_tile_on_their_grid():
    torch.manual_seed(0)
    model = build_network("rrdb", scale=2, nf=8, nb=1, gc=4, pixel_unshuffle=True).eval()
    assert tile_alignment(model) == 2
    image = torch.rand(1, 3, 45, 61)
    whole, _ = upscale_tensor(model, image, tile=0)
    tiled, _ = upscale_tensor(model, image, tile=40, overlap=16)
    assert (whole - tiled).abs().max().item() < 1 / 255


def test_srg2_attention_maps_are_stitched_as_distributions():
    torch.manual_seed(0)
    model = build_network(
        "srg2", scale=2, nf=8, depth=2, transforms=3, mux_filters=8, temperature=1.0
    ).eval()
    image = torch.rand(1, 3, 40, 52)
    sr, maps = upscale_tensor(model, image, tile=24, overlap=8, attention=True)
    assert sr.shape == (1, 3, 80, 104)
    assert len(maps) == 2
    for attention in maps:
        assert attention.shape == (1, 40, 52, 3)
        assert torch.allclose(attention.sum(-1), torch.ones(1, 40, 52), atol=1e-5)


def test_tile_callback_counts_tiles():
    model = calibrated_rrdb(scale=2, nf=8, nb=1, gc=4)
    calls = []
    forward = lambda x: (model(x), None)  # noqa: E731
    tiled_forward(
        forward, torch.rand(1, 3, 50, 70), 2, 32, 8, on_tile=lambda d, t: calls.append((d, t))
    )
    assert calls[-1][0] == calls[-1][1] == len(calls) == 6


def test_batched_tiles_give_the_same_image_in_fewer_passes():
    """Tiles of one size go through the network together; the result is the one-at-a-time
    result (up to the float rounding of a batched convolution), attention maps included."""
    torch.manual_seed(0)
    model = build_network(
        "srg2", scale=2, nf=8, depth=1, transforms=2, mux_filters=8, temperature=1
    ).eval()
    image = torch.rand(2, 3, 70, 90, generator=torch.Generator().manual_seed(3))
    passes: list[int] = []

    def forward(x):
        passes.append(x.shape[0])
        out = model(x)
        return out["sr"], out["attention"]

    alignment = tile_alignment(model)
    one, maps_one = tiled_forward(forward, image, 2, 32, 8, alignment, True, tile_batch=1)
    single_passes, passes[:] = list(passes), []
    many, maps_many = tiled_forward(forward, image, 2, 32, 8, alignment, True, tile_batch=3)
    plan = plan_tiles(70, 90, 32, 8, alignment)
    assert len(single_passes) == plan.count and set(single_passes) == {2}
    assert len(passes) < plan.count and max(passes) == 3 * 2  # 3 tiles x 2 images
    assert float((one - many).abs().max()) < 1e-5
    for a, b in zip(maps_one, maps_many, strict=True):
        assert float((a - b).abs().max()) < 1e-5


def test_tile_groups_batch_consecutive_tiles_of_one_size():
    plan = plan_tiles(100, 130, 48, 8, 1)
    groups = tile_groups(plan, 2)
    boxes = [box for group in groups for box in group]
    assert boxes == [(t, x, b - t, r - x) for t, b in plan.rows for x, r in plan.cols]
    assert all(len(g) <= 2 and len({box[2:] for box in g}) == 1 for g in groups)
    assert [len(g) for g in tile_groups(plan, 1)] == [1] * plan.count
    with pytest.raises(SrkitError, match="tile batch"):
        tile_groups(plan, 0)


def test_tiles_that_fit_the_memory_budget_and_cpu_runs_one_at_a_time():
    model = build_network("rrdb", scale=4, nf=8, nb=1, gc=4).eval()
    cpu = torch.device("cpu")
    per_pixel = activation_bytes_per_pixel(model, cpu, 4)
    one_tile = 65 * 65 * per_pixel
    assert tiles_that_fit(model, 64, 1, cpu, 4, free_bytes=2 * 3 * one_tile) == 3
    assert tiles_that_fit(model, 64, 3, cpu, 4, free_bytes=2 * 3 * one_tile) == 1
    assert tiles_that_fit(model, 64, 1, cpu, 4, free_bytes=1 << 40) == 8  # the cap
    assert tiles_that_fit(model, 64, 1, cpu, 4, free_bytes=1) == 1
    assert tiles_that_fit(model, 0, 1, cpu, 4, free_bytes=1 << 40) == 1  # not tiling
    assert auto_tile_batch(model, 64, 1, cpu, 4) == 1


# ---------------------------------------------------------------------------------------------
# --tile auto
# ---------------------------------------------------------------------------------------------


def test_activation_estimate_covers_the_largest_feature_map():
    model = build_network("rrdb", scale=4, nf=8, nb=1, gc=4).eval()
    per_pixel = activation_bytes_per_pixel(model, torch.device("cpu"), 4)
    # The 8-channel map at 4x resolution: 8 * 16 values per input pixel, times the 4x margin.
    assert per_pixel >= 8 * 16 * 4 * 4


def test_auto_tile_is_whole_image_when_it_fits_and_a_tile_when_not():
    model = build_network("rrdb", scale=4, nf=8, nb=1, gc=4).eval()
    cpu = torch.device("cpu")
    assert auto_tile(model, 100, 100, cpu, 4, free_bytes=64 << 30) == 0
    per_pixel = activation_bytes_per_pixel(model, cpu, 4)
    output_buffers = 1000 * 1000 * 16 * 16
    budget = 2 * (output_buffers + 200 * 200 * per_pixel)  # room for a ~200 px tile
    tile = auto_tile(model, 1000, 1000, cpu, 4, free_bytes=budget)
    assert 150 <= tile <= 200


# ---------------------------------------------------------------------------------------------
# Python API: numpy, PIL, tensors
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    return calibrated_rrdb(scale=2, nf=8, nb=1, gc=4)


@pytest.mark.parametrize(
    ("dtype", "peak"), [(np.uint8, 255), (np.uint16, 65535), (np.float32, 1.0), (np.float64, 1.0)]
)
@pytest.mark.parametrize("shape", [(20, 30, 3), (20, 30), (20, 30, 1), (20, 30, 4)])
def test_numpy_in_numpy_out(tiny, dtype, peak, shape):
    rng = np.random.default_rng(0)
    image = (rng.random(shape) * peak).astype(dtype)
    out = srkit.upscale(tiny, image, tile=0)
    assert out.dtype == dtype
    assert out.shape == (40, 60, *shape[2:])


def test_pil_modes_are_kept(tiny):
    rng = np.random.default_rng(0)
    rgb = Image.fromarray((rng.random((20, 30, 3)) * 255).astype(np.uint8))
    for mode in ("RGB", "RGBA", "L", "LA"):
        out = srkit.upscale(tiny, rgb.convert(mode), tile=0)
        assert out.mode == mode and out.size == (60, 40)
    samples = (rng.random((20, 30)) * 65535).astype("<u2")
    grey16 = Image.frombytes("I;16", (30, 20), samples.tobytes())
    out = srkit.upscale(tiny, grey16, tile=0)
    assert out.mode == "I;16" and out.size == (60, 40)
    assert np.asarray(out).max() > 255  # still 16-bit data
    palette = rgb.convert("P")
    assert srkit.upscale(tiny, palette, tile=0).mode == "RGB"


def test_tensors_keep_layout_dtype_and_device(tiny):
    image = torch.rand(3, 20, 30, dtype=torch.float64)
    out = srkit.upscale(tiny, image, tile=0)
    assert out.shape == (3, 40, 60) and out.dtype == torch.float64 and out.device == image.device
    batch = torch.rand(2, 3, 20, 30)
    out = srkit.upscale(tiny, batch, tile=16, overlap=4)
    assert out.shape == (2, 3, 40, 60)
    single = srkit.upscale(tiny, batch[1], tile=16, overlap=4)
    assert torch.allclose(out[1], single, atol=1e-6)
    with pytest.raises(TypeError):
        srkit.upscale(tiny, torch.zeros(3, 8, 8, dtype=torch.uint8))
    with pytest.raises(TypeError):
        srkit.upscale(tiny, [[0.5]])


def test_grey_is_the_mean_of_the_rgb_result(tiny):
    grey = torch.rand(1, 1, 20, 30)
    out, _ = upscale_tensor(tiny, grey, tile=0)
    rgb, _ = upscale_tensor(tiny, grey.expand(-1, 3, -1, -1), tile=0)
    assert out.shape == (1, 1, 40, 60)
    assert torch.allclose(out, rgb.mean(1, keepdim=True).clamp(0, 1), atol=1e-6)


def test_alpha_is_upscaled_separately(tiny):
    colour = torch.rand(1, 3, 20, 30)
    alpha = torch.linspace(0, 1, 30).expand(1, 1, 20, 30)
    out, _ = upscale_tensor(tiny, torch.cat((colour, alpha), 1), tile=0)
    colour_only, _ = upscale_tensor(tiny, colour, tile=0)
    alpha_only, _ = upscale_tensor(tiny, alpha, tile=0)
    assert out.shape == (1, 4, 40, 60)
    assert torch.equal(out[:, :3], colour_only)  # alpha does not leak into the colour
    assert torch.allclose(out[:, 3:], alpha_only, atol=1e-6)  # alpha = the grey pass
    bicubic, _ = upscale_tensor(tiny, torch.cat((colour, alpha), 1), tile=0, alpha="bicubic")
    assert bicubic[:, 3].min() >= 0 and (bicubic[:, 3, :, 1:] >= bicubic[:, 3, :, :-1] - 1e-4).all()
    opaque, _ = upscale_tensor(tiny, torch.cat((colour, torch.ones_like(alpha)), 1), tile=0)
    assert torch.equal(opaque[:, 3], torch.ones(1, 40, 60))


def test_precisions(tiny):
    image = torch.rand(1, 3, 12, 12)
    with pytest.raises(PrecisionError, match="fp16 needs a CUDA GPU"):
        srkit.upscale(tiny, image, precision="fp16")
    fp32 = srkit.upscale(tiny, image, tile=0)
    bf16 = srkit.upscale(tiny, image, tile=0, precision="bf16")
    psnr = -10 * math.log10(((fp32 - bf16) ** 2).mean().item() + 1e-12)
    assert psnr > 35


def test_load_model_gives_scale_arch_and_metadata(tmp_path, tiny):
    save_weights(tmp_path / "g.safetensors", tiny, {"step": "12"})
    model = srkit.load_model(tmp_path / "g.safetensors")
    assert not model.training and model.scale == 2
    assert model.srkit_arch["type"] == "rrdb" and model.srkit_arch["nf"] == 8
    assert model.srkit_metadata["step"] == "12"
    assert model.srkit_metadata["source"].endswith("g.safetensors")


# ---------------------------------------------------------------------------------------------
# srkit upscale
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def workspace(tmp_path: Path, tiny) -> dict[str, Path]:
    save_weights(tmp_path / "model.safetensors", tiny)
    rng = np.random.default_rng(0)
    inputs = tmp_path / "in"
    write_image(inputs / "rgb.png", rng.random((20, 30, 3)))
    write_image(inputs / "deep" / "deeper" / "sixteen.png", rng.random((18, 14, 3)), bit_depth=16)
    write_image(inputs / "deep" / "grey.png", rng.random((16, 12)))
    write_image(inputs / "deep" / "grey16.png", rng.random((16, 12)), bit_depth=16)
    rgba = rng.random((12, 16, 4))
    rgba[..., 3] = np.linspace(0, 1, 16)[None]
    write_image(inputs / "rgba.png", rgba)
    return {"root": tmp_path, "model": tmp_path / "model.safetensors", "in": inputs}


def _upscale(workspace, *extra: str, inputs: list[str] | None = None) -> int:
    args = ["upscale", str(workspace["model"]), *(inputs or [str(workspace["in"])])]
    return main([*args, "-o", str(workspace["root"] / "out"), "--quiet", *extra])


def test_cli_keeps_tree_modes_sizes_and_depths(workspace):
    assert _upscale(workspace, "--tile", "16", "--overlap", "4", "--tile-batch", "3") == 0
    out = workspace["root"] / "out"
    expected = {
        "rgb.png": ("RGB", 8, (60, 40)),
        "deep/deeper/sixteen.png": ("RGB", 16, (28, 36)),
        "deep/grey.png": ("L", 8, (24, 32)),
        "deep/grey16.png": ("L", 16, (24, 32)),
        "rgba.png": ("RGBA", 8, (32, 24)),
    }
    for name, (mode, depth, size) in expected.items():
        image = read_image(out / name)
        assert (image.mode, image.bit_depth, image.size) == (mode, depth, size), name


def test_cli_respects_exif_orientation(workspace):
    pixels = (np.random.default_rng(0).random((10, 16, 3)) * 255).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    Image.fromarray(pixels).save(workspace["root"] / "turned.jpg", exif=exif.tobytes())
    assert _upscale(workspace, inputs=[str(workspace["root"] / "turned.jpg")]) == 0
    assert read_image(workspace["root"] / "out" / "turned.png").size == (20, 32)


def test_cli_skips_existing_outputs_unless_overwrite(workspace):
    target = workspace["root"] / "out" / "rgb.png"
    target.parent.mkdir(parents=True)
    write_image(target, np.zeros((2, 2, 3)))
    assert _upscale(workspace, inputs=[str(workspace["in"] / "rgb.png")]) == 0
    assert read_image(target).size == (2, 2)
    assert _upscale(workspace, "--overwrite", inputs=[str(workspace["in"] / "rgb.png")]) == 0
    assert read_image(target).size == (60, 40)


def test_cli_reports_a_bad_file_and_continues(workspace, capsys):
    (workspace["in"] / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert _upscale(workspace) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "broken.png" in line]
    assert len(lines) == 1 and lines[0].startswith("srkit: error:")
    assert (workspace["root"] / "out" / "rgb.png").is_file()
    assert (workspace["root"] / "out" / "deep" / "grey.png").is_file()


def test_cli_expands_globs_itself(workspace):
    pattern = str(workspace["in"] / "**" / "*grey*.png")
    assert _upscale(workspace, inputs=[pattern]) == 0
    written = sorted(
        p.relative_to(workspace["root"] / "out").as_posix()
        for p in (workspace["root"] / "out").rglob("*.png")
    )
    assert written == ["deep/grey.png", "deep/grey16.png"]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing_input", "does not exist"),
        ("empty_glob", "matches no image"),
        ("bad_model", "is not a weights file: it is text"),
        ("missing_model", "does not exist"),
        ("output_is_file", "is a file"),
        ("collision", "would both be written"),
        ("attention_without_switches", "no attention outputs"),
    ],
)
def test_cli_user_errors_exit_2_with_one_line(workspace, capsys, case, message):
    root, model, inputs = workspace["root"], str(workspace["model"]), str(workspace["in"])
    out = str(root / "out")
    if case == "missing_input":
        argv = ["upscale", model, str(root / "nope.png"), "-o", out]
    elif case == "empty_glob":
        argv = ["upscale", model, str(root / "*.tif"), "-o", out]
    elif case == "bad_model":
        (root / "bad.pth").write_bytes(b"not a checkpoint at all")
        argv = ["upscale", str(root / "bad.pth"), inputs, "-o", out]
    elif case == "missing_model":
        argv = ["upscale", str(root / "nope.pth"), inputs, "-o", out]
    elif case == "output_is_file":
        argv = ["upscale", model, inputs, "-o", model]
    elif case == "collision":
        write_image(workspace["in"] / "rgb.jpg", np.zeros((4, 4, 3)))
        argv = ["upscale", model, inputs, "-o", out]
    else:
        argv = ["upscale", model, inputs, "-o", out, "--attention-maps", str(root / "maps")]
    assert main([*argv, "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("srkit: error:") and message in err[0]


def test_cli_formats_and_jpeg_drops_alpha(workspace, capsys):
    assert _upscale(workspace, "--format", "jpg", inputs=[str(workspace["in"] / "rgba.png")]) == 0
    assert "alpha dropped" in capsys.readouterr().err
    assert read_image(workspace["root"] / "out" / "rgba.jpg").mode == "RGB"
    assert _upscale(workspace, "--format", "webp", inputs=[str(workspace["in"] / "rgba.png")]) == 0
    assert read_image(workspace["root"] / "out" / "rgba.webp").mode == "RGBA"
    sixteen = str(workspace["in"] / "deep" / "deeper" / "sixteen.png")
    assert _upscale(workspace, "--format", "tif", inputs=[sixteen]) == 0
    assert read_image(workspace["root"] / "out" / "sixteen.tif").bit_depth == 16


def test_cli_writes_attention_pictures_for_srg2(tmp_path):
    torch.manual_seed(0)
    model = build_network(
        "srg2", scale=2, nf=8, depth=2, transforms=3, mux_filters=8, temperature=1.0
    )
    save_weights(tmp_path / "srg2.safetensors", model)
    write_image(tmp_path / "in" / "a.png", np.random.default_rng(0).random((20, 24, 3)))
    argv = ["upscale", str(tmp_path / "srg2.safetensors"), str(tmp_path / "in"), "-o"]
    argv += [str(tmp_path / "out"), "--attention-maps", str(tmp_path / "maps"), "--quiet"]
    assert main(argv) == 0
    names = sorted(p.name for p in (tmp_path / "maps").iterdir())
    assert names == [f"a_switch{i}_{kind}.png" for i in (0, 1) for kind in ("argmax", "max_weight")]


def test_import_srkit_stays_cheap():
    import subprocess
    import sys

    code = "import sys, srkit; print('torch' in sys.modules, hasattr(srkit, 'upscale'))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["False", "True"]


def test_cli_rejects_a_tile_batch_below_one(workspace, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _upscale(workspace, "--tile-batch", "0")
    assert exit_info.value.code == 2
    assert "--tile-batch: tile batch must be >= 1, got 0" in capsys.readouterr().err
