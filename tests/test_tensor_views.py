"""The built-in views of tensor expressions that have properties worth pinning down."""

from __future__ import annotations

import torch

from srkit.losses.tensors import builtin_views, keeps_colour


def test_detail_is_what_the_bicubic_round_trip_loses_and_ignores_colour():
    views = builtin_views(4)
    torch.manual_seed(0)
    image = torch.rand(2, 3, 32, 32)
    detail = views["detail"](image)
    smooth = torch.nn.functional.interpolate(
        views["down"](image), size=(32, 32), mode="bicubic", align_corners=False
    )
    torch.testing.assert_close(detail + smooth, image)
    # A global tint or a flat image carries no detail: a discriminator judging detail(...)
    # cannot push colours around.
    tinted = image + torch.tensor([0.1, -0.05, 0.02]).view(1, 3, 1, 1)
    torch.testing.assert_close(views["detail"](tinted), detail, atol=1e-5, rtol=0)
    assert views["detail"](torch.full((1, 3, 32, 32), 0.4)).abs().max() < 1e-5
    # ... while the texture is there: a checkerboard keeps most of its energy.
    checker = (torch.arange(32).view(1, -1) + torch.arange(32).view(-1, 1)) % 2
    checker = checker.float().expand(1, 3, 32, 32)
    assert views["detail"](checker).std() > 0.8 * checker.std()
    assert not keeps_colour("detail(hr)")
