"""The ``bicubic`` baseline: contract, MATLAB bicubic per frame, mean of neighbours in time, no parameters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stvsr.archs import build_arch
from stvsr.archs.bicubic import Bicubic
from stvsr.data.degrade import bi_downscale
from stvsr.resize import imresize


def test_misspelt_key_is_an_error() -> None:
    """(Registered, no parameters, no state: test_archs_facts.)"""
    with pytest.raises(ValueError, match="scal"):
        build_arch({"which_model_G": "bicubic", "scael": 4})


def test_contract_and_values() -> None:
    x = torch.rand(2, 3, 3, 7, 9)  # odd sizes: divisor 1
    y = Bicubic()(x)
    assert y.shape == (2, 5, 3, 28, 36) and y.dtype == x.dtype
    xd = x.double().numpy()
    for b in range(2):
        ups = [imresize(xd[b, t].transpose(1, 2, 0), 4.0).transpose(2, 0, 1) for t in range(3)]
        np.testing.assert_allclose(y[b, 0].numpy(), ups[0], atol=1e-6)
        np.testing.assert_allclose(y[b, 2].numpy(), ups[1], atol=1e-6)
        np.testing.assert_allclose(y[b, 4].numpy(), ups[2], atol=1e-6)
        np.testing.assert_allclose(y[b, 1].numpy(), (ups[0] + ups[1]) / 2, atol=1e-6)
        np.testing.assert_allclose(y[b, 3].numpy(), (ups[1] + ups[2]) / 2, atol=1e-6)


def test_hand_derived_properties() -> None:
    # a constant video stays constant; a horizontal ramp is reproduced in the interior (MATLAB pixel centres:
    # HR pixel j sits at LR coordinate (j + 0.5) / 4 - 0.5, and the Keys kernel reproduces linear functions)
    const = torch.full((1, 2, 3, 8, 8), 0.25)
    torch.testing.assert_close(Bicubic()(const), torch.full((1, 3, 3, 32, 32), 0.25))
    ramp = torch.arange(12, dtype=torch.float64).repeat(1, 2, 3, 6, 1) / 16
    out = Bicubic()(ramp)[0, 0, 0, 0].numpy()
    j = np.arange(48)
    expected = ((j + 0.5) / 4 - 0.5) / 16
    np.testing.assert_allclose(out[8:40], expected[8:40], atol=1e-12)


def test_close_to_ground_truth_on_smooth_frames() -> None:
    # bicubic up of BI down of a smooth image is close to it (a sanity check that scale and phase match BI)
    yy, xx = np.mgrid[0:64, 0:64]
    img = (127.5 + 100 * np.sin(xx / 9.0) * np.cos(yy / 11.0))[..., None].repeat(3, 2).astype(np.uint8)
    lr = (
        torch.from_numpy(bi_downscale(img, 4).astype(np.float32) / 255)
        .permute(2, 0, 1)[None, None]
        .repeat(1, 2, 1, 1, 1)
    )
    hr = Bicubic()(lr)[0, 0].permute(1, 2, 0).numpy() * 255
    err = np.abs(hr - img)[8:-8, 8:-8]
    assert err.mean() < 2.0
