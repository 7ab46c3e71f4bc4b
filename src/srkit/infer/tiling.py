"""Tiled inference: run a generator over an image of any size in overlapping tiles.

An SR network's memory grows with the number of input pixels, so large images are cut into
tiles that overlap by ``overlap`` input pixels, each tile is upscaled on its own, and the tile
outputs are blended back together:

* **Placement.** Per axis, the fewest tiles of at most ``tile`` pixels that cover the image with
  at least ``overlap`` pixels shared between neighbours: ``n = ceil((L - overlap) / (tile -
  overlap))``. The tile is then *shrunk* to the smallest size that still covers the image with
  that overlap, and the tiles are spread evenly. Shrinking (instead of keeping full-size tiles and
  letting the last one overlap its neighbour by a lot) keeps the extra work at
  ``(n - 1) * overlap / L`` per axis: for a 512 px side, tile 400 and overlap 16 that is 3 %, not
  the 56 % that two full tiles would cost.
* **Alignment.** Networks that look at the input on a grid (pixel-unshuffle, stride-2
  convolutions) give results that depend on the phase of that grid. Tile starts and sizes are
  multiples of the network's alignment (see :func:`tile_alignment`) so every tile sees the grid
  as the whole image does.
* **Blending.** Near a tile's cut edges the network sees zero padding instead of the real
  neighbourhood, so its output there is wrong (for a small RRDB: 73/255 at the edge, 4/255 three
  pixels in, 0 from four pixels on). Each tile's output is weighted by a separable ramp across
  the ``overlap`` zone of every cut edge: ~0 on the outer quarter, a cosine (``sin²``) rise over
  the middle half, 1 on the inner quarter (:func:`ramp`). Edges on the image border get no ramp
  (the untiled network sees the same padding there). Weighted outputs and weights are
  accumulated and divided, so every output pixel is a convex combination of the tiles covering
  it; the hand-over happens in the middle of the overlap, where both tiles are accurate, and
  the smooth weights leave no seam. A ramp across the *whole* overlap looks as smooth but lets
  the bad edge pixels in with small weights: 2/255 worst-case error instead of 0 on the
  512x384 test photo.
* **Attention maps** (SRG2) are at input resolution; they are stitched the same way with the
  ramps at input resolution, so a stitched map is still a per-pixel distribution.
* **Extra inputs** (SPSR3's whole-image reference): ``tile_inputs(box)`` gives each tile's
  keyword inputs from its box in the whole image, so every tile sees the same whole image with
  its own mask and centre (:func:`srkit.data.reference.tile_inputs`).

Networks with per-image statistics (GroupNorm over the whole map, as in SRG2's switch
multiplexers) compute them per tile, so tiling changes their output more than it changes
convolution-only networks (RRDB, SPSR, compact): a trained switch's attention is sharp, and the
shifted logits pick other transforms. A switched SPSR with GroupNorm multiplexers, trained 600
steps, differed by up to 37/255 between tiled and untiled upscaling (96x96 LR, tile 48, overlap
16); the switched SPSRs therefore have no normalisation in their multiplexers by default
(``mux_norm: false``), and then differ by under one 8-bit level (benchmarks/RESULTS.md, issue
20). ``--tile auto`` runs whole images whenever they fit, which avoids the question for SRG2 in
the common case.

**Batches of tiles.** Consecutive tiles of one size can share a forward pass
(``tile_batch``; :func:`tile_groups`), which keeps a GPU busy when the tiles are small; the
blending order, and so the result, is that of one tile at a time.

Memory for ``--tile auto`` is estimated by :func:`activation_bytes_per_pixel`.

This module needs torch only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from srkit.errors import SrkitError

#: ``forward(lr) -> (sr, attention maps or None)``; see :func:`split_output`.
TileForward = Callable[[torch.Tensor], "tuple[torch.Tensor, list[torch.Tensor] | None]"]

#: Smallest tile side that ``--tile N`` and ``--tile auto`` use.
MIN_TILE = 16


class TilingError(SrkitError):
    """Tile or overlap settings that cannot work."""


def split_output(output: torch.Tensor | dict) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """(SR image, attention maps or None) from a generator's output (tensor or dict)."""
    if isinstance(output, torch.Tensor):
        return output, None
    attention = output.get("attention")
    if isinstance(attention, torch.Tensor):
        attention = [attention]
    return output["sr"], (list(attention) if attention else None)


