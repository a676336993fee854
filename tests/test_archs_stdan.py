"""STDAN (STTrans2): Swin buffers (keys and counts: test_archs_facts), Swin details, equivalence with the official
loop structure."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from arch_support import assert_every_parameter_gets_a_gradient
from stvsr.archs import build_arch
from stvsr.archs.stdan import STTrans2
from stvsr.archs.swin import SwinTransformerBlock, WindowAttention, relative_position_index, shifted_window_mask

OFFICIAL = {"which_model_G": "STTrans2", "nf": 64, "nframes": 7, "embed_dim": 72, "HR_in": False}
# tiny: nf divisible by 8 (deformable groups), embed_dim by 8 and by the 6 heads
TINY = {"which_model_G": "stdan", "nf": 8, "nframes": 7, "embed_dim": 24, "extraction_depths": [2], "recon_depths": [2]}


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


def tiny(seed: int = 0, **overrides) -> STTrans2:
    torch.manual_seed(seed)
    return build_arch({**TINY, **overrides})


def test_official_buffers_and_positional_construction():
    """What test_archs_facts' table does not say: the kinds and dtypes of the Swin buffers, and the official
    construction for testing."""
    model = build_arch(OFFICIAL)
    buffers = dict(model.named_buffers())
    assert sum(1 for k in buffers if k.endswith("relative_position_index")) == 48
    assert sum(1 for k in buffers if k.endswith("attn_mask")) == 24
    assert all(v.dtype == torch.int64 for k, v in buffers.items() if k.endswith("relative_position_index"))
    assert all(v.dtype == torch.float32 for k, v in buffers.items() if k.endswith("attn_mask"))
    # official construction for testing: STTrans2(scale=4, n_inputs=4, n_outputs=7, nf=64, embed_dim=72, window_size=8)
    torch.manual_seed(0)
    other = STTrans2(scale=4, n_inputs=4, n_outputs=7, nf=64, embed_dim=72, window_size=8)
    assert [(k, v.shape) for k, v in other.state_dict().items()] == [
        (k, v.shape) for k, v in model.state_dict().items()
    ]


def test_relative_position_index_and_mask_follow_the_spec():
    index = relative_position_index(8)
    ys, xs = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    expected = (ys[:, None] - ys[None, :] + 7) * 15 + (xs[:, None] - xs[None, :] + 7)
    assert torch.equal(index, expected)
    mask = shifted_window_mask(32, 32, 8, 4)
    assert mask.shape == (16, 64, 64)
    assert set(mask.unique().tolist()) == {0.0, -100.0}
    assert torch.count_nonzero(mask[0]) == 0  # the top-left window holds one region only
    # last window (bottom-right): 4 regions of 16 tokens each -> each token masks 48 others
    assert (mask[-1] != 0).sum(dim=1).tolist() == [48] * 64
    block = SwinTransformerBlock(24, (32, 32), 6, 8, shift_size=4)
    assert torch.equal(block.attn_mask, mask)
    assert "attn_mask" not in SwinTransformerBlock(24, (32, 32), 6, 8, shift_size=0).state_dict()


def test_window_attention_equals_the_textbook_formula():
    torch.manual_seed(0)
    attn = WindowAttention(24, 8, 6)
    x = torch.randn(2 * 4, 64, 24)
    mask = shifted_window_mask(16, 16, 8, 4)
    bw, n, c = x.shape
    q, k, v = attn.qkv(x).reshape(bw, n, 3, 6, 4).permute(2, 0, 3, 1, 4)
    logits = (q * 4**-0.5) @ k.transpose(-2, -1)
    bias = attn.relative_position_bias_table[attn.relative_position_index.view(-1)].view(n, n, 6).permute(2, 0, 1)
    logits = (logits + bias).view(2, 4, 6, n, n) + mask.unsqueeze(1)
    ref = attn.proj((logits.view(bw, 6, n, n).softmax(-1) @ v).transpose(1, 2).reshape(bw, n, c))
    torch.testing.assert_close(attn(x, mask), ref, rtol=1e-5, atol=1e-6)  # training path (plain formula)
    with torch.no_grad():
        torch.testing.assert_close(attn(x, mask), ref, rtol=1e-5, atol=1e-6)  # inference path (fused attention)
        unshifted = attn.proj(
            (((q * 4**-0.5) @ k.transpose(-2, -1) + bias).softmax(-1) @ v).transpose(1, 2).reshape(bw, n, c)
        )
        torch.testing.assert_close(attn(x), unshifted, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size", [(8, 16), (32, 32)])  # 32x32 uses the stored attn_mask, others recompute it
def test_forward_shape(size):
    model = tiny().eval()
    h, w = size
    with torch.no_grad():
        y = model(torch.rand(1, 4, 3, h, w))
    assert y.shape == (1, 7, 3, 4 * h, 4 * w)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("size", [(28, 32), (32, 36), (12, 16)])
def test_sizes_not_multiple_of_8_are_a_clear_error(size):
    with pytest.raises(ValueError, match=rf"{size[0]}x{size[1]} .*multiple of 8"):
        tiny()(torch.rand(1, 4, 3, *size))


def _lrelu(x):
    return F.leaky_relu(x, 0.1)


def _reference_attention(corr, q, k, v):
    """One (query, key/value) frame pair, written from the spec (section 4.3, STDFA steps 1-7)."""
    b, c, h, w = q.shape
    o = _lrelu(corr.offset_conv2(_lrelu(corr.offset_conv1(torch.cat([q, k], 1)))))
    ks = corr.dcn_attention(k, o).permute(0, 3, 2, 1)  # B, HW, 9, C
    vs = corr.dcn_attention(v, o).permute(0, 3, 2, 1)
    qv = q.view(b, c, h * w).permute(0, 2, 1).unsqueeze(-1)  # B, HW, C, 1
    rel = ks @ qv  # B, HW, 9, 1 (no 1/sqrt(C))
    top, ind = torch.topk(rel, 2, dim=2)
    a = torch.softmax(top, dim=2)  # B, HW, 2, 1

    def pick(s):
        return torch.stack([s[bi, pi, ind[bi, pi, :, 0]] for bi in range(b) for pi in range(h * w)])

    k_top, v_top = pick(ks).view(b, h * w, 2, c), pick(vs).view(b, h * w, 2, c)
    k_hat = (k_top * a).sum(2)  # B, HW, C
    v_hat = (v_top * a).sum(2)
    weight = (qv.squeeze(-1) * k_hat).sum(-1)  # B, HW
    return weight, v_hat.permute(0, 2, 1)  # (B, HW), (B, C, HW)


def _reference_stdfa(m, seq):
    b, t, c, h, w = seq.shape
    res = seq.reshape(b * t, c, h, w)
    e = m.conv_first(res).view(b, t, -1, h, w)

    def lin(layer, z):
        return layer(z.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    qs = [lin(m.qkv_maps.w_qs, e[:, j]) for j in range(t)]
    ks = [lin(m.qkv_maps.w_ks, e[:, j]) for j in range(t)]
    vs = [lin(m.qkv_maps.w_vs, e[:, j]) for j in range(t)]
    outs = []
    for j in range(t):
        pairs = [_reference_attention(m.deformable_corr, qs[j], ks[i], vs[i]) for i in range(t) if i != j]
        alpha = torch.softmax(torch.stack([p[0] for p in pairs], 1), dim=1).unsqueeze(2)
        outs.append((torch.stack([p[1] for p in pairs], 1) * alpha).sum(1).view(b, -1, h, w))
    return m.conv_last(torch.stack(outs, 1).view(b * t, -1, h, w)) + res


def official_structure_forward(m: STTrans2, x: torch.Tensor) -> torch.Tensor:
    """The official loop structure: one LSTFI direction at a time, one STDFA frame pair at a time."""
    b, n, c, h, w = x.shape
    l1 = m.feature_extraction(_lrelu(m.conv_first(x.view(-1, c, h, w))))
    l2 = _lrelu(m.fea_L2_conv2(_lrelu(m.fea_L2_conv1(l1))))
    l3 = _lrelu(m.fea_L3_conv2(_lrelu(m.fea_L3_conv1(l2))))
    levels = [t.view(b, n, *t.shape[1:]) for t in (l1, l2, l3)]
    directions = []
    for order in (list(range(n)), list(reversed(range(n)))):
        hid, outs = x.new_zeros(b, m.nf, h, w), []
        for i in range(n - 1):
            fea1 = [t[:, order[i]] for t in levels]
            fea2 = [t[:, order[i + 1]] for t in levels]
            y, hid = m.pcd_align_modified(hid, fea1, fea2)
            outs.append(y)
        directions.append(torch.stack(outs, 1))
    fwd, bwd = directions[0], directions[1].flip(1)
    mids = m.fusion_f_b(torch.cat([fwd, bwd], 2).view(b * (n - 1), -1, h, w)).view(b, n - 1, -1, h, w)
    seq = [levels[0][:, 0]]
    for i in range(n - 1):
        seq += [mids[:, i], levels[0][:, i + 1]]
    feats = _reference_stdfa(m.stdfa, torch.stack(seq, 1))
    feats = m.feature_recon(feats)
    feats = F.leaky_relu(m.conv_before_upsample[0](feats), 0.01)
    up = m.upsample
    feats = m.conv_last(F.pixel_shuffle(up[2](F.pixel_shuffle(up[0](feats), 2)), 2))
    return feats.view(b, 2 * n - 1, 3, 4 * h, 4 * w)


def _perturb(model: torch.nn.Module, std: float) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "conv_offset" in name:
                p.normal_(0, std)


def test_batched_forward_equals_official_loop_structure():
    """float64, tight tolerance: batching directions and frame pairs must not change the computation."""
    model = tiny().double().eval()
    _perturb(model, 0.5)
    x = torch.rand(1, 3, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        ours, ref = model(x), official_structure_forward(model, x)
    assert ours.shape == (1, 5, 3, 32, 32)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12 * ref.abs().max().item())


def test_stdfa_chunking_does_not_change_the_result():
    model = tiny().eval()
    _perturb(model, 0.5)
    seq = torch.rand(2, 5, 8, 8, 8)
    with torch.no_grad():
        whole = model.stdfa(seq)
        model.stdfa.pair_chunk = 3
        chunked = model.stdfa(seq)
    torch.testing.assert_close(whole, chunked, rtol=1e-5, atol=1e-6)


def test_every_parameter_gets_a_gradient():
    model = tiny().train()
    _perturb(model, 0.05)  # at init the offset-feature convs feed only zero weights (exactly zero gradient)
    x = torch.rand(2, 4, 3, 8, 8)
    torch.sqrt((model(x) - torch.rand(2, 7, 3, 32, 32)) ** 2 + 1e-6).sum().backward()
    assert_every_parameter_gets_a_gradient(model)


def test_determinism_and_train_eval_modes():
    x = torch.rand(1, 2, 3, 8, 8)
    a, b = tiny(seed=5), tiny(seed=5)
    with torch.no_grad():
        torch.manual_seed(1)
        ya = a(x)  # train mode: stochastic depth draws random numbers
        torch.manual_seed(1)
        assert torch.equal(b(x), ya)
        a.eval()
        ea = a(x)
        assert torch.equal(a(x), ea)  # eval: deterministic, no stochastic depth
        assert not torch.equal(ea, ya)  # train: stochastic depth 0.1 is active (quirk 3, KEEP)


def test_build_arch_keys():
    with pytest.raises(ValueError, match="network_G.embed_dims.*Did you mean 'embed_dim'"):
        build_arch({**TINY, "embed_dims": 24})
    with pytest.raises(ValueError, match="embed_dim=20 must be divisible"):
        build_arch({**TINY, "embed_dim": 20})
    model = build_arch(OFFICIAL | {"extraction_depths": [1], "recon_depths": [1]})
    assert len(model.feature_recon.layers) == 1


def test_use_checkpoint_gives_the_same_output_and_gradients():
    """Recomputing the Swin blocks in backward (stochastic depth included) changes nothing but memory."""
    x = torch.rand(1, 2, 3, 8, 8)
    results = []
    for flag in (False, True):
        model = tiny(seed=7, use_checkpoint=flag).train()
        torch.manual_seed(11)
        y = model(x)
        y.square().sum().backward()
        results.append((y.detach(), [p.grad for p in model.parameters()]))
    (y0, g0), (y1, g1) = results
    assert torch.equal(y0, y1)
    for a, b in zip(g0, g1):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
