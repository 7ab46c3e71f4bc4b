"""The ``srkit`` command line: train, upscale, export, validate, info, schema.

User errors (:class:`srkit.errors.SrkitError`) print one line ``srkit: error: ...`` and exit with
code 2; ``--debug`` shows the traceback instead. A few errors that are not bad inputs have their
own status (``exit_code``): 3 a loss became NaN/Inf, 4 a checkpoint could not be written. A
training run stopped by SIGINT/SIGTERM (after saving a checkpoint) exits with 128 + the signal
number. ``docs/errors.md`` lists every message. Heavy imports happen inside the commands so
``srkit --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from srkit import __version__
from srkit.errors import SrkitError

EXIT_USER_ERROR = 2


def _train(args: argparse.Namespace) -> int:
    from srkit.config import load_config
    from srkit.train.trainer import Trainer

    config = load_config(args.config, args.set or [])
    if args.nproc is not None and args.nproc > 1:
        return _launch_training(args, config)
    trainer = Trainer(config, resume=args.resume, quiet=args.quiet)
    trainer.run()
    if trainer.stopped_by is not None:  # stopped by SIGINT/SIGTERM after saving a checkpoint
        return 128 + getattr(signal.Signals, trainer.stopped_by, signal.SIGTERM).value
    return 0


def _launch_training(args: argparse.Namespace, config: Any) -> int:
    """``srkit train --nproc N``: check what can be checked once, then start N processes of
    ``srkit train`` (without ``--nproc``) through torchrun's launcher."""
    from srkit.train.distributed import check_batch_layout, launch_processes

    check_batch_layout(config.data.train.batch_size, args.nproc, config.train.megabatch)
    forwarded = ["--debug"] if args.debug else []
    forwarded += ["train", str(args.config)]
    for override in args.set or []:
        forwarded += ["--set", override]
    if args.resume is not None:
        forwarded += ["--resume", args.resume]
    if args.quiet:
        forwarded.append("--quiet")
    return launch_processes(args.nproc, forwarded)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _upscale(args: argparse.Namespace) -> int:
    from srkit.infer.upscale import upscale_command

    return upscale_command(args)


def _export(args: argparse.Namespace) -> int:
    from srkit.infer.export import export_command

    return export_command(args)


def _validate(args: argparse.Namespace) -> int:
    import csv

    import torch

    from srkit.data.datasets import SRDataset
    from srkit.evaluation import evaluate_generator
    from srkit.weights import load_network

    model = load_network(args.checkpoint)
    scale = int(getattr(model, "scale", 0) or args.scale or 0)
    if not scale:
        raise SrkitError("cannot tell the model's scale; pass --scale")
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    lpips = None
    if args.lpips is not None:
        from srkit.metrics.lpips import load_lpips

        lpips = load_lpips(args.lpips, args.lpips_vgg, key="--lpips").to(device)
    dataset = SRDataset(hr_root=args.hr, lr_root=args.lr, scale=scale, patch_size=None)
    result = evaluate_generator(
        model.to(device),
        dataset,
        scale=scale,
        device=device,
        crop_border=args.crop_border,
        y_channel=not args.rgb,
        lpips=lpips,
    )
    keys = [k for k in result.metrics]
    width = max(len(str(row["name"])) for row in result.per_image) if result.per_image else 5
    print(f"{'image':<{width}}  " + "  ".join(f"{k:>9}" for k in keys))
    for row in result.per_image:
        print(f"{row['name']!s:<{width}}  " + "  ".join(f"{row[k]:>9.4f}" for k in keys))
    print(f"{'mean':<{width}}  " + "  ".join(f"{result.metrics[k]:>9.4f}" for k in keys))
    if args.csv:
        with open(args.csv, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["name", *keys])
            writer.writeheader()
            writer.writerows(result.per_image)
            writer.writerow({"name": "mean", **result.metrics})
    return 0


