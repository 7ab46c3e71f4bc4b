"""Where a training step's time goes, by part of the step: the ``--profile`` table of
``train_step.py``.

:func:`label_step` marks the parts of a :class:`srkit.train.trainer.Trainer`'s step with
``torch.profiler`` ranges, from outside the trainer (hooks and wrapped bound methods; the trainer
is not changed): every network's forward (``net:<name>``: the trained networks and the frozen
VGG feature extractors of loss terms), the generator pass, each discriminator pass, the
gradient norms, the finiteness check, each optimizer's step and ``zero_grad``, and the EMA update.

:func:`part_table` then attributes the *self* CPU time of every profiled op to a part:

* an op inside a network's forward range is that network's forward, in the pass it ran in
  (``discriminator forward [G pass]`` is the frozen D judging the generator's output);
* an op run by the autograd engine (inside ``autograd::engine::evaluate_function: ...``) is the
  backward of the forward op that recorded the same sequence number, so the backward of the
  VGG and of the frozen discriminator in the generator pass show as such;
* other ops in a pass are the loss terms' own arithmetic and glue (``losses / glue``);
* optimizer, EMA, norms and the finiteness check are their own parts.

and splits each part's time by kind of op: convolutions (forward and backward), ``cat``,
copies and layout reorders (``copy_``, ``clone``, ``contiguous``, ``_to_copy``, mkldnn
reorders), the rest (activations, element-wise arithmetic, reductions, Adam's kernels), and
"between ops": the self time of the marked ranges themselves, i.e. Python between the ops
(module calls, the hooks, the profiler's own cost). Python outside every marked range and op
(the trainer's code around its ``TrainStep``) is not in the table.
On a CUDA device the same split is made of the CPU-side time (the launch cost); the CUDA time
is in the top-ops table printed beside it.
"""

from __future__ import annotations

import contextlib
import functools
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.autograd.profiler import record_function

NET = "net:"
PHASE = "phase:"
BACKWARD_PREFIX = "autograd::engine::evaluate_function"

#: Op kinds, by name: (kind, substrings of aten op names), first match wins.
KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("conv", ("conv", "mkldnn_convolution")),
    ("cat", ("aten::cat",)),
    (
        "copy / reorder",
        (
            "aten::copy_",
            "aten::clone",
            "aten::contiguous",
            "aten::_to_copy",
            "reorder",
            "to_mkldnn",
            "to_dense",
        ),
    ),
)
#: The self time of the ranges this module adds (``net:``/``phase:``): Python between the ops of a
#: forward or a pass (module calls, hooks, the profiler's own cost), no aten op.
BETWEEN_OPS = "between ops"
KIND_NAMES = (*(kind for kind, _ in KINDS), "other", BETWEEN_OPS)


def op_kind(name: str) -> str:
    if name.startswith((NET, PHASE)):
        return BETWEEN_OPS
    for kind, patterns in KINDS:
        if any(pattern in name for pattern in patterns):
            return kind
    return "other"


def _labelled(function: Callable[..., Any], label: str) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with record_function(label):
            return function(*args, **kwargs)

    return wrapper


def _feature_networks(trainer: Any) -> dict[str, nn.Module]:
    """The frozen VGG feature extractors of the loss terms, by a name for the table."""
    from srkit.nets.vgg import VGGFeatureExtractor

    found: dict[str, nn.Module] = {}
    seen: set[int] = set()

    def visit(value: Any, depth: int) -> None:
        if depth > 3 or id(value) in seen:
            return
        seen.add(id(value))
        if isinstance(value, VGGFeatureExtractor):
            found.setdefault(f"{value.arch} (perceptual)", value)
            return
        if isinstance(value, nn.Module) or hasattr(value, "__dict__"):
            for child in vars(value).values():
                visit(child, depth + 1)
        elif isinstance(value, (list, tuple, dict)):
            for child in value.values() if isinstance(value, dict) else value:
                visit(child, depth + 1)

    for term in trainer.terms:
        visit(term, 0)
    return found


@contextlib.contextmanager
def label_step(trainer: Any) -> Iterator[None]:
    """Mark the parts of ``trainer``'s step with profiler ranges while the block runs."""
    handles = []
    stacks: dict[str, list[Any]] = defaultdict(list)
    networks = {**trainer.networks, **_feature_networks(trainer)}
    for name, module in networks.items():

        def enter(_module: nn.Module, _inputs: Any, name: str = name) -> None:
            stacks[name].append(record_function(NET + name).__enter__())

        def leave(_module: nn.Module, _inputs: Any, _output: Any, name: str = name) -> None:
            stacks[name].pop().__exit__(None, None, None)

        handles.append(module.register_forward_pre_hook(enter))
        handles.append(module.register_forward_hook(leave))
    step = trainer.optimise
    missing = object()
    patched: list[tuple[Any, str, Any]] = []

    def patch(owner: Any, attribute: str, label: str) -> None:
        # (An instance attribute already there, e.g. an LR scheduler's wrapper of
        # optimizer.step, is put back afterwards.)
        patched.append((owner, attribute, vars(owner).get(attribute, missing)))
        setattr(owner, attribute, _labelled(getattr(owner, attribute), PHASE + label))

    patch(step, "_generator_pass", "G pass")
    patch(step, "_discriminator_pass", "D pass")
    patch(step, "_gradient_norm", "grad norms")
    patch(step, "_all_finite", "finite check")
    for name, optimizer in trainer.optimizers.items():
        patch(optimizer, "step", f"Adam step ({name})")
        patch(optimizer, "zero_grad", "zero_grad")
    if trainer.ema is not None:
        patch(trainer.ema, "update", "EMA update")
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for owner, attribute, before in reversed(patched):
            if before is missing:
                delattr(owner, attribute)  # the class's method shows through again
            else:
                setattr(owner, attribute, before)