def tile_alignment(model: nn.Module) -> int:
    """The grid (in input pixels) on which tile starts and sizes must lie for ``model``.

    RRDB models in the BasicSR x2/x1 layout pixel-unshuffle their input by 2 or 4; SRG2's switch
    multiplexers halve the resolution ``reductions`` times with stride-2 convolutions. Other
    networks are translation-equivariant (alignment 1).
    """
    alignment = int(getattr(model, "unshuffle_factor", 1) or 1)
    # Networks that know their grid say so (switched SPSR: 2 ** multiplexer reductions).
    alignment = max(alignment, int(getattr(model, "input_alignment", 1) or 1))
    arch = getattr(model, "srkit_arch", None) or {}
    if arch.get("type") == "srg2":
        alignment = max(alignment, 2 ** int(arch.get("reductions", 2)))
    return alignment


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def tile_spans(length: int, tile: int, overlap: int, alignment: int = 1) -> list[tuple[int, int]]:
    """(start, end) of each tile along one axis of ``length`` pixels.

    Starts are multiples of ``alignment``; neighbours share at least ``overlap`` pixels; tiles
    are at most ``tile`` long, except that the last one ends exactly at ``length`` and may be up
    to ``alignment - 1`` longer when ``length`` is not a multiple of ``alignment``. A single tile
    covers everything when ``length <= tile``.
    """
    if length <= tile:
        return [(0, length)]
    count = math.ceil((length - overlap) / (tile - overlap))
    # The smallest size that covers `length` with `count` tiles overlapping by `overlap`.
    size = min(length, _round_up(math.ceil((length + (count - 1) * overlap) / count), alignment))
    span = length - size
    spans = []
    for index in range(count):
        start = round(index * span / (count - 1)) if count > 1 else 0
        start = (start // alignment) * alignment
        end = length if index == count - 1 else start + size
        spans.append((start, end))
    return spans


def ramp(size: int, fade: int, fade_start: bool, fade_end: bool) -> torch.Tensor:
    """1-D blending weights: 1 inside, a cross-fade zone of ``fade`` pixels at each faded end.

    Within the zone the weight is ~0 for the outer quarter (the pixels next to a cut edge,
    which the network computed from zero padding: measured error up to 70/255 there), rises
    as a cosine (``sin²``) across the middle half and is 1 for the inner quarter. Where two
    neighbours overlap by ``fade`` pixels their ramps mirror each other and sum to 1, so the
    hand-over happens in the middle of the overlap, where both tiles are accurate. A small
    floor keeps every covered pixel's total weight positive.
    """
    weights = torch.ones(size, dtype=torch.float32)
    fade = min(fade, size)
    if fade > 0:
        centres = torch.arange(fade, dtype=torch.float32) + 0.5
        position = ((centres - fade / 4) / (fade / 2)).clamp(0.0, 1.0)
        rise = (torch.sin(position * (math.pi / 2)) ** 2).clamp_min(1e-6)
        if fade_start:
            weights[:fade] = torch.minimum(weights[:fade], rise)
        if fade_end:
            weights[size - fade :] = torch.minimum(weights[size - fade :], rise.flip(0))
    return weights


@dataclass(frozen=True)
class TilePlan:
    """Where the tiles of one image go: (start, end) input pixels per row and per column."""

    height: int
    width: int
    rows: tuple[tuple[int, int], ...]
    cols: tuple[tuple[int, int], ...]
    overlap: int

    @property
    def count(self) -> int:
        return len(self.rows) * len(self.cols)

    @property
    def computed_fraction(self) -> float:
        """Pixels run through the network / pixels of the image (1.0 = no tiling overhead)."""
        covered_rows = sum(end - start for start, end in self.rows)
        covered_cols = sum(end - start for start, end in self.cols)
        return covered_rows * covered_cols / (self.height * self.width)


def plan_tiles(height: int, width: int, tile: int, overlap: int, alignment: int = 1) -> TilePlan:
    """Tile placement for an image; ``tile <= 0`` means one tile (the whole image)."""
    if tile <= 0:
        return TilePlan(height, width, ((0, height),), ((0, width),), 0)
    tile = max(_round_up(tile, alignment), alignment)
    if overlap < 0:
        raise TilingError(f"overlap must be >= 0, got {overlap}")
    if tile < MIN_TILE:
        raise TilingError(f"tile size {tile} is too small; use at least {MIN_TILE} (or 0 = off)")
    if 2 * overlap >= tile:
        raise TilingError(
            f"overlap {overlap} must be less than half the tile size {tile}; "
            "lower --overlap or raise --tile"
        )
    rows = tile_spans(height, tile, overlap, alignment)
    cols = tile_spans(width, tile, overlap, alignment)
    return TilePlan(height, width, tuple(rows), tuple(cols), overlap)


def _tile_weights(
    plan: TilePlan, top: int, left: int, height: int, width: int, factor: int
) -> torch.Tensor:
    """(height*factor, width*factor) weights of one tile, ramps only on cut (interior) edges."""
    fade = plan.overlap * factor
    rows = ramp(height * factor, fade, top > 0, top + height < plan.height)
    cols = ramp(width * factor, fade, left > 0, left + width < plan.width)
    return rows[:, None] * cols[None, :]


@torch.no_grad()
def tiled_forward(
    forward: TileForward,
    image: torch.Tensor,
    scale: int,
    tile: int,
    overlap: int,
    alignment: int = 1,
    want_attention: bool = False,
    on_tile: Callable[[int, int], None] | None = None,
    tile_inputs: Callable[[tuple[int, int, int, int]], dict] | None = None,
    tile_batch: int = 1,
) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """Upscale ``image`` (N, C, H, W) in blended tiles: (SR float32 on the CPU, attention).

    Args:
        forward: runs the network on one tile (already on the right device and precision).
        image: the input, on the device ``forward`` expects.
        scale: the network's upscaling factor.
        tile: tile side in input pixels; 0 (or an image that fits) = one pass, no blending.
        overlap: input pixels shared by neighbouring tiles.
        alignment: tile grid, see :func:`tile_alignment`.
        want_attention: also stitch the attention maps (N, H, W, n) the network returns.
        on_tile: called as ``on_tile(done, total)`` after each tile (progress display).
        tile_inputs: ``(top, left, height, width) -> dict`` of extra keyword inputs for
            ``forward`` per tile (see the module docstring); None: ``forward(tile)`` only.
        tile_batch: run up to this many tiles of one size in one forward pass (see
            :func:`tile_groups`; :func:`auto_tile_batch` picks it from the free memory).

    The SR result is unclamped; the attention maps (when wanted and present) are float32 on
    the CPU.
    """
    batch, _, height, width = image.shape
    plan = plan_tiles(height, width, tile, overlap, alignment)
    extra = tile_inputs or (lambda box: {})
    if plan.count == 1:
        sr, attention = forward(image, **extra((0, 0, height, width)))
        _check_size(sr, height, width, scale)
        if on_tile:
            on_tile(1, 1)
        maps = [a.float().cpu() for a in attention] if want_attention and attention else None
        return sr.float().cpu(), maps

    output = None
    weight_sum = torch.zeros(height * scale, width * scale, dtype=torch.float32)
    attention_sums: list[torch.Tensor] | None = None
    attention_weight = torch.zeros(height, width, dtype=torch.float32) if want_attention else None
    done = 0
    for group in tile_groups(plan, tile_batch):
        # A tile is a strided view; convolutions on it run several times slower than on a
        # contiguous copy (measured 8x on the CPU), so copy it (torch.cat copies).
        crops = torch.cat([image[:, :, y : y + h, x : x + w] for y, x, h, w in group])
        inputs = [extra(box) for box in group]
        merged = {key: torch.cat([one[key] for one in inputs]) for key in inputs[0]}
        sr_batch, attention_batch = forward(crops.contiguous(), **merged)
        for index, (top, left, tile_h, tile_w) in enumerate(group):
            part = slice(index * batch, (index + 1) * batch)
            sr = sr_batch[part]
            attention = [a[part] for a in attention_batch] if attention_batch else None
            _check_size(sr, tile_h, tile_w, scale)
            if output is None:
                output = torch.zeros(
                    batch, sr.shape[1], height * scale, width * scale, dtype=torch.float32
                )
            weights = _tile_weights(plan, top, left, tile_h, tile_w, scale)
            rows = slice(top * scale, (top + tile_h) * scale)
            cols = slice(left * scale, (left + tile_w) * scale)
            output[:, :, rows, cols] += sr.float().cpu() * weights
            weight_sum[rows, cols] += weights
            if want_attention and attention:
                lr_weights = _tile_weights(plan, top, left, tile_h, tile_w, 1)
                if attention_sums is None:
                    attention_sums = [
                        torch.zeros(batch, height, width, a.shape[-1], dtype=torch.float32)
                        for a in attention
                    ]
                box = (slice(None), slice(top, top + tile_h), slice(left, left + tile_w))
                for total, piece in zip(attention_sums, attention, strict=True):
                    total[box] += piece.float().cpu() * lr_weights[..., None]
                attention_weight[box[1:]] += lr_weights
            done += 1
            if on_tile:
                on_tile(done, plan.count)
    assert output is not None
    output /= weight_sum
    if attention_sums is not None:
        attention_sums = [total / attention_weight[..., None] for total in attention_sums]
    return output, attention_sums


def tile_groups(plan: TilePlan, tile_batch: int) -> list[list[tuple[int, int, int, int]]]:
    """The tiles of ``plan`` as (top, left, height, width), in row-major order, cut into runs of
    consecutive same-size tiles of at most ``tile_batch``: each run is one forward pass.

    Only *consecutive* tiles are batched, so the outputs are blended in the same order as one
    tile at a time (the sums are the same sums).
    """
    if tile_batch < 1:
        raise TilingError(f"tile batch must be >= 1, got {tile_batch}")
    groups: list[list[tuple[int, int, int, int]]] = []
    for top, bottom in plan.rows:
        for left, right in plan.cols:
            box = (top, left, bottom - top, right - left)
            last = groups[-1] if groups else None
            if last is not None and len(last) < tile_batch and last[0][2:] == box[2:]:
                last.append(box)
            else:
                groups.append([box])
    return groups


def _check_size(sr: torch.Tensor, height: int, width: int, scale: int) -> None:
    if tuple(sr.shape[-2:]) != (height * scale, width * scale):
        raise SrkitError(
            f"the model turned a {width}x{height} input into {sr.shape[-1]}x{sr.shape[-2]}, "
            f"not the {width * scale}x{height * scale} its scale {scale} implies"
        )


# --------------------------------------------------------------------------------------------
# Memory estimate for --tile auto
# --------------------------------------------------------------------------------------------

#: Peak activation memory / largest single tensor a module reads or writes. Measured on the CPU
#: (peak RSS growth in a fresh process, fp32, x4, nf=64, 48x48 input; ``python
#: benchmarks/upscale.py --memory``, two runs): RRDB 1.8-2.7, SRG2 2.8, SPSR 3.2-3.9; 5 leaves
#: headroom for the allocator and for other networks.
PEAK_TO_LARGEST_MAP = 5.0

#: Side of the probe input used to measure feature-map sizes.
_PROBE = 32


@torch.no_grad()
def activation_bytes_per_pixel(model: nn.Module, device: torch.device, element_bytes: int) -> int:
    """Estimated peak activation bytes per *input* pixel of ``model`` (no gradients).

    Runs the model once on a small probe input with forward hooks on every module and finds the
    largest tensor any module reads or produces, per input pixel (for an x4 RRDB that is the
    64-channel feature map at output resolution: 64 * 16 = 1024 values per input pixel; for
    SPSR the 256-channel concatenation inside the fusion block at output resolution). During a
    forward pass only a few tensors of that size are alive at once (a layer's input, its output
    and a skip connection), so the peak is estimated as :data:`PEAK_TO_LARGEST_MAP` times it.
    The figure is cached on the module.
    """
    cache_key = (str(device), element_bytes)
    cache = getattr(model, "_srkit_activation_bytes", None)
    if isinstance(cache, dict) and cache_key in cache:
        return cache[cache_key]
    largest = 0

    def tensors_in(value: object) -> list[torch.Tensor]:
        if isinstance(value, torch.Tensor):
            return [value]
        if isinstance(value, tuple | list):
            return [t for t in value if isinstance(t, torch.Tensor)]
        if isinstance(value, dict):
            return [t for t in value.values() if isinstance(t, torch.Tensor)]
        return []

    def hook(_module: nn.Module, inputs: object, output: object) -> None:
        # Inputs count too: a dense block's concatenations are made outside any module and
        # are only seen as the input of the conv that reads them.
        nonlocal largest
        for tensor in tensors_in(inputs) + tensors_in(output):
            largest = max(largest, tensor.numel())

    alignment = tile_alignment(model)
    side = _round_up(_PROBE, alignment)
    channels = int((getattr(model, "srkit_arch", None) or {}).get("in_channels", 3))
    handles = [module.register_forward_hook(hook) for module in model.modules()]
    try:
        from srkit.data.reference import whole_image_inputs

        probe = torch.zeros(1, channels, side, side, device=device)
        sr, _ = split_output(model(probe, **whole_image_inputs(model, probe)))
        largest = max(largest, sr.numel())
    finally:
        for handle in handles:
            handle.remove()
    # Upsampling by interpolation happens outside modules; the conv reading it sees its size.
    per_pixel = largest / (side * side)
    estimate = math.ceil(per_pixel * PEAK_TO_LARGEST_MAP * element_bytes)
    if not isinstance(cache, dict):
        cache = {}
        model._srkit_activation_bytes = cache
    cache[cache_key] = estimate
    return estimate


def free_memory_bytes(device: torch.device) -> int:
    """Memory available for activations on ``device`` right now.

    CUDA: the free device memory (``torch.cuda.mem_get_info``). CPU: ``MemAvailable`` from
    ``/proc/meminfo`` (what the kernel can hand out without swapping), further limited by a
    cgroup memory limit when the process runs in a container; elsewhere free physical pages
    from ``os.sysconf``.
    """
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    available = _meminfo_available()
    limit = _cgroup_headroom()
    if limit is not None:
        available = min(available, limit) if available else limit
    return int(available or 2 << 30)


def _meminfo_available() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    try:
        return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 0


def _cgroup_headroom() -> int | None:
    """limit - usage of this container's memory cgroup (v2, then v1), or None without one."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        try:
            with open(limit_file, encoding="ascii") as handle:
                raw = handle.read().strip()
            with open(usage_file, encoding="ascii") as handle:
                usage = int(handle.read().strip())
        except (OSError, ValueError):
            continue
        if raw == "max" or not raw.isdigit() or int(raw) >= 1 << 60:
            return None
        return max(0, int(raw) - usage)
    return None


#: Fraction of the free memory ``--tile auto`` lets one tile's activations use.
AUTO_MEMORY_FRACTION = 0.5


def auto_tile(
    model: nn.Module,
    height: int,
    width: int,
    device: torch.device,
    element_bytes: int,
    free_bytes: int | None = None,
) -> int:
    """The tile side for ``--tile auto``: 0 (whole image) if it fits, else the largest that does.

    The budget is :data:`AUTO_MEMORY_FRACTION` of the free memory, less (on the CPU, where the
    blended result is accumulated) the float32 output and weight buffers of the whole image.
    """
    scale = int(getattr(model, "scale", 1) or 1)
    per_pixel = activation_bytes_per_pixel(model, device, element_bytes)
    free = free_memory_bytes(device) if free_bytes is None else free_bytes
    budget = free * AUTO_MEMORY_FRACTION
    if device.type == "cpu":
        budget -= height * width * scale * scale * 4 * 4  # output (3 channels) + weights
    if height * width * per_pixel <= budget:
        return 0
    side = int(math.sqrt(max(budget, 0) / per_pixel))
    alignment = tile_alignment(model)
    return max(_round_up(MIN_TILE, alignment), (side // alignment) * alignment)


#: Most tiles :func:`auto_tile_batch` puts in one forward pass.
MAX_TILE_BATCH = 8


def tiles_that_fit(
    model: nn.Module,
    tile: int,
    images: int,
    device: torch.device,
    element_bytes: int,
    free_bytes: int | None = None,
) -> int:
    """How many tiles of side ``tile`` (each ``images`` images deep) fit in one forward pass
    within ``--tile auto``'s budget (:data:`AUTO_MEMORY_FRACTION` of the free memory), at most
    :data:`MAX_TILE_BATCH`, at least 1."""
    if tile <= 0:
        return 1
    per_pixel = activation_bytes_per_pixel(model, device, element_bytes)
    free = free_memory_bytes(device) if free_bytes is None else free_bytes
    # The last tile of a row or column can be up to `alignment - 1` pixels longer.
    side = tile + tile_alignment(model)
    one_tile = images * side * side * per_pixel
    return max(1, min(MAX_TILE_BATCH, int(free * AUTO_MEMORY_FRACTION // one_tile)))


def auto_tile_batch(
    model: nn.Module, tile: int, images: int, device: torch.device, element_bytes: int
) -> int:
    """``tile_batch="auto"``: :func:`tiles_that_fit` on a GPU, where one small tile leaves most
    of the device idle; 1 on the CPU, where batching measured no faster (14-17 % slower on a
    quiet machine, benchmarks/RESULTS.md, "Batched tiles") and holds more memory."""
    if device.type == "cpu":
        return 1
    return tiles_that_fit(model, tile, images, device, element_bytes)
