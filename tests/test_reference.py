"""Whole-image references (SPSR3's extra inputs): masks and centres, the datasets (turned with
the patch, deterministic), and tiled inference that keeps the whole image in view."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from srkit.data.datasets import SRDataset, UnpairedDataset
from srkit.data.reference import (
    extra_inputs,
    orient_reference,
    patch_center,
    patch_mask,
    tile_inputs,
    whole_image_inputs,
)
from srkit.errors import ConfigError
from srkit.infer.api import upscale_tensor
from srkit.infer.tiling import plan_tiles, tile_alignment
from switched_nets import finished, tiny


def mask_centroid(mask: torch.Tensor) -> tuple[float, float]:
    """(x, y) in [-1, 1] of a (S, S) mask's centre of mass."""
    size = mask.shape[-1]
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    total = mask.sum()
    return float((mask.sum(0) * coords).sum() / total), float((mask.sum(1) * coords).sum() / total)


# ---------------------------------------------------------------------------- mask, centre


def test_mask_and_centre_of_a_patch():
    mask = patch_mask(40, 56, (8, 14, 12, 21), 16)
    assert mask.shape == (16, 16) and float(mask.max()) == 1.0 and float(mask.min()) == 0.0
    # Fractional coverage: the mask's mass is the patch's share of the image.
    assert float(mask.sum()) == pytest.approx(16 * 16 * (12 * 21) / (40 * 56), rel=1e-5)
    centre = patch_center(40, 56, (8, 14, 12, 21))
    assert centre.tolist() == pytest.approx([(14 + 10.5) / 56 * 2 - 1, (8 + 6) / 40 * 2 - 1])
    # The mask's centre of mass is the centre, up to the cells' discretisation.
    assert mask_centroid(mask) == pytest.approx(tuple(centre.tolist()), abs=1 / 16)
    whole = whole_image_inputs(_net("spsr3"), torch.rand(2, 3, 20, 30))
    assert whole["ref"].shape == (2, 4, 16, 16) and whole["ref_center"].shape == (2, 2)
    assert torch.equal(whole["ref"][:, 3], torch.ones(2, 16, 16))
    assert torch.equal(whole["ref_center"], torch.zeros(2, 2))


@pytest.mark.parametrize("rotations", [True, False])
def test_orientation_moves_mask_and_centre_together(rotations):
    mask = patch_mask(30, 30, (3, 17, 6, 9), 16)
    ref = torch.stack((torch.rand(16, 16), mask))
    # (The mask's own centre of mass, so that turned and moved must agree exactly.)
    centre = torch.tensor(mask_centroid(mask))
    for horizontal in (False, True):
        for vertical in (False, True):
            for quarter_turns in range(4):
                turns = (horizontal, vertical, quarter_turns)
                turned, moved = orient_reference(ref, centre, turns, True, rotations)
                assert turned.shape == ref.shape
                assert mask_centroid(turned[1]) == pytest.approx(tuple(moved.tolist()), abs=1e-5)
    assert orient_reference(ref, centre, None, True, True)[1] is centre


def test_unknown_extra_inputs_are_a_config_error():
    class Wants(nn.Module):
        extra_inputs = ("depth_map",)

    with pytest.raises(ConfigError, match="'depth_map', which srkit cannot build"):
        extra_inputs(Wants())
    assert extra_inputs(nn.Identity()) == ()
    assert tile_inputs(nn.Identity(), torch.rand(1, 3, 4, 4))((0, 0, 2, 2)) == {}


# ------------------------------------------------------------------------------ datasets


