"""The seed's three design lessons, checked on every generator srkit registers.

1. "Biases are fairly important as a relief valve ... most computationally heavy branches should
   have a bias": every conv/linear of a switch transform, a residual dense block, a registered
   branch, and every conv fed by image gradients has a bias.
2. "Never pollute the mainline with reference data, do that in branches": with every branch
   scale at zero the output is bit-identical for two different references, and with every
   branch's output cut from autograd the output does not depend on the reference at all.
3. "GroupNorm in SPSR is not a great idea (imggrad has a high representation of 0)": walking the
   modules with forward hooks from the grad() input, no normalisation layer that computes
   statistics of its input (GroupNorm, BatchNorm, InstanceNorm, LayerNorm) is reached.

Each check is also run on a deliberately broken variant, which it must catch.
"""

from __future__ import annotations

import copy
import inspect
from functools import partial

import pytest
import torch
from torch import nn

from srkit.data.reference import extra_inputs, whole_image_inputs
from srkit.nets import build_network
from srkit.nets.blocks import ResidualDenseBlock, conv3x3
from srkit.nets.branches import branch_modules, branch_scales
from srkit.nets.gradient import ImageGradient
from srkit.nets.registry import network_names
from srkit.nets.switch import SwitchMultiplexer, TransformBlock
from srkit.nets.switched_spsr import SPSR3Net
from switched_nets import TINY, TINY_REF, finished

#: Small versions of every registered generator (a new generator must be added here).
SMALL = {
    "compact": {"num_feat": 8, "num_conv": 2},
    "rrdb": {"nf": 8, "nb": 2, "gc": 4},
    "spsr": {"nf": 8, "nb": 4, "gc": 4},
    "srg2": {"nf": 8, "depth": 2, "transforms": 3, "trans_layers": 2, "mux_filters": 8},
    "spsr_switched": TINY,
    "spsr3": {**TINY, **TINY_REF},
}
GENERATORS = sorted(SMALL)
#: Normalisation layers that compute statistics of the tensors they see.
STATISTICAL_NORMS = (
    nn.GroupNorm,
    nn.LayerNorm,
    nn.LocalResponseNorm,
    nn.modules.batchnorm._NormBase,  # BatchNorm*, InstanceNorm*
)
#: The computationally heavy branch types of the seed's lesson.
HEAVY_BLOCKS = (TransformBlock, ResidualDenseBlock)


def test_every_registered_generator_is_checked():
    assert set(network_names("generator")) == set(SMALL)


def small(name: str) -> nn.Module:
    torch.manual_seed(0)
    return finished(build_network(name, scale=2, **SMALL[name]))


def lr_and_inputs(net: nn.Module, seed: int = 0) -> tuple[torch.Tensor, dict]:
    """An LR patch and its extra inputs, made as training makes them: the patch is a crop of a
    larger image whose whole-image reference the generator sees."""
    generator = torch.Generator().manual_seed(seed)
    whole = torch.rand(1, 3, 40, 56, generator=generator)
    box = (8, 16, 12, 14)
    lr = whole[:, :, 8:20, 16:30].clone()
    return lr, whole_image_inputs(net, whole, box)


def image_outputs(output) -> dict[str, torch.Tensor]:
    """The image outputs of a generator (``sr``, ``grad_branch``); attention maps are the
    branches' own diagnostics and left out."""
    if isinstance(output, torch.Tensor):
        return {"sr": output}
    return {k: v for k, v in output.items() if isinstance(v, torch.Tensor)}


def tensors_in(args: tuple, kwargs: dict) -> list[torch.Tensor]:
    values = list(args) + list(kwargs.values())
    return [v for v in values if isinstance(v, torch.Tensor)]


