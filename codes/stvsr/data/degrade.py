"""Degradations that turn HR frames into LR frames: BI (MATLAB bicubic) and BD (Gaussian blur + subsampling).

BI: MATLAB ``imresize(im2double(img), 1/scale, 'bicubic')`` after mod-crop, written as 8-bit
-------------------------------------------------------------------------------------------------
The resize is :func:`stvsr.resize.imresize` (its docstring says what MATLAB does and how that was checked);
``im2double`` divides by 255 and ``imwrite`` of a double image stores ``uint8(x * 255 + 0.5)`` clamped to
[0, 255] (:func:`to_uint8`): one rounding, at the end.

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

import numpy as np

from stvsr.resize import imresize


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
