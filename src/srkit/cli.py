"""The ``srkit`` command line: train, upscale, export, validate, compare, prepare, info, doctor,
schema.

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
from srkit.errors import ConfigError, SrkitError

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


def _quality_setup(args: argparse.Namespace, bicubic: bool) -> dict[str, Any]:
    """What ``srkit validate`` and ``srkit compare`` share: the models (bicubic first when
    asked), their common scale, the device, LPIPS and the dataset. User errors raise here,
    before anything is written."""
    import torch

    from srkit.data.datasets import SRDataset
    from srkit.evaluation import BicubicUpscaler
    from srkit.weights import load_network

    models: list[tuple[str, Any]] = [(str(path), load_network(path)) for path in args.checkpoints]
    scales = {int(getattr(model, "scale", 0) or 0) for _, model in models} - {0}
    if args.scale:
        scales |= {args.scale}
    if len(scales) > 1:
        names = ", ".join(f"{name} x{getattr(m, 'scale', '?')}" for name, m in models)
        raise SrkitError(f"the models have different scales ({names}); validate them separately")
    if not scales:
        raise SrkitError("cannot tell the model's scale; pass --scale")
    scale = scales.pop()
    if bicubic:
        models.insert(0, ("bicubic", BicubicUpscaler(scale)))
    device = torch.device("cuda" if torch.cuda.is_available() and not args.cpu else "cpu")
    lpips = None
    if args.lpips is not None:
        from srkit.metrics.lpips import load_lpips

        lpips = load_lpips(args.lpips, args.lpips_vgg, key="--lpips").to(device)
    dataset = SRDataset(hr_root=args.hr, lr_root=args.lr, scale=scale, patch_size=None)
    options = {"crop_border": args.crop_border, "y_channel": not args.rgb, "lpips": lpips}
    return {"models": models, "dataset": dataset, "scale": scale, "device": device, **options}


def _evaluate(args: argparse.Namespace, setup: dict[str, Any], report: Path | None) -> list:
    """Evaluate the models; with ``report``, also write the comparison report there."""
    from srkit.evaluation import evaluate_models

    if report is None:
        return evaluate_models(**setup)
    from srkit.infer.report import report_facts, write_report

    facts = report_facts(
        args.hr,
        args.lr,
        setup["scale"],
        setup["crop_border"] or setup["scale"],
        setup["y_channel"],
        setup["lpips"] is not None,
    )
    results, page = write_report(report, facts=facts, **setup)
    print(f"report: {page} (open {page.resolve().as_uri()})", file=sys.stderr)
    return results


def _print_table(args: argparse.Namespace, setup: dict[str, Any], results: list) -> None:
    from srkit.evaluation import quality_table

    print(quality_table(results))
    scale, crop = setup["scale"], args.crop_border or setup["scale"]
    print(f"({len(setup['dataset'])} images in {args.hr}, x{scale}, crop {crop})")


def _validate(args: argparse.Namespace) -> int:
    from srkit.evaluation import quality_csv

    if not args.checkpoints and not args.bicubic:
        raise SrkitError("srkit validate: name at least one model, or pass --bicubic")
    if args.report is not None:
        from srkit.infer.report import check_report_folder

        check_report_folder(args.report)
    setup = _quality_setup(args, bicubic=args.bicubic or args.report is not None)
    results = _evaluate(args, setup, args.report)
    if args.per_image:
        keys = list(results[0][1].metrics)
        for name, result in results:
            width = max(len(str(row["name"])) for row in result.per_image)
            print(f"{name}:")
            print(f"  {'image':<{width}}  " + "  ".join(f"{k:>9}" for k in keys))
            for row in result.per_image:
                print(f"  {row['name']!s:<{width}}  " + "  ".join(f"{row[k]:>9.4f}" for k in keys))
    _print_table(args, setup, results)
    if args.csv:
        from srkit.fsutil import atomic_write_bytes

        atomic_write_bytes(args.csv, quality_csv(results).encode("utf-8"))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from srkit.infer.report import check_report_folder

    check_report_folder(args.output)
    setup = _quality_setup(args, bicubic=True)
    _print_table(args, setup, _evaluate(args, setup, args.output))
    return 0


def _degrade(args: argparse.Namespace) -> int:
    from srkit.config import load_config
    from srkit.data.degrade import write_samples
    from srkit.train.build import degradation_pipeline

    config = load_config(args.config)
    pipeline = degradation_pipeline(config)
    if pipeline is None:
        raise ConfigError(
            f"{args.config}: data.train.degradation is not set; there is nothing to show"
        )
    seed = config.seed if args.seed is None else args.seed
    written = write_samples(pipeline, [str(p) for p in args.images], str(args.output), args.n, seed)
    print(f"{args.output}: {len(written) - 1} degraded samples and contact_sheet.png")
    return 0


def _prepare(args: argparse.Namespace) -> int:
    from srkit.data.prepare import prepare_command

    return prepare_command(args)


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


def _doctor(args: argparse.Namespace) -> int:
    from srkit.doctor import report

    report(seconds=args.seconds)
    return 0


def _seconds(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value:g}")
    return value


def _add_quality_arguments(parser: argparse.ArgumentParser) -> None:
    """The options ``srkit validate`` and ``srkit compare`` share."""
    parser.add_argument("--hr", type=Path, required=True, help="folder of HR images")
    parser.add_argument(
        "--lr", type=Path, help="folder of matching LR images (default: bicubic from HR)"
    )
    parser.add_argument("--scale", type=int, help="scale, if the model does not say")
    parser.add_argument(
        "--crop-border", type=int, help="border crop before metrics (default: scale)"
    )
    parser.add_argument(
        "--rgb", action="store_true", help="metrics on RGB instead of the Y channel"
    )
    parser.add_argument(
        "--lpips",
        type=Path,
        metavar="LIN",
        help="also report LPIPS (VGG); LIN = the LPIPS v0.1 linear layers (lin0..lin4)",
    )
    parser.add_argument(
        "--lpips-vgg",
        type=Path,
        metavar="VGG16",
        help="torchvision's vgg16-397923af.pth for --lpips (default: the torch hub cache)",
    )
    parser.add_argument(
        "--cpu", action="store_true", help="run on the CPU even if a GPU is present"
    )


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
    validate.add_argument(
        "checkpoints",
        type=Path,
        nargs="*",
        metavar="MODEL",
        help="weights files or checkpoint folders (EMA weights preferred); one table row each",
    )
    _add_quality_arguments(validate)
    validate.add_argument(
        "--bicubic", action="store_true", help="add a row for bicubic upscaling (the floor)"
    )
    validate.add_argument(
        "--per-image", action="store_true", help="also print every image's numbers"
    )
    validate.add_argument(
        "--csv", type=Path, help="also write every image's numbers and the means as CSV"
    )
    validate.add_argument(
        "--report",
        type=Path,
        metavar="DIR",
        help="also write the comparison report (as srkit compare) into DIR; adds the bicubic row",
    )
    validate.set_defaults(handler=_validate)

    compare = commands.add_parser(
        "compare",
        help="comparison report: one HTML page with the metrics table and before/after sliders",
    )
    compare.add_argument(
        "checkpoints",
        type=Path,
        nargs="+",
        metavar="MODEL",
        help="weights files or checkpoint folders to compare (with bicubic and HR)",
    )
    _add_quality_arguments(compare)
    compare.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="REPORT_DIR",
        help="folder for index.html, images/ and metrics.csv (open index.html in a browser)",
    )
    compare.set_defaults(handler=_compare)

    degrade = commands.add_parser(
        "degrade", help="show what a config's degradations make of images (LR samples + sheet)"
    )
    degrade.add_argument("config", type=Path, help="a config with data.train.degradation")
    degrade.add_argument("images", type=Path, nargs="+", metavar="IMAGE")
    degrade.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    degrade.add_argument(
        "-n", type=_positive, default=8, help="degraded samples per image (default 8)"
    )
    degrade.add_argument(
        "--seed", type=int, help="seed of the samples (default: the config's seed)"
    )
    degrade.set_defaults(handler=_degrade)

    from srkit.data.prepare import add_prepare_arguments

    prepare = commands.add_parser(
        "prepare", help="make a paired HR/LR training set (and held-out set) from photos"
    )
    add_prepare_arguments(prepare)
    prepare.set_defaults(handler=_prepare)

    info = commands.add_parser("info", help="describe a weights file or checkpoint")
    info.add_argument("checkpoint", type=Path)
    info.set_defaults(handler=_info)

    doctor = commands.add_parser(
        "doctor", help="what this machine offers, a conv benchmark, and what 'auto' picks here"
    )
    doctor.add_argument(
        "--seconds",
        type=_seconds,
        default=20.0,
        help="length of the fp32 vs bf16 convolution benchmark (0 = skip it; default 20)",
    )
    doctor.set_defaults(handler=_doctor)

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
