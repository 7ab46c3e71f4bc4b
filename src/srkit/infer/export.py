"""``srkit export``: ONNX (verified with onnxruntime) and safetensors for the community tools.

ONNX
    The generator is wrapped so the graph has one input ``input`` (N, C, H, W) and one output
    ``output``, the SR image (SPSR's ``grad_branch`` and SRG2's ``attention`` are left out; the
    output is not clamped, as in PyTorch). Height, width and batch are dynamic unless
    ``--no-dynamic``. After writing, the file is run with onnxruntime on random inputs of two
    sizes (one when static) and the largest absolute difference from the PyTorch output is
    reported; beyond the tolerance the export counts as failed (exit status 1).

    ``--fp16`` exports a half-precision graph (fp16 weights, fp16 input and output, as the
    community's fp16 ONNX models are). It is compared with the *fp32* PyTorch model, so the
    difference measures the precision loss, with a looser tolerance (:data:`FP16_TOLERANCE`).
    onnxruntime's CPU provider runs fp16 graphs by inserting casts, so the check works without
    a GPU.

    Two exporters: ``torchscript`` (default; the classic tracer, seconds for an ESRGAN, any
    opset) and ``dynamo`` (torch.export based, PyTorch's new default; slower to export, opset
    18 and up natively, lower opsets by conversion). The default falls back to ``dynamo`` when
    the installed PyTorch no longer ships the classic exporter.

safetensors
    The weights with srkit's architecture record in the metadata, as ``srkit`` itself writes
    them, so ``srkit upscale`` needs nothing else. For RRDB (ESRGAN) generators the keys are
    the layout spandrel (the model loader behind chaiNNer and ComfyUI) detects as ESRGAN:
    ``--esrgan-layout new`` (default) writes the BasicSR / Real-ESRGAN names (``conv_first``,
    ``body.N.rdb1.conv1``, ``conv_body``, ``conv_up1``, ``conv_hr``, ``conv_last``), which
    spandrel converts; ``old`` writes the original ESRGAN ``model.N`` names that older tools
    (the original ESRGAN test script, IEU, Cupscale) expect. spandrel's ESRGAN builds its dense
    blocks with 32 growth channels and 3x3 convolutions whatever the file says, so an RRDB with
    ``gc`` other than 32 is exported with a warning: it loads in srkit, not in spandrel.
    Compact generators are written in Real-ESRGAN's SRVGGNetCompact layout (``body.N``), which
    spandrel loads as "RealESRGAN Compact" when the activations are PReLU. See
    ``docs/interop.md``.

Importing this module is cheap (no torch); the work happens inside the functions.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from srkit.errors import SrkitError

#: Largest |ONNX - PyTorch| accepted for an fp32 export (float rounding of different kernels).
FP32_TOLERANCE = 1e-3
#: Largest |ONNX fp16 - PyTorch fp32| accepted for an fp16 export (11-bit mantissa: ~5e-4
#: relative per operation, accumulated over the depth of the network; 2e-2 is 5/255).
FP16_TOLERANCE = 2e-2
DEFAULT_OPSET = 17

#: spandrel's ESRGAN architecture hard-codes these (``B.RRDB(..., gc=32, kernel_size=3)``).
SPANDREL_ESRGAN_GC = 32


class ExportError(SrkitError):
    """An export that cannot be done (missing package, bad option, unsupported model)."""


@dataclass
class OnnxReport:
    """What :func:`export_onnx` wrote and how well it matched PyTorch."""

    path: Path
    opset: int
    exporter: str
    fp16: bool
    dynamic: bool
    differences: dict[str, float] = field(default_factory=dict)  # "NxCxHxW" -> max abs diff
    tolerance: float = FP32_TOLERANCE

    @property
    def max_difference(self) -> float:
        return max(self.differences.values(), default=0.0)

    @property
    def passed(self) -> bool:
        return self.max_difference <= self.tolerance


def _sr_only(model: Any) -> Any:
    """A module returning only the SR image of ``model`` (dict outputs reduced to ``sr``)."""
    from torch import nn

    class SrOnly(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x):
            output = self.inner(x)
            return output if not isinstance(output, dict) else output["sr"]

    return SrOnly(model).eval()


def _legacy_exporter_available() -> bool:
    import inspect

    import torch

    try:
        return "dynamo" in inspect.signature(torch.onnx.export).parameters
    except (TypeError, ValueError):
        return False


def export_onnx(
    model: Any,
    path: str | Path,
    opset: int = DEFAULT_OPSET,
    dynamic: bool = True,
    fp16: bool = False,
    exporter: str = "torchscript",
    input_size: int = 64,
    verify: bool = True,
    verify_sizes: tuple[tuple[int, int], ...] | None = None,
) -> OnnxReport:
    """Export ``model``'s SR output to ONNX at ``path`` and (optionally) verify it.

    Args:
        model: a generator (eval mode is set on a copy; the original is untouched).
        path: the ``.onnx`` file to write (parent folders are created).
        opset: ONNX opset.
        dynamic: dynamic batch, height and width; else fixed at ``input_size``.
        fp16: half-precision graph with fp16 input/output.
        exporter: ``"torchscript"`` or ``"dynamo"`` (see the module docstring).
        input_size: side of the example input used for tracing (and the static size).
        verify: run the file with onnxruntime and compare with PyTorch.
        verify_sizes: (height, width) inputs to verify on; default two sizes when dynamic
            (the example size and an odd one), one when static.
    """
    import copy

    import torch

    from srkit.data.reference import extra_inputs
    from srkit.infer.api import model_channels

    if extra_inputs(model):
        raise ExportError(
            f"the model takes {', '.join(extra_inputs(model))} besides the image (a whole-image "
            "reference); ONNX export covers generators whose only input is the image"
        )
    if exporter not in ("torchscript", "dynamo"):
        raise ExportError(f"unknown ONNX exporter '{exporter}'; use torchscript or dynamo")
    if exporter == "torchscript" and not _legacy_exporter_available():
        exporter = "dynamo"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    reference = copy.deepcopy(model).float().cpu().eval()
    exported = copy.deepcopy(reference)
    dtype = torch.float16 if fp16 else torch.float32
    if fp16:
        exported = exported.half()
    wrapper = _sr_only(exported)
    channels = model_channels(reference)[0]
    example = torch.rand(
        1, channels, input_size, input_size, generator=torch.Generator().manual_seed(0)
    )
    names = {"input_names": ["input"], "output_names": ["output"]}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer / deprecation chatter; the result is verified
        if exporter == "torchscript":
            axes = {0: "batch", 2: "height", 3: "width"}
            torch.onnx.export(
                wrapper,
                (example.to(dtype),),
                str(path),
                dynamo=False,
                opset_version=opset,
                dynamic_axes={"input": axes, "output": axes} if dynamic else None,
                **names,
            )
        else:
            shapes = None
            if dynamic:
                dim = torch.export.Dim
                shapes = {
                    "x": {
                        2: dim("height", min=2, max=16384),
                        3: dim("width", min=2, max=16384),
                    }
                }
            torch.onnx.export(
                wrapper,
                (example.to(dtype),),
                str(path),
                dynamo=True,
                opset_version=opset,
                dynamic_shapes=shapes,
                verbose=False,
                **names,
            )
    _add_onnx_metadata(path, reference)
    report = OnnxReport(
        path, opset, exporter, fp16, dynamic, tolerance=FP16_TOLERANCE if fp16 else FP32_TOLERANCE
    )
    if verify:
        if verify_sizes is None:
            odd = input_size + 13
            verify_sizes = (
                ((input_size, input_size), (odd, input_size + 6))
                if dynamic
                else ((input_size, input_size),)
            )
        for height, width in verify_sizes:
            key = f"1x{channels}x{height}x{width}"
            report.differences[key] = verify_onnx(path, reference, height, width, fp16)
    return report


def _add_onnx_metadata(path: Path, model: Any) -> None:
    """Record srkit's architecture and the scale in the ONNX file's metadata properties."""
    try:
        import onnx
    except ImportError:
        return
    proto = onnx.load(str(path))
    arch = getattr(model, "srkit_arch", None) or {}
    entries = {
        "srkit_arch": json.dumps(arch, sort_keys=True, default=str),
        "scale": str(getattr(model, "scale", "")),
        "producer": "srkit",
    }
    for key, value in entries.items():
        prop = proto.metadata_props.add()
        prop.key, prop.value = key, value
    onnx.save(proto, str(path))


def _require_onnxruntime() -> Any:
    """The onnxruntime module, or the one-line error saying how to get it."""
    try:
        import onnxruntime
    except ImportError:
        raise ExportError(
            "verifying an ONNX export needs onnxruntime: pip install 'srkit[onnx]' "
            "(or pass --no-verify)"
        ) from None
    return onnxruntime


def verify_onnx(path: str | Path, model: Any, height: int, width: int, fp16: bool = False) -> float:
    """Max |onnxruntime(path) - model| on a random (1, C, height, width) input in [0, 1]."""
    import numpy as np
    import torch

    from srkit.infer.api import model_channels, model_device
    from srkit.infer.tiling import split_output

    onnxruntime = _require_onnxruntime()
    channels = model_channels(model)[0]
    generator = torch.Generator().manual_seed(height * 100003 + width)
    sample = torch.rand(1, channels, height, width, generator=generator)
    with torch.no_grad():
        expected, _ = split_output(model(sample.to(model_device(model))))
    expected = expected.float().cpu()
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = sample.numpy().astype(np.float16 if fp16 else np.float32)
    (actual,) = session.run(None, {session.get_inputs()[0].name: feed})
    if actual.shape != tuple(expected.shape):
        raise ExportError(
            f"'{path}' gives shape {actual.shape} for a {width}x{height} input, PyTorch "
            f"{tuple(expected.shape)}"
        )
    return float(np.abs(actual.astype(np.float32) - expected.numpy()).max())


# --------------------------------------------------------------------------------------------
# safetensors
# --------------------------------------------------------------------------------------------


def spandrel_problems(model: Any) -> list[str]:
    """Why spandrel (chaiNNer, ComfyUI) would not load ``model`` (as ESRGAN or as RealESRGAN
    Compact); empty if it would."""
    arch = getattr(model, "srkit_arch", None) or {}
    kind = arch.get("type", type(model).__name__)
    if kind == "compact":
        return _compact_spandrel_problems(arch)
    if kind != "rrdb":
        return [
            f"spandrel has no srkit {kind} architecture (only RRDB/ESRGAN and compact files "
            "load there)"
        ]
    problems = []
    gc = int(arch.get("gc", SPANDREL_ESRGAN_GC))
    if gc != SPANDREL_ESRGAN_GC:
        problems.append(
            f"spandrel's ESRGAN always builds gc={SPANDREL_ESRGAN_GC} dense blocks; this model "
            f"has gc={gc}"
        )
    return problems


def _compact_spandrel_problems(arch: dict[str, Any]) -> list[str]:
    """spandrel's Compact loader: found by ``body.0.weight`` + ``body.1.weight`` (PReLU slopes);
    scale and output channels guessed from the last convolution's width (input channels first,
    then 3, 4, 1; any square)."""
    from srkit.nets.compact import scale_and_out_channels

    problems = []
    act = arch.get("act_type", "prelu")
    if act != "prelu":
        problems.append(
            f"spandrel recognises compact models by their PReLU weights; this one uses {act}"
        )
    scale, out_channels = int(arch.get("scale", 4)), int(arch.get("out_channels", 3))
    width = out_channels * scale * scale
    guess = scale_and_out_channels(width, int(arch.get("in_channels", 3)), scales=None)
    if guess != (scale, out_channels):
        read = "no scale" if guess is None else f"scale {guess[0]} with {guess[1]} output channels"
        problems.append(
            f"spandrel reads a last convolution of {width} channels as {read}; this model is "
            f"x{scale} with {out_channels} output channels"
        )
    return problems


def esrgan_state_dict(model: Any, layout: str = "new") -> dict[str, Any]:
    """An RRDB generator's weights in the community key layout ``new`` or ``old``."""
    from srkit.nets.rrdb import to_old_esrgan

    state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    if layout == "new":
        return state
    if layout == "old":
        return to_old_esrgan(state)
    raise ExportError(f"unknown ESRGAN layout '{layout}'; use new or old")


