"""SRDataset (pairing, bad files, aligned crops, augmentation, formats, spawn) and TrainSampler."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from srkit.data import SRDataset, TrainSampler, find_images, imresize, write_image
from srkit.errors import DataError

RNG = np.random.default_rng(99)


def _image(height: int, width: int, channels: int = 3) -> np.ndarray:
    """Smooth random image (so bicubic resizing has structure to preserve) in [0, 1]."""
    coarse = RNG.random((height // 4 + 2, width // 4 + 2, channels))
    return np.clip(imresize(coarse, output_size=(height, width)), 0, 1)


def _write(path: Path, image: np.ndarray, bit_depth: int = 8) -> np.ndarray:
    """Write and return the image as it will be read back (quantised)."""
    write_image(path, image, bit_depth=bit_depth)
    peak = 65535 if bit_depth == 16 else 255
    return np.round(np.clip(image, 0, 1) * peak) / peak


def _box_downscale(image: np.ndarray, scale: int) -> np.ndarray:
    height, width = image.shape[0] // scale, image.shape[1] // scale
    cropped = image[: height * scale, : width * scale]
    return cropped.reshape(height, scale, width, scale, -1).mean(axis=(1, 3))


def _hwc(tensor: torch.Tensor) -> np.ndarray:
    return tensor.permute(1, 2, 0).numpy()


# ------------------------------------------------------------------ discovery and errors


def test_find_images_is_recursive_sorted_and_filters(tmp_path):
    for name in ["b.png", "a.JPG", "sub/c.webp", "sub/deeper/d.tiff", "z.bmp"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    for name in ["notes.txt", ".hidden.png", ".cache/e.png", "model.pth"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = [path.relative_to(tmp_path).as_posix() for path in find_images(tmp_path)]
    assert found == ["a.JPG", "b.png", "sub/c.webp", "sub/deeper/d.tiff", "z.bmp"]


def test_missing_and_empty_folders_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match=r"data folder '.*nowhere' does not exist"):
        SRDataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no usable images in '.*empty' \(no image files"):
        SRDataset(tmp_path / "empty")


def test_patch_size_must_be_a_multiple_of_scale(tmp_path):
    _write(tmp_path / "a.png", _image(32, 32))
    with pytest.raises(DataError, match="patch_size 30 is not a positive multiple of scale 4"):
        SRDataset(tmp_path, scale=4, patch_size=30)


def test_bad_files_are_skipped_with_one_warning_each(tmp_path, caplog):
    _write(tmp_path / "good.png", _image(32, 32))
    (tmp_path / "empty.png").write_bytes(b"")
    write_image(tmp_path / "cut.jpg", _image(64, 64))
    data = (tmp_path / "cut.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) * 2 // 3])
    _write(tmp_path / "tiny.png", _image(8, 8))
    with caplog.at_level(logging.WARNING, logger="srkit.data"):
        dataset = SRDataset(tmp_path, scale=4, patch_size=16)
    assert len(dataset) == 1 and dataset.names == ["good.png"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert any("empty.png" in m and "empty file" in m for m in warnings)
    assert any("cut.jpg" in m and "truncated" in m for m in warnings)
    assert any("tiny.png" in m and "too small" in m for m in warnings)
    assert sorted(Path(path).name for path, _ in dataset.skipped) == [
        "cut.jpg",
        "empty.png",
        "tiny.png",
    ]


def test_root_with_only_bad_files_names_folder_and_files(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "b.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError) as caught:
        SRDataset(tmp_path)
    message = str(caught.value)
    assert f"no usable images in '{tmp_path}' (2 files skipped:" in message
    assert "a.png" in message and "b.jpg" in message


def test_decode_failure_later_substitutes_next_image(tmp_path, caplog):
    for name in ("a.png", "b.png", "c.png"):
        _write(tmp_path / name, _image(16, 16))
    dataset = SRDataset(tmp_path, scale=2)
    (tmp_path / "b.png").write_bytes(b"")  # broken after the start-up check
    with caplog.at_level(logging.WARNING, logger="srkit.data"):
        assert dataset[1]["name"] == "c.png"
        assert dataset[1]["name"] == "c.png"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "b.png" in warnings[0]


# ------------------------------------------------------------------ paired folders


def test_pairing_by_stem_and_div2k_suffix_with_mod_crop(tmp_path):
    hr_root, lr_root = tmp_path / "hr", tmp_path / "lr"
    hr_a = _write(hr_root / "a.png", _image(34, 33))  # 2 and 1 extra pixels: mod-cropped
    _write(hr_root / "0001.png", _image(32, 32))
    _write(hr_root / "sub" / "c.png", _image(16, 24))
    lr_a = _write(lr_root / "a.png", _image(8, 8))
    _write(lr_root / "0001x4.png", _image(8, 8))
    write_image(lr_root / "sub" / "c.bmp", _image(4, 6))
    _write(lr_root / "unrelated.png", _image(8, 8))  # LR without HR: ignored
    dataset = SRDataset(hr_root, lr_root, scale=4)
    assert dataset.names == ["0001.png", "a.png", "sub/c.png"]
    item = dataset[1]
    assert item["hr"].shape == (3, 32, 32) and item["lr"].shape == (3, 8, 8)
    np.testing.assert_allclose(_hwc(item["hr"]), hr_a[:32, :32], atol=1e-6)
    np.testing.assert_allclose(_hwc(item["lr"]), lr_a, atol=1e-6)
    assert dataset[2]["hr"].shape == (3, 16, 24)


def test_hr_without_lr_partner_is_an_error(tmp_path):
    for name in ("a.png", "b.png", "c.png"):
        _write(tmp_path / "hr" / name, _image(16, 16))
    _write(tmp_path / "lr" / "a.png", _image(4, 4))
    with pytest.raises(DataError, match=r"2 HR image\(s\) in .* have no LR partner .*'b.png'"):
        SRDataset(tmp_path / "hr", tmp_path / "lr", scale=4)


def test_scale_mismatch_names_pair_and_sizes(tmp_path):
    _write(tmp_path / "hr" / "a.png", _image(96, 100))
    _write(tmp_path / "lr" / "a.png", _image(24, 30))
    with pytest.raises(DataError, match=r"paired images 'a.png': HR 100x96 is not 4 x LR 30x24"):
        SRDataset(tmp_path / "hr", tmp_path / "lr", scale=4)


def test_paired_crops_are_aligned_under_every_augmentation(tmp_path):
    # LR = s x s box average of HR: a relation that survives flips and rotations, so any
    # misalignment between the HR and LR patches shows up.
    scale = 2
    hr = _write(tmp_path / "hr" / "a.png", _image(40, 48))
    _write(tmp_path / "lr" / "a.png", _box_downscale(hr, scale))
    dataset = SRDataset(tmp_path / "hr", tmp_path / "lr", scale=scale, patch_size=16)
    for seed in range(12):
        item = dataset[(0, seed)]
        assert item["hr"].shape == (3, 16, 16) and item["lr"].shape == (3, 8, 8)
        assert item["hr"].is_contiguous() and item["lr"].is_contiguous()
        expected = _box_downscale(_hwc(item["hr"]), scale)
        np.testing.assert_allclose(_hwc(item["lr"]), expected, atol=0.5 / 255 + 1e-6)


# ------------------------------------------------------------------ LR made on the fly


@pytest.mark.parametrize("scale", [2, 4])
def test_on_the_fly_lr_patch_equals_whole_image_lr(tmp_path, scale):
    hr = _write(tmp_path / "a.png", _image(72, 88))
    whole_lr = np.clip(imresize(hr.astype(np.float32), 1 / scale), 0, 1)
    options = {"scale": scale, "patch_size": 8 * scale, "flips": False, "rotations": False}
    dataset = SRDataset(tmp_path, quantize_lr=False, **options)
    quantised = SRDataset(tmp_path, **options)
    positions = set()
    for seed in range(16):
        item = dataset[(0, seed)]
        hr_patch, lr_patch = _hwc(item["hr"]), _hwc(item["lr"])
        # Locate the patch in the HR image (the crop is aligned to the LR grid).
        matches = [
            (top, left)
            for top in range(0, hr.shape[0] - hr_patch.shape[0] + 1, scale)
            for left in range(0, hr.shape[1] - hr_patch.shape[1] + 1, scale)
            if np.allclose(
                hr[top : top + hr_patch.shape[0], left : left + hr_patch.shape[1]],
                hr_patch,
                atol=1e-6,
            )
        ]
        assert len(matches) == 1
        top, left = matches[0][0] // scale, matches[0][1] // scale
        positions.add((top, left))
        region = whole_lr[top : top + 8, left : left + 8]
        np.testing.assert_allclose(lr_patch, region, atol=1e-6)
        # Resizing the HR patch alone agrees away from the patch border (2 LR pixels).
        alone = np.clip(imresize(hr_patch, 1 / scale), 0, 1)
        np.testing.assert_allclose(lr_patch[2:-2, 2:-2], alone[2:-2, 2:-2], atol=1e-6)
        # Default: quantised to 8-bit levels, like LR stored as PNG.
        np.testing.assert_allclose(
            _hwc(quantised[(0, seed)]["lr"]), np.round(region * 255) / 255, atol=1e-6
        )
    assert len(positions) > 8  # the crops really move around


def test_whole_image_validation_items(tmp_path):
    hr = _write(tmp_path / "a.png", _image(30, 41))
    dataset = SRDataset(tmp_path, scale=4)
    item = dataset[0]
    assert item["name"] == "a.png"
    assert item["hr"].shape == (3, 28, 40) and item["lr"].shape == (3, 7, 10)
    np.testing.assert_allclose(_hwc(item["hr"]), hr[:28, :40], atol=1e-6)
    expected = np.round(np.clip(imresize(hr[:28, :40], 0.25), 0, 1) * 255) / 255
    np.testing.assert_allclose(_hwc(item["lr"]), expected, atol=1e-6)


def test_int_index_gives_centre_crop_without_augmentation(tmp_path):
    hr = _write(tmp_path / "a.png", _image(40, 40))
    dataset = SRDataset(tmp_path, scale=2, patch_size=8)
    np.testing.assert_allclose(_hwc(dataset[0]["hr"]), hr[16:24, 16:24], atol=1e-6)


# ------------------------------------------------------------------ augmentation


def test_same_seed_same_item_and_all_orientations_occur(tmp_path):
    _write(tmp_path / "a.png", _image(24, 24))
    dataset = SRDataset(tmp_path, scale=4, patch_size=24)  # patch = image: only augmentation
    first, again = dataset[(0, 5)], dataset[(0, 5)]
    assert torch.equal(first["hr"], again["hr"]) and torch.equal(first["lr"], again["lr"])
    seen = {dataset[(0, seed)]["hr"].numpy().tobytes() for seed in range(64)}
    assert len(seen) == 8  # flips + 90° rotations: the 8 orientations of a square
    plain = SRDataset(tmp_path, scale=4, patch_size=24, flips=False, rotations=False)
    assert len({plain[(0, seed)]["hr"].numpy().tobytes() for seed in range(16)}) == 1
    flips_only = SRDataset(tmp_path, scale=4, patch_size=24, rotations=False)
    assert len({flips_only[(0, seed)]["hr"].numpy().tobytes() for seed in range(32)}) == 4


# ------------------------------------------------------------------ formats


def test_16bit_rgba_grey_and_other_formats(tmp_path):
    deep = _write(tmp_path / "deep.png", _image(16, 16), bit_depth=16)
    rgba = _image(16, 16, 4)
    write_image(tmp_path / "rgba.png", rgba)
    write_image(tmp_path / "grey.png", _image(16, 16, 1))
    for extension in (".webp", ".bmp", ".tif", ".jpeg"):
        write_image(tmp_path / f"other{extension}", _image(16, 16))
    dataset = SRDataset(tmp_path, scale=2)
    assert len(dataset) == 7 and not dataset.skipped
    items = {dataset.names[i]: dataset[i] for i in range(len(dataset))}
    for item in items.values():
        assert item["hr"].shape == (3, 16, 16) and item["hr"].dtype == torch.float32
    # 16 bits survive: values are not on the 8-bit grid.
    np.testing.assert_allclose(_hwc(items["deep.png"]["hr"]), deep, atol=1e-7)
    assert np.abs(deep * 255 - np.round(deep * 255)).max() > 0.01
    np.testing.assert_allclose(
        _hwc(items["rgba.png"]["hr"]), np.round(rgba[:, :, :3] * 255) / 255, atol=1e-6
    )
    grey = items["grey.png"]["hr"]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2])


def test_cache_gives_same_items_and_is_not_pickled(tmp_path):
    _write(tmp_path / "a.png", _image(32, 32))
    cached = SRDataset(tmp_path, scale=2, patch_size=8, cache_images=True)
    plain = SRDataset(tmp_path, scale=2, patch_size=8)
    for seed in range(3):
        assert torch.equal(cached[(0, seed)]["lr"], plain[(0, seed)]["lr"])
    assert cached._cache
    assert pickle.loads(pickle.dumps(cached))._cache == {}


def test_spawned_workers_give_the_same_batches(tmp_path):
    for index in range(5):
        _write(tmp_path / f"{index}.png", _image(24, 24))
    dataset = SRDataset(tmp_path, scale=2, patch_size=8)
    sampler = TrainSampler(len(dataset), batch_size=4, seed=3)
    loader = DataLoader(
        dataset, batch_sampler=sampler, num_workers=2, multiprocessing_context="spawn"
    )
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == 3:
            break
    for step, batch in enumerate(batches):
        expected = [dataset[item] for item in sampler.batch(step)]
        assert batch["name"] == [item["name"] for item in expected]
        assert torch.equal(batch["hr"], torch.stack([item["hr"] for item in expected]))
        assert torch.equal(batch["lr"], torch.stack([item["lr"] for item in expected]))


# ------------------------------------------------------------------ sampler


def _take(sampler: TrainSampler, count: int) -> list[list[tuple[int, int]]]:
    iterator = iter(sampler)
    return [next(iterator) for _ in range(count)]


def test_sampler_resume_continues_the_same_stream():
    full = _take(TrainSampler(10, batch_size=4, seed=1), 12)
    resumed = _take(TrainSampler(10, batch_size=4, seed=1, start_step=5), 7)
    assert resumed == full[5:]


def test_sampler_ranks_partition_the_global_batch():
    single = _take(TrainSampler(13, batch_size=6, seed=2), 8)
    ranks = [_take(TrainSampler(13, 6, 2, rank=r, world_size=3), 8) for r in range(3)]
    for step in range(8):
        assert ranks[0][step] + ranks[1][step] + ranks[2][step] == single[step]
    with pytest.raises(ValueError, match="divisible"):
        TrainSampler(13, batch_size=6, seed=2, world_size=4)


def test_sampler_epochs_are_permutations_and_seeds_are_distinct():
    sampler = TrainSampler(7, batch_size=3, seed=4)
    items = [item for batch in _take(sampler, 14) for item in batch]  # 42 = 6 epochs
    indices = [index for index, _ in items]
    for epoch in range(6):
        assert sorted(indices[epoch * 7 : (epoch + 1) * 7]) == list(range(7))
    assert indices[:7] != indices[7:14]  # a new order each epoch
    seeds = [seed for _, seed in items]
    assert len(set(seeds)) == len(seeds) and all(0 <= s < 2**63 for s in seeds)
    assert _take(TrainSampler(7, 3, seed=5), 2) != _take(sampler, 2)