def _ancestors(event: Any) -> Iterator[Any]:
    while event is not None:
        yield event
        event = event.cpu_parent


def _where(phase: str | None) -> str:
    return f" [{phase}]" if phase in ("G pass", "D pass") else ""


def _part_of(event: Any, forward_part: dict[int, tuple[str, str]]) -> str:
    """The part of the step ``event``'s self time belongs to."""
    net = phase = None
    backward_sequence = None
    for ancestor in _ancestors(event):
        name = ancestor.name
        if net is None and name.startswith(NET):
            net = name[len(NET) :]
        elif phase is None and name.startswith(PHASE):
            phase = name[len(PHASE) :]
        elif name.startswith(BACKWARD_PREFIX):
            backward_sequence = ancestor.sequence_nr  # the outermost one wins
    where = _where(phase)
    if backward_sequence is not None:
        net, where = forward_part.get(backward_sequence, ("losses / glue", where))
        return f"{net} backward{where}"
    if net is not None:
        return f"{net} forward{where}"
    if phase is not None and phase not in ("G pass", "D pass"):
        return phase
    return f"losses / glue{where}" if phase else "outside the step parts"


def part_table(events: Any, steps: int) -> list[dict[str, Any]]:
    """Rows ``{"part", "ms", <kind>: ms, ...}`` per step, largest first, from the profiler's
    ``events()`` over ``steps`` profiled steps; plus a ``total`` row."""
    forward_part: dict[int, tuple[str, str]] = {}
    for event in events:
        if event.sequence_nr is None or event.sequence_nr < 0:
            continue
        if any(a.name.startswith(BACKWARD_PREFIX) for a in _ancestors(event)):
            continue
        labels = [a.name for a in _ancestors(event)]
        net = next((n[len(NET) :] for n in labels if n.startswith(NET)), None)
        phase = next((n[len(PHASE) :] for n in labels if n.startswith(PHASE)), None)
        if net is not None:
            forward_part.setdefault(event.sequence_nr, (net, _where(phase)))
    sums: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(KIND_NAMES, 0.0))
    for event in events:
        part = _part_of(event, forward_part)
        sums[part][op_kind(event.name)] += event.self_cpu_time_total / 1e3 / steps
    rows = [{"part": part, "ms": sum(kinds.values()), **kinds} for part, kinds in sums.items()]
    rows.sort(key=lambda row: -row["ms"])
    total = {"part": "total", "ms": sum(row["ms"] for row in rows)}
    for kind in KIND_NAMES:
        total[kind] = sum(row[kind] for row in rows)
    return [*rows, total]


def format_part_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a markdown table: ms per step, share of the step, ms per kind of op."""
    total = rows[-1]["ms"] or 1.0
    lines = [
        "| part | ms/step | share | " + " | ".join(f"{kind} ms" for kind in KIND_NAMES) + " |",
        "|---|---|---|" + "---|" * len(KIND_NAMES),
    ]
    for row in rows:
        cells = [row["part"], f"{row['ms']:.1f}", f"{row['ms'] / total * 100:.1f}%"]
        cells += [f"{row[kind]:.1f}" for kind in KIND_NAMES]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def profile_trainer_steps(
    trainer: Any, next_batch: Callable[[], Any], first_step: int, count: int
) -> tuple[list[dict[str, Any]], str]:
    """``count`` steps of ``trainer`` under torch.profiler with the parts labelled: (the
    :func:`part_table` rows, the top ops by self time as a table)."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if trainer.device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with label_step(trainer), profile(activities=activities, record_shapes=False) as profiler:
        for step in range(first_step, first_step + count):
            trainer.train_step(next_batch(), step, with_norms=False)
            if trainer.device.type == "cuda":
                torch.cuda.synchronize(trainer.device)
    parts = part_table(profiler.events(), count)
    sort = "self_cuda_time_total" if trainer.device.type == "cuda" else "self_cpu_time_total"
    top = profiler.key_averages().table(sort_by=sort, row_limit=20, max_name_column_width=48)
    return parts, top
