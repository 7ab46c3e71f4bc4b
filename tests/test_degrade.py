"""Real-world degradations (srkit.data.degrade): each stage against its definition, the
pipeline's reproducibility, and its use by the dataset and the trainer."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from srkit.config import validate_config
from srkit.data.datasets import SRDataset
from srkit.data.degrade import (
    PRESETS,
    Blur,
    DegradationPipeline,
    Jpeg,
    Noise,
    Resize,
    Sharpen,
    anisotropic_kernel,
    circular_lowpass_kernel,
    filter2d,
    gaussian_taps,
    jpeg_round_trip,
    poisson_noise,
)
from srkit.data.sampler import TrainSampler
from srkit.train.build import degradation_pipeline
from test_trainer import read_losses


def realesrgan(scale: int = 4) -> DegradationPipeline:
    return DegradationPipeline.from_settings(PRESETS["realesrgan"], scale)


def smooth_image(size: int = 64, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, size // 8, size // 8, generator=generator)
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


# --------------------------------------------------------------------------- kernels


@pytest.mark.parametrize("shape", ["gaussian", "generalized", "plateau"])
def test_blur_kernels_sum_to_one(shape):
    for size, sigma_x, sigma_y, angle, beta in [(7, 0.2, 0.2, 0.0, 0.5), (21, 3.0, 1.0, 1.0, 4.0)]:
        kernel = anisotropic_kernel(size, sigma_x, sigma_y, angle, shape, beta)
        assert kernel.shape == (size, size) and kernel.dtype == torch.float32
        assert kernel.sum().item() == pytest.approx(1.0, abs=1e-6)
        assert (kernel >= 0).all()


def test_every_drawn_kernel_sums_to_one_and_has_a_drawn_odd_size():
    blur = Blur(kernel_sizes=(7, 13), sinc_probability=0.3)
    rng = np.random.default_rng(0)
    sizes = set()
    for _ in range(60):
        kernel = blur.draw_kernel(rng)
        sizes.add(kernel.shape[-1])
        assert kernel.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert sizes == {7, 9, 11, 13}


def test_gaussian_second_moments_are_the_configured_covariance():
    sigma_x, sigma_y, angle = 2.0, 1.0, 0.5
    kernel = anisotropic_kernel(41, sigma_x, sigma_y, angle).double()
    axis = torch.arange(41.0, dtype=torch.float64) - 20
    x, y = torch.meshgrid(axis, axis, indexing="xy")
    assert (kernel * x).sum().item() == pytest.approx(0.0, abs=1e-9)  # centred
    cos, sin = math.cos(angle), math.sin(angle)
    rotation = torch.tensor([[cos, -sin], [sin, cos]], dtype=torch.float64)
    expected = rotation @ torch.diag(torch.tensor([sigma_x**2, sigma_y**2])).double() @ rotation.T
    measured = torch.tensor(
        [
            [(kernel * x * x).sum(), (kernel * x * y).sum()],
            [(kernel * x * y).sum(), (kernel * y * y).sum()],
        ]
    )
    assert torch.allclose(measured, expected, rtol=1e-3, atol=1e-4)


def test_isotropic_gaussian_variance_is_sigma_squared():
    kernel = anisotropic_kernel(31, 2.5, 2.5).double()
    axis = torch.arange(31.0, dtype=torch.float64) - 15
    x, _ = torch.meshgrid(axis, axis, indexing="xy")
    assert (kernel * x * x).sum().item() == pytest.approx(2.5**2, rel=1e-3)


@pytest.mark.parametrize("cutoff", [math.pi / 2, math.pi / 3])
def test_sinc_kernel_passes_below_and_stops_above_its_cutoff(cutoff):
    kernel = circular_lowpass_kernel(cutoff, 41).double()
    assert kernel.sum().item() == pytest.approx(1.0, abs=1e-6)
    n = 256
    response = torch.fft.fft2(kernel, s=(n, n)).abs()
    frequencies = torch.fft.fftfreq(n, dtype=torch.float64) * 2 * math.pi
    fy, fx = torch.meshgrid(frequencies, frequencies, indexing="ij")
    radius = (fx**2 + fy**2).sqrt()
    assert response[radius < 0.7 * cutoff].min() > 0.85
    assert response[(radius > 1.3 * cutoff) & (radius < math.pi)].max() < 0.12
    assert response[(radius > 1.3 * cutoff) & (radius < math.pi)].mean() < 0.02


def test_filter2d_is_a_convolution_with_the_kernel():
    kernel = anisotropic_kernel(7, 2.0, 0.5, 0.7)
    impulse = torch.zeros(1, 3, 21, 21)
    impulse[..., 10, 10] = 1.0
    # A convolution (not a correlation) of an impulse reproduces the kernel itself.
    out = filter2d(impulse, kernel)
    assert out.shape == impulse.shape
    assert torch.allclose(out[0, 1, 7:14, 7:14], kernel, atol=1e-7)
    asymmetric = torch.zeros(3, 3)
    asymmetric[0, 2] = 1.0  # a convolution moves an impulse where the kernel's weight is
    moved = filter2d(impulse, asymmetric)
    assert moved[0, 0, 9, 11] == 1.0 and moved.sum() == 3.0


# --------------------------------------------------------------------------- stages


def test_gaussian_noise_has_the_configured_sigma():
    grey_image = torch.full((1, 3, 256, 256), 0.5)
    for sigma in (5.0, 20.0):
        noise = Noise(gaussian_probability=1.0, gaussian_sigma=(sigma, sigma), grey_probability=0)
        out = noise(grey_image, np.random.default_rng(1))
        measured = (out - grey_image).std().item() * 255
        assert measured == pytest.approx(sigma, rel=0.05)


def test_grey_noise_is_the_same_in_every_channel_and_colour_noise_is_not():
    image = torch.full((1, 3, 64, 64), 0.5)
    for grey in (True, False):
        noise = Noise(
            gaussian_probability=1.0, gaussian_sigma=(10, 10), grey_probability=float(grey)
        )
        difference = noise(image, np.random.default_rng(0)) - image
        assert torch.equal(difference[:, 0], difference[:, 1]) == grey


def test_poisson_noise_has_shot_noise_sigma():
    level, scale = 0.5, 2.0
    image = torch.full((1, 3, 256, 256), level)
    noise = poisson_noise(image, scale, grey=False, rng=np.random.default_rng(3))
    counts = round(level * 255)
    assert noise.std().item() == pytest.approx(scale * math.sqrt(counts) / 255, rel=0.05)
    assert noise.mean().item() == pytest.approx(0.0, abs=2e-3)


@pytest.mark.parametrize("quality", [30, 75, 95])
def test_jpeg_equals_a_pillow_round_trip(quality):
    image = smooth_image(48)
    pixels = (image[0] * 255).round().byte().permute(1, 2, 0).numpy()
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    expected = np.array(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    out = jpeg_round_trip(image, quality)
    assert torch.equal((out[0] * 255).round().byte().permute(1, 2, 0), torch.from_numpy(expected))
    assert not torch.equal(out, (image * 255).round() / 255)  # it did compress


def test_jpeg_stage_draws_quality_in_range():
    image = smooth_image(32)
    stage = Jpeg(quality=(40, 40))
    assert torch.equal(stage(image, np.random.default_rng(5)), jpeg_round_trip(image, 40))


def test_resize_output_sizes():
    image = torch.rand(1, 3, 40, 60)
    rng = np.random.default_rng(0)
    assert Resize(up_down_keep=(0, 0, 1))(image, rng).shape == image.shape
    for _ in range(10):
        down = Resize(up_down_keep=(0, 1, 0), scale=(0.5, 0.5))(image, rng)
        assert down.shape[-2:] == (20, 30)
        up = Resize(up_down_keep=(1, 0, 0), scale=(0.1, 1.5), modes=("bicubic",))(image, rng)
        assert 40 <= up.shape[-2] <= 60 and 60 <= up.shape[-1] <= 90
    relative = Resize(up_down_keep=(0, 1, 0), scale=(0.5, 0.5))(image, rng, reference=(10, 16))
    assert relative.shape[-2:] == (5, 8)


def test_sharpen_is_a_separable_unsharp_mask():
    image = smooth_image(64)
    taps = gaussian_taps(25)
    assert taps.shape == (51,) and taps.sum().item() == pytest.approx(1.0, abs=1e-6)
    blurred_2d = filter2d(image, torch.outer(taps, taps))
    residual = image - blurred_2d
    mask = (residual.abs() * 255 > 10).float()
    soft = filter2d(mask, torch.outer(taps, taps))
    expected = soft * (image + 0.5 * residual).clamp(0, 1) + (1 - soft) * image
    assert torch.allclose(Sharpen()(image), expected, atol=1e-5)


# --------------------------------------------------------------------------- pipeline


def test_pipeline_gives_lr_of_one_scale_th_in_8_bit_levels():
    hr = smooth_image(64)
    for scale in (2, 4):
        lr = realesrgan(scale)(hr, np.random.default_rng(0))
        assert lr.shape == (1, 3, 64 // scale, 64 // scale) and lr.dtype == torch.float32
        assert torch.equal(lr, (lr * 255).round() / 255)
        assert lr.min() >= 0 and lr.max() <= 1


def test_same_seed_same_lr_other_seed_different():
    pipeline, hr = realesrgan(), smooth_image(64)
    first = pipeline(hr, np.random.default_rng(7))
    assert torch.equal(first, pipeline(hr, np.random.default_rng(7)))
    assert not torch.equal(first, pipeline(hr, np.random.default_rng(8)))


def test_pipeline_runs_in_fp32_under_autocast():
    pipeline, hr = realesrgan(), smooth_image(64)
    plain = pipeline(hr, np.random.default_rng(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = pipeline(hr, np.random.default_rng(2))
    assert under_autocast.dtype == torch.float32
    assert torch.equal(plain, under_autocast)


def test_second_pass_and_stages_follow_their_probabilities():
    settings = {
        "first": {"probability": 1.0, "noise": {"gaussian_probability": 1.0}},
        "second": None,
        "final": {"sinc_probability": 0.0, "modes": ["area"], "jpeg_first_probability": 0.5},
    }
    pipeline = DegradationPipeline.from_settings(settings, 2)
    assert len(pipeline.passes) == 1 and pipeline.passes[0].blur is None
    hr = torch.full((1, 3, 32, 32), 128 / 255)
    lr = pipeline(hr, np.random.default_rng(0))
    assert lr.std() > 0  # noise ran
    never = dict(settings, first={"probability": 0.0, "noise": {}})
    assert torch.equal(
        DegradationPipeline.from_settings(never, 2)(hr, np.random.default_rng(0)), hr[..., ::2, ::2]
    )


# --------------------------------------------------------------------------- dataset, trainer


def degraded_config(make_config, **train_changes) -> dict:
    raw = make_config()
    raw["data"]["train"]["degradation"] = {"preset": "realesrgan"}
    raw["data"]["train"].update(train_changes)
    return raw


def test_dataset_lr_depends_on_sample_seed_only(make_config):
    config = validate_config(degraded_config(make_config))
    pipeline = degradation_pipeline(config)
    data = config.data.train
    first = SRDataset(data.hr, scale=2, patch_size=32, degradation=pipeline)
    second = SRDataset(data.hr, scale=2, patch_size=32, degradation=pipeline)
    a, b = first[(1, 1234)], second[(1, 1234)]
    assert a["lr"].shape == (3, 16, 16) and a["hr"].shape == (3, 32, 32)
    assert torch.equal(a["lr"], b["lr"]) and torch.equal(a["hr"], b["hr"])
    assert not torch.equal(a["lr"], first[(1, 1235)]["lr"])
    # hr is the sharpened target of the preset, not the plain patch.
    plain = SRDataset(data.hr, scale=2, patch_size=32)[(1, 1234)]["hr"]
    assert torch.equal(a["hr"], pipeline.target(plain[None])[0])


def test_resumed_sampler_reproduces_the_lr_of_an_uninterrupted_run(make_config):
    config = validate_config(degraded_config(make_config))
    dataset = SRDataset(
        config.data.train.hr, scale=2, patch_size=32, degradation=degradation_pipeline(config)
    )

    def batches(start: int, count: int) -> list[torch.Tensor]:
        loader = iter(
            torch.utils.data.DataLoader(
                dataset, batch_sampler=TrainSampler(len(dataset), 4, seed=3, start_step=start)
            )
        )
        return [next(loader)["lr"] for _ in range(count)]

    straight, resumed = batches(0, 5), batches(3, 2)
    assert torch.equal(straight[3], resumed[0]) and torch.equal(straight[4], resumed[1])
    assert not torch.equal(straight[3], straight[4])
    other_seed = iter(
        torch.utils.data.DataLoader(dataset, batch_sampler=TrainSampler(len(dataset), 4, seed=4))
    )
    assert not torch.equal(next(other_seed)["lr"], straight[0])


def test_resume_with_degradations_continues_exactly(make_config):
    from srkit.train.trainer import Trainer
    from test_trainer import read_losses

    raw = degraded_config(make_config)
    raw["train"]["iterations"] = 4
    raw["logging"]["checkpoint_every"] = 2
    Trainer(validate_config({**raw, "name": "straight"}), quiet=True).run()
    Trainer(
        validate_config({**raw, "name": "resumed", "train": {**raw["train"], "iterations": 2}}),
        quiet=True,
    ).run()
    Trainer(validate_config({**raw, "name": "resumed"}), resume="auto", quiet=True).run()
    runs = Path(raw["output_dir"])
    straight, resumed = read_losses(runs / "straight"), read_losses(runs / "resumed")
    assert sorted(straight) == [1, 2, 3, 4]
    assert straight == resumed


# --------------------------------------------------------------------------- commands


def write_degrade_config(tmp_path: Path, make_config, degradation: dict | None) -> Path:
    import yaml

    raw = make_config()
    if degradation is not None:
        raw["data"]["train"]["degradation"] = degradation
    path = tmp_path / "degrade.yml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_degrade_command_writes_samples_and_a_contact_sheet(make_config, image_folders, tmp_path):
    from srkit.cli import main
    from srkit.data.io import read_rgb

    config = write_degrade_config(tmp_path, make_config, {"preset": "realesrgan"})
    images = sorted(image_folders["train"].glob("*.png"))[:2]
    out = tmp_path / "shown"
    assert main(["degrade", str(config), *map(str, images), "-o", str(out), "-n", "3"]) == 0
    samples = sorted(out.glob("img*_*.png"))
    assert [p.name for p in samples] == [f"img{i}_{k}.png" for i in (0, 1) for k in (1, 2, 3)]
    first = read_rgb(samples[0])
    assert first.shape == (32, 32, 3)  # 64 px images at scale 2
    assert not np.array_equal(first, read_rgb(samples[1]))
    sheet = read_rgb(out / "contact_sheet.png")
    assert sheet.shape == (2 * 32 + 4, 4 * 32 + 3 * 4, 3)  # 2 rows of (bicubic + 3 samples)
    # The same seed writes the same samples; another seed other ones.
    again = tmp_path / "again"
    assert main(["degrade", str(config), str(images[0]), "-o", str(again), "-n", "1"]) == 0
    assert np.array_equal(read_rgb(again / "img0_1.png"), first)
    other = tmp_path / "other"
    assert (
        main(["degrade", str(config), str(images[0]), "-o", str(other), "-n", "1", "--seed", "9"])
        == 0
    )
    assert not np.array_equal(read_rgb(other / "img0_1.png"), first)


def test_degrade_command_without_degradations_is_one_line_exit_2(
    make_config, image_folders, tmp_path, capsys
):
    from srkit.cli import main

    config = write_degrade_config(tmp_path, make_config, None)
    image = next(image_folders["train"].glob("*.png"))
    assert main(["degrade", str(config), str(image), "-o", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "data.train.degradation is not set" in err


def test_prepare_degrade_writes_a_fixed_seed_degraded_validation_set(make_config, tmp_path):
    from conftest import write_photo_like
    from srkit.cli import main
    from srkit.data.io import read_rgb

    photos = tmp_path / "photos"
    for index in range(4):
        write_photo_like(photos / f"p{index}.png", (64, 72), seed=index)
    config = write_degrade_config(tmp_path, make_config, {"preset": "realesrgan"})
    common = ["--scales", "2", "--crop-size", "32", "--step", "32", "--holdout-every", "2"]
    out = tmp_path / "ds"
    assert main(["prepare", str(photos), "-o", str(out), *common, "--degrade", str(config)]) == 0
    degraded = sorted((out / "heldout/lr_x2_degraded").glob("*.png"))
    assert [p.name for p in degraded] == ["p1.png", "p3.png"]
    bicubic = read_rgb(out / "heldout/lr_x2/p1.png")
    first = read_rgb(degraded[0])
    assert first.shape == bicubic.shape == (32, 36, 3)
    assert not np.array_equal(first, bicubic)
    # Fixed seed: a fresh preparation writes the very same files.
    again = tmp_path / "again"
    assert main(["prepare", str(photos), "-o", str(again), *common, "--degrade", str(config)]) == 0
    assert np.array_equal(read_rgb(again / "heldout/lr_x2_degraded/p1.png"), first)
    # The set validates a run: it is a paired LR folder for data.val.
    raw = make_config()
    raw["data"]["val"].update(hr=str(out / "heldout/hr"), lr=str(out / "heldout/lr_x2_degraded"))
    assert SRDataset(raw["data"]["val"]["hr"], raw["data"]["val"]["lr"], scale=2)[0][
        "lr"
    ].shape == (3, 32, 36)
    # Another degradation is another preparation: refused in the same folder.
    write_degrade_config(tmp_path, make_config, {"preset": "realesrgan", "second": None})
    assert main(["prepare", str(photos), "-o", str(out), *common, "--degrade", str(config)]) == 2


def test_gan_stage_with_degradations_and_a_spectral_unet_discriminator_trains(make_config):
    """realesrgan_x4's shape in miniature: degraded LR, sharpened targets, U-Net D with
    spectral norm, pixel + GAN terms."""
    from srkit.train.trainer import Trainer

    raw = degraded_config(make_config)
    raw["networks"]["discriminator"] = {"type": "unet", "nf": 4, "norm": "spectral"}
    raw["losses"].append(
        {"type": "gan", "weight": 0.1, "gan_type": "gan", "discriminator": "discriminator"}
    )
    raw["train"]["iterations"] = 2
    Trainer(validate_config(raw), quiet=True).run()
    losses = read_losses(Path(raw["output_dir"]) / raw["name"])
    assert sorted(losses) == [1, 2] and all(np.isfinite(row["g/gan"]) for row in losses.values())


def test_degradation_benchmark_times_workers_and_stages():
    """benchmarks/degradations.py still runs against the current pipeline."""
    from repo_scripts import load_script

    bench = load_script("benchmarks/degradations.py", "bench_degradations")
    hr = bench.patches(None, 4, 32, seed=0)
    pipeline = realesrgan(2)
    threads = torch.get_num_threads()
    try:
        ms, shares = bench.worker_cost(pipeline, hr)
        batched = bench.batched_cost(pipeline, hr, 2, 1)
    finally:
        torch.set_num_threads(threads)
    assert ms > 0 and batched > 0 and set(shares) >= {"Blur", "Resize", "Noise", "Sharpen"}
    assert 0.5 < sum(shares.values()) <= 1.0  # the stages are most of the time, never more
    assert not hasattr(bench.degrade.Blur.__call__, "__wrapped__")  # timers removed again


def test_unknown_kernel_shape_names_the_key(make_config):
    from srkit.errors import ConfigError

    raw = make_config()
    raw["data"]["train"]["degradation"] = {"first": {"blur": {"kernels": {"isoo": 1.0}}}}
    with pytest.raises(ConfigError) as caught:
        validate_config(raw)
    message = str(caught.value)
    assert "data.train.degradation.first.blur.kernels.isoo: expected one of 'iso'" in message
    assert "[key]" not in message and "\n" not in message


def test_preset_values_are_real_esrgans_and_keys_override_them(make_config):
    raw = make_config()
    raw["data"]["train"]["degradation"] = {
        "preset": "realesrgan",
        "second": {"noise": {"gaussian_sigma": [1, 5]}},
        "sharpen_targets": None,
    }
    degradation = validate_config(raw).data.train.degradation
    assert degradation.first.resize.up_down_keep == (0.2, 0.7, 0.1)
    assert degradation.first.noise.gaussian_sigma == (1, 30)
    assert degradation.second.blur.probability == 0.8 and degradation.second.blur.sigma == (
        0.2,
        1.5,
    )
    assert degradation.second.noise.gaussian_sigma == (1, 5)  # overridden
    assert degradation.second.noise.poisson_scale == (0.05, 2.5)  # the rest of the preset kept
    assert degradation.final.sinc_probability == 0.8 and degradation.sharpen_targets is None
    assert make_config()["data"]["train"].get("degradation") is None  # off by default
    assert validate_config(make_config()).data.train.degradation is None
