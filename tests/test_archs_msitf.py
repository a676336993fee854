"""MSITF (Net): buffers and DCNs of the official model (keys and counts: test_archs_facts), checkpoint loading,
contract (any size), the trilinear residual base, the Swin-V2 attention, equivalence with a forward written from the
spec (zsm_reference with MSITF's Swin body), training, DCN backends."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from arch_support import assert_every_parameter_gets_a_gradient, evaluate_tiny, raises_saying
from conftest import skip_unless_available
from data_support import synthetic_clips
from spec_keys import key_list
from stvsr.archs import build_arch
from stvsr.archs.msitf import MSITF, trilinear_base
from stvsr.archs.swin import shifted_window_mask, window_partition, window_reverse
from stvsr.archs.swinv2 import SwinV2Block, WindowAttentionV2, relative_coords_table
from stvsr.model.weights import load_official
from stvsr.ops.modules import DCNSepBounded
from zsm_reference import (
    assert_matches_reference,
    bilstm_reference,
    frame_levels,
    lrelu,
    msitf_pcd_reference,
    pair_sequence,
    perturb,
    upsample_reference,
)

OFFICIAL = {"which_model_G": "Net", "nf": 64, "nframes": 7, "groups": 8, "front_RBs": 5, "back_RBs": 40}
TINY = {"which_model_G": "msitf", "nf": 16, "nframes": 7, "groups": 8, "front_RBs": 1, "back_RBs": 0,
        "swin_depths": [2], "swin_heads": 4, "attn_heads": 8}  # fmt: skip

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


def tiny(seed: int = 0, **overrides) -> MSITF:
    torch.manual_seed(seed)
    return build_arch({**TINY, **overrides})


def _perturb(model: torch.nn.Module, std: float = 0.05) -> None:
    """Non-zero offset convs and q/v biases, so that every path is exercised (they are zero at init)."""
    perturb(model, std, suffixes=("q_bias", "v_bias"))


# ----------------------------------------------------------------------------- official model: keys, init


def test_official_buffers_positional_construction_and_dcns():
    """What test_archs_facts' table does not say: buffer dtypes, Net(64, 7, 8, 5, 40), the bounded DCNs."""
    model = build_arch(OFFICIAL)
    state = model.state_dict()  # the persistent buffers (the DCN modules' offset monitors are not saved)
    buffers = {k: v for k, v in model.named_buffers() if k in state}
    assert all(v.dtype == torch.int64 for k, v in buffers.items() if k.endswith("relative_position_index"))
    assert all(v.dtype == torch.float32 for k, v in buffers.items() if not k.endswith("relative_position_index"))
    # the official positional construction Net(64, 7, 8, 5, 40) is the same model
    assert key_list(MSITF(64, 7, 8, 5, 40)) == key_list(model)
    dcns = [m for m in model.modules() if isinstance(m, DCNSepBounded)]
    assert len(dcns) == 9 and all(d.offset_bound == 10 and d.deformable_groups == 8 for d in dcns)


def test_official_init_rules():
    """conv_offset zero (offset 0, mask 0.5), DCN weights uniform +-1/sqrt(C*9), RBs x0.1, Swin Linear
    trunc_normal(0.02) with zero bias, logit_scale ln 10, q/v bias 0 (docs/models.md, MSITF)."""
    model = tiny()
    dcn = model.ConvBLSTM.forward_net.pcd_h.pcd_align.L2_dcnpack_1
    assert torch.count_nonzero(dcn.conv_offset.weight) == 0 and torch.count_nonzero(dcn.conv_offset.bias) == 0
    assert dcn.weight.abs().max() <= 1 / (16 * 9) ** 0.5 and torch.count_nonzero(dcn.bias) == 0
    rb = model.feature_extraction[0].conv1
    assert torch.count_nonzero(rb.bias) == 0 and rb.weight.std() < 0.1 * (2 / (16 * 9)) ** 0.5 * 1.5
    block = model.recon_trunk.layers[0].residual_group.blocks[1]
    attn = block.attn
    assert torch.allclose(attn.logit_scale, torch.full((4, 1, 1), math.log(10)))
    assert torch.count_nonzero(attn.q_bias) == 0 and torch.count_nonzero(attn.v_bias) == 0
    assert attn.qkv.bias is None and attn.cpb_mlp[2].bias is None
    assert torch.count_nonzero(attn.cpb_mlp[0].bias) == 0 and torch.count_nonzero(block.mlp.fc1.bias) == 0
    for linear in (attn.qkv, attn.proj, attn.cpb_mlp[0], block.mlp.fc2):
        assert 0.015 < linear.weight.std() < 0.025  # trunc_normal(0.02), truncated at +-2 (absolute, as timm)
    assert torch.equal(block.norm1.weight, torch.ones(16)) and torch.count_nonzero(block.norm2.bias) == 0
    # TemporalAttention keeps PyTorch's default init: bias uniform +-1/sqrt(fan_in), not zero
    assert torch.count_nonzero(model.attn.qkv.bias) > 0 and model.attn.qkv.bias.abs().max() <= 1 / 4


