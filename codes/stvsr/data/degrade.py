"""Degradations that turn HR frames into LR frames: BI (MATLAB bicubic) and BD (Gaussian blur + subsampling).

BI: MATLAB ``imresize(im2double(img), 1/scale, 'bicubic')`` after mod-crop, written as 8-bit
-------------------------------------------------------------------------------------------------
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
- ``im2double`` divides by 255; ``imwrite`` of a double image stores ``uint8(x * 255 + 0.5)`` clamped to
  [0, 255] (:func:`to_uint8`): one rounding, at the end.

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
   :func:`to_uint8`-style rounding in between and must reproduce every listed value exactly.
4. Real frames: x4 of the Vid4 and Vimeo frames gives the documented sizes (180x144, 112x64, ...) and is
   deterministic.

Not checked: MATLAB's LR PNGs of the real frames themselves (none is available here). Identity to the last
bit also assumes MATLAB accumulates each output in tap order without fused multiply-add; a difference there
moves a result by about 1e-16 and changes the 8-bit output only at an exact .5 tie.

BD: Gaussian blur (sigma 1.6, 13x13) then x4 subsampling
--------------------------------------------------------
The kernel is the DUF one (Jo et al., CVPR 2018; BasicSR ``duf_downsample``): a sampled 1-D Gaussian over
``-6..6``, normalised to sum 1, used separably (``scipy.ndimage.gaussian_filter`` of a 13x13 delta gives the
same outer product). Border: reflection without repeating the edge pixel (``'reflect'`` in PyTorch / TF,
``BORDER_REFLECT_101`` in OpenCV), as DUF. Pixel phase: ``phase=0`` keeps, for LR pixel ``(i, j)``, the blur
centred on HR pixel ``(4i, 4j)``, the top-left pixel of each 4x4 block. That is what DUF's stride-4 'VALID'
convolution and BasicSR's ``duf_downsample`` do, so BD frames made here match the BD test sets that the
published BD numbers (DUF, TDAN, BasicVSR, ...) were computed on. Note that this grid is shifted by 1.5 HR
pixels against BI's (whose LR pixel is centred on ``4j + 1.5``); ``phase`` 1 or 2 moves it closer. The HR
frame is mod-cropped to a multiple of ``scale`` first; the result is rounded once to 8 bits.
"""

from __future__ import annotations

import math

import numpy as np

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


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop bottom and right so that height and width are multiples of ``scale`` (anchored top-left)."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def to_double(img: np.ndarray) -> np.ndarray:
    """MATLAB ``im2double`` of a uint8 image: float64 in [0, 1]."""
    if img.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got {img.dtype}")
    return img.astype(np.float64) / 255.0


def to_uint8(x: np.ndarray) -> np.ndarray:
    """MATLAB ``im2uint8`` of a double image in [0, 1]: clamp, then ``x * 255 + 0.5`` truncated."""
    return np.floor(np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def round_uint8(x: np.ndarray) -> np.ndarray:
    """Round float values on the [0, 255] scale half away from zero and saturate, as MATLAB's ``uint8()``."""
    return np.floor(np.clip(x, 0.0, 255.0) + 0.5).astype(np.uint8)


def bi_downscale(img: np.ndarray, scale: int = 4) -> np.ndarray:
    """BI degradation of a uint8 (H, W[, C]) frame: mod-crop, MATLAB bicubic x1/scale in float64, round once."""
    _check_scale(scale)
    return to_uint8(imresize(to_double(modcrop(img, scale)), 1.0 / scale))


def bicubic_upscale(img: np.ndarray, scale: int = 4) -> np.ndarray:
    """MATLAB bicubic upscaling by ``scale`` (a bicubic baseline); uint8 in -> uint8 out, float in -> float out."""
    _check_scale(scale)
    if img.dtype == np.uint8:
        return to_uint8(imresize(to_double(img), float(scale)))
    return imresize(img, float(scale))


def gaussian_kernel_1d(size: int = 13, sigma: float = 1.6) -> np.ndarray:
    """Sampled Gaussian over ``-(size//2) .. size//2``, normalised to sum 1 (float64)."""
    if size % 2 != 1 or size < 1:
        raise ValueError(f"Gaussian kernel size must be odd and positive, got {size}")
    x = np.arange(size, dtype=np.float64) - size // 2
    g = np.exp(-0.5 / sigma**2 * x**2)
    return g / g.sum()


def gaussian_kernel(size: int = 13, sigma: float = 1.6) -> np.ndarray:
    """The 2-D BD kernel: outer product of :func:`gaussian_kernel_1d` with itself (sums to 1)."""
    g = gaussian_kernel_1d(size, sigma)
    return np.outer(g, g)


def _blur_subsample_axis(x: np.ndarray, axis: int, g: np.ndarray, scale: int, phase: int) -> np.ndarray:
    """Blur along ``axis`` with ``g`` (reflect-101 border) and keep every ``scale``-th sample from ``phase``."""
    radius = g.size // 2
    pad = [(0, 0)] * x.ndim
    pad[axis] = (radius, radius)
    padded = np.pad(x, pad, mode="reflect")
    n_out = x.shape[axis] // scale
    centres = np.arange(n_out) * scale + phase  # in unpadded coordinates
    out = np.zeros(x.shape[:axis] + (n_out,) + x.shape[axis + 1 :], dtype=np.float64)
    for k in range(g.size):  # tap k reads unpadded pixel centre + k - radius = padded index centre + k
        out += g[k] * np.take(padded, centres + k, axis=axis)
    return out


def bd_downscale(
    img: np.ndarray, scale: int = 4, sigma: float = 1.6, kernel_size: int = 13, phase: int = 0
) -> np.ndarray:
    """BD degradation of a uint8 (H, W[, C]) frame: mod-crop, Gaussian blur, keep pixel ``phase`` of each block.

    ``phase`` (0 .. scale-1) selects which pixel of each ``scale`` x ``scale`` block is kept (the same in both
    directions); see the module docstring for why the default is 0.
    """
    _check_scale(scale)
    if not 0 <= phase < scale:
        raise ValueError(f"BD phase must be in 0..{scale - 1}, got {phase}")
    if img.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got {img.dtype}")
    x = modcrop(img, scale).astype(np.float64)
    if min(x.shape[:2]) <= kernel_size // 2:
        raise ValueError(f"image of size {x.shape[:2]} is too small for a {kernel_size}x{kernel_size} blur")
    g = gaussian_kernel_1d(kernel_size, sigma)
    out = _blur_subsample_axis(x, 0, g, scale, phase)
    out = _blur_subsample_axis(out, 1, g, scale, phase)
    return round_uint8(out)


DEGRADATIONS = {"BI": bi_downscale, "BD": bd_downscale}


def degrade(img: np.ndarray, mode: str = "BI", scale: int = 4) -> np.ndarray:
    """Apply the degradation named ``mode`` ('BI' or 'BD') to a uint8 frame."""
    try:
        fn = DEGRADATIONS[mode.upper()]
    except KeyError:
        raise ValueError(f"unknown degradation '{mode}': use one of {', '.join(DEGRADATIONS)}") from None
    return fn(img, scale)


def _check_scale(scale: int) -> None:
    if not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
