"""LPIPS (VGG, v0.1): the formula, loading errors, validation and `srkit validate`."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import write_photo_like
from srkit.cli import main
from srkit.config import validate_config
from srkit.errors import CheckpointError, ConfigError
from srkit.metrics.lpips import LPIPS_LAYERS, load_lpips
from srkit.nets import build_network
from srkit.nets.vgg import pretrained_vgg
from srkit.train.trainer import Trainer
from srkit.weights import save_weights
from vgg_weights import real_vgg16_weights, write_random_lpips_lin, write_random_vgg


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("lpips")
    return {
        "vgg": write_random_vgg(folder / "vgg16.pth"),
        "lin": write_random_lpips_lin(folder / "lin.pth"),
    }


@pytest.fixture(scope="module")
def lpips(files):
    return load_lpips(files["lin"], files["vgg"])


def test_formula_by_hand(lpips, files):
    torch.manual_seed(0)
    a, b = torch.rand(2, 3, 48, 40), torch.rand(2, 3, 48, 40)
    vgg = pretrained_vgg("vgg16", LPIPS_LAYERS, files["vgg"], normalize_input=False)
    lin = torch.load(files["lin"])
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
    fa, fb = vgg((2 * a - 1 - shift) / scale), vgg((2 * b - 1 - shift) / scale)
    expected = torch.zeros(2)
    for index, layer in enumerate(LPIPS_LAYERS):
        na = fa[layer] / (fa[layer].norm(dim=1, keepdim=True) + 1e-10)
        nb = fb[layer] / (fb[layer].norm(dim=1, keepdim=True) + 1e-10)
        expected += F.conv2d((na - nb) ** 2, lin[f"lin{index}.weight"]).mean(dim=(1, 2, 3))
    with torch.no_grad():
        torch.testing.assert_close(lpips(a, b), expected)
        assert torch.equal(lpips(a, a), torch.zeros(2))
        torch.testing.assert_close(lpips(a, b), lpips(b, a))
    assert list(lpips.parameters()) and not any(p.requires_grad for p in lpips.parameters())


def test_package_layout_of_the_linear_layers_is_accepted(files, tmp_path, lpips):
    state = torch.load(files["lin"])
    renamed = {k.replace(".weight", ".model.1.weight"): v for k, v in state.items()}
    torch.save(renamed, tmp_path / "vgg.pth")
    other = load_lpips(tmp_path / "vgg.pth", files["vgg"])
    a, b = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(other(a, b), lpips(a, b))


def test_missing_or_foreign_files_are_one_line_errors(files, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-hub"))
    with pytest.raises(ConfigError, match=r"^data\.val\.lpips: .*nowhere\.pth' does not exist"):
        load_lpips(tmp_path / "nowhere.pth", files["vgg"], key="data.val.lpips")
    with pytest.raises(ConfigError, match=r"^lpips: .*vgg16-397923af\.pth") as error:
        load_lpips(files["lin"], None)  # VGG from the (empty) hub cache
    assert "\n" not in str(error.value)
    torch.save({"lin0.weight": torch.zeros(1, 64, 1, 1)}, tmp_path / "short.pth")
    with pytest.raises(CheckpointError, match=r"lacks lin1\.weight"):
        load_lpips(tmp_path / "short.pth", files["vgg"])


def test_validation_reports_lpips_only_when_configured(make_config, files, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-hub"))  # nothing to find by accident
    raw = make_config()
    raw["train"]["iterations"] = 1
    raw["logging"]["val_every"] = 1
    trainer = Trainer(validate_config({**raw, "name": "plain"}), quiet=True)
    assert trainer.lpips is None
    assert "val/lpips" not in trainer.validate()

    raw["data"]["val"]["lpips"] = {"lin": str(files["lin"]), "vgg": str(files["vgg"])}
    trainer = Trainer(validate_config({**raw, "name": "with_lpips"}), quiet=True)
    trainer.run()
    rows = (Path(raw["output_dir"]) / "with_lpips" / "metrics.jsonl").read_text().splitlines()
    values = [json.loads(row) for row in rows if "val/lpips" in row]
    assert values and values[0]["val/lpips"] > 0


def test_missing_lpips_file_stops_training_before_it_starts(make_config, tmp_path, capsys):
    import yaml

    raw = make_config()
    raw["data"]["val"]["lpips"] = {"lin": str(tmp_path / "absent-lin.pth")}
    path = tmp_path / "run.yml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "data.val.lpips" in err and "absent-lin.pth" in err
    assert not (Path(raw["output_dir"]) / raw["name"]).exists()


def test_srkit_validate_lpips(files, tmp_path, capsys):
    hr = tmp_path / "hr"
    for index in range(2):
        write_photo_like(hr / f"im{index}.png", (32, 40), seed=index)
    model = build_network("rrdb", nf=8, nb=1, gc=4, scale=2)
    save_weights(tmp_path / "model.safetensors", model)
    args = ["validate", str(tmp_path / "model.safetensors"), "--hr", str(hr)]
    assert main(args) == 0
    assert "lpips" not in capsys.readouterr().out.splitlines()[0]  # the header row
    assert main([*args, "--lpips", str(files["lin"]), "--lpips-vgg", str(files["vgg"])]) == 0
    out = capsys.readouterr().out
    assert "lpips" in out.splitlines()[0]
    assert main([*args, "--lpips", str(tmp_path / "gone.pth")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("srkit: error: --lpips") and "gone.pth" in err


# -- real weights ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_lpips():
    vgg, lin = real_vgg16_weights()
    return load_lpips(lin, vgg)


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)[None] / 255


@pytest.mark.slow
def test_real_lpips_astronaut_jpeg_and_blur_order(real_lpips):
    from PIL import Image, ImageFilter

    skimage_data = pytest.importorskip("skimage.data")
    astronaut = skimage_data.astronaut()
    buffer = io.BytesIO()
    Image.fromarray(astronaut).save(buffer, "JPEG", quality=10)
    jpeg = np.asarray(Image.open(buffer).convert("RGB"))
    with torch.no_grad():
        assert float(real_lpips(_tensor(astronaut), _tensor(astronaut))[0]) == 0
        # An independent computation (the LPIPS reference, v0.1 VGG) gave 0.383.
        assert float(real_lpips(_tensor(astronaut), _tensor(jpeg))[0]) == pytest.approx(
            0.383, abs=0.01
        )
        image = Image.fromarray(astronaut)
        blurred = [
            _tensor(np.asarray(image.filter(ImageFilter.GaussianBlur(radius))))
            for radius in (0.5, 1, 2, 4, 8)
        ]
        distances = [float(real_lpips(_tensor(astronaut), b)[0]) for b in blurred]
    assert distances == sorted(distances) and distances[0] > 0, distances
