"""MATLAB-compatible bicubic imresize, checked against weights derived by hand.

The expected values are built from the kernel formula, not from imresize itself. With the
cubic kernel (a = -0.5)

    k(0.25) = 0.8671875   k(0.75) = 0.2265625   k(1.25) = -0.0703125   k(1.75) = -0.0234375
    k(0.5)  = 0.5625      k(1.5)  = -0.0625

* x2 upscaling samples the input at u = x/2 + 1/4 (1-based x), i.e. at fractions .75 / .25
  past an input pixel, using the 4 nearest taps; out-of-range taps mirror (0 -> 1, -1 -> 2,
  n+1 -> n, n+2 -> n-1), which folds weights onto the border pixels.
* x1/2 downscaling with antialiasing stretches the kernel by 2 (height halved), so each output
  pixel at u = 2x - 1/2 uses 8 taps 0.5 k(d/2), d = ±0.5, ±1.5, ±2.5, ±3.5, i.e.
  (-3, -9, 29, 111, 111, 29, -9, -3) / 256.
* Without antialiasing the x1/2 kernel keeps width 4: taps k(±0.5), k(±1.5) = (-1, 9, 9, -1)/16.

imresize is separable and linear, so for a 2-D array A the result is W_rows @ A @ W_cols.T.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from srkit.data.imresize import imresize

# 4 -> 8 (x2). Row x: weights on input pixels 1..4 after mirroring.
UP_4_TO_8 = np.array(
    [
        [1.09375, -0.09375, 0, 0],  # u=0.75: taps -1,0,1,2 -> 2,1,1,2
        [0.796875, 0.2265625, -0.0234375, 0],  # u=1.25: taps 0,1,2,3 -> 1,1,2,3
        [0.203125, 0.8671875, -0.0703125, 0],  # u=1.75
        [-0.0703125, 0.8671875, 0.2265625, -0.0234375],  # u=2.25
        [-0.0234375, 0.2265625, 0.8671875, -0.0703125],  # u=2.75
        [0, -0.0703125, 0.8671875, 0.203125],  # u=3.25: tap 5 -> 4
        [0, -0.0234375, 0.2265625, 0.796875],  # u=3.75
        [0, 0, -0.09375, 1.09375],  # u=4.25: taps 3,4,5,6 -> 3,4,4,3
    ]
)

# 8 -> 4 (x1/2, antialiased), in 1/256. Row x centred at u = 2x - 1/2 (1.5, 3.5, 5.5, 7.5).
DOWN_8_TO_4 = (
    np.array(
        [
            [140, 102, 26, -9, -3, 0, 0, 0],  # taps -2..5 -> 3,2,1,1,2,3,4,5
            [-12, 29, 111, 111, 29, -9, -3, 0],  # taps 0..7 -> 1,1,2,...,7
            [0, -3, -9, 29, 111, 111, 29, -12],  # taps 2..9 -> 2,...,8,8
            [0, 0, 0, -3, -9, 26, 102, 140],  # taps 4..11 -> 4..8,8,7,6
        ]
    )
    / 256
)

# 8 -> 4 without antialiasing, in 1/16: taps at distances ±0.5, ±1.5.
DOWN_8_TO_4_NO_ANTIALIAS = (
    np.array(
        [
            [8, 9, -1, 0, 0, 0, 0, 0],  # taps 0,1,2,3 -> 1,1,2,3
            [0, -1, 9, 9, -1, 0, 0, 0],
            [0, 0, 0, -1, 9, 9, -1, 0],
            [0, 0, 0, 0, 0, -1, 9, 8],  # taps 6,7,8,9 -> 6,7,8,8
        ]
    )
    / 16
)


def test_hand_weights_are_normalised():
    for matrix in (UP_4_TO_8, DOWN_8_TO_4, DOWN_8_TO_4_NO_ANTIALIAS):
        np.testing.assert_allclose(matrix.sum(axis=1), 1.0)


def test_upscale_x2_matches_hand_computed_weights():
    image = np.arange(16, dtype=np.float64).reshape(4, 4)
    expected = UP_4_TO_8 @ image @ UP_4_TO_8.T
    np.testing.assert_allclose(imresize(image, 2.0), expected, atol=1e-12)
    # The first value by hand: rows and columns both give 1.09375 * 0 - 0.09375 * (next).
    assert imresize(image, 2.0)[0, 0] == pytest.approx(-0.09375 * 4 - 0.09375 * 1)


def test_downscale_half_matches_hand_computed_weights():
    image = np.arange(64, dtype=np.float64).reshape(8, 8) ** 1.5  # not linear: taps matter
    expected = DOWN_8_TO_4 @ image @ DOWN_8_TO_4.T
    np.testing.assert_allclose(imresize(image, 0.5), expected, atol=1e-9)
    expected_plain = DOWN_8_TO_4_NO_ANTIALIAS @ image @ DOWN_8_TO_4_NO_ANTIALIAS.T
    np.testing.assert_allclose(imresize(image, 0.5, antialias=False), expected_plain, atol=1e-9)


def test_non_square_and_per_axis_output_size():
    image = np.random.default_rng(0).random((8, 4))
    # Height 8 -> 4 (x1/2), width 4 -> 8 (x2): each axis uses its own factor.
    expected = DOWN_8_TO_4 @ image @ UP_4_TO_8.T
    np.testing.assert_allclose(imresize(image, output_size=(4, 8)), expected, atol=1e-12)


def test_colour_channels_are_resized_independently():
    image = np.random.default_rng(1).random((8, 8, 3))
    result = imresize(image, 0.5)
    for channel in range(3):
        expected = DOWN_8_TO_4 @ image[:, :, channel] @ DOWN_8_TO_4.T
        np.testing.assert_allclose(result[:, :, channel], expected, atol=1e-12)


@pytest.mark.parametrize(
    ("scale", "output_size"),
    [(0.25, None), (0.5, None), (1 / 3, None), (3.0, None), (None, (7, 19))],
)
def test_constant_image_stays_constant(scale, output_size):
    image = np.full((24, 30, 3), 0.37, dtype=np.float32)
    result = imresize(image, scale=scale, output_size=output_size)
    np.testing.assert_allclose(result, 0.37, atol=1e-6)


def test_output_sizes_follow_matlab():
    image = np.zeros((64, 64, 3), dtype=np.float32)
    assert imresize(image, 0.25).shape == (16, 16, 3)
    assert imresize(np.zeros((30, 17)), 1 / 3).shape == (10, 6)  # ceil(17 / 3) = 6
    assert imresize(np.zeros((5, 7)), 2.5).shape == (13, 18)
    assert imresize(np.zeros((5, 7)), output_size=(3, 11)).shape == (3, 11)


def test_dtype_is_kept_and_output_is_not_clipped():
    step = np.zeros((8, 8), dtype=np.float32)
    step[:, 4:] = 1.0
    result = imresize(step, 2.0)
    assert result.dtype == np.float32
    # Bicubic overshoots at edges; imresize leaves clipping to the caller.
    assert result.min() < 0.0 and result.max() > 1.0


@pytest.mark.parametrize("scale", [0.25, 0.5, 2.0])
def test_torch_and_numpy_agree(scale):
    image = np.random.default_rng(2).random((20, 24, 3)).astype(np.float32)
    expected = imresize(image, scale)
    tensor = torch.from_numpy(image).permute(2, 0, 1)
    chw = imresize(tensor, scale)
    assert isinstance(chw, torch.Tensor) and chw.dtype == torch.float32
    np.testing.assert_allclose(chw.permute(1, 2, 0).numpy(), expected, atol=1e-6)
    batch = imresize(torch.stack([tensor, tensor.flip(-1)]), scale)
    np.testing.assert_allclose(batch[0].permute(1, 2, 0).numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(
        batch[1].permute(1, 2, 0).numpy(), imresize(image[:, ::-1].copy(), scale), atol=1e-6
    )


def test_torch_path_keeps_gradients_and_half_precision():
    tensor = torch.rand(1, 3, 16, 16, requires_grad=True)
    imresize(tensor, 0.5).sum().backward()
    assert tensor.grad is not None and torch.isfinite(tensor.grad).all()
    assert imresize(torch.rand(3, 16, 16, dtype=torch.bfloat16), 0.5).dtype == torch.bfloat16


def test_invalid_arguments():
    with pytest.raises(TypeError):
        imresize(np.zeros((4, 4), dtype=np.uint8), 0.5)
    with pytest.raises(ValueError):
        imresize(np.zeros((4, 4)), 0.5, output_size=(2, 2))
    with pytest.raises(ValueError):
        imresize(np.zeros((4, 4)))
    with pytest.raises(ValueError):
        imresize(np.zeros((4, 4)), -1.0)
