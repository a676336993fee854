"""stvsr.metrics against hand-derived values and scikit-image (an independent SSIM implementation)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from stvsr.metrics import calculate_psnr, calculate_ssim, gaussian_window, quantize, rgb2y


def _skimage_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """MATLAB-style SSIM by scikit-image: Gaussian sigma 1.5 (truncate 3.5 -> 11x11), population covariance,
    L = 255; scikit-image averages over the map cropped by (win_size - 1) // 2 = 5, i.e. the valid region."""
    return structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    base = rng.integers(0, 256, size=(40, 52, 3)).astype(np.float64)
    smooth = (base + np.roll(base, 1, 0) + np.roll(base, 1, 1)) / 3
    a = smooth.astype(np.uint8)
    b = np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)
    return a, b


def test_y_of_known_colours() -> None:
    # BT.601 studio swing: black 16, white 235, pure R/G/B 16 + coefficient
    img = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], dtype=np.uint8)
    y = rgb2y(img)[0]
    np.testing.assert_allclose(y, [16.0, 235.0, 16 + 65.481, 16 + 128.553, 16 + 24.966], atol=1e-12)
    assert y.dtype == np.float64  # unrounded
    assert rgb2y(np.full((1, 1, 3), 1, np.uint8))[0, 0] == pytest.approx(16 + 219 / 255)


def test_psnr_hand_derived() -> None:
    a = np.zeros((8, 8, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 16  # squared error 256 over 192 values
    assert calculate_psnr(a, b) == pytest.approx(10 * math.log10(255**2 / (256 / 192)), abs=1e-12)
    # Y: only R moved by 16 -> Y moves by 16 * 65.481 / 255 at one of 64 pixels
    dy = 16 * 65.481 / 255
    assert calculate_psnr(a, b, test_y_channel=True) == pytest.approx(10 * math.log10(255**2 / (dy**2 / 64)), abs=1e-9)
    # constant offset of 1 in every channel: MSE 1 -> 48.1308 dB
    assert calculate_psnr(a, a + 1) == pytest.approx(20 * math.log10(255), abs=1e-12)
    assert calculate_psnr(a, a) == math.inf
    # crop_border removes the differing pixel
    assert calculate_psnr(a, b, crop_border=1) == math.inf


def test_y_is_not_rounded(pair) -> None:
    a, b = pair
    ya, yb = rgb2y(a), rgb2y(b)
    expected = 10 * np.log10(255**2 / np.mean((ya - yb) ** 2))
    rounded = 10 * np.log10(255**2 / np.mean((np.round(ya) - np.round(yb)) ** 2))
    got = calculate_psnr(a, b, test_y_channel=True)
    assert got == pytest.approx(expected, abs=1e-10)
    assert abs(got - rounded) > 1e-4


def test_gaussian_window_matches_fspecial() -> None:
    g = gaussian_window()
    assert g.shape == (11,) and g.sum() == pytest.approx(1.0, abs=1e-15)
    w = np.outer(g, g)
    x = np.arange(-5, 6)
    ref = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * 1.5**2))
    np.testing.assert_allclose(w, ref / ref.sum(), rtol=1e-13)


def test_ssim_hand_derived() -> None:
    a = np.full((16, 16, 3), 100, np.uint8)
    assert calculate_ssim(a, a) == pytest.approx(1.0, abs=1e-15)
    # two constant images c1, c2: sigma terms vanish -> (2 c1 c2 + C1) / (c1^2 + c2^2 + C1)
    b = np.full((16, 16, 3), 120, np.uint8)
    C1 = (0.01 * 255) ** 2
    assert calculate_ssim(a, b) == pytest.approx((2 * 100 * 120 + C1) / (100**2 + 120**2 + C1), abs=1e-12)
    # Y of the constants
    ya, yb = 16 + 100 * 219 / 255, 16 + 120 * 219 / 255
    assert calculate_ssim(a, b, test_y_channel=True) == pytest.approx(
        (2 * ya * yb + C1) / (ya**2 + yb**2 + C1), abs=1e-12
    )


def test_ssim_valid_region_ignores_border_pixels() -> None:
    # an 11x11 image has exactly one valid window: the score is the closed-form SSIM of the weighted moments
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (11, 11, 3)).astype(np.float64)
    y = rng.integers(0, 256, (11, 11, 3)).astype(np.float64)
    w = np.outer(gaussian_window(), gaussian_window())
    C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    scores = []
    for c in range(3):
        xc, yc = x[..., c], y[..., c]
        mx, my = (w * xc).sum(), (w * yc).sum()
        vx, vy = (w * xc * xc).sum() - mx**2, (w * yc * yc).sum() - my**2
        cxy = (w * xc * yc).sum() - mx * my
        scores.append((2 * mx * my + C1) * (2 * cxy + C2) / ((mx**2 + my**2 + C1) * (vx + vy + C2)))
    assert calculate_ssim(x, y) == pytest.approx(np.mean(scores), abs=1e-12)
    with pytest.raises(ValueError, match="at least 11x11"):
        calculate_ssim(x[:10], y[:10])


def test_ssim_matches_skimage(pair) -> None:
    a, b = pair
    ours_rgb = calculate_ssim(a, b)
    per_channel = [_skimage_ssim(a[..., c].astype(np.float64), b[..., c].astype(np.float64)) for c in range(3)]
    assert ours_rgb == pytest.approx(np.mean(per_channel), abs=1e-10)
    assert ours_rgb == pytest.approx(
        structural_similarity(
            a.astype(np.float64),
            b.astype(np.float64),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=255,
            channel_axis=2,
        ),
        abs=1e-10,
    )
    assert calculate_ssim(a, b, test_y_channel=True) == pytest.approx(_skimage_ssim(rgb2y(a), rgb2y(b)), abs=1e-10)
    # crop_border: same as cropping first
    cropped = calculate_ssim(a, b, crop_border=4, test_y_channel=True)
    assert cropped == pytest.approx(_skimage_ssim(rgb2y(a)[4:-4, 4:-4], rgb2y(b)[4:-4, 4:-4]), abs=1e-10)


def test_inputs_untouched_and_float_equals_uint8(pair) -> None:
    a, b = pair
    a0 = a.copy()
    af, bf = a.astype(np.float64), b.astype(np.float64)
    af0 = af.copy()
    for y in (False, True):
        assert calculate_psnr(a, b, test_y_channel=y) == calculate_psnr(af, bf, test_y_channel=y)
        assert calculate_ssim(a, b, test_y_channel=y) == calculate_ssim(af, bf, test_y_channel=y)
    np.testing.assert_array_equal(a, a0)
    np.testing.assert_array_equal(af, af0)


def test_errors() -> None:
    a = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="different shapes"):
        calculate_psnr(a, a[:8])
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        calculate_ssim(a[..., 0], a[..., 0])
    with pytest.raises(ValueError, match="crop_border"):
        calculate_psnr(a, a, crop_border=8)


def test_quantize_as_tensor2img() -> None:
    x = np.array([-0.1, 0.0, 0.5, 1.0, 1.2, 2.5 / 255, 3.5 / 255], dtype=np.float32)
    np.testing.assert_array_equal(quantize(x), np.round(np.clip(x, 0, 1) * np.float32(255)).astype(np.uint8))
    assert quantize(x)[:5].tolist() == [0, 0, 128, 255, 255]
    with pytest.raises(TypeError):
        quantize(np.zeros(3, np.uint8))
