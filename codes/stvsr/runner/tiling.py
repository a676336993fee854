"""Spatial tiling with overlap, so that memory depends on the tile size and not on the frame size.

:func:`tiled_forward` cuts an LR window (B, N, 3, h, w) into overlapping tiles of at most ``tile`` x ``tile``
LR pixels, runs each tile on its own (``run`` pads each tile to the model's multiple and crops back, see
:func:`stvsr.runner.run_padded`), and blends the outputs: inside the overlap between two tiles each
tile's weight falls linearly towards its own border, so that the pixels a tile computes with the least
context (its edges) count least; away from any neighbour the weight is 1. Weights are normalised, so a model
that ignores context gives exactly the untiled output.

Tiles are not a protocol setting of the papers: they change the output slightly (the network sees less
context); the report prints them. Temporal length is handled by the windows (:mod:`stvsr.runner.windows`: one
7-frame window in memory at a time), so memory does not grow with clip length either.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["tile_starts", "tiled_forward"]

DEFAULT_OVERLAP = 16  # LR pixels


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of ``tile`` pixels covering ``length`` with at least ``overlap`` shared pixels."""
    if tile >= length:
        return [0]
    if not 0 <= overlap < tile:
        raise ValueError(f"tile overlap must be >= 0 and smaller than the tile ({tile}), got {overlap}")
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


def _ramp(size: int, fade: int, before: bool, after: bool, dtype: torch.dtype) -> torch.Tensor:
    """1-D weights: 1 inside, a linear ramp over ``fade`` pixels on the sides that have a neighbour."""
    w = torch.ones(size, dtype=dtype)
    fade = min(fade, size // 2)
    if fade > 0:
        ramp = (torch.arange(fade, dtype=dtype) + 0.5) / fade
        if before:
            w[:fade] = ramp
        if after:
            w[size - fade :] = ramp.flip(0)
    return w


def tiled_forward(
    run: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    tile: int,
    overlap: int = DEFAULT_OVERLAP,
    scale: int = 4,
) -> torch.Tensor:
    """Run ``run`` on overlapping spatial tiles of the LR window ``x`` (..., h, w) and blend the outputs.

    ``tile`` and ``overlap`` are in LR pixels; ``run`` must map (..., th, tw) to (..., T, 3, scale*th,
    scale*tw) for any tile size (pad inside it). The result equals ``run(x)`` in shape.
    """
    if tile < 1:
        raise ValueError(f"tile must be a positive number of LR pixels, got {tile}")
    h, w = x.shape[-2:]
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    if len(ys) == 1 and len(xs) == 1:
        return run(x)
    th, tw = min(tile, h), min(tile, w)
    out = weight = None
    for y0 in ys:
        for x0 in xs:
            y = run(x[..., y0 : y0 + th, x0 : x0 + tw])
            if out is None:
                out = y.new_zeros((*y.shape[:-2], scale * h, scale * w))
                weight = y.new_zeros((scale * h, scale * w))
            wy = _ramp(scale * th, scale * overlap, y0 > 0, y0 + th < h, y.dtype)
            wx = _ramp(scale * tw, scale * overlap, x0 > 0, x0 + tw < w, y.dtype)
            m = (wy[:, None] * wx[None, :]).to(y.device)
            rows = slice(scale * y0, scale * (y0 + th))
            cols = slice(scale * x0, scale * (x0 + tw))
            out[..., rows, cols] += y * m
            weight[rows, cols] += m
    return out / weight