def _info(args: argparse.Namespace) -> int:
    from srkit.weights import architecture_of, read_weights, resolve_weights_file

    file = resolve_weights_file(args.checkpoint)
    state, metadata = read_weights(file)
    arch, arguments = architecture_of(state, metadata)
    parameters = sum(
        t.numel() for k, t in state.items() if "running_" not in k and "num_batches" not in k
    )
    print(f"file:        {file}")
    print(f"network:     {arch}")
    for key, value in sorted(arguments.items()):
        print(f"  {key}: {value}")
    print(f"tensors:     {len(state)} ({parameters:,} values)")
    for key in ("step", "srkit_format"):
        if key in metadata:
            print(f"{key + ':':<12} {metadata[key]}")
    return 0


def _schema(args: argparse.Namespace) -> int:
    from srkit.schema_docs import write_schema_docs

    for path in write_schema_docs(args.json, args.markdown):
        print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="srkit", description="Train and run super-resolution GANs."
    )
    parser.add_argument("--version", action="version", version=f"srkit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train a model from a YAML config")
    train.add_argument("config", type=Path, help="YAML config file")
    train.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config key, e.g. train.iterations=1000",
    )
    train.add_argument(
        "--resume", metavar="PATH|auto", help="continue from a checkpoint folder, or the newest one"
    )
    train.add_argument("--quiet", action="store_true", help="no console output (log file only)")
    train.add_argument(
        "--nproc",
        type=_positive,
        metavar="N",
        help="train in N processes on this machine (DistributedDataParallel via torchrun's "
        "launcher; gloo on CPU, NCCL on GPUs); data.train.batch_size stays the global batch",
    )
    train.set_defaults(handler=_train)

    from srkit.infer.upscale import add_upscale_arguments

    upscale = commands.add_parser("upscale", help="upscale images with a trained model")
    add_upscale_arguments(upscale)
    upscale.set_defaults(handler=_upscale)

    from srkit.infer.export import add_export_arguments

    export = commands.add_parser(
        "export", help="export a model to ONNX (verified) or community safetensors"
    )
    add_export_arguments(export)
    export.set_defaults(handler=_export)

    validate = commands.add_parser(
        "validate", help="PSNR/SSIM (and LPIPS) of a model on a folder of HR images"
    )
    validate.add_argument("checkpoint", type=Path, help="weights file or checkpoint folder")
    validate.add_argument("--hr", type=Path, required=True, help="folder of HR images")
    validate.add_argument(
        "--lr", type=Path, help="folder of matching LR images (default: bicubic from HR)"
    )
    validate.add_argument("--scale", type=int, help="scale, if the model does not say")
    validate.add_argument(
        "--crop-border", type=int, help="border crop before metrics (default: scale)"
    )
    validate.add_argument(
        "--rgb", action="store_true", help="metrics on RGB instead of the Y channel"
    )
    validate.add_argument(
        "--lpips",
        type=Path,
        metavar="LIN",
        help="also report LPIPS (VGG); LIN = the LPIPS v0.1 linear layers (lin0..lin4)",
    )
    validate.add_argument(
        "--lpips-vgg",
        type=Path,
        metavar="VGG16",
        help="torchvision's vgg16-397923af.pth for --lpips (default: the torch hub cache)",
    )
    validate.add_argument("--csv", type=Path, help="also write the table as CSV")
    validate.add_argument(
        "--cpu", action="store_true", help="run on the CPU even if a GPU is present"
    )
    validate.set_defaults(handler=_validate)

    info = commands.add_parser("info", help="describe a weights file or checkpoint")
    info.add_argument("checkpoint", type=Path)
    info.set_defaults(handler=_info)

    schema = commands.add_parser("schema", help="write the config reference and JSON schema")
    schema.add_argument("--json", type=Path, default=Path("docs/config.schema.json"))
    schema.add_argument("--markdown", type=Path, default=Path("docs/config.md"))
    schema.set_defaults(handler=_schema)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except SrkitError as error:
        if args.debug:
            raise
        print(f"srkit: error: {error}", file=sys.stderr)
        return getattr(error, "exit_code", EXIT_USER_ERROR)
    except KeyboardInterrupt:
        logging.getLogger("srkit").warning("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