def _save(path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def paired(tmp_path):
    """HR 128x128 and LR 32x32 pairs; the reference side equals the LR side, so the reference
    picture is the whole LR image itself and the patch must appear in it where the mask is."""
    rng = np.random.default_rng(0)
    for index in range(3):
        lr = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        _save(tmp_path / "lr" / f"{index}.png", lr)
        _save(tmp_path / "hr" / f"{index}.png", np.kron(lr, np.ones((4, 4, 1), dtype=np.uint8)))
    return tmp_path


def check_patch_in_reference(item: dict) -> None:
    ref, lr = item["ref"], item["lr"]
    inside = ref[3] == 1
    assert int(inside.sum()) == lr.shape[1] * lr.shape[2] and float(ref[3][~inside].max()) == 0
    rows, cols = inside.any(1).nonzero()[:, 0], inside.any(0).nonzero()[:, 0]
    region = ref[:3, rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    assert torch.allclose(region, lr, atol=1e-6)  # the patch, turned as the patch was
    # (Patch edges on reference pixel edges here, so the mask is exact and so is its centre.)
    assert mask_centroid(ref[3]) == pytest.approx(tuple(item["ref_center"].tolist()), abs=1e-5)


def test_paired_items_carry_the_reference_of_their_patch(paired):
    dataset = SRDataset(paired / "hr", paired / "lr", scale=4, patch_size=32, reference_size=32)
    orientations = set()
    for seed in range(12):
        item = dataset[(seed % 3, seed)]
        assert item["ref"].shape == (4, 32, 32) and item["ref_center"].shape == (2,)
        check_patch_in_reference(item)
        orientations.add(tuple(item["ref"][:3].flatten()[:4].tolist()))
    # Deterministic (resume sees the same references) ...
    again = dataset[(1, 7)]
    assert torch.equal(again["ref"], dataset[(1, 7)]["ref"])
    # ... and plain datasets are unchanged.
    plain = SRDataset(paired / "hr", paired / "lr", scale=4, patch_size=32)[(1, 7)]
    assert set(plain) == {"lr", "hr", "name"} and torch.equal(plain["lr"], again["lr"])
    # Validation: the whole image is the patch.
    whole = SRDataset(paired / "hr", paired / "lr", scale=4, reference_size=32)[0]
    assert torch.equal(whole["ref"][3], torch.ones(32, 32))


def test_unpaired_items_carry_the_reference_of_their_lr_patch(paired):
    dataset = UnpairedDataset(
        paired / "hr", paired / "lr", scale=4, patch_size=32, reference_size=32
    )
    for seed in range(6):
        check_patch_in_reference(dataset[(seed % 3, seed)])


def test_on_the_fly_items_take_the_reference_from_the_whole_hr_image(paired):
    dataset = SRDataset(paired / "hr", scale=4, patch_size=32, reference_size=32)
    item = dataset[(0, 3)]
    # The HR image resized to the LR size is close to the LR image (here, exactly its blocks).
    assert mask_centroid(item["ref"][3]) == pytest.approx(
        tuple(item["ref_center"].tolist()), abs=1e-5
    )
    inside = item["ref"][3] == 1
    assert int(inside.sum()) == 64


# ------------------------------------------------------------------------- tiled inference


def _net(name: str) -> nn.Module:
    return finished(tiny(name, scale=2))


def test_spsr3_tiled_equals_untiled_and_sees_the_rest_of_the_image():
    """Each tile's reference (same whole image, own mask and centre) keeps tiled output within
    2/255 of untiled. (Trained networks: benchmarks/RESULTS.md, "Switched SPSR and SPSR3"; what
    keeps them tileable is that no layer uses per-image statistics, tested below.)"""
    net = _net("spsr3")
    with torch.no_grad():  # a network that leans on its reference 10x more than a fresh one
        for name, parameter in net.named_parameters():
            if ".context." in name:
                parameter.mul_(10)
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 64, 64, generator=generator)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        whole, _ = upscale_tensor(net, image, tile=0)
        tiled, _ = upscale_tensor(net, image, tile=32, overlap=8)
    assert float((whole - tiled).abs().max()) < 2 / 255
    # Change the image outside the first tile: that tile's own pixels stay.
    plan = plan_tiles(64, 64, 32, 8, tile_alignment(net))
    first_end, second_start = plan.rows[0][1], plan.rows[1][0]
    other = image.clone()
    other[:, :, first_end:, first_end:] = torch.rand(
        1, 3, 64 - first_end, 64 - first_end, generator=generator
    )
    # Where the first tile alone makes the output (the next tiles start at second_start).
    core = (slice(None), slice(None), slice(0, 2 * second_start), slice(0, 2 * second_start))
    changed, _ = upscale_tensor(net, other, tile=32, overlap=8)
    # The reference saw the change (a tile's output is otherwise bit-for-bit reproducible).
    assert float((changed - tiled)[core].abs().max()) > 1e-6
    # A generator without a reference gives that tile's output to the bit.
    switched = _net("spsr_switched")
    before, _ = upscale_tensor(switched, image, tile=32, overlap=8)
    after, _ = upscale_tensor(switched, other, tile=32, overlap=8)
    assert torch.equal(before[core], after[core])


def test_each_tile_gets_the_whole_image_with_its_own_mask_and_centre():
    net = _net("spsr3")
    image = torch.rand(1, 3, 40, 60)
    inputs = tile_inputs(net, image)
    left, right = inputs((0, 0, 40, 32)), inputs((0, 28, 40, 32))
    assert torch.equal(left["ref"][:, :3], right["ref"][:, :3])  # the same whole image
    assert not torch.equal(left["ref"][:, 3], right["ref"][:, 3])
    assert float(left["ref_center"][0, 0]) < 0 < float(right["ref_center"][0, 0])
    assert float(left["ref_center"][0, 1]) == pytest.approx(0.0)


@pytest.mark.parametrize("mux_norm", [False, True])
def test_a_pixel_sees_only_its_neighbourhood_unless_the_multiplexers_normalise(mux_norm):
    """Tiled upscaling is exact only if an output pixel depends on nearby input alone. With
    GroupNorm multiplexers (``mux_norm``, the seed's layout) far-away pixels move every output
    pixel through the per-image statistics, which is why trained models tiled differently."""
    net = finished(tiny("spsr_switched", scale=2, mux_norm=mux_norm))
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    other = image.clone()
    other[:, :, :, 48:] = 1.0 - other[:, :, :, 48:]  # far (> receptive field) from column 0..8
    with torch.no_grad():
        near = net(image)["sr"][..., :16], net(other)["sr"][..., :16]
    assert torch.equal(*near) != mux_norm
