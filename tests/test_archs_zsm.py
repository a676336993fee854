"""Zooming Slow-Mo (LunaTokis): contract, init, equivalence with the official loop structure (zsm_reference); its keys
and counts are in test_archs_facts."""

from __future__ import annotations

import pytest
import torch

from arch_support import assert_every_parameter_gets_a_gradient, raises_saying
from stvsr.archs import build_arch
from stvsr.archs.zsm import LunaTokis
from zsm_reference import assert_matches_reference, perturb, zsm_structure_forward

TINY = {"which_model_G": "zsm", "nf": 8, "nframes": 7, "groups": 8, "front_RBs": 1, "back_RBs": 2}


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


def tiny(seed: int = 0, **overrides) -> LunaTokis:
    torch.manual_seed(seed)
    return build_arch({**TINY, **overrides})


def test_official_init_rules():
    """Offset convs zero (mask 0.5 at init), DCN weights uniform +-1/sqrt(C*9), RBs scaled by 0.1."""
    model = tiny()
    dcn = model.pcd_align.L1_dcnpack_1
    assert torch.count_nonzero(dcn.conv_offset_mask.weight) == 0 and torch.count_nonzero(dcn.conv_offset_mask.bias) == 0
    assert dcn.weight.abs().max() <= 1 / (8 * 9) ** 0.5 and torch.count_nonzero(dcn.bias) == 0
    rb = model.recon_trunk[0].conv1
    assert torch.count_nonzero(rb.bias) == 0
    assert rb.weight.std() < 0.1 * (2 / (8 * 9)) ** 0.5 * 1.5  # kaiming_normal std sqrt(2/fan_in), x 0.1


@pytest.mark.parametrize("n", [2, 4, 5])
def test_forward_shape_any_n(n: int):
    model = tiny().eval()
    x = torch.rand(2, n, 3, 8, 12)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, 2 * n - 1, 3, 32, 48)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize(
    ("shape", "words"),
    [
        ((1, 4, 3, 30, 32), ["30x32", "multiple of 4"]),
        ((1, 4, 3, 32, 6), ["32x6", "multiple of 4"]),
        ((1, 1, 3, 8, 8), ["at least 2"]),
        ((1, 4, 1, 8, 8), ["3 (RGB)"]),
        ((4, 3, 8, 8), ["(B, N, 3, H, W)"]),
    ],
)
def test_bad_input_is_a_clear_error(shape, words):
    with raises_saying(words):
        tiny()(torch.rand(*shape))


def test_batched_forward_equals_official_loop_structure():
    """In float64, so that the comparison is tight enough to see any change of the computation (e.g. dropping
    the x2 on the upsampled offset features changes the output by ~1e-6 of its scale, rounding by ~1e-15)."""
    model = tiny(front_RBs=1, back_RBs=1).double().eval()
    perturb(model, std=0.5)
    x = torch.rand(2, 3, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        ours, ref = model(x), zsm_structure_forward(model, x)
    assert ours.shape == ref.shape == (2, 5, 3, 32, 32)
    assert_matches_reference(ours, ref, rtol=1e-10, atol=1e-12)


def test_frame_order_keyframes_depend_only_on_pairs_around_them():
    """out[0] (F0) changes when input 0 changes; the last output frame too (through the BiLSTM), so only check
    the causal part we can: changing the last input changes the last output more than the first output."""
    model = tiny().eval()
    x = torch.rand(1, 3, 3, 8, 8)
    x2 = x.clone()
    x2[:, -1] += 0.5
    with torch.no_grad():
        d = (model(x) - model(x2)).abs().flatten(2).mean(2)[0]
    assert d[-1] > d[0]


def test_every_parameter_gets_a_gradient():
    """All parameters are used. At init the offset-feature convs get an exactly zero gradient (they feed only
    the zero-initialised offset convs, quirk 3), so check non-zero gradients with the offset convs perturbed."""
    model = tiny().train()
    x = torch.rand(2, 3, 3, 8, 8)
    gt = torch.rand(2, 5, 3, 32, 32)
    torch.sqrt((model(x) - gt) ** 2 + 1e-6).sum().backward()  # Charbonnier, sum (section 2.7)
    assert not [n for n, p in model.named_parameters() if p.grad is None]
    model.zero_grad(set_to_none=True)
    perturb(model)
    torch.sqrt((model(x) - gt) ** 2 + 1e-6).sum().backward()
    assert_every_parameter_gets_a_gradient(model)


def test_same_seed_same_output_and_train_equals_eval():
    x = torch.rand(1, 2, 3, 8, 8)
    a, b = tiny(seed=3), tiny(seed=3)
    with torch.no_grad():
        ya, yb = a(x), b(x)
        assert torch.equal(ya, yb)
        assert torch.equal(a.eval()(x), ya)  # no dropout or normalisation: train and eval agree
    assert not torch.equal(tiny(seed=4)(x), ya)


def test_float64_follows_the_input():
    """The LSTM state is created like the input (official: .cuda(), quirk 7 FIX)."""
    model = tiny().double().eval()
    with torch.no_grad():
        y = model(torch.rand(1, 2, 3, 8, 8, dtype=torch.float64))
    assert y.dtype == torch.float64


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"back_RB": 40}, ["network_G.back_RB", "Did you mean 'back_RBs'"]),
        ({"Front_RBs": 5}, ["network_G.Front_RBs", "front_RBs"]),
        ({"which_model_G": "LunaToki"}, ["which_model_G", "Did you mean 'LunaTokis'"]),
        ({"nf": "64"}, ["network_G.nf", "int"]),
        ({"nf": 12}, ["divisible by groups=8"]),
    ],
)
def test_build_arch_errors_name_the_key(overrides, words):
    with raises_saying(words):
        build_arch({**TINY, **overrides})


def test_build_arch_missing_key():
    options = dict(TINY)
    del options["back_RBs"]
    with pytest.raises(ValueError, match="missing required key.*back_RBs"):
        build_arch(options)
    with pytest.raises(ValueError, match="which_model_G is required"):
        build_arch({"nf": 8})