def modules_fed_by_gradients(net: nn.Module) -> tuple[int, dict[str, nn.Module]]:
    """(number of grad() inputs, {name: module} of every module whose input depends on one).

    Forward hooks replace each ImageGradient's output by a leaf that requires grad; with every
    parameter frozen, a tensor requires grad exactly when it was computed from that output, so
    a forward pre-hook on every module sees which modules the gradient path reaches.
    """
    net = copy.deepcopy(net).requires_grad_(False)
    lr, extra = lr_and_inputs(net)
    sources = [m for m in net.modules() if isinstance(m, ImageGradient)]
    reached: dict[str, nn.Module] = {}

    def mark(name, module, args, kwargs):
        if any(t.requires_grad for t in tensors_in(args, kwargs)):
            reached[name] = module

    handles = [
        source.register_forward_hook(lambda m, i, out: out.detach().requires_grad_(True))
        for source in sources
    ]
    for name, module in net.named_modules():
        handles.append(module.register_forward_pre_hook(partial(mark, name), with_kwargs=True))
    with torch.enable_grad():
        net(lr, **extra)
    for handle in handles:
        handle.remove()
    return len(sources), reached


# ---------------------------------------------------------------- lesson 1: biases


def unbiased_heavy_layers(net: nn.Module) -> list[str]:
    """Convs/linears without a bias inside heavy blocks, registered branches, or fed by image
    gradients."""
    heavy = [(n, m) for n, m in net.named_modules() if isinstance(m, HEAVY_BLOCKS)]
    heavy += branch_modules(net)
    _, fed = modules_fed_by_gradients(net)
    layers = {f"{n}.{s}".strip("."): layer for n, m in heavy for s, layer in m.named_modules()}
    layers.update(fed)
    return sorted(
        name
        for name, layer in layers.items()
        if isinstance(layer, nn.Conv2d | nn.Linear) and layer.bias is None
    )


@pytest.mark.parametrize("name", GENERATORS)
def test_lesson_1_heavy_branches_have_biases(name):
    net = small(name)
    assert unbiased_heavy_layers(net) == []
    heavy = [m for m in net.modules() if isinstance(m, HEAVY_BLOCKS)]
    if name == "compact":  # a plain conv stack: the whole body is the heavy path
        assert not heavy
        convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
        assert len(convs) >= 3 and all(conv.bias is not None for conv in convs)
    else:
        assert heavy, f"{name} has no heavy block to check"


def test_lesson_1_catches_a_bias_free_transform_and_gradient_conv():
    net = small("spsr_switched")
    net.feature_switches[0].transforms[1].convs[0] = conv3x3(8, 12, bias=False)
    assert unbiased_heavy_layers(net) == ["feature_switches.0.transforms.1.convs.0"]
    spsr = small("spsr")
    spsr.grad_conv_hr = conv3x3(8, 8, bias=False)  # the gradient branch, outside any block
    assert unbiased_heavy_layers(spsr) == ["grad_conv_hr"]


# ------------------------------------------------------ lesson 2: reference off the mainline


def outputs_with_zero_branch_scales(net: nn.Module, extra: dict, lr: torch.Tensor) -> dict:
    net = copy.deepcopy(net)
    with torch.no_grad():
        for scale in branch_scales(net):
            scale.zero_()
        return image_outputs(net(lr, **extra))


def reference_reaches_output_outside_branches(net: nn.Module) -> bool:
    """Whether the outputs depend on the extra inputs once every branch's output is cut from
    autograd (parameters frozen, so only the extra inputs require grad)."""
    net = copy.deepcopy(net).requires_grad_(False)
    lr, extra = lr_and_inputs(net)
    extra = {k: v.clone().requires_grad_(True) for k, v in extra.items()}
    handles = [
        module.register_forward_hook(lambda m, i, out: out.detach())
        for _, module in branch_modules(net)
    ]
    with torch.enable_grad():
        outputs = image_outputs(net(lr, **extra))
    for handle in handles:
        handle.remove()
    return any(output.requires_grad for output in outputs.values())


