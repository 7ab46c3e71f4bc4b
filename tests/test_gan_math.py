"""GAN objectives and pixgan's swap/label machinery (srkit.losses.gan)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from srkit.errors import UnknownNameError
from srkit.losses.gan import (
    GAN_TYPES,
    apply_swaps,
    discriminator_loss,
    draw_swap_rectangles,
    generator_loss,
    labels_to_logit_size,
)

CHUNK_INVARIANT = ("gan", "lsgan", "hinge", "pixgan")


def _covered_fraction_by_hand(rectangles, height, width, reduction):
    """Per output cell, the fraction of its pixels inside the union of rectangles (pure Python)."""
    inside = set()
    for top, left, rect_h, rect_w in rectangles:
        for row in range(top, top + rect_h):
            for col in range(left, left + rect_w):
                inside.add((row, col))
    out = []
    for cell_row in range(height // reduction):
        out_row = []
        for cell_col in range(width // reduction):
            count = sum(
                (cell_row * reduction + dr, cell_col * reduction + dc) in inside
                for dr in range(reduction)
                for dc in range(reduction)
            )
            out_row.append(count / reduction**2)
        out.append(out_row)
    return torch.tensor(out)


# -- pixgan labels -------------------------------------------------------------------------------


def test_area_labels_equal_covered_fraction_for_a_known_rectangle():
    # One rectangle rows 5..24, cols 10..22 on a 64x64 image; logits at 1/8 (8x8 cells).
    real = torch.zeros(1, 3, 64, 64)
    fake = torch.ones(1, 3, 64, 64)
    top, left, rect_h, rect_w = 5, 10, 20, 13
    _, _, real_map, fake_map = apply_swaps(real, fake, [[(top, left, rect_h, rect_w)]])
    fake_labels = labels_to_logit_size(fake_map, 8, 8, channels=3)
    real_labels = labels_to_logit_size(real_map, 8, 8, channels=3)
    assert fake_labels.shape == (1, 3, 8, 8)

    expected = torch.zeros(8, 8)
    for i in range(8):
        rows = max(0, min(8 * i + 8, top + rect_h) - max(8 * i, top))
        for j in range(8):
            cols = max(0, min(8 * j + 8, left + rect_w) - max(8 * j, left))
            expected[i, j] = rows * cols / 64
    # e.g. the cell at rows 0-7, cols 8-15 holds rows 5-7 x cols 10-15: 3*6/64.
    assert expected[0, 1] == pytest.approx(18 / 64)
    for channel in range(3):
        torch.testing.assert_close(fake_labels[0, channel], expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(real_labels[0, channel], 1 - expected, atol=1e-5, rtol=0)


def test_area_labels_equal_covered_fraction_for_seeded_rectangles():
    generator = torch.Generator().manual_seed(1234)
    rectangles = draw_swap_rectangles(96, 128, 3, generator, swap_probability=1.0, max_swaps=4)
    assert any(rectangles), "seed chosen so that some image has rectangles"
    real, fake = torch.rand(3, 3, 96, 128), torch.rand(3, 3, 96, 128)
    _, _, _, fake_map = apply_swaps(real, fake, rectangles)
    labels = labels_to_logit_size(fake_map, 12, 16, channels=1)
    for index, image_rectangles in enumerate(rectangles):
        expected = _covered_fraction_by_hand(image_rectangles, 96, 128, 8)
        torch.testing.assert_close(labels[index, 0], expected, atol=1e-5, rtol=0)


def test_labels_at_non_integer_reduction_stay_soft_and_in_range():
    label_map = torch.zeros(2, 1, 50, 70)
    label_map[:, :, 10:30, 5:40] = 1
    labels = labels_to_logit_size(label_map, 7, 9, channels=2)
    assert labels.shape == (2, 2, 7, 9)
    assert labels.min() >= 0 and labels.max() <= 1
    assert ((labels > 0) & (labels < 1)).any()


def test_apply_swaps_exchanges_pixels_and_labels_origin():
    real, fake = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    # Image 0: two overlapping rectangles (the union is swapped once); image 1: none.
    rectangles = [[(0, 0, 16, 16), (8, 8, 16, 16)], []]
    real2, fake2, real_map, fake_map = apply_swaps(real, fake, rectangles)
    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[0:16, 0:16] = True
    inside[8:24, 8:24] = True
    assert torch.equal(real2[0][:, inside], fake[0][:, inside])
    assert torch.equal(fake2[0][:, inside], real[0][:, inside])
    assert torch.equal(real2[0][:, ~inside], real[0][:, ~inside])
    assert torch.equal(real2[1], real[1]) and torch.equal(fake2[1], fake[1])
    assert torch.equal(fake_map[0, 0], inside.float())
    assert torch.equal(real_map[0, 0], 1 - inside.float())
    assert real_map[1].eq(1).all() and fake_map[1].eq(0).all()
    # Inputs are not modified in place.
    assert not torch.equal(real2[0], real[0])


# -- pixgan rectangles ---------------------------------------------------------------------------


@pytest.mark.parametrize(("height", "width"), [(64, 64), (96, 128), (256, 192), (32, 32), (20, 48)])
def test_rectangles_lie_inside_the_image(height, width):
    generator = torch.Generator().manual_seed(0)
    rectangles = draw_swap_rectangles(height, width, 500, generator, swap_probability=1.0)
    side_h = (min(16, height), max(min(16, height), height // 4))
    side_w = (min(16, width), max(min(16, width), width // 4))
    count = 0
    for image_rectangles in rectangles:
        for top, left, rect_h, rect_w in image_rectangles:
            count += 1
            assert top >= 0 and top + rect_h <= height
            assert left >= 0 and left + rect_w <= width
            assert side_h[0] <= rect_h <= side_h[1]
            assert side_w[0] <= rect_w <= side_w[1]
    assert count > 500  # about 2 per image


def test_rectangle_sides_cover_the_whole_range():
    generator = torch.Generator().manual_seed(5)
    rectangles = draw_swap_rectangles(256, 256, 400, generator, swap_probability=1.0)
    heights = {rect[2] for image in rectangles for rect in image}
    assert min(heights) == 16 and max(heights) == 64


def _chi_square(observed, expected):
    return sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True))


def test_swap_frequency_and_uniform_rectangle_count():
    draws, max_swaps = 2000, 4
    generator = torch.Generator().manual_seed(2024)
    rectangles = draw_swap_rectangles(128, 128, draws, generator, 0.5, max_swaps)
    counts = [0] * (max_swaps + 1)
    for image_rectangles in rectangles:
        counts[len(image_rectangles)] += 1
    # A swap draws k ~ U{0..4}, so an image has rectangles with probability p * 4/5; the swap
    # frequency estimate undoes that factor.
    swap_frequency = (draws - counts[0]) / draws * (max_swaps + 1) / max_swaps
    assert abs(swap_frequency - 0.5) < 0.05
    expected = [draws * (0.5 + 0.5 / 5)] + [draws * 0.5 / 5] * max_swaps
    assert _chi_square(counts, expected) < 18.47  # chi2(4 dof) at p = 0.001

    # Always swapping: the count itself must be uniform over 0..max_swaps.
    rectangles = draw_swap_rectangles(128, 128, draws, generator, 1.0, max_swaps)
    counts = [0] * (max_swaps + 1)
    for image_rectangles in rectangles:
        counts[len(image_rectangles)] += 1
    assert _chi_square(counts, [draws / (max_swaps + 1)] * (max_swaps + 1)) < 18.47
    assert all(abs(c / draws - 0.2) < 0.04 for c in counts)


def test_swap_probability_zero_and_shared_rectangles():
    generator = torch.Generator().manual_seed(3)
    assert draw_swap_rectangles(64, 64, 50, generator, swap_probability=0.0) == [[]] * 50
    shared = draw_swap_rectangles(64, 64, 6, generator, 1.0, 4, per_image=False)
    assert all(image == shared[0] for image in shared)
    again = draw_swap_rectangles(64, 64, 6, torch.Generator().manual_seed(3), 0.0)
    assert again == [[]] * 6


def test_rectangle_draw_is_reproducible():
    first = draw_swap_rectangles(128, 96, 8, torch.Generator().manual_seed(7))
    second = draw_swap_rectangles(128, 96, 8, torch.Generator().manual_seed(7))
    assert first == second


# -- GAN losses ----------------------------------------------------------------------------------


def _logits(shape, value=None, seed=0):
    if value is None:
        return torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return torch.full(shape, float(value))


@pytest.mark.parametrize("gan_type", GAN_TYPES)
@pytest.mark.parametrize("shape", [(4, 1), (4, 3, 8, 8)])
def test_losses_are_finite_and_have_the_right_sign(gan_type, shape):
    real, fakes = _logits(shape, seed=1), [_logits(shape, seed=2), _logits(shape, seed=3)]
    assert torch.isfinite(discriminator_loss(gan_type, real, fakes))
    assert torch.isfinite(generator_loss(gan_type, fakes, real_logits=real))

    good_d = discriminator_loss(gan_type, _logits(shape, 3), [_logits(shape, -3)])
    bad_d = discriminator_loss(gan_type, _logits(shape, -3), [_logits(shape, 3)])
    assert good_d < bad_d
    # The generator is happier when its fakes are judged real.
    real = _logits(shape, 0)
    fooled = generator_loss(gan_type, [_logits(shape, 3)], real_logits=real)
    caught = generator_loss(gan_type, [_logits(shape, -3)], real_logits=real)
    assert fooled < caught


def test_loss_formulas_by_hand():
    real, fake = torch.tensor([[2.0], [0.5]]), torch.tensor([[-1.0], [1.0]])
    softplus = F.softplus  # BCE(x, 1) = softplus(-x), BCE(x, 0) = softplus(x)
    bce_real = softplus(-real).mean()
    bce_fake = softplus(fake).mean()
    assert discriminator_loss("gan", real, [fake]) == pytest.approx(
        ((bce_real + bce_fake) / 2).item()
    )
    assert generator_loss("gan", [fake]) == pytest.approx(softplus(-fake).mean().item())
    assert discriminator_loss("lsgan", real, fake) == pytest.approx(
        (((real - 1) ** 2).mean() + (fake**2).mean()).item() / 2
    )
    assert generator_loss("lsgan", fake) == pytest.approx(((fake - 1) ** 2).mean().item())
    assert discriminator_loss("hinge", real, fake) == pytest.approx(
        (F.relu(1 - real).mean() + F.relu(1 + fake).mean()).item()
    )
    assert generator_loss("hinge", fake) == pytest.approx(-fake.mean().item())
    ragan_d = (softplus(-(real - fake.mean())).mean() + softplus(fake - real.mean()).mean()) / 2
    assert discriminator_loss("ragan", real, fake) == pytest.approx(ragan_d.item())
    ragan_g = (softplus(real - fake.mean()).mean() + softplus(-(fake - real.mean())).mean()) / 2
    assert generator_loss("ragan", fake, real_logits=real) == pytest.approx(ragan_g.item())
    # Unswapped pixgan with default labels is plain gan.
    assert discriminator_loss("pixgan", real, fake) == pytest.approx(
        discriminator_loss("gan", real, fake).item()
    )


def test_several_fakes_average_the_fake_terms():
    real, fake1, fake2 = _logits((3, 1), seed=4), _logits((3, 1), seed=5), _logits((3, 1), seed=6)
    bce = F.binary_cross_entropy_with_logits
    expected = (
        bce(real, torch.ones_like(real))
        + (bce(fake1, torch.zeros_like(fake1)) + bce(fake2, torch.zeros_like(fake2))) / 2
    ) / 2
    torch.testing.assert_close(discriminator_loss("gan", real, [fake1, fake2]), expected)
    expected_g = (bce(fake1, torch.ones_like(fake1)) + bce(fake2, torch.ones_like(fake2))) / 2
    torch.testing.assert_close(generator_loss("gan", [fake1, fake2]), expected_g)
    # ragan: the mean over fakes of the single-fake relativistic losses.
    singles = [discriminator_loss("ragan", real, [f]) for f in (fake1, fake2)]
    torch.testing.assert_close(discriminator_loss("ragan", real, [fake1, fake2]), sum(singles) / 2)
    # hinge: real term + mean over fakes of the fake term.
    expected_hinge = (
        F.relu(1 - real).mean() + (F.relu(1 + fake1).mean() + F.relu(1 + fake2).mean()) / 2
    )
    torch.testing.assert_close(discriminator_loss("hinge", real, [fake1, fake2]), expected_hinge)


def test_pixgan_uses_label_maps():
    real, fake = torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4)
    real_map = torch.ones(2, 1, 4, 4)
    fake_map = torch.zeros(2, 1, 4, 4)
    fake_map[:, :, :2] = 1.0  # top half of the fake image holds real pixels
    real_map[:, :, 2:] = 0.5
    loss = discriminator_loss("pixgan", real, [fake], real_labels=real_map, fake_labels=fake_map)
    # At zero logits BCE is log 2 whatever the label.
    assert loss == pytest.approx(math.log(2))
    fake = torch.zeros(2, 3, 4, 4)
    fake[:, :, :2] = 5.0  # D correctly calls the swapped-in region of the fake image real
    better = discriminator_loss("pixgan", real, fake, real_labels=real_map, fake_labels=fake_map)
    assert better < loss
    with pytest.raises(ValueError, match="label"):
        discriminator_loss("hinge", real, fake, real_labels=real_map)


def test_ragan_generator_loss_does_not_reach_real_logits():
    real = torch.randn(4, 1, requires_grad=True)
    fake = torch.randn(4, 1, requires_grad=True)
    generator_loss("ragan", [fake], real_logits=real).backward()
    assert real.grad is None and fake.grad is not None
    with pytest.raises(ValueError, match="real logits"):
        generator_loss("ragan", [fake])


def test_unknown_gan_type_is_a_user_error():
    with pytest.raises(UnknownNameError, match="did you mean 'ragan'"):
        discriminator_loss("rgan", torch.zeros(1, 1), [torch.zeros(1, 1)])


def test_losses_are_float32_for_bf16_logits():
    real = torch.randn(4, 3, 8, 8).bfloat16()
    fake = torch.randn(4, 3, 8, 8).bfloat16()
    for gan_type in GAN_TYPES:
        assert discriminator_loss(gan_type, real, [fake]).dtype == torch.float32
        assert generator_loss(gan_type, [fake], real_logits=real).dtype == torch.float32


@pytest.mark.parametrize("gan_type", CHUNK_INVARIANT)
def test_chunked_losses_average_to_the_whole_batch(gan_type):
    shape = (8, 3, 4, 4)
    real = _logits(shape, seed=10)
    fakes = [_logits(shape, seed=11), _logits(shape, seed=12)]
    kwargs = {}
    if gan_type == "pixgan":
        generator = torch.Generator().manual_seed(0)
        images = torch.rand(8, 3, 32, 32), torch.rand(8, 3, 32, 32)
        rects = draw_swap_rectangles(32, 32, 8, generator, 1.0, 4, min_size=4)
        _, _, real_map, fake_map = apply_swaps(*images, rects)
        kwargs = {
            "real_labels": labels_to_logit_size(real_map, 4, 4, 3),
            "fake_labels": labels_to_logit_size(fake_map, 4, 4, 3),
        }
    whole_d = discriminator_loss(gan_type, real, fakes, **kwargs)
    whole_g = generator_loss(gan_type, fakes)
    chunks_d, chunks_g = [], []
    for part in range(4):
        rows = slice(2 * part, 2 * part + 2)
        chunk_kwargs = {key: value[rows] for key, value in kwargs.items()}
        chunks_d.append(
            discriminator_loss(gan_type, real[rows], [f[rows] for f in fakes], **chunk_kwargs)
        )
        chunks_g.append(generator_loss(gan_type, [f[rows] for f in fakes]))
    torch.testing.assert_close(torch.stack(chunks_d).mean(), whole_d)
    torch.testing.assert_close(torch.stack(chunks_g).mean(), whole_g)


def test_ragan_is_not_chunk_invariant():
    # Documented and accepted: the relativistic mean is taken per chunk.
    real, fake = _logits((8, 1), seed=20), _logits((8, 1), seed=21) + torch.arange(8.0)[:, None]
    whole = discriminator_loss("ragan", real, [fake])
    chunked = torch.stack(
        [discriminator_loss("ragan", real[i : i + 2], [fake[i : i + 2]]) for i in range(0, 8, 2)]
    ).mean()
    assert not torch.allclose(whole, chunked)


# -- a toy adversarial problem -------------------------------------------------------------------


class _TinyDiscriminator(nn.Module):
    """Two strided convs: a logit map at 1/4 (pixgan) or its mean (vector)."""

    def __init__(self, as_map: bool) -> None:
        super().__init__()
        self.as_map = as_map
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(8, 8, 3, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(8, 1, 3, 1, 1),
        )

    def forward(self, x):
        logits = self.body(x)
        return logits if self.as_map else logits.mean(dim=(2, 3))


def _blur(x):
    kernel = torch.full((3, 1, 5, 5), 1 / 25)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel, groups=3)


@pytest.mark.parametrize("gan_type", GAN_TYPES)
def test_tiny_discriminator_learns_to_separate_blurred_fakes(gan_type):
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    net = _TinyDiscriminator(as_map=gan_type == "pixgan")
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-3, betas=(0.5, 0.99))

    def gap(real, fake):
        with torch.no_grad():
            return (net(real).mean() - net(fake).mean()).item()

    real_eval = torch.rand(16, 3, 32, 32, generator=generator)
    fake_eval = _blur(real_eval)
    gap_before = gap(real_eval, fake_eval)
    # lsgan needs the most steps (~100) before its gap nears its optimum of 1 (real->1, fake->0);
    # the other types pass 0.5 within ~30 steps.
    for _ in range(120):
        real = torch.rand(8, 3, 32, 32, generator=generator)
        fake = _blur(real)
        kwargs = {}
        if gan_type == "pixgan":
            rects = draw_swap_rectangles(32, 32, 8, generator, 0.5, 2, min_size=8)
            real, fake, real_map, fake_map = apply_swaps(real, fake, rects)
            kwargs = {
                "real_labels": labels_to_logit_size(real_map, 8, 8),
                "fake_labels": labels_to_logit_size(fake_map, 8, 8),
            }
        loss = discriminator_loss(gan_type, net(real), [net(fake)], **kwargs)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    gap_after = gap(real_eval, fake_eval)
    assert gap_after > gap_before + 0.5, (gap_before, gap_after)