def test_relative_coords_table_and_shift_mask_follow_the_spec():
    table = relative_coords_table(8)
    assert table.shape == (1, 15, 15, 2) and table.dtype == torch.float32
    d = torch.arange(-7, 8, dtype=torch.float64) / 7 * 8
    expected = torch.sign(d) * torch.log2(1 + d.abs()) / 3
    torch.testing.assert_close(table[0, :, 0, 0].double(), expected, rtol=0, atol=1e-6)  # dy varies along dim 1
    torch.testing.assert_close(table[0, 0, :, 1].double(), expected, rtol=0, atol=1e-6)  # dx along dim 2
    assert table[0, 7, 7].tolist() == [0.0, 0.0] and abs(table.max().item() - math.log2(9) / 3) < 1e-6
    block = SwinV2Block(16, (32, 32), 4, 8, shift_size=4)
    assert torch.equal(block.attn_mask, shifted_window_mask(32, 32, 8, 4)) and block.attn_mask.shape == (16, 64, 64)
    assert "attn_mask" not in SwinV2Block(16, (32, 32), 4, 8, shift_size=0).state_dict()


# ----------------------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_with_module_prefix(tmp_path: Path):
    """An official-format file (DataParallel 'module.' prefix, buffers included) loads strictly."""
    torch.manual_seed(1)
    source = build_arch(OFFICIAL)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(0.01)  # differ from any fresh init
    path = tmp_path / "msitf_official_format.pth"
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, path)
    target = build_arch(OFFICIAL)
    report = load_official(target, path)
    assert report.ok
    for (k, a), (k2, b) in zip(source.state_dict().items(), target.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k


# ----------------------------------------------------------------------------- contract


@pytest.mark.parametrize(("n", "size"), [(2, (9, 11)), (4, (9, 11)), (4, (8, 16)), (3, (17, 5))])
def test_forward_shape_any_size(n: int, size: tuple[int, int]):
    """Any LR size: the model pads its features to multiples of 8 itself (size_divisor 1)."""
    model = tiny().eval()
    h, w = size
    with torch.no_grad():
        y = model(torch.rand(2, n, 3, h, w))
    assert y.shape == (2, 2 * n - 1, 3, 4 * h, 4 * w)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize(
    ("shape", "words"),
    [((1, 1, 3, 8, 8), ["at least 2"]), ((1, 4, 1, 8, 8), ["3 (RGB)"]), ((4, 3, 8, 8), ["(B, N, 3, H, W)"])],
)
def test_bad_input_is_a_clear_error(shape, words):
    with raises_saying(words):
        tiny()(torch.rand(*shape))


def test_trilinear_base_by_hand():
    """Zeroing conv_last leaves the global residual base: the output equals a temporal linear blend at
    positions (i + 0.5) N / (2N - 1) - 0.5 (clamped) of the bilinear x4 (align_corners=False) frames."""
    model = tiny().eval()
    with torch.no_grad():
        model.conv_last.weight.zero_()
        model.conv_last.bias.zero_()
    b, n, h, w = 2, 4, 9, 11
    x = torch.rand(b, n, 3, h, w, dtype=torch.float64)
    spatial = F.interpolate(x.view(b * n, 3, h, w), scale_factor=4, mode="bilinear", align_corners=False)
    spatial = spatial.view(b, n, 3, 4 * h, 4 * w)
    positions = [(i + 0.5) * n / (2 * n - 1) - 0.5 for i in range(2 * n - 1)]
    assert [round(p, 2) for p in positions] == [-0.21, 0.36, 0.93, 1.5, 2.07, 2.64, 3.21]  # spec 6.3 step 1
    frames = []
    for p in positions:
        p = min(max(p, 0.0), n - 1.0)
        lo = min(math.floor(p), n - 2)
        frac = p - lo
        frames.append((1 - frac) * spatial[:, lo] + frac * spatial[:, lo + 1])
    expected = torch.stack(frames, dim=1)
    with torch.no_grad():
        out = model.double()(x)
    torch.testing.assert_close(trilinear_base(x), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(out[:, 0], spatial[:, 0], rtol=0, atol=1e-12)  # -0.21 clamps to input 0
    assert not torch.allclose(out[:, 2], spatial[:, 1])  # F1 sits at 0.93: a blended base (quirk 5, KEEP)


# ----------------------------------------------------------------------------- Swin-V2 attention


def _cosine_attention_reference(attn: WindowAttentionV2, x: torch.Tensor, mask: torch.Tensor | None):
    bw, n, c = x.shape
    heads = attn.num_heads
    w_q, w_k, w_v = attn.qkv.weight.chunk(3, dim=0)
    q = (x @ w_q.T + attn.q_bias).view(bw, n, heads, -1).transpose(1, 2)
    k = (x @ w_k.T).view(bw, n, heads, -1).transpose(1, 2)  # no key bias
    v = (x @ w_v.T + attn.v_bias).view(bw, n, heads, -1).transpose(1, 2)
    cos = (q / q.norm(dim=-1, keepdim=True)) @ (k / k.norm(dim=-1, keepdim=True)).transpose(-2, -1)
    scale = torch.minimum(attn.logit_scale.exp(), torch.tensor(100.0, dtype=x.dtype))
    hidden = torch.relu(
        attn.relative_coords_table.view(-1, 2).to(x.dtype) @ attn.cpb_mlp[0].weight.T + attn.cpb_mlp[0].bias
    )
    table = hidden @ attn.cpb_mlp[2].weight.T  # (225, heads)
    bias = 16 * torch.sigmoid(table[attn.relative_position_index.view(-1)].view(n, n, heads).permute(2, 0, 1))
    logits = cos * scale + bias
    if mask is not None:
        nw = mask.shape[0]
        logits = (logits.view(bw // nw, nw, heads, n, n) + mask.unsqueeze(1)).view(bw, heads, n, n)
    return attn.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(bw, n, c))


def test_window_attention_v2_equals_the_textbook_formula():
    torch.manual_seed(0)
    attn = WindowAttentionV2(16, 8, 4).double()
    with torch.no_grad():
        attn.q_bias.normal_()
        attn.v_bias.normal_()
        attn.logit_scale[0] = math.log(1000.0)  # clamped to 100
        attn.logit_scale[1] = 0.3
    x = torch.randn(2 * 4, 64, 16, dtype=torch.float64)
    mask = shifted_window_mask(16, 16, 8, 4).double()
    ref = _cosine_attention_reference(attn, x, mask)
    torch.testing.assert_close(attn(x, mask), ref, rtol=1e-10, atol=1e-10)  # training path (plain formula)
    with torch.no_grad():
        torch.testing.assert_close(attn(x, mask), ref, rtol=1e-10, atol=1e-10)  # inference path (fused)
        torch.testing.assert_close(attn(x), _cosine_attention_reference(attn, x, None), rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------- forward written from the spec


def _swin_block_reference(blk, x, hw):
    """Post-norm Swin-V2 block: shift, window attention, unshift, x + norm1(.), then x + norm2(mlp(x))."""
    (h, w), ws, shift = hw, blk.window_size, blk.shift_size
    b, _, c = x.shape
    y = torch.roll(x.view(b, h, w, c), (-shift, -shift), (1, 2))
    mask = shifted_window_mask(h, w, ws, shift).to(x.dtype) if shift else None
    y = window_reverse(_cosine_attention_reference(blk.attn, window_partition(y, ws), mask), ws, h, w)
    x = x + blk.norm1(torch.roll(y, (shift, shift), (1, 2)).reshape(b, h * w, c))
    return x + blk.norm2(blk.mlp.fc2(F.gelu(blk.mlp.fc1(x))))


def _swin_body_reference(body, x):
    b, _, h, w = x.shape

    def tokens(f):
        return f.flatten(2).transpose(1, 2)

    def image(t):
        return t.transpose(1, 2).reshape(b, -1, h, w)

    y = body.conv_first(x)
    t = body.patch_embed.norm(tokens(body.patch_embed.proj(y)))
    for layer in body.layers:
        r = t
        for blk in layer.residual_group.blocks:
            r = _swin_block_reference(blk, r, (h, w))
        t = tokens(layer.patch_embed.proj(layer.conv(image(r)))) + t
    return body.conv_after_body(image(body.norm(t))) + y


def official_structure_forward(m: MSITF, x: torch.Tensor) -> torch.Tensor:
    """The official forward's structure (one pair at a time, one LSTM direction at a time, per-pixel tokens
    '(b h w) t c'), written from docs/models.md (MSITF) (zsm_reference with MSITF's single-branch PCD)."""
    b, n, c, h, w = x.shape
    up = F.interpolate(x.permute(0, 2, 1, 3, 4), (2 * n - 1, 4 * h, 4 * w), mode="trilinear", align_corners=False)
    l1 = lrelu(m.conv_first(x.view(-1, c, h, w)))
    hp, wp = math.ceil(h / 8) * 8, math.ceil(w / 8) * 8
    levels = frame_levels(m, m.feature_extraction(F.pad(l1, (0, wp - w, 0, hp - h))), b, n)
    s = pair_sequence(levels, lambda fea1, fea2: [m.fusion(msitf_pcd_reference(m.pcd_align, fea1, fea2))])
    t = s.shape[1]
    feats = bilstm_reference(m.ConvBLSTM, s, m.nf, msitf_pcd_reference).view(b, t, -1, hp, wp)
    # temporal attention on '(b h w) t c' tokens, 8 heads
    tok = feats.permute(0, 3, 4, 1, 2).reshape(-1, t, m.nf)
    heads = m.attn.num_heads
    q, k, v = m.attn.qkv(tok).reshape(-1, t, 3, heads, m.nf // heads).permute(2, 0, 3, 1, 4)
    a = ((q @ k.transpose(-2, -1)) * (m.nf // heads) ** -0.5).softmax(-1)
    arr = m.attn.proj((a @ v).transpose(1, 2).reshape(-1, t, m.nf))
    feats = feats + arr.view(b, hp, wp, t, m.nf).permute(0, 3, 4, 1, 2)
    out = _swin_body_reference(m.recon_trunk, feats.reshape(b * t, m.nf, hp, wp))[:, :, :h, :w]
    return upsample_reference(m, out).view(b, t, -1, 4 * h, 4 * w) + up.permute(0, 2, 1, 3, 4)


@pytest.mark.parametrize("size", [(9, 11), (8, 8)])
def test_batched_forward_equals_the_official_structure(size):
    """float64, perturbed offset convs (deformable paths active), padded (9x11 -> 16x16) and unpadded sizes."""
    model = tiny().double().eval()
    _perturb(model, std=0.5)
    x = torch.rand(2, 3, 3, *size, dtype=torch.float64)
    with torch.no_grad():
        ours, ref = model(x), official_structure_forward(model, x)
    assert ours.shape == ref.shape == (2, 5, 3, 4 * size[0], 4 * size[1])
    assert_matches_reference(ours, ref, rtol=1e-9, atol=1e-10)


def test_offsets_are_bounded_by_10_tanh():
    torch.manual_seed(0)
    dcn = DCNSepBounded(16, 16, 3, padding=1, deformable_groups=8).double()
    with torch.no_grad():
        dcn.conv_offset.weight.normal_(0, 50)
    feat = torch.randn(1, 16, 6, 6, dtype=torch.float64)
    offset, _mask = dcn.offset_and_mask(feat)
    raw = torch.cat(dcn.conv_offset(feat).chunk(3, dim=1)[:2], dim=1)
    torch.testing.assert_close(offset, 10 * torch.tanh(raw))
    assert offset.abs().max() <= 10 and offset.abs().max() > 9  # saturated, yet bounded
    assert set(dict(dcn.named_parameters())) == {"weight", "bias", "conv_offset.weight", "conv_offset.bias"}


# ----------------------------------------------------------------------------- training and backends


def test_every_parameter_gets_a_gradient():
    model = tiny().train()
    _perturb(model)
    x, gt = torch.rand(2, 3, 3, 9, 11), torch.rand(2, 5, 3, 36, 44)
    torch.sqrt((model(x) - gt) ** 2 + 1e-6).sum().backward()  # Charbonnier, sum (section 2.7)
    assert_every_parameter_gets_a_gradient(model)


def test_a_few_training_steps_lower_the_loss():
    model = tiny(drop_path_rate=0.0)
    x = torch.rand(2, 2, 3, 8, 8)
    gt = F.interpolate(x.transpose(1, 2), (3, 32, 32), mode="trilinear", align_corners=False).transpose(1, 2)
    gt = (gt + 0.1 * torch.rand_like(gt)).clamp(0, 1)

    def charbonnier():
        return torch.sqrt((model(x) - gt) ** 2 + 1e-6).sum()

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.99))
    with torch.no_grad():
        before = charbonnier().item()
    for _ in range(6):
        optimizer.zero_grad()
        charbonnier().backward()
        optimizer.step()
    with torch.no_grad():
        after = charbonnier().item()
    assert after < 0.9 * before, (before, after)


def test_determinism_train_and_eval_modes():
    """Deterministic in eval; in training DropPath (0.1, quirk 11 KEEP) changes the output; without it the
    modes agree (no dropout or batch normalisation elsewhere)."""
    x = torch.rand(1, 2, 3, 8, 8)
    a, b = tiny(seed=3).eval(), tiny(seed=3).eval()
    with torch.no_grad():
        ya = a(x)
        assert torch.equal(ya, b(x))
        torch.manual_seed(1)
        assert not torch.equal(a.train()(x), ya)
        c = tiny(seed=3, drop_path_rate=0.0)
        assert torch.equal(c.train()(x), c.eval()(x))
    # with gradients the attention runs the plain formula, without them the fused kernel: same result
    plain = c(x)
    with torch.no_grad():
        torch.testing.assert_close(plain.detach(), c(x), rtol=1e-5, atol=1e-5)


def test_use_checkpoint_gives_the_same_output_and_gradients():
    x = torch.rand(1, 2, 3, 8, 8)
    grads = []
    for flag in (False, True):
        model = tiny(seed=5, use_checkpoint=flag, drop_path_rate=0.0)
        model(x).square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for g0, g1 in zip(*grads):
        torch.testing.assert_close(g0, g1)


@pytest.mark.parametrize("backend", [pytest.param("ext", marks=pytest.mark.ext), "torch"])
def test_dcn_backends_agree(backend: str, monkeypatch: pytest.MonkeyPatch):
    """The model on each available DCN backend equals the pure PyTorch one, forward and backward."""
    skip_unless_available(backend)
    model = tiny(drop_path_rate=0.0).double()
    _perturb(model, std=0.5)
    x = torch.rand(1, 2, 3, 9, 11, dtype=torch.float64)
    results = []
    for name in ("torch", backend):
        monkeypatch.setenv("STVSR_DCN_BACKEND", name)
        model.zero_grad(set_to_none=True)
        y = model(x)
        y.square().mean().backward()
        results.append((y.detach(), model.pcd_align.L1_dcnpack_1.conv_offset.weight.grad.clone()))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-7, atol=1e-10)


# ----------------------------------------------------------------------------- registry and options


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"front_RB": 5}, ["network_G.front_RB", "Did you mean 'front_RBs'"]),
        ({"swin_depth": [2]}, ["network_G.swin_depth", "swin_depths"]),
        ({"nf": 12}, ["divisible by groups=8"]),
        ({"nf": 24, "attn_heads": 16}, ["divisible by attn_heads=16"]),
        ({"img_size": 20}, ["img_size=20", "multiple of 8"]),
        ({"swin_depths": 2}, ["network_G.swin_depths", "list of int"]),
    ],
)
def test_build_arch_errors_name_the_key(overrides, words):
    with raises_saying(words):
        build_arch({**TINY, **overrides})