def check_reference_stays_off_the_mainline(net: nn.Module) -> None:
    lr, first = lr_and_inputs(net, seed=0)
    _, second = lr_and_inputs(net, seed=1)  # another whole image around the same patch
    second["ref"][:, -1] = first["ref"][:, -1]  # same mask and centre, other picture
    assert not torch.equal(first["ref"], second["ref"])
    with torch.no_grad():
        normal = [image_outputs(net(lr, **extra)) for extra in (first, second)]
    # Not vacuous: normally the reference does change the output ...
    assert not torch.equal(normal[0]["sr"], normal[1]["sr"])
    # ... but only through the branches.
    zeroed = [outputs_with_zero_branch_scales(net, extra, lr) for extra in (first, second)]
    for key in zeroed[0]:
        assert torch.equal(zeroed[0][key], zeroed[1][key]), f"'{key}' depends on the reference"
    assert not reference_reaches_output_outside_branches(net)


@pytest.mark.parametrize("name", GENERATORS)
def test_lesson_2_reference_data_never_touches_the_mainline(name):
    net = small(name)
    if not extra_inputs(net):
        # No reference input at all: its forward takes the image only, so no reference data
        # can reach its mainline.
        assert list(inspect.signature(net.forward).parameters) == ["x"]
        assert lr_and_inputs(net)[1] == {}
        return
    assert branch_scales(net) and branch_modules(net)
    check_reference_stays_off_the_mainline(net)


class ContextOnTheMainline(nn.Module):
    """A conv whose output gets a linear map of the reference context added."""

    def __init__(self, conv: nn.Conv2d, context_channels: int) -> None:
        super().__init__()
        self.conv = conv
        self.join = nn.Linear(context_channels, conv.out_channels)
        self.context: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.join(self.context)[:, :, None, None]


class ReferenceOnTheMainline(SPSR3Net):
    """The mistake the seed warns about: the reference context added to the first features."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.conv_first = ContextOnTheMainline(self.conv_first, 2 * kwargs["ref_nf"])

    def _forward(self, x, context):
        self.conv_first.context = context
        return super()._forward(x, context)


def test_lesson_2_catches_a_reference_on_the_mainline():
    torch.manual_seed(0)
    net = finished(ReferenceOnTheMainline(scale=2, **SMALL["spsr3"]))
    with pytest.raises(AssertionError, match="'sr' depends on the reference"):
        check_reference_stays_off_the_mainline(net)
    assert reference_reaches_output_outside_branches(net)


# --------------------------------------------- lesson 3: no statistics of image gradients


def norms_fed_by_gradients(net: nn.Module) -> list[str]:
    _, fed = modules_fed_by_gradients(net)
    return sorted(name for name, module in fed.items() if isinstance(module, STATISTICAL_NORMS))


@pytest.mark.parametrize("name", GENERATORS)
def test_lesson_3_no_normalisation_on_a_path_fed_by_image_gradients(name):
    net = small(name)
    sources, fed = modules_fed_by_gradients(net)
    assert norms_fed_by_gradients(net) == []
    if name in ("spsr", "spsr_switched", "spsr3"):
        # Not vacuous: the walk reaches the whole gradient path and beyond.
        assert sources == 1
        assert "grad_conv_out" in fed and any(isinstance(m, nn.Conv2d) for m in fed.values())
    else:
        assert sources == 0 and fed == {}  # no grad() input in this generator
    # SRG2 keeps GroupNorm in its multiplexers (no gradient input there); the switched SPSRs
    # have none by default (tiling, see srkit.nets.switched_spsr).
    if name != "spsr":
        assert any(isinstance(m, nn.GroupNorm) for m in net.modules()) == (name == "srg2")


def test_lesson_3_catches_group_norm_on_the_gradient_path():
    net = small("spsr_switched")
    # The seed's layout: GroupNorm in the gradient switch's multiplexer.
    net.grad_switch.multiplexer = SwitchMultiplexer(16, 2, 8, reductions=1, norm=True).eval()
    found = norms_fed_by_gradients(net)
    assert found and all(name.startswith("grad_switch.multiplexer.") for name in found)
    spsr = small("spsr")
    spsr.grad_conv_first = nn.Sequential(conv3x3(3, 8), nn.GroupNorm(2, 8))
    assert norms_fed_by_gradients(spsr) == ["grad_conv_first.1"]
