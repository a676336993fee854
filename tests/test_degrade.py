"""BI (MATLAB imresize) and BD degradations: hand-derived weights, MATLAB reference outputs, real frames."""

from __future__ import annotations

import math
from fractions import Fraction

import cv2
import numpy as np
import pytest

from data_support import shared
from stvsr.data.degrade import (
    bd_downscale,
    bi_downscale,
    bicubic_upscale,
    degrade,
    gaussian_kernel,
    gaussian_kernel_1d,
    modcrop,
    round_uint8,
)
from stvsr.data.io import list_images, read_image
from stvsr.resize import contributions, imresize, resize_axis


def exact_cubic(x: Fraction) -> Fraction:
    """Keys cubic kernel (a = -0.5) in exact arithmetic."""
    a = abs(x)
    if a <= 1:
        return Fraction(3, 2) * a**3 - Fraction(5, 2) * a**2 + 1
    if a <= 2:
        return Fraction(-1, 2) * a**3 + Fraction(5, 2) * a**2 - 4 * a + 2
    return Fraction(0)


def test_quarter_scale_weights_equal_the_exact_rational_derivation() -> None:
    # x1/4 with antialiasing: output x (1-based) sits at u = 4x - 3/2; taps floor(u - 8) + 0..17; weight
    # 1/4 * cubic((u - i)/4), normalised. All distances are odd multiples of 1/8, so everything is exact
    # in binary until the one division, and float64 must equal the correctly rounded exact ratio.
    n_in, n_out = 16, 4
    weights, indices = contributions(n_in, n_out, 0.25)
    assert weights.shape == (n_out, 16)  # 18 taps, the first and last always 0 and removed
    for row, x in enumerate(range(1, n_out + 1)):
        u = Fraction(4 * x) - Fraction(3, 2)
        taps = [math.floor(u - 8) + k for k in range(18)]
        raw = [Fraction(1, 4) * exact_cubic((u - i) / 4) for i in taps]
        assert raw[0] == 0 and raw[-1] == 0
        total = sum(raw)
        expected = [float(w / total) for w in raw[1:-1]]
        assert weights[row].tolist() == expected
    assert weights[:, :8].sum(axis=1) == pytest.approx(0.5)  # symmetric kernel around u
    # Mirrored taps of the first output (1-based -5..10): 0 <-> 1, -1 <-> 2, ...  (0-based below)
    assert indices[0].tolist() == [5, 4, 3, 2, 1, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
    # ... and of the last (1-based 7..22 with n = 16): 17 <-> 16, 18 <-> 15, ...
    assert indices[-1].tolist() == [6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 15, 14, 13, 12, 11, 10]


@pytest.mark.parametrize("n_in,scale", [(256, 0.25), (448, 0.25), (10, 1 / 3), (8, 0.5), (64, 4.0), (10, 1.5)])
def test_weights_sum_to_one(n_in: int, scale: float) -> None:
    weights, indices = contributions(n_in, math.ceil(n_in * scale), scale)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=0, atol=1e-15)
    assert indices.min() >= 0 and indices.max() < n_in


def test_constant_stays_constant_and_interior_ramp_is_exact() -> None:
    flat = np.full((64, 48, 3), 0.3)
    np.testing.assert_allclose(imresize(flat, 0.25), 0.3, atol=1e-15)
    np.testing.assert_allclose(imresize(flat, 4.0), 0.3, atol=1e-15)
    assert np.all(bi_downscale(np.full((16, 20, 3), 77, np.uint8)) == 77)
    # A linear ramp along the rows: interior LR pixel j (0-based) is centred on HR coordinate 4j + 1.5.
    ramp = np.repeat(np.arange(64, dtype=np.float64)[:, None], 8, axis=1)
    out = imresize(ramp, 0.25)[:, 0]
    np.testing.assert_allclose(out[2:-2], 4 * np.arange(16)[2:-2] + 1.5, rtol=0, atol=1e-12)


