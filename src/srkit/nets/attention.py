"""Pictures of switch attention maps: which transform wins where, and how clearly.

:func:`attention_pictures` turns an attention tensor (N, h, w, n) or (h, w, n), as returned by
SRG2 and the switched discriminator, into uint8 arrays ready for an image writer or TensorBoard
(``dataformats="HWC"``):

* ``argmax``: RGB, the winning transform of each pixel in a fixed colour per transform index,
  enlarged by an integer ``zoom`` (nearest) so small LR maps stay visible, with a legend strip
  below: one swatch per transform, in index order, labelled with its index in a small built-in
  3x5 bitmap font (no font files, no PIL).
* ``max_weight``: grey, the largest attention weight per pixel, stretched so that a uniform blend
  (1/n) is black and a single chosen transform (1) is white; same zoom as ``argmax``.
* ``palette``: the (n, 3) uint8 colours used.

Uses numpy, imported inside the function, so ``srkit.nets`` itself needs torch only.
"""

from __future__ import annotations

import colorsys
import math
from typing import Any

#: Fixed, mutually distinct colours for the first transforms (then golden-angle hues).
_BASE_PALETTE = (
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (170, 110, 40),
    (128, 128, 128),
    (0, 128, 128),
    (210, 245, 60),
    (128, 0, 0),
    (250, 190, 212),
    (0, 0, 128),
    (255, 250, 200),
)

#: 3x5 bitmaps of the digits 0-9, one string per row, "#" = ink.
_DIGITS = {
    "0": ("###", "#.#", "#.#", "#.#", "###"),
    "1": (".#.", "##.", ".#.", ".#.", "###"),
    "2": ("###", "..#", "###", "#..", "###"),
    "3": ("###", "..#", "###", "..#", "###"),
    "4": ("#.#", "#.#", "###", "..#", "..#"),
    "5": ("###", "#..", "###", "..#", "###"),
    "6": ("###", "#..", "###", "#.#", "###"),
    "7": ("###", "..#", "..#", "..#", "..#"),
    "8": ("###", "#.#", "###", "#.#", "###"),
    "9": ("###", "#.#", "###", "..#", "###"),
}

_FONT_SCALE = 2  # each font pixel is 2x2 screen pixels
_SEPARATOR = 2  # rows of dark grey between the map and the legend
_BACKGROUND = 40


def transform_palette(n: int) -> Any:
    """(n, 3) uint8 colours, fixed per index: 16 hand-picked ones, then golden-angle hues."""
    import numpy as np

    colours = list(_BASE_PALETTE[:n])
    golden = (math.sqrt(5) - 1) / 2
    for i in range(len(colours), n):
        hue = (i * golden) % 1.0
        value = 0.95 if i % 2 else 0.7
        colours.append(tuple(round(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.85, value)))
    return np.array(colours, dtype=np.uint8).reshape(n, 3)


def _draw_label(canvas: Any, text: str, top: int, left: int, ink: int) -> None:
    s = _FONT_SCALE
    for index, char in enumerate(text):
        glyph = _DIGITS[char]
        x0 = left + index * 4 * s
        for row, bits in enumerate(glyph):
            for col, bit in enumerate(bits):
                if bit == "#":
                    canvas[
                        top + row * s : top + (row + 1) * s, x0 + col * s : x0 + (col + 1) * s
                    ] = ink


def _legend(palette: Any, width: int) -> Any:
    """Swatches in index order, wrapped into rows of at most ``width`` pixels."""
    import numpy as np

    n = len(palette)
    s = _FONT_SCALE
    digits = len(str(n - 1))
    cell_w = digits * 4 * s + 3 * s  # glyphs + spacing + margins
    cell_h = 5 * s + 4 * s
    width = max(width, cell_w)
    per_row = width // cell_w
    rows = math.ceil(n / per_row)
    legend = np.full((_SEPARATOR + rows * cell_h, width, 3), _BACKGROUND, dtype=np.uint8)
    for i, colour in enumerate(palette):
        top = _SEPARATOR + (i // per_row) * cell_h
        left = (i % per_row) * cell_w
        legend[top + 1 : top + cell_h - 1, left + 1 : left + cell_w - 1] = colour
        luminance = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
        ink = 0 if luminance > 128 else 255
        _draw_label(legend, str(i), top + 2 * s, left + 2 * s, ink)
    return legend


def attention_pictures(
    attention: Any, zoom: int | None = None, min_width: int = 128
) -> dict[str, Any]:
    """Pictures of attention maps (N, h, w, n) or (h, w, n) (torch tensor or numpy array).

    Returns uint8 numpy arrays ``argmax`` ((N,) H, W, 3 with the legend below the map),
    ``max_weight`` ((N,) h*zoom, w*zoom) and ``palette`` (n, 3); the leading N is there iff the
    input had one. ``zoom`` (integer nearest enlargement) defaults to the smallest factor making
    the map at least ``min_width`` pixels wide (at most 16).
    """
    import numpy as np

    if hasattr(attention, "detach"):
        attention = attention.detach().float().cpu().numpy()
    attention = np.asarray(attention, dtype=np.float32)
    batched = attention.ndim == 4
    if not batched:
        if attention.ndim != 3:
            raise ValueError(f"attention must be (N, h, w, n) or (h, w, n), got {attention.shape}")
        attention = attention[None]
    w, n = attention.shape[2:]
    if zoom is None:
        zoom = min(16, max(1, math.ceil(min_width / w)))

    palette = transform_palette(n)
    winners = attention.argmax(-1)
    coloured = palette[winners]  # (N, h, w, 3)
    coloured = coloured.repeat(zoom, axis=1).repeat(zoom, axis=2)

    peak = attention.max(-1)
    if n > 1:
        peak = (peak - 1.0 / n) / (1.0 - 1.0 / n)
    grey = np.clip(np.rint(peak * 255.0), 0, 255).astype(np.uint8)
    grey = grey.repeat(zoom, axis=1).repeat(zoom, axis=2)

    legend = _legend(palette, coloured.shape[2])
    width = legend.shape[1]
    pictures = np.full(
        (coloured.shape[0], coloured.shape[1] + legend.shape[0], width, 3), _BACKGROUND, np.uint8
    )
    pictures[:, : coloured.shape[1], : coloured.shape[2]] = coloured
    pictures[:, coloured.shape[1] :] = legend
    if not batched:
        pictures, grey = pictures[0], grey[0]
    return {"argmax": pictures, "max_weight": grey, "palette": palette}
