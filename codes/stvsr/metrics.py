"""PSNR and SSIM as the STVSR literature computes them (docs/evaluation.md).

- Inputs: (H, W, 3) RGB arrays, uint8 or float on the [0, 255] scale (network outputs are quantised to
  uint8 *before* scoring: :func:`quantize`). All arithmetic is float64. Inputs are never modified (the
  official ``bgr2ycbcr`` scales its input in place; here every conversion makes a copy).
- Y channel: ITU-R BT.601 studio swing with MATLAB ``rgb2ycbcr`` coefficients,
  ``Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255`` with R, G, B in [0, 255]; Y is **not rounded**.
- PSNR: ``10 log10(255^2 / MSE)``, MSE over all pixels (and all channels for RGB); ``inf`` for identical
  images.
- SSIM: MATLAB-equivalent ``ssim`` per channel: 11x11 Gaussian window (sigma 1.5, normalised outer product of
  the 1-D kernel), "valid" filtering (maps cropped by 5 px each side), K1 = 0.01, K2 = 0.03, L = 255; the score
  is the mean of the map; RGB SSIM is the mean of the three per-channel scores.
- ``crop_border`` removes that many pixels on each side before either metric (0 in every STVSR repository).
"""

from __future__ import annotations

import numpy as np

__all__ = ["calculate_psnr", "calculate_ssim", "gaussian_window", "quantize", "rgb2y", "ssim_channel"]

Y_COEFFS = np.array([65.481, 128.553, 24.966], dtype=np.float64)  # R, G, B
C1 = (0.01 * 255.0) ** 2  # 6.5025
C2 = (0.03 * 255.0) ** 2  # 58.5225


def quantize(x: np.ndarray) -> np.ndarray:
    """Network output in [0, 1] (float, any shape) -> uint8 as the official ``tensor2img``: clamp, ``* 255`` in
    the array's own precision (float32 for a network output), ``np.round`` (half to even), cast."""
    arr = np.asarray(x)
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"quantize expects a float array in [0, 1], got {arr.dtype}")
    return np.round(np.clip(arr, 0.0, 1.0) * arr.dtype.type(255.0)).astype(np.uint8)


def rgb2y(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB on the [0, 255] scale -> float64 Y (H, W) in [16, 235], unrounded (BT.601 studio swing)."""
    rgb = np.asarray(img, dtype=np.float64)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb2y expects an (H, W, 3) RGB image, got shape {rgb.shape}")
    return 16.0 + (rgb @ Y_COEFFS) / 255.0


def _prepare(img1: np.ndarray, img2: np.ndarray, crop_border: int, test_y_channel: bool) -> tuple:
    a, b = np.asarray(img1), np.asarray(img2)
    if a.shape != b.shape:
        raise ValueError(f"images have different shapes: {a.shape} vs {b.shape}")
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) RGB images, got shape {a.shape}")
    if not isinstance(crop_border, (int, np.integer)) or crop_border < 0:
        raise ValueError(f"crop_border must be a non-negative integer, got {crop_border!r}")
    if test_y_channel:
        a, b = rgb2y(a)[..., None], rgb2y(b)[..., None]
    else:
        a, b = a.astype(np.float64), b.astype(np.float64)  # copies
    if crop_border:
        if 2 * crop_border >= min(a.shape[:2]):
            raise ValueError(f"crop_border {crop_border} leaves nothing of a {a.shape[1]}x{a.shape[0]} (W x H) image")
        a = a[crop_border:-crop_border, crop_border:-crop_border]
        b = b[crop_border:-crop_border, crop_border:-crop_border]
    return a, b


def calculate_psnr(img1: np.ndarray, img2: np.ndarray, crop_border: int = 0, test_y_channel: bool = False) -> float:
    """PSNR (dB) of two (H, W, 3) RGB images on the [0, 255] scale; Y channel when ``test_y_channel``."""
    a, b = _prepare(img1, img2, crop_border, test_y_channel)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return float("inf")
    return 10.0 * float(np.log10(255.0**2 / mse))


def gaussian_window(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    """The 1-D Gaussian whose outer product is MATLAB's ``fspecial('gaussian', size, sigma)`` (sum 1)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation of a 2-D float64 array with the outer product g g^T."""
    k = g.size
    rows = np.lib.stride_tricks.sliding_window_view(x, k, axis=0) @ g  # (H-k+1, W)
    return np.lib.stride_tricks.sliding_window_view(rows, k, axis=1) @ g  # (H-k+1, W-k+1)


def ssim_channel(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM of two 2-D float64 arrays on the [0, 255] scale (mean of the valid SSIM map)."""
    g = gaussian_window()
    if min(x.shape) < g.size:
        raise ValueError(
            f"SSIM needs images of at least {g.size}x{g.size} pixels, got {x.shape[1]}x{x.shape[0]} (W x H)"
        )
    mu_x, mu_y = _filter_valid(x, g), _filter_valid(y, g)
    sxx = _filter_valid(x * x, g) - mu_x**2
    syy = _filter_valid(y * y, g) - mu_y**2
    sxy = _filter_valid(x * y, g) - mu_x * mu_y
    num = (2.0 * mu_x * mu_y + C1) * (2.0 * sxy + C2)
    den = (mu_x**2 + mu_y**2 + C1) * (sxx + syy + C2)
    return float(np.mean(num / den))


def calculate_ssim(img1: np.ndarray, img2: np.ndarray, crop_border: int = 0, test_y_channel: bool = False) -> float:
    """SSIM of two (H, W, 3) RGB images on the [0, 255] scale: Y channel, or the mean over R, G, B."""
    a, b = _prepare(img1, img2, crop_border, test_y_channel)
    return float(np.mean([ssim_channel(a[..., c], b[..., c]) for c in range(a.shape[2])]))