def test_build_arch_missing_key():
    options = dict(OFFICIAL)
    del options["back_RBs"]
    with pytest.raises(ValueError, match="missing required key.*back_RBs"):
        build_arch(options)


ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["train_msitf", "train_msitf_demo"])
def test_train_configs_validate_and_carry_the_recipe(name: str):
    """options/train/train_msitf.yml is the official recipe (docs/models.md, MSITF); the demo validates too."""
    from stvsr.train import options

    opt = options.load(ROOT / "options" / "train" / f"{name}.yml")
    assert opt["network_G"]["which_model_G"] == "Net" and opt["datasets"]["train"]["mode"] == "Vimeo7"
    if name == "train_msitf_demo":
        return
    tr, d = opt["train"], opt["datasets"]["train"]
    assert opt["network_G"] == {**OFFICIAL, "mid_RBs": 0, "HR_in": False}
    assert (tr["lr_G"], tr["beta1"], tr["beta2"], tr["weight_decay_G"], tr["niter"]) == (2e-4, 0.9, 0.99, 0.0, 600000)
    assert tr["lr_scheme"] == "CosineAnnealingLR_Restart" and tr["T_period"] == [150000] * 4
    assert tr["restarts"] == [150000, 300000, 450000] and tr["restart_weights"] == [1, 1, 1]
    assert tr["eta_min"] == 1e-7 and tr["warmup_iter"] == -1 and tr["scheduler_order"] == "before"
    assert tr["losses"] == [{"type": "cb", "weight": 1.0, "eps": 1e-6, "reduction": "sum"}] and tr["manual_seed"] == 0
    assert (d["batch_size"], d["GT_size"], d["LQ_size"], d["N_frames"], d["n_workers"]) == (16, 128, 32, 7, 4)
    assert d["use_flip"] and d["use_rot"] and d["random_reverse"] and d["interval_list"] == [1]