# MATLAB imresize results for this uint8 matrix, as listed in the GNU Octave image package
# (inst/imresize.m, test block "Test bicubic interpolations against some reference results from matlab").
OCTAVE_INPUT = [
    [116, 227, 153, 69, 146, 194, 59, 130, 139, 106],
    [2, 47, 137, 249, 90, 75, 16, 24, 158, 44],
    [155, 68, 46, 84, 166, 156, 69, 204, 32, 152],
    [71, 221, 137, 230, 210, 153, 192, 115, 30, 118],
    [107, 143, 108, 52, 51, 73, 101, 21, 175, 90],
    [54, 158, 143, 77, 26, 168, 113, 229, 165, 225],
    [9, 47, 133, 135, 130, 207, 236, 43, 19, 73],
    [129, 60, 59, 243, 64, 181, 249, 56, 32, 86],
]
MATLAB_REFERENCE = {
    (0.5, False): [[92, 164, 123, 38, 118], [139, 116, 188, 167, 69], [121, 87, 67, 108, 180], [54, 153, 141, 149, 42]],
    (0.5, True): [
        [105, 140, 126, 81, 109],
        [110, 134, 153, 114, 93],
        [108, 108, 94, 127, 146],
        [67, 126, 162, 149, 62],
    ],
    (1 / 3, False): [[47, 90, 24, 44], [143, 51, 21, 90], [60, 64, 56, 86]],
    (1 / 3, True): [[115, 135, 97, 101], [113, 119, 124, 125], [81, 157, 118, 64]],
    (1.5, True): [
        [116, 187, 237, 171, 94, 61, 135, 191, 187, 75, 91, 142, 140, 124, 108],
        [43, 92, 143, 149, 164, 163, 119, 123, 118, 44, 38, 80, 151, 118, 62],
        [13, 21, 47, 107, 195, 228, 115, 81, 70, 24, 19, 56, 137, 105, 48],
        [146, 98, 49, 49, 71, 107, 148, 159, 132, 58, 124, 176, 61, 85, 146],
        [118, 139, 144, 92, 116, 168, 201, 188, 159, 140, 167, 158, 27, 69, 153],
        [61, 151, 218, 145, 174, 219, 201, 164, 146, 187, 148, 84, 48, 76, 115],
        [102, 132, 151, 119, 90, 72, 72, 72, 83, 114, 60, 31, 144, 130, 80],
        [81, 121, 154, 133, 87, 41, 19, 67, 116, 95, 108, 140, 183, 180, 163],
        [37, 95, 152, 150, 117, 73, 35, 108, 179, 130, 174, 214, 153, 176, 219],
        [3, 29, 73, 131, 136, 120, 116, 162, 214, 229, 147, 54, 35, 62, 96],
        [67, 54, 51, 83, 153, 187, 111, 141, 210, 255, 149, 22, 13, 42, 74],
        [142, 99, 53, 43, 164, 237, 77, 103, 197, 254, 159, 42, 31, 59, 91],
    ],
    (4 / 3, True): [
        [116, 203, 221, 141, 62, 110, 180, 191, 70, 104, 143, 136, 111, 106],
        [26, 78, 126, 156, 200, 139, 103, 103, 33, 28, 92, 158, 67, 46],
        [51, 35, 51, 112, 195, 146, 101, 87, 29, 57, 100, 114, 81, 74],
        [159, 110, 63, 50, 82, 148, 179, 152, 83, 173, 147, 27, 143, 170],
        [70, 171, 189, 134, 217, 226, 193, 158, 186, 157, 83, 25, 114, 135],
        [91, 152, 162, 116, 118, 114, 102, 98, 138, 65, 60, 127, 92, 84],
        [90, 130, 144, 111, 52, 24, 50, 101, 94, 86, 129, 190, 146, 135],
        [41, 114, 157, 139, 89, 37, 82, 178, 125, 192, 203, 154, 213, 227],
        [4, 33, 89, 141, 127, 118, 151, 213, 232, 119, 35, 34, 81, 92],
        [88, 61, 54, 97, 203, 129, 115, 203, 255, 119, 18, 24, 70, 81],
        [147, 91, 43, 68, 247, 125, 80, 191, 255, 130, 33, 37, 83, 94],
    ],
}


@pytest.mark.parametrize("scale,antialias", list(MATLAB_REFERENCE))
def test_reproduces_matlab_reference_outputs_exactly(scale: float, antialias: bool) -> None:
    # MATLAB resizes a uint8 image pass by pass (rows first for equal scales) and rounds each pass to uint8;
    # emulating that with our passes must give MATLAB's numbers to the last level, at every position,
    # including the borders (symmetric padding) and the rounded-up sizes of x1/3 and x4/3.
    img = np.array(OCTAVE_INPUT, dtype=np.uint8)
    out_h, out_w = math.ceil(img.shape[0] * scale), math.ceil(img.shape[1] * scale)
    rows = round_uint8(resize_axis(img, 0, out_h, scale, antialias))
    both = round_uint8(resize_axis(rows, 1, out_w, scale, antialias))
    np.testing.assert_array_equal(both, np.array(MATLAB_REFERENCE[(scale, antialias)]))
    # The double path (what BI uses) rounds once; it may differ from the uint8 path by one level only.
    once = round_uint8(imresize(img, scale, antialias=antialias))
    assert np.abs(once.astype(int) - both).max() <= 1


