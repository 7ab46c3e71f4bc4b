"""The LR feature net: detection, checkpoints, training as a configuration, the lr_feature term."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from srkit.cli import main
from srkit.config import validate_config
from srkit.errors import CheckpointError
from srkit.losses.tensors import StepTensors, builtin_views
from srkit.nets import build_network, detect_network
from srkit.nets.featurenet import detect_featurenet
from srkit.nets.rrdb import detect_rrdb
from srkit.nets.vgg import pretrained_vgg
from srkit.train.trainer import Trainer
from srkit.weights import load_network, save_weights
from vgg_weights import write_random_vgg


@pytest.fixture(scope="module")
def vgg16_file(tmp_path_factory) -> Path:
    return write_random_vgg(tmp_path_factory.mktemp("weights") / "vgg16-random.pth")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"arch": "vgg16", "layer": "relu2_2"},
        {"arch": "vgg16", "layer": "conv3_3", "greyscale": True},
        {"arch": "vgg19", "layer": "conv3_4"},
        {"arch": "vgg19", "layer": "pool3"},
    ],
)
def test_detection_round_trip(kwargs):
    torch.manual_seed(0)
    original = build_network("featurenet", pretrained=False, **kwargs).eval()
    state = original.state_dict()
    name, detected = detect_network(state)
    assert name == "featurenet"
    assert detected == {
        "greyscale": False,
        **kwargs,
        "pretrained": False,
        "weights": None,
        "download": False,
    }
    rebuilt = build_network(name, **detected)
    rebuilt.load_state_dict(state, strict=True)
    x = torch.rand(1, 3, 32, 40)
    with torch.no_grad():
        assert torch.equal(original(x), rebuilt(x))


def test_detectors_do_not_claim_each_other():
    feature_state = build_network("featurenet", pretrained=False, layer="relu2_1").state_dict()
    assert detect_rrdb(feature_state) is None
    assert detect_featurenet(build_network("rrdb", nf=8, nb=1, gc=4).state_dict()) is None
    # A plain torchvision VGG file has no layer_index: it is not a trained feature net.
    plain = {k: v for k, v in feature_state.items() if k != "layer_index"}
    assert detect_featurenet(plain) is None


def test_weights_for_another_layer_are_refused():
    relu = build_network("featurenet", pretrained=False, layer="relu3_3")
    conv = build_network("featurenet", pretrained=False, layer="conv3_3")  # same weights
    with pytest.raises(RuntimeError, match="predict relu3_3 features, this featurenet conv3_3"):
        conv.load_state_dict(relu.state_dict())


def test_pretrained_feature_net_starts_at_the_plain_vgg(vgg16_file):
    net = build_network("featurenet", layer="relu3_2", weights=str(vgg16_file))
    vgg = build_network("vgg16_features", layer="relu3_2", weights=str(vgg16_file))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x), vgg(x))
    assert net.training is True and all(p.requires_grad for p in net.parameters())
    # Greyscale: one input channel; the folded first layer sees an image as the VGG sees its
    # grey version (exactly, away from the zero-padded border).
    grey = build_network("featurenet", layer="relu1_2", weights=str(vgg16_file), greyscale=True)
    assert grey.features[0].weight.shape == (64, 1, 3, 3)
    plain = build_network("vgg16_features", layer="relu1_2", weights=str(vgg16_file))
    image = torch.rand(1, 3, 32, 32)
    luma = builtin_views(2)["grey"](image)
    with torch.no_grad():
        a, b = grey(image), plain(luma)
    torch.testing.assert_close(a[..., 2:-2, 2:-2], b[..., 2:-2, 2:-2], rtol=1e-4, atol=1e-5)


def test_checkpoint_rebuilds_without_the_imagenet_file(vgg16_file, tmp_path):
    weights = tmp_path / "vgg16.pth"
    weights.write_bytes(vgg16_file.read_bytes())
    net = build_network("featurenet", layer="conv2_2", weights=str(weights))
    assert net.srkit_arch["pretrained"] is False and net.srkit_arch["weights"] is None
    save_weights(tmp_path / "net.safetensors", net)
    torch.save(net.state_dict(), tmp_path / "bare.pth")  # no srkit metadata: detection
    weights.unlink()
    x = torch.rand(1, 3, 24, 24)
    for file in ("net.safetensors", "bare.pth"):
        loaded = load_network(tmp_path / file)
        assert loaded.layer == "conv2_2"
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), net.eval()(x))


def featurenet_config(make_config, vgg16_file: Path, **changes) -> dict:
    raw = make_config()
    raw["name"] = "featurenet"
    raw["networks"] = {
        "generator": {"type": "featurenet", "layer": "relu2_2", "weights": str(vgg16_file)},
        "vgg": {"type": "vgg16_features", "layer": "relu2_2", "weights": str(vgg16_file)},
    }
    raw["losses"] = [
        {"type": "pixel", "name": "feature_mse", "criterion": "l2", "target": "vgg(hr)"},
        {
            "type": "pixel",
            "name": "bicubic_baseline",
            "weight": 0,
            "criterion": "l2",
            "input": "vgg(up(lr))",
            "target": "vgg(hr)",
        },
    ]
    raw["train"]["generator_input"] = "up(lr)"
    raw["train"]["optim"] = {"generator": {"lr": 1e-4}}
    for key, value in changes.items():
        raw["train"][key] = value
    return raw


def test_featurenet_trains_as_a_configuration(make_config, vgg16_file):
    raw = featurenet_config(make_config, vgg16_file, iterations=3)
    raw["logging"]["val_every"] = 3
    trainer = Trainer(validate_config(raw), quiet=True)
    before = trainer.validate()
    # Started from the plain VGG, the feature net *is* the baseline before training.
    assert before["val/loss/feature_mse"] == pytest.approx(before["val/loss/bicubic_baseline"])
    assert not any("psnr" in key or "ssim" in key for key in before)  # output is no image
    trainer.run()
    run = Path(raw["output_dir"]) / raw["name"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert "g/bicubic_baseline" not in rows[0]  # a weight-0 monitor costs nothing in training
    validation = [r for r in rows if "val/loss/feature_mse" in r and r["step"] == 3]
    assert validation and validation[0]["val/loss/bicubic_baseline"] > 0
    assert validation[0]["val/loss/feature_mse"] != before["val/loss/feature_mse"]
    # The checkpointed feature net loads like any network, without the ImageNet file.
    folder = run / "checkpoints" / "step_00000003"
    loaded = load_network(folder)
    assert type(loaded).__name__ == "FeatureNet" and loaded.layer == "relu2_2"
    assert main(["info", str(folder / "generator.safetensors")]) == 0
    # ... and the run's checkpoint folder is what an lr_feature term takes.
    from srkit.losses.lr_feature import LRFeatureConfig, LRFeatureTerm

    term = LRFeatureTerm(LRFeatureConfig(feature_net=folder, weights=vgg16_file))
    assert term.layer == "relu2_2"


def test_shipped_configs_validate():
    from srkit.config import load_config

    root = Path(__file__).resolve().parents[1] / "configs"
    featurenet = load_config(root / "featurenet_x4.yml")
    assert featurenet.networks["generator"].type == "featurenet"
    assert featurenet.train.generator_input == "up(lr)"
    assert [t.weight for t in featurenet.losses] == [1.0, 0.0]
    disjoint = load_config(root / "disjoint_srg2_pixgan_x4.yml")
    assert disjoint.data.train.disjoint and disjoint.data.train.lr is not None
    assert [t.type for t in disjoint.losses] == ["lr_feature", "pixel", "pixel", "gan"]


def test_lr_feature_term_compares_vgg_of_sr_with_the_feature_net(vgg16_file, tmp_path):
    from srkit.losses.base import BuildContext, loss_entries
    from srkit.losses.lr_feature import LRFeatureConfig

    torch.manual_seed(0)
    feature_net = build_network("featurenet", layer="relu2_1", pretrained=False)
    save_weights(tmp_path / "featurenet.safetensors", feature_net)
    config = LRFeatureConfig(
        feature_net=tmp_path / "featurenet.safetensors", weights=vgg16_file, weight=1.0
    )
    context = BuildContext(scale=2, device=torch.device("cpu"), networks={}, disjoint=True)
    term = loss_entries()["lr_feature"].build(config, context)
    assert term.state_dict() == {} and list(term.parameters()) == []
    assert term.expressions() == ["sr", "up(lr)"]

    lr = torch.rand(2, 3, 16, 16)
    sr = torch.rand(2, 3, 32, 32, requires_grad=True)
    tensors = StepTensors({"lr": lr, "sr": sr}, builtin_views(2))  # no "hr" at all
    loss = term.generator_loss(tensors)
    vgg = pretrained_vgg("vgg16", ("relu2_1",), vgg16_file)
    with torch.no_grad():
        target = feature_net.eval()(tensors["up(lr)"])
    expected = (vgg(sr)["relu2_1"] - target).square().mean()
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0


def test_lr_feature_errors_are_one_line(make_config, tmp_path, capsys, vgg16_file):
    import yaml

    raw = make_config()
    raw["losses"] = [{"type": "lr_feature", "feature_net": str(tmp_path / "missing")}]
    path = tmp_path / "run.yml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "losses.0 (lr_feature)" in err and "missing" in err
    with pytest.raises(CheckpointError):
        load_network(tmp_path / "missing")