def export_safetensors(
    model: Any, path: str | Path, layout: str = "new", fp16: bool = False
) -> list[str]:
    """Write ``model``'s weights as safetensors with srkit's metadata; returns warnings.

    RRDB models get the community ESRGAN key layout (``layout``); compact models are in the
    community SRVGGNetCompact layout already; other generators keep
    srkit's keys. ``fp16`` halves the file (tools cast back when they load it).
    """
    from srkit.weights import save_weights

    arch = getattr(model, "srkit_arch", None) or {}
    if arch.get("type") == "rrdb":
        state = esrgan_state_dict(model, layout)
    else:
        state = {key: value.detach().cpu() for key, value in model.state_dict().items()}
    if fp16:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    metadata = {"srkit_arch": json.dumps(arch, sort_keys=True, default=str)} if arch else {}
    if arch.get("type") == "rrdb":
        metadata["esrgan_layout"] = layout
    metadata["scale"] = str(getattr(model, "scale", ""))
    save_weights(Path(path), state, metadata)
    return spandrel_problems(model)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``srkit export`` options."""
    parser.add_argument("model", type=Path, help="weights file or checkpoint folder")
    parser.add_argument("--onnx", type=Path, metavar="OUT.onnx", help="write an ONNX model here")
    parser.add_argument(
        "--safetensors", type=Path, metavar="OUT", help="write the weights as safetensors here"
    )
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset (default 17)")
    parser.add_argument(
        "--dynamic",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="dynamic batch/height/width in the ONNX graph (default on)",
    )
    parser.add_argument(
        "--input-size",
        type=int,
        default=64,
        help="example input side for tracing (and --no-dynamic)",
    )
    parser.add_argument(
        "--fp16", action="store_true", help="half precision (ONNX graph and/or safetensors weights)"
    )
    parser.add_argument(
        "--exporter", choices=["torchscript", "dynamo"], default="torchscript", help="ONNX exporter"
    )
    parser.add_argument(
        "--esrgan-layout",
        choices=["new", "old"],
        default="new",
        help="RRDB key names: BasicSR/Real-ESRGAN 'new' (default) or original ESRGAN 'old'",
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the onnxruntime check")


def export_command(args: argparse.Namespace) -> int:
    """Run ``srkit export``; 0 when everything was written (and verified), 1 when a check failed."""
    if args.onnx is None and args.safetensors is None:
        raise ExportError("nothing to export: pass --onnx OUT.onnx and/or --safetensors OUT")
    for target in (args.onnx, args.safetensors):
        if target is not None and target.is_dir():
            raise ExportError(f"'{target}' is a folder; give a file name")
    if args.input_size < 8:
        raise ExportError(f"--input-size must be at least 8, got {args.input_size}")
    from srkit.infer.api import load_model

    model = load_model(args.model)
    status = 0
    if args.safetensors is not None:
        problems = export_safetensors(model, args.safetensors, args.esrgan_layout, args.fp16)
        print(f"wrote {args.safetensors}")
        for problem in problems:
            print(f"srkit: warning: {problem}; the file loads in srkit", file=sys.stderr)
    if args.onnx is not None:
        if not args.no_verify:
            _require_onnxruntime()  # before the export's minutes, not after
        try:
            report = export_onnx(
                model,
                args.onnx,
                opset=args.opset,
                dynamic=args.dynamic,
                fp16=args.fp16,
                exporter=args.exporter,
                input_size=args.input_size,
                verify=not args.no_verify,
            )
        except ModuleNotFoundError as error:
            raise ExportError(
                f"ONNX export needs the '{error.name}' package: pip install 'srkit[onnx]'"
            ) from None
        kind = "fp16" if args.fp16 else "fp32"
        print(f"wrote {report.path} (opset {report.opset}, {report.exporter} exporter, {kind})")
        for shape, difference in report.differences.items():
            print(f"  onnxruntime vs PyTorch, input {shape}: max abs difference {difference:.3g}")
        if report.differences and not report.passed:
            print(
                f"srkit: error: '{report.path}' differs from PyTorch by "
                f"{report.max_difference:.3g} (tolerance {report.tolerance:g})",
                file=sys.stderr,
            )
            status = 1
    return status