# ----------------------------------------------------------------------------- evaluation scripts


def test_shipped_test_configs_resolve(tmp_path: Path):
    """options/test/test_msitf_{vid4,vimeo}.yml: the official model, the official scripts' padding (x4, x8)."""
    from stvsr.eval import cli, vimeo_cli

    vid4 = cli.resolve(cli.build_parser().parse_args(["-opt", str(ROOT / "options/test/test_msitf_vid4.yml")]))
    for name in ("slow", "medium", "fast"):
        (tmp_path / f"sep_{name}_testset.txt").write_text("00001/0001\n")
    vimeo_args = ["-opt", str(ROOT / "options/test/test_msitf_vimeo.yml"), "--list_dir", str(tmp_path)]
    vimeo = vimeo_cli.resolve(vimeo_cli.build_parser().parse_args(vimeo_args))
    for settings, pad in ((vid4, 4), (vimeo, 8)):
        assert settings["network"] == {**OFFICIAL, "mid_RBs": 0, "HR_in": False}
        assert settings["protocol"].resolved_pad(MSITF.size_divisor) == pad
        assert settings["protocol"].color == "y" and settings["protocol"].crop_border == 0
    assert vid4["protocol"].window == 7 and vid4["protocol"].stride == 6


def test_tiny_msitf_through_the_evaluator(tmp_path: Path, capsys):
    """A random tiny MSITF through codes/test.py's entry point on synthetic clips whose LR width (9) the
    protocol pads to its multiple of 4 (the model then pads its features to 16 inside)."""
    synthetic_clips(tmp_path, {"a": 8}, (24, 36))
    evaluate_tiny(tmp_path, tiny(), TINY, "{tail: all, pad_multiple: 4}")
    out = capsys.readouterr().out
    assert "8/8" in out and "pad_multiple=4" in out
    assert (tmp_path / "res" / "tiny" / "tiny_all.csv").is_file()
