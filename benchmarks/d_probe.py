"""Can a discriminator learn to tell a generator's output from HR? A probe without the GAN.

Issue 18: in every pixgan run the pixel-map discriminators sat at accuracy 0.5 from the first
log on. This probe asks the question without a generator in the loop: it cuts HR patches and
their LR from a prepared dataset, upscales the LR once with a trained generator (the GAN's PSNR
start), and trains discriminator variants as plain real/fake classifiers on that fixed bank
(BCE on every logit, Adam, one thread). Every `--every` steps it prints the held-out accuracy
(of every logit, and of each patch's mean logit) on patches the variant never trained on.

As a yardstick it first prints the held-out accuracy of a one-number classifier: a threshold on
each patch's Laplacian energy (the SR output of a PSNR model is smoother than HR).

    python benchmarks/d_probe.py --generator RUN/checkpoints/step_N/generator_ema.safetensors \\
        --hr W/dataset/train/hr --lr W/dataset/train/lr_x4 \\
        pixdisc:group pixdisc:none vgg:batch --input image detail

A variant is `type:norm[:lr]` (lr default 1e-4); `--input detail` judges `detail(x)` (the image
minus its bicubic down-up round trip, the `detail` view of tensor expressions) instead of x.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import srkit.nets  # noqa: F401  (registers every network)
from srkit.data.io import read_rgb
from srkit.evaluation import sr_output
from srkit.infer.api import load_model
from srkit.losses.tensors import builtin_views
from srkit.nets.registry import build_network


def patch_bank(
    generator: torch.nn.Module,
    hr_files: list[Path],
    lr_dir: Path,
    count: int,
    seed: int,
    scale: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` random (HR, SR) patch pairs of 96 px HR; SR is the generator's output."""
    rng = random.Random(seed)
    lr_size = 96 // scale
    hrs, srs = [], []
    for _ in range(count):
        path = rng.choice(hr_files)
        hr, lr = read_rgb(path), read_rgb(lr_dir / path.name)
        top = rng.randrange(0, lr.shape[0] - lr_size)
        left = rng.randrange(0, lr.shape[1] - lr_size)
        lr_patch = lr[top : top + lr_size, left : left + lr_size]
        hr_patch = hr[
            scale * top : scale * (top + lr_size), scale * left : scale * (left + lr_size)
        ]
        lr_tensor = torch.from_numpy(lr_patch.copy()).permute(2, 0, 1)
        with torch.no_grad():
            sr = sr_output(generator(lr_tensor[None]))
        hrs.append(torch.from_numpy(hr_patch.copy()).permute(2, 0, 1))
        srs.append(sr.clamp(0, 1)[0])
    return torch.stack(hrs), torch.stack(srs)


def energy_yardstick(train: tuple, test: tuple) -> float:
    """Held-out accuracy of the best threshold (chosen on train) on log Laplacian energy."""
    kernel = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]]).view(1, 1, 3, 3).repeat(3, 1, 1, 1)

    def energy(x: torch.Tensor) -> torch.Tensor:
        return torch.log(F.conv2d(x, kernel, groups=3).abs().mean(dim=(1, 2, 3)) + 1e-4)

    values = torch.cat([energy(train[0]), energy(train[1])])
    labels = torch.cat([torch.ones(len(train[0])), torch.zeros(len(train[1]))])
    best = max(values, key=lambda t: ((values > t).float() == labels).float().mean().item())
    return (
        (energy(test[0]) > best).float().mean() + (energy(test[1]) <= best).float().mean()
    ).item() / 2


def probe(
    label: str, variant: str, train: tuple, test: tuple, steps: int, every: int, batch: int, nf: int
) -> None:
    """Train one variant on ``train`` (HR, SR) and print held-out figures every ``every`` steps."""
    kind, norm, *rest = variant.split(":")
    lr = float(rest[0]) if rest else 1e-4
    torch.manual_seed(0)
    network = build_network(kind, nf=nf, norm=norm)
    optimizer = torch.optim.Adam(network.parameters(), lr=lr, betas=(0.9, 0.99))
    started = time.time()
    for step in range(1, steps + 1):
        index = torch.randint(0, len(train[0]), (batch,))
        network.train()
        real, fake = network(train[0][index]), network(train[1][index])
        loss = (
            F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        ) / 2
        optimizer.zero_grad()
        loss.backward()
        grad_norm = torch.sqrt(
            sum(p.grad.square().sum() for p in network.parameters() if p.grad is not None)
        )
        optimizer.step()
        if step % every:
            continue
        network.eval()
        with torch.no_grad():
            real, fake = network(test[0]), network(test[1])
        per_logit = ((real > 0).float().mean() + (fake < 0).float().mean()).item() / 2
        real_mean, fake_mean = real.flatten(1).mean(1), fake.flatten(1).mean(1)
        per_patch = ((real_mean > 0).float().mean() + (fake_mean < 0).float().mean()).item() / 2
        gap = (real_mean - fake_mean).mean().item()
        print(
            f"{label} {variant} step {step}: train loss {loss.item():.3f}, held-out accuracy "
            f"per logit {per_logit:.3f} per patch {per_patch:.3f}, logit gap {gap:.3f}, "
            f"grad norm {grad_norm.item():.3g} ({time.time() - started:.0f} s)",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "variants", nargs="+", help="type:norm[:lr], e.g. pixdisc:group vgg:batch:4e-4"
    )
    parser.add_argument(
        "--generator", required=True, help="weights of the generator (the PSNR start)"
    )
    parser.add_argument("--hr", type=Path, required=True, help="folder of HR training images")
    parser.add_argument("--lr", type=Path, required=True, help="their LR, same file names")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--input", nargs="+", choices=("image", "detail"), default=["image"])
    parser.add_argument("--train-patches", type=int, default=256)
    parser.add_argument("--test-patches", type=int, default=64)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--nf", type=int, default=32)
    args = parser.parse_args()
    torch.set_num_threads(1)
    generator = load_model(args.generator).eval()
    hr_files = sorted(args.hr.glob("*.png"))
    train = patch_bank(generator, hr_files, args.lr, args.train_patches, 1, args.scale)
    test = patch_bank(generator, hr_files, args.lr, args.test_patches, 2, args.scale)
    print(
        "yardstick: a threshold on Laplacian energy, held-out accuracy "
        f"{energy_yardstick(train, test):.3f}"
    )
    detail = builtin_views(args.scale)["detail"]
    for kind in args.input:
        if kind == "detail":
            bank_train, bank_test = tuple(map(detail, train)), tuple(map(detail, test))
            print(
                f"input detail(x): std HR {bank_train[0].std():.4f}, SR {bank_train[1].std():.4f}"
            )
        else:
            bank_train, bank_test = train, test
        for variant in args.variants:
            probe(
                kind,
                variant,
                bank_train,
                bank_test,
                args.steps,
                args.every,
                args.batch,
                args.nf,
            )


if __name__ == "__main__":
    main()