def test_modcrop_and_sizes() -> None:
    img = np.zeros((259, 450, 3), np.uint8)
    assert modcrop(img, 4).shape == (256, 448, 3)
    assert bi_downscale(img, 4).shape == (64, 112, 3)
    assert bd_downscale(img, 4).shape == (64, 112, 3)
    assert bicubic_upscale(np.zeros((64, 112, 3), np.uint8), 4).shape == (256, 448, 3)
    assert imresize(np.zeros((10, 7)), output_shape=(3, 5)).shape == (3, 5)


def test_bd_kernel_is_the_duf_gaussian() -> None:
    from scipy.ndimage import gaussian_filter

    k = gaussian_kernel(13, 1.6)
    delta = np.zeros((13, 13))
    delta[6, 6] = 1
    np.testing.assert_allclose(k, gaussian_filter(delta, 1.6), rtol=0, atol=1e-15)  # DUF's construction
    assert k.sum() == pytest.approx(1.0, abs=1e-15)
    np.testing.assert_array_equal(k, k.T)
    with pytest.raises(ValueError, match="odd"):
        gaussian_kernel_1d(12)


@pytest.mark.parametrize("phase", [0, 1, 2, 3])
def test_bd_keeps_the_stated_pixel_phase(phase: int) -> None:
    # Reference: a full 2-D blur by OpenCV (reflect-101 border) sampled at rows/cols phase, phase + 4, ...
    rng = np.random.default_rng(phase)
    img = rng.integers(0, 256, size=(40, 56, 3)).astype(np.uint8)
    blurred = cv2.filter2D(img.astype(np.float64), -1, gaussian_kernel(), borderType=cv2.BORDER_REFLECT_101)
    expected = round_uint8(blurred[phase::4, phase::4])
    np.testing.assert_array_equal(bd_downscale(img, 4, phase=phase), expected)


def test_bd_impulse_lands_on_block_top_left() -> None:
    img = np.zeros((48, 48), np.uint8)
    img[20, 28] = 255  # HR (20, 28) = 4 * (5, 7): phase 0 puts the kernel centre on LR (5, 7)
    out = bd_downscale(img, 4).astype(int)
    assert np.unravel_index(out.argmax(), out.shape) == (5, 7)
    assert out[5, 7] == round(255 * gaussian_kernel()[6, 6])


def test_bad_input_is_refused_clearly() -> None:
    with pytest.raises(TypeError, match="uint8"):
        bi_downscale(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="unknown degradation 'XX'"):
        degrade(np.zeros((8, 8, 3), np.uint8), "XX")
    with pytest.raises(ValueError, match="phase"):
        bd_downscale(np.zeros((32, 32), np.uint8), 4, phase=4)
    with pytest.raises(ValueError, match="scale"):
        bi_downscale(np.zeros((8, 8), np.uint8), 0)


def test_bi_on_real_frames_has_the_documented_sizes_and_is_deterministic() -> None:
    calendar = list_images(shared("Vid4", "GT", "calendar"))
    frame = read_image(calendar[0])
    lr = bi_downscale(frame, 4)
    assert frame.shape == (576, 720, 3) and lr.shape == (144, 180, 3) and lr.dtype == np.uint8
    np.testing.assert_array_equal(lr, bi_downscale(frame.copy(), 4))
    # Sanity against an independent resizer (area averaging): a few levels apart on this detailed frame,
    # against about 19 levels when either is moved by one LR pixel (so no shift or transposition).
    area = cv2.resize(frame, (180, 144), interpolation=cv2.INTER_AREA).astype(float)
    assert np.abs(lr - area).mean() < 5.0
    assert np.abs(lr[:, 1:] - area[:, :-1]).mean() > 10.0
    vimeo = read_image(shared("vimeo_septuplet", "sequences", "00001", "0001", "im1.png"))
    assert bi_downscale(vimeo, 4).shape == (64, 112, 3)
