"""Feature-net pre-training on real photos: held-out feature MSE against the bicubic baseline.

The LR feature net (SPEC section 6, ``configs/featurenet_x4.yml``) learns to predict the frozen
ImageNet VGG16's features of an HR image from its bicubic-upsampled LR image. Its worth is how
much closer it gets to the HR features than the baseline it starts from: the plain VGG applied
to the upsampled LR image. This script trains one with srkit's real ``Trainer`` (the config is
the shipped recipe with a CPU-sized budget) and reports both numbers on held-out photos, as the
run's own validation computes them (``val/loss/feature_mse`` and
``val/loss/bicubic_baseline``: the second is a weight-0 monitor term).

Data: the real photos of ``../shared/data/get-photos.sh``. Each is reduced x2 (box filter, to
drop JPEG artefacts) and centre-cropped to ``--crop`` pixels; the sorted list is split into
every ``--val-every``-th photo for validation (held out; centre crops of ``--val-crop``) and the
rest for training. LR is MATLAB bicubic of HR (made on the fly by the dataset). The prepared
PNGs are cached in ``--cache``.

Usage (from the repository root):
    bash ../shared/data/get-photos.sh /tmp/photos
    bash ../shared/data/get-vgg16.sh /tmp/vgg16.pth
    python benchmarks/featurenet.py --photos /tmp/photos --vgg /tmp/vgg16.pth
    python benchmarks/featurenet.py --layer relu2_2 --steps 100 --patch 64    # faster, shallower
    python benchmarks/featurenet.py --init random                             # from scratch

Prints a markdown table (baseline MSE, feature-net MSE at step 0 and at each validation, the
reduction against the baseline) and the machine facts; ``--json`` writes them too.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_info, markdown_table

from srkit.config import validate_config
from srkit.data.io import read_rgb, write_image
from srkit.train.trainer import Trainer

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png"}


def prepare_photos(
    photos: Path, cache: Path, crop: int, val_crop: int, val_every: int
) -> tuple[Path, Path, int, int]:
    """HR folders (train, val) of x2-reduced centre crops; returns (train, val, counts)."""
    files = sorted(p for p in photos.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
    if not files:
        raise SystemExit(f"no photos in {photos}; run ../shared/data/get-photos.sh {photos}")
    # The split is part of the folder names, so a cache never mixes two splits.
    train = cache / f"train_{crop}_every{val_every}"
    val = cache / f"val_{val_crop}_every{val_every}"
    for index, file in enumerate(files):
        held_out = index % val_every == val_every - 1
        side = val_crop if held_out else crop
        target = (val if held_out else train) / f"{file.stem}.png"
        if target.is_file():
            continue
        image = read_rgb(file)
        height, width = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
        # x2 box reduction: averages away JPEG blocking and noise before the image is "HR".
        reduced = image[:height, :width].reshape(height // 2, 2, width // 2, 2, 3).mean((1, 3))
        side = min(side, reduced.shape[0], reduced.shape[1]) // 8 * 8
        top, left = (reduced.shape[0] - side) // 2, (reduced.shape[1] - side) // 2
        target.parent.mkdir(parents=True, exist_ok=True)
        write_image(target, reduced[top : top + side, left : left + side])
    count = lambda folder: len(list(folder.glob("*.png")))  # noqa: E731
    return train, val, count(train), count(val)


def featurenet_config(args: argparse.Namespace, train: Path, val: Path, output: Path) -> dict:
    """configs/featurenet_x4.yml with this benchmark's data and budget."""
    weights = str(args.vgg)
    return {
        "name": f"featurenet_{args.layer}_{args.init}",
        "scale": args.scale,
        "seed": args.seed,
        "output_dir": str(output),
        "data": {
            "train": {
                "hr": str(train),
                "patch_size": args.patch,
                "batch_size": args.batch,
                "workers": 0,
                "cache_images": True,
            },
            "val": {"hr": str(val), "sheet_images": 0},
        },
        "networks": {
            "generator": {
                "type": "featurenet",
                "arch": "vgg16",
                "layer": args.layer,
                "pretrained": args.init == "vgg",
                "weights": weights,
                "greyscale": args.greyscale,
            },
            "vgg": {"type": "vgg16_features", "layer": args.layer, "weights": weights},
        },
        "losses": [
            {"type": "pixel", "name": "feature_mse", "criterion": "l2", "target": "vgg(hr)"},
            {
                "type": "pixel",
                "name": "bicubic_baseline",
                "weight": 0,
                "criterion": "l2",
                "input": "vgg(up(lr))",
                "target": "vgg(hr)",
            },
        ],
        "train": {
            "iterations": args.steps,
            "generator_input": "up(lr)",
            "optim": {"generator": {"lr": args.lr, "betas": [0.9, 0.99]}},
            "schedule": {"type": "cosine", "periods": [args.steps], "eta_min": args.lr / 10},
        },
        "logging": {
            "print_every": max(1, args.steps // 10),
            "val_every": args.val_every_steps or args.steps,
            "checkpoint_every": args.steps,
            "image_every": 10**9,
            "keep_checkpoints": 1,
            "tensorboard": False,
            "progress_bar": False,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=Path("/tmp/photos"))
    parser.add_argument("--vgg", type=Path, default=Path("/tmp/vgg16.pth"))
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "srkit-fn")
    parser.add_argument("--layer", default="relu3_3", help="VGG16 layer to predict")
    parser.add_argument("--init", choices=("vgg", "random"), default="vgg")
    parser.add_argument("--greyscale", action="store_true")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--patch", type=int, default=96, help="HR training patch side")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crop", type=int, default=384, help="side of the training HR crops")
    parser.add_argument("--val-crop", type=int, default=192, help="side of held-out HR crops")
    parser.add_argument("--val-every", type=int, default=7, help="every k-th photo is held out")
    parser.add_argument("--val-every-steps", type=int, default=100, help="0 = only at the end")
    parser.add_argument(
        "--min-reduction",
        type=float,
        default=0.2,
        help="exit with status 1 if the final MSE is not this fraction below the baseline",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.vgg.is_file():
        raise SystemExit(f"no VGG16 weights at {args.vgg}; run ../shared/data/get-vgg16.sh")

    train, val, train_count, val_count = prepare_photos(
        args.photos, args.cache, args.crop, args.val_crop, args.val_every
    )
    with tempfile.TemporaryDirectory() as output:
        config = validate_config(featurenet_config(args, train, val, Path(output)))
        trainer = Trainer(config, quiet=True)
        started = time.perf_counter()
        history = [(0, trainer.validate())]
        validated = time.perf_counter() - started
        original_validate = trainer.validate

        def recording_validate() -> dict[str, float]:
            results = original_validate()
            history.append((trainer.step, results))
            return results

        trainer.validate = recording_validate
        started, cpu_started = time.perf_counter(), time.process_time()
        trainer.run()
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started

    rows: list[dict[str, Any]] = []
    for step, results in history:
        baseline = results["val/loss/bicubic_baseline"]
        mse = results["val/loss/feature_mse"]
        rows.append(
            {
                "step": step,
                "baseline": f"{baseline:.4g}",
                "feature_net": f"{mse:.4g}",
                "reduction": f"{100 * (1 - mse / baseline):.1f}%",
            }
        )
    info = machine_info(torch.device("cpu"))
    summary = {
        "layer": args.layer,
        "init": args.init,
        "greyscale": args.greyscale,
        "steps": args.steps,
        "batch": args.batch,
        "patch": args.patch,
        "lr": args.lr,
        "train_photos": train_count,
        "val_photos": val_count,
        "train_seconds": round(seconds, 1),
        "train_cpu_seconds": round(cpu_seconds, 1),
        "validation_seconds": round(validated, 1),
        "history": [
            {"step": step, **{k: float(v) for k, v in results.items()}} for step, results in history
        ],
        "machine": info,
    }
    print(
        f"feature net: VGG16 {args.layer}, init {args.init}"
        f"{', greyscale' if args.greyscale else ''}, x{args.scale}; {args.steps} steps of "
        f"batch {args.batch} x {args.patch}px patches, Adam lr {args.lr:g} (cosine); "
        f"{train_count} training photos, {val_count} held out ({args.val_crop}px crops)"
    )
    columns = [
        ("step", "step"),
        ("baseline", "bicubic -> VGG MSE"),
        ("feature_net", "feature net MSE"),
        ("reduction", "reduction"),
    ]
    print(markdown_table(rows, columns))
    print(
        f"training {seconds:.0f} s wall, {cpu_seconds:.0f} s CPU (validations included; one "
        f"validation {validated:.0f} s); " + ", ".join(f"{k}: {v}" for k, v in info.items())
    )
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    final = history[-1][1]
    reduction = 1 - final["val/loss/feature_mse"] / final["val/loss/bicubic_baseline"]
    if reduction < args.min_reduction:
        print(f"FAIL: reduction {100 * reduction:.1f}% < {100 * args.min_reduction:.0f}%")
        sys.exit(1)


if __name__ == "__main__":
    main()
