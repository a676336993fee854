"""MATLAB ``imresize(..., 'bicubic')`` in float64, NumPy only: the resizer of the BI degradation
(:mod:`stvsr.data.degrade`) and of the ``bicubic`` baseline model (:mod:`stvsr.archs.bicubic`).

What MATLAB does, and what :func:`imresize` reproduces step by step (``imresize.m``, ``contributions``):

- Keys cubic kernel with a = -0.5 (:func:`cubic`, the same expression, so the same float64 values).
- Antialiasing when scale < 1: the kernel becomes ``scale * cubic(scale * x)`` and its width ``4 / scale``
  (16 taps at x1/4, plus 2 spare taps whose weight is 0).
- MATLAB's 1-based index convention: output pixel ``x`` (1..out) sits at input coordinate
  ``u = x / scale + 0.5 * (1 - 1 / scale)``; the taps are ``floor(u - width / 2) + (0 .. P-1)``,
  ``P = ceil(width) + 2``; each row of weights is divided by its sum.
- Symmetric boundary: tap ``i`` outside ``1..n`` reads ``[1..n, n..1]`` cyclically (the edge pixel repeats).
- Separable passes in the order of increasing scale, rows first when the scales are equal; for a double
  image nothing is rounded between the passes. Each output value is accumulated tap by tap in order.
- Output size ``ceil(scale * n)``.
- BI: ``im2double`` divides by 255; ``imwrite`` of a double image stores ``uint8(x * 255 + 0.5)`` clamped to
  [0, 255] (:func:`stvsr.data.degrade.to_uint8`): one rounding, at the end.

How this was checked without MATLAB (``tests/test_degrade.py``):

1. Hand derivation: for x1/4 every tap distance is an odd multiple of 1/8, so the weights are exact
   dyadic rationals; the test recomputes them with ``fractions.Fraction`` from the formulas above and
   compares them with :func:`contributions` (equal to the last bit after the single normalising division),
   and checks the mirrored indices of the first and last rows by hand.
2. Every row of weights sums to 1; a constant image stays constant; a linear ramp is reproduced exactly in
   the interior (the stretched kernel is symmetric), which pins the pixel-centre convention: LR pixel ``j``
   (0-based) is centred on HR coordinate ``4 j + 1.5``.
3. MATLAB's own outputs: the GNU Octave image package (``inst/imresize.m``, test block "Test bicubic
   interpolations against some reference results from matlab") lists MATLAB's ``imresize`` results for an
   8x10 uint8 matrix at x1/2 and x1/3 (with and without antialiasing) and x1.5, x4/3. MATLAB resizes a
   uint8 image with one rounding per pass, so the test runs :func:`resize_axis` per pass with
   :func:`~stvsr.data.degrade.to_uint8`-style rounding in between and must reproduce every listed value exactly.
4. Real frames: x4 of the Vid4 and Vimeo frames gives the documented sizes (180x144, 112x64, ...) and is
   deterministic.

Not checked: MATLAB's LR PNGs of the real frames themselves (none is available here). Identity to the last
bit also assumes MATLAB accumulates each output in tap order without fused multiply-add; a difference there
moves a result by about 1e-16 and changes the 8-bit output only at an exact .5 tie.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["contributions", "cubic", "imresize", "resize_axis"]

BI_KERNEL_WIDTH = 4.0  # support of the Keys cubic kernel


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic convolution kernel, a = -0.5, written as MATLAB's ``imresize`` writes it."""
    absx = np.abs(x)
    absx2 = absx**2
    absx3 = absx**3
    inner = (1.5 * absx3 - 2.5 * absx2 + 1) * (absx <= 1)
    outer = (-0.5 * absx3 + 2.5 * absx2 - 4 * absx + 2) * ((absx > 1) & (absx <= 2))
    return inner + outer


def contributions(in_length: int, out_length: int, scale: float, antialias: bool = True) -> tuple:
    """Weights (out_length, P) float64 and 0-based input indices (out_length, P) of a 1-D MATLAB resize."""
    width = BI_KERNEL_WIDTH
    stretch = scale < 1 and antialias
    if stretch:
        width = width / scale
    x = np.arange(1, out_length + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = math.ceil(width) + 2
    indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    distance = u[:, None] - indices
    weights = scale * cubic(scale * distance) if stretch else cubic(distance)
    weights = weights / weights.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(in_length), np.arange(in_length)[::-1]])
    indices = mirror[np.mod(indices.astype(np.int64) - 1, 2 * in_length)]
    used = np.any(weights != 0, axis=0)
    return weights[:, used], indices[:, used]


def resize_axis(img: np.ndarray, axis: int, out_length: int, scale: float, antialias: bool = True) -> np.ndarray:
    """One separable MATLAB pass along ``axis`` in float64, accumulating tap by tap."""
    weights, indices = contributions(img.shape[axis], out_length, scale, antialias)
    src = np.moveaxis(np.asarray(img, dtype=np.float64), axis, 0)
    out = np.zeros((out_length,) + src.shape[1:], dtype=np.float64)
    expand = (slice(None),) + (None,) * (src.ndim - 1)
    for k in range(weights.shape[1]):
        out += weights[:, k][expand] * src[indices[:, k]]
    return np.moveaxis(out, 0, axis)


def imresize(
    img: np.ndarray,
    scale: float | None = None,
    output_shape: tuple[int, int] | None = None,
    antialias: bool = True,
) -> np.ndarray:
    """MATLAB ``imresize(img, scale, 'bicubic')`` (or ``imresize(img, [H W], 'bicubic')``) in float64.

    ``img`` is (H, W) or (H, W, C), any numeric dtype, values taken as they are (no scaling to [0, 1]);
    the result is float64 and not rounded. Give ``scale`` or ``output_shape``, not both.
    """
    if (scale is None) == (output_shape is None):
        raise ValueError("imresize: give either scale or output_shape")
    in_shape = img.shape[:2]
    if scale is not None:
        if scale <= 0:
            raise ValueError(f"imresize: scale must be positive, got {scale}")
        scales = (float(scale), float(scale))
        out_shape = tuple(math.ceil(scale * n) for n in in_shape)
    else:
        out_shape = tuple(int(n) for n in output_shape)
        scales = tuple(o / n for o, n in zip(out_shape, in_shape))
    out = np.asarray(img, dtype=np.float64)
    for axis in sorted(range(2), key=lambda a: scales[a]):  # stable: rows first when the scales are equal
        out = resize_axis(out, axis, out_shape[axis], scales[axis], antialias)
    return out
