"""Disjoint (unpaired) training: unequal LR/HR folders, HR only for the discriminator."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from conftest import write_photo_like
from srkit.cli import main
from srkit.config import validate_config
from srkit.data.datasets import UnpairedDataset
from srkit.nets import build_network
from srkit.train.trainer import Trainer
from srkit.weights import save_weights
from vgg_weights import write_random_vgg


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("weights")
    vgg16 = write_random_vgg(folder / "vgg16-random.pth")
    torch.manual_seed(0)
    featurenet = build_network("featurenet", layer="relu1_2", weights=str(vgg16))
    save_weights(folder / "featurenet.safetensors", featurenet)
    return {"vgg16": vgg16, "featurenet": folder / "featurenet.safetensors"}


@pytest.fixture
def unpaired(tmp_path) -> dict[str, Path]:
    """7 LR images and 5 unrelated HR images, of assorted sizes."""
    lr, hr = tmp_path / "lr", tmp_path / "hr"
    for index in range(7):
        write_photo_like(lr / f"lr{index}.png", (32 + 2 * index, 40 - index), seed=200 + index)
    for index in range(5):
        write_photo_like(hr / f"photo_{index}.png", (64 + 8 * index, 72), seed=300 + index)
    return {"lr": lr, "hr": hr}


def disjoint_config(make_config, unpaired, weights, **train) -> dict:
    raw = make_config()
    raw["data"]["train"].update(
        {"hr": str(unpaired["hr"]), "lr": str(unpaired["lr"]), "disjoint": True, "patch_size": 64}
    )
    raw["networks"]["discriminator"] = {"type": "pixdisc", "nf": 4}
    raw["losses"] = [
        {
            "type": "lr_feature",
            "feature_net": str(weights["featurenet"]),
            "weights": str(weights["vgg16"]),
        },
        {"type": "pixel", "name": "lr_consistency", "input": "down(sr)", "target": "lr"},
        {
            "type": "pixel",
            "name": "lr_gradient",
            "criterion": "l2",
            "input": "grad(down(sr))",
            "target": "grad(lr)",
        },
        {"type": "gan", "weight": 0.1, "gan_type": "pixgan", "discriminator": "discriminator"},
    ]
    raw["train"].update(train)
    return raw


def test_unpaired_dataset_takes_unequal_counts_deterministically(unpaired):
    dataset = UnpairedDataset(unpaired["hr"], unpaired["lr"], scale=2, patch_size=32)
    assert len(dataset) == 7  # an epoch visits every LR image once
    item = dataset[(3, 12345)]
    assert item["lr"].shape == (3, 16, 16) and item["hr"].shape == (3, 32, 32)
    again = dataset[(3, 12345)]
    assert torch.equal(item["lr"], again["lr"]) and torch.equal(item["hr"], again["hr"])
    # The HR partner is drawn from the sample seed: every HR image turns up, with any LR.
    firsts = {tuple(dataset[(0, seed)]["hr"][:, 0, 0].tolist()) for seed in range(60)}
    assert len(firsts) > 5
    assert dataset[0]["name"] == "lr0.png"


def test_disjoint_run_trains_with_finite_losses(make_config, unpaired, weights):
    raw = disjoint_config(make_config, unpaired, weights, iterations=4)
    raw["logging"]["val_every"] = 4
    trainer = Trainer(validate_config(raw), quiet=True)
    assert len(trainer.train_dataset) == 7
    assert trainer.terms[-1].swapping is False  # pixgan without swaps: nothing to swap with
    trainer.run()
    rows = [
        json.loads(line)
        for line in (Path(raw["output_dir"]) / raw["name"] / "metrics.jsonl")
        .read_text()
        .splitlines()
    ]
    trained = [r for r in rows if "g/total" in r]
    assert [r["step"] for r in trained] == [1, 2, 3, 4]
    for row in trained:
        for key in ("g/lr_feature", "g/lr_consistency", "g/lr_gradient", "g/gan", "d/gan"):
            assert math.isfinite(row[key]), (row["step"], key)
    validation = [r for r in rows if "val/psnr_y" in r]
    assert validation and math.isfinite(validation[0]["val/loss/lr_feature"])


class DiscriminatorOnly(torch.Tensor):
    """HR images usable only as a discriminator's input: any computation on them raises.

    Moving, slicing, detaching and reading metadata are allowed (the trainer moves batches to
    the device and splits them); a discriminator's forward pre-hook unwraps them.
    """

    ALLOWED = frozenset(
        {
            torch.Tensor.to,
            torch.Tensor.detach,
            torch.Tensor.__getitem__,
            torch.Tensor.__len__,
            torch.Tensor.contiguous,
            torch.Tensor.dim,
        }
    )

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func not in cls.ALLOWED and getattr(func, "__name__", "") != "__get__":
            raise AssertionError(f"HR images used outside a discriminator: {func}")
        return super().__torch_function__(func, types, args, kwargs)


def unwrap_for_discriminator(module, args):
    with torch._C.DisableTorchFunctionSubclass():
        return tuple(
            a.as_subclass(torch.Tensor) if isinstance(a, DiscriminatorOnly) else a for a in args
        )


@pytest.mark.parametrize("gan_type", ["pixgan", "ragan"])
def test_disjoint_step_never_reads_a_pixel_target(make_config, unpaired, weights, gan_type):
    raw = disjoint_config(make_config, unpaired, weights, iterations=2, megabatch=2)
    raw["losses"][-1]["gan_type"] = gan_type  # ragan also reads D(real) in the generator step
    trainer = Trainer(validate_config(raw), quiet=True)
    discriminator = trainer.networks["discriminator"]
    calls = []
    discriminator.register_forward_pre_hook(unwrap_for_discriminator)
    discriminator.register_forward_hook(lambda *_: calls.append(1))
    for step in range(2):
        items = [trainer.train_dataset[(i, 77 * step + i)] for i in range(4)]
        batch = {
            "lr": torch.stack([item["lr"] for item in items]),
            "hr": torch.stack([item["hr"] for item in items]).as_subclass(DiscriminatorOnly),
            "name": [item["name"] for item in items],
        }
        with pytest.raises(AssertionError, match="outside a discriminator"):
            batch["hr"] - 1  # the guard works
        logs = trainer.train_step(batch, step)
        assert {"g/lr_feature", "g/lr_gradient", "g/gan", "d/gan"} <= set(logs)
        assert all(torch.isfinite(value).all() for value in logs.values())
    assert calls  # HR did reach the discriminator


def test_the_guard_catches_a_term_that_reads_hr(make_config, unpaired, weights, monkeypatch):
    # Negative control for the test above: with the start-up refusal switched off, a pixel
    # term on HR makes the guarded batch raise inside the training step.
    import srkit.train.build as build

    monkeypatch.setattr(build, "check_unpaired", lambda term, index: None)
    raw = disjoint_config(make_config, unpaired, weights, iterations=1)
    raw["losses"] = [{"type": "pixel", "input": "down(sr)", "target": "down(hr)"}]
    raw["networks"].pop("discriminator")
    trainer = Trainer(validate_config(raw), quiet=True)
    items = [trainer.train_dataset[(i, i)] for i in range(4)]
    batch = {
        "lr": torch.stack([item["lr"] for item in items]),
        "hr": torch.stack([item["hr"] for item in items]).as_subclass(DiscriminatorOnly),
    }
    with pytest.raises(AssertionError, match="outside a discriminator"):
        trainer.train_step(batch, 0)


@pytest.mark.parametrize(
    ("term", "named"),
    [
        ({"type": "pixel"}, "losses.0 (pixel): reads 'hr'"),
        (
            {"type": "pixel", "name": "grad", "input": "grad(sr)", "target": "grad(hr)"},
            "losses.0 (grad): reads 'grad(hr)'",
        ),
        ({"type": "perceptual", "network": "vgg16"}, "losses.0 (perceptual): reads 'hr'"),
    ],
)
def test_paired_terms_are_refused(make_config, unpaired, weights, tmp_path, capsys, term, named):
    raw = disjoint_config(make_config, unpaired, weights)
    if term["type"] == "perceptual":
        term = {**term, "weights": str(weights["vgg16"])}
    raw["losses"] = [term, *raw["losses"][3:]]
    path = tmp_path / "run.yml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and named in err and "disjoint" in err
    assert not (Path(raw["output_dir"]) / raw["name"]).exists()


def test_disjoint_needs_an_lr_folder(make_config, unpaired, weights, tmp_path, capsys):
    raw = disjoint_config(make_config, unpaired, weights)
    raw["data"]["train"]["lr"] = None
    path = tmp_path / "run.yml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["train", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "data.train.lr" in err


def test_disjoint_resume_is_exact(make_config, unpaired, weights):
    raw = disjoint_config(make_config, unpaired, weights, iterations=4)
    raw["losses"] = raw["losses"][1:]  # the data stream is what matters here
    raw["logging"]["checkpoint_every"] = 2
    Trainer(validate_config({**raw, "name": "straight"}), quiet=True).run()
    first = {**raw, "name": "resumed", "train": {**raw["train"], "iterations": 2}}
    Trainer(validate_config(first), quiet=True).run()
    Trainer(validate_config({**raw, "name": "resumed"}), resume="auto", quiet=True).run()

    def losses(name: str) -> dict:
        text = (Path(raw["output_dir"]) / name / "metrics.jsonl").read_text()
        rows = [json.loads(line) for line in text.splitlines()]
        return {
            r["step"]: {k: v for k, v in r.items() if k.startswith(("g/", "d/"))}
            for r in rows
            if "g/total" in r
        }

    straight, resumed = losses("straight"), losses("resumed")
    assert sorted(straight) == [1, 2, 3, 4]
    assert straight == resumed
