"""VGG feature extractors (torchvision layout, weight lookup) and the perceptual loss."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from srkit.errors import CheckpointError, ConfigError, SrkitError
from srkit.losses.perceptual import PerceptualLoss
from srkit.nets import vgg as vgg_module
from srkit.nets.registry import build_network, network_names
from srkit.nets.vgg import (
    VGGFeatureExtractor,
    hub_checkpoint_path,
    load_vgg_weights,
    make_vgg_features,
    vgg_layer_names,
)

# torchvision's vgg16().features / vgg19().features: where the convolutions sit (written out by
# hand from torchvision's layout: conv, relu pairs, a max-pool after each block).
VGG16_CONVS = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
VGG19_CONVS = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]
VGG16_WIDTHS = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
VGG19_WIDTHS = [64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512]


def _torchvision_like_state_dict(arch: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict shaped like torchvision's file: features.* plus classifier.*."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    convs, widths = (VGG16_CONVS, VGG16_WIDTHS) if arch == "vgg16" else (VGG19_CONVS, VGG19_WIDTHS)
    previous = 3
    for index, width in zip(convs, widths, strict=True):
        fan_in = previous * 9
        weight = torch.randn(width, previous, 3, 3, generator=generator) * (2 / fan_in) ** 0.5
        state[f"features.{index}.weight"] = weight
        state[f"features.{index}.bias"] = torch.randn(width, generator=generator) * 0.01
        previous = width
    state["classifier.0.weight"] = torch.zeros(8, 4)  # stand-ins; must be ignored
    state["classifier.0.bias"] = torch.zeros(8)
    return state


@pytest.fixture(scope="module")
def vgg19_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "vgg19-random.pth"
    torch.save(_torchvision_like_state_dict("vgg19"), path)
    return path


# -- layout --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "convs", "widths"),
    [("vgg16", VGG16_CONVS, VGG16_WIDTHS), ("vgg19", VGG19_CONVS, VGG19_WIDTHS)],
)
def test_state_dict_keys_match_torchvision_layout(arch, convs, widths):
    state = make_vgg_features(arch).state_dict()
    expected = {f"{i}.{kind}" for i in convs for kind in ("weight", "bias")}
    assert set(state) == expected
    for index, width in zip(convs, widths, strict=True):
        assert state[f"{index}.weight"].shape[0] == width
    assert len(make_vgg_features(arch)) == convs[-1] + 3  # last conv, its ReLU, pool5


def test_layer_names_map_to_torchvision_indices():
    names16, names19 = vgg_layer_names("vgg16"), vgg_layer_names("vgg19")
    assert [names16[f"conv{b}_{i}"] for b, i in _convs(16)] == VGG16_CONVS
    assert [names19[f"conv{b}_{i}"] for b, i in _convs(19)] == VGG19_CONVS
    assert names19["relu5_4"] == 35 and names19["pool5"] == 36 and names19["pool1"] == 4
    assert names16["relu3_3"] == 15 and names16["pool3"] == 16 and "conv5_4" not in names16


def _convs(depth):
    per_block = (2, 2, 3, 3, 3) if depth == 16 else (2, 2, 4, 4, 4)
    return [(b + 1, i + 1) for b, count in enumerate(per_block) for i in range(count)]


# -- extraction ----------------------------------------------------------------------------------


def test_feature_shapes_at_named_layers():
    layers = ("relu1_2", "conv2_2", "relu3_4", "conv4_4", "conv5_4", "pool5")
    extractor = VGGFeatureExtractor("vgg19", layers)
    out = extractor(torch.rand(2, 3, 64, 96))
    assert list(out) == list(layers)
    assert out["relu1_2"].shape == (2, 64, 64, 96)
    assert out["conv2_2"].shape == (2, 128, 32, 48)
    assert out["relu3_4"].shape == (2, 256, 16, 24)
    assert out["conv4_4"].shape == (2, 512, 8, 12)
    assert out["conv5_4"].shape == (2, 512, 4, 6)
    assert out["pool5"].shape == (2, 512, 2, 3)


def test_extractor_stops_at_the_deepest_requested_layer():
    extractor = VGGFeatureExtractor("vgg19", ("relu2_2", "conv1_1"))
    assert len(extractor.features) == vgg_layer_names("vgg19")["relu2_2"] + 1
    assert set(extractor.state_dict()) == {
        f"features.{i}.{k}" for i in (0, 2, 5, 7) for k in ("weight", "bias")
    }


def test_conv_layers_are_before_relu_and_relu_layers_after():
    torch.manual_seed(0)
    extractor = VGGFeatureExtractor("vgg16", ("conv3_1", "relu3_1"))
    out = extractor(torch.rand(1, 3, 32, 32))
    assert (out["conv3_1"] < 0).any()  # pre-ReLU keeps negatives (not overwritten in place)
    torch.testing.assert_close(out["relu3_1"], out["conv3_1"].clamp_min(0))


def test_input_normalisation_and_greyscale():
    extractor = VGGFeatureExtractor("vgg16", ("conv1_1",), normalize_input=True)
    plain = VGGFeatureExtractor("vgg16", ("conv1_1",), normalize_input=False)
    plain.load_state_dict(extractor.state_dict())
    x = torch.rand(1, 3, 16, 16)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(extractor(x)["conv1_1"], plain((x - mean) / std)["conv1_1"])
    grey = torch.rand(1, 1, 16, 16)
    torch.testing.assert_close(
        extractor(grey)["conv1_1"], extractor(grey.expand(-1, 3, -1, -1))["conv1_1"]
    )


def test_frozen_extractor_stays_in_eval_mode_but_passes_gradients_to_its_input():
    extractor = VGGFeatureExtractor("vgg16", ("relu2_1",))
    assert not extractor.training
    assert not any(p.requires_grad for p in extractor.parameters())
    extractor.train()
    assert not extractor.training
    assert not any(m.training for m in extractor.modules())
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    extractor(x)["relu2_1"].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_unknown_layer_is_a_user_error():
    with pytest.raises(SrkitError, match="did you mean 'conv5_3'"):
        VGGFeatureExtractor("vgg16", ("conv5_4",))


# -- weights -------------------------------------------------------------------------------------


def test_torchvision_file_loads_and_classifier_keys_are_ignored(vgg19_file):
    state = load_vgg_weights("vgg19", vgg19_file)
    assert set(state) == {f"features.{i}.{k}" for i in VGG19_CONVS for k in ("weight", "bias")}
    extractor = VGGFeatureExtractor("vgg19", ("relu3_1",), state_dict=state)
    torch.testing.assert_close(extractor.features[10].weight, state["features.10.weight"])


def test_safetensors_files_load(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "vgg16.safetensors"
    source = _torchvision_like_state_dict("vgg16", seed=3)
    save_file(source, str(path))
    state = load_vgg_weights("vgg16", path)
    torch.testing.assert_close(state["features.28.bias"], source["features.28.bias"])


def test_hub_cache_is_used_when_no_path_is_given(monkeypatch, tmp_path, vgg19_file):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    assert hub_checkpoint_path("vgg19") == cached
    cached.parent.mkdir(parents=True)
    cached.write_bytes(vgg19_file.read_bytes())
    state = load_vgg_weights("vgg19")
    torch.testing.assert_close(
        state["features.0.weight"], torch.load(vgg19_file)["features.0.weight"]
    )


def test_missing_weights_error_says_where_it_looked_and_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_download(*args, **kwargs):
        raise AssertionError("must not download without download=True")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    with pytest.raises(ConfigError) as error:
        load_vgg_weights("vgg19")
    message = str(error.value)
    assert "\n" not in message
    assert str(tmp_path / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth") in message
    assert "download torchvision's vgg19-dcbb9e9d.pth" in message and "pass its path" in message

    with pytest.raises(ConfigError, match="does not exist") as error:
        load_vgg_weights("vgg16", tmp_path / "nowhere.pth")
    assert "vgg16-397923af.pth" in str(error.value)


def test_download_happens_only_when_asked(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    calls = []

    def fake_download(url, **kwargs):
        calls.append((url, kwargs))
        return _torchvision_like_state_dict("vgg16")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", fake_download)
    state = load_vgg_weights("vgg16", download=True)
    assert "features.28.weight" in state
    ((url, kwargs),) = calls
    assert url == "https://download.pytorch.org/models/vgg16-397923af.pth"
    assert kwargs["weights_only"] is True and kwargs["check_hash"] is True


def test_foreign_or_mismatched_files_are_checkpoint_errors(tmp_path, vgg19_file):
    with pytest.raises(CheckpointError, match=r"not look like torchvision vgg16 weights"):
        load_vgg_weights("vgg16", vgg19_file)
    with pytest.raises(CheckpointError, match=r"features\.0\.weight has shape"):
        load_vgg_weights("vgg16", _save(tmp_path, {"features.0.weight": torch.zeros(3, 3)}))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_vgg_weights("vgg16", garbage)


def _save(tmp_path, state):
    path = tmp_path / "weights.pth"
    torch.save(state, path)
    return path


def test_registered_feature_networks(vgg19_file):
    assert {"vgg16_features", "vgg19_features"} <= set(network_names("feature"))
    frozen = build_network("vgg19_features", layer="relu2_2", weights=str(vgg19_file))
    out = frozen(torch.rand(1, 3, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (1, 128, 16, 16)
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())
    # A trainable VGG-shaped feature net from random init (SPEC section 6).
    trainable = build_network("vgg16_features", layer="conv4_3", pretrained=False, trainable=True)
    trainable.train()
    assert trainable.training and all(p.requires_grad for p in trainable.parameters())
    assert trainable(torch.rand(1, 1, 32, 32)).shape == (1, 512, 4, 4)


# -- perceptual loss -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def perceptual(vgg19_file):
    return PerceptualLoss("vgg19", {"relu2_2": 0.5, "conv3_4": 1.0}, "l1", weights=vgg19_file)


def test_perceptual_loss_vgg_is_not_in_state_dict_or_parameters(perceptual):
    assert perceptual.state_dict() == {}
    assert list(perceptual.parameters()) == []
    assert len(list(perceptual.modules())) == 1
    perceptual.train()
    assert not perceptual.extractor.training


def test_perceptual_loss_value_and_gradient(perceptual):
    torch.manual_seed(0)
    hr = torch.rand(2, 3, 32, 32)
    sr = (hr + 0.1 * torch.randn_like(hr)).clamp(0, 1).requires_grad_()
    assert perceptual(hr, hr) == 0
    loss = perceptual(sr, hr)
    features_sr = perceptual.extractor(sr)
    features_hr = perceptual.extractor(hr)
    expected = (
        0.5 * (features_sr["relu2_2"] - features_hr["relu2_2"]).abs().mean()
        + (features_sr["conv3_4"] - features_hr["conv3_4"]).abs().mean()
    )
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0


@pytest.mark.parametrize("criterion", ["l1", "l2", "charbonnier"])
def test_perceptual_criteria_are_chunk_invariant(vgg19_file, criterion):
    loss = PerceptualLoss("vgg19", {"relu1_2": 1.0}, criterion, weights=vgg19_file)
    torch.manual_seed(1)
    sr, hr = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    whole = loss(sr, hr)
    chunks = torch.stack([loss(sr[i : i + 2], hr[i : i + 2]) for i in (0, 2)]).mean()
    torch.testing.assert_close(whole, chunks)
    assert whole > 0


def test_perceptual_loss_runs_in_float32_under_autocast(perceptual):
    torch.manual_seed(2)
    sr, hr = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    reference = perceptual(sr, hr)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = perceptual(sr.bfloat16(), hr)
    assert under_autocast.dtype == torch.float32
    # Only the bf16 rounding of the input remains (the VGG itself runs in fp32).
    torch.testing.assert_close(under_autocast, perceptual(sr.bfloat16().float(), hr))
    assert abs(under_autocast - reference) < 0.02 * reference


def test_perceptual_loss_keeps_its_vgg_float32_when_cast(vgg19_file):
    loss = PerceptualLoss("vgg19", {"relu1_1": 1.0}, weights=vgg19_file)
    loss.half().to("cpu")
    assert all(p.dtype == torch.float32 for p in loss.extractor.parameters())
    assert loss(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)).dtype == torch.float32


def test_perceptual_loss_defaults_and_shared_extractor(monkeypatch, tmp_path, vgg19_file):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match=r"vgg19-dcbb9e9d\.pth"):
        PerceptualLoss()  # default: VGG19 conv5_4 from the (empty) hub cache
    shared = vgg_module.pretrained_vgg("vgg19", ("conv5_4", "relu1_1"), weights=vgg19_file)
    loss = PerceptualLoss(extractor=shared)
    assert loss.layer_weights == {"conv5_4": 1.0}
    assert loss(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)) > 0
    with pytest.raises(ValueError, match="does not provide"):
        PerceptualLoss(layers={"relu2_2": 1.0}, extractor=shared)


# -- real ImageNet weights (slow: fetches them with the data script) ----------------------------


@pytest.fixture(scope="module")
def real_vgg16(tmp_path_factory) -> Path:
    existing = os.environ.get("SRKIT_VGG16_WEIGHTS")
    if existing and Path(existing).is_file():
        return Path(existing)
    script = Path(__file__).resolve().parents[2] / "shared" / "data" / "get-vgg16.sh"
    if not script.is_file():
        pytest.skip(f"no VGG16 weights: set SRKIT_VGG16_WEIGHTS or provide {script}")
    path = tmp_path_factory.mktemp("vgg16") / "vgg16.pth"
    result = subprocess.run(["bash", str(script), str(path)], capture_output=True, text=True)
    if result.returncode != 0 or not path.is_file():
        pytest.skip(f"could not fetch VGG16 weights: {result.stderr.strip()[-300:]}")
    return path


@pytest.mark.slow
def test_real_vgg16_features_see_blur_but_not_tiny_noise(real_vgg16):
    skimage_data = pytest.importorskip("skimage.data")
    image = torch.from_numpy(skimage_data.astronaut()[100:292, 150:342].copy()).float() / 255
    image = image.permute(2, 0, 1)[None]  # (1, 3, 192, 192)
    kernel = torch.full((3, 1, 5, 5), 1 / 25)
    blurred = F.conv2d(F.pad(image, (2, 2, 2, 2), mode="reflect"), kernel, groups=3)
    noisy = image + 0.002 * torch.randn(image.shape, generator=torch.Generator().manual_seed(0))

    loss = PerceptualLoss("vgg16", {"relu2_2": 1.0, "conv5_3": 1.0}, weights=real_vgg16)
    blur_distance = float(loss(blurred, image))
    noise_distance = float(loss(noisy, image))
    assert blur_distance > 10 * noise_distance, (blur_distance, noise_distance)

    # ImageNet features respond to content: the image is closer to itself shifted by a pixel
    # than to a different image.
    other = (
        torch.from_numpy(skimage_data.coffee()[:192, :192].copy()).float().permute(2, 0, 1)[None]
    )
    shifted = torch.roll(image, shifts=1, dims=3)
    assert float(loss(shifted, image)) < float(loss(other / 255, image))
