"""RSTT: buffers and part counts of RSTT-S/M/L (keys and counts: test_archs_facts), the relative position indices
and init of the spec, equivalence with a float64 forward written from the spec with the official loop structure, any
size, the fixed frame count, the trilinear base, gradients, checkpoint loading, config errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spec_keys import key_list
from stvsr.archs import build_arch, count_parameters
from stvsr.archs.rstt import RSTT
from stvsr.model.weights import load_official

ROOT = Path(__file__).resolve().parents[1]
TINY = {"which_model_G": "RSTT", "embed_dim": 16, "depths": [2, 1, 2, 2, 2, 2, 1, 2],
        "num_heads": [1, 2, 2, 4, 4, 2, 2, 1], "window_sizes": [[4, 4]] * 8, "back_RBs": 1}  # fmt: skip

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


def tiny(seed: int = 0, **overrides) -> RSTT:
    torch.manual_seed(seed)
    return build_arch({**TINY, **overrides})


def _perturb(model: torch.nn.Module, std: float = 0.05) -> None:
    """Non-trivial LayerNorms and Linear biases (they are 1 / 0 at init), so that every term matters."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".norm" in name or (name.endswith(".bias") and ("attn" in name or "mlp" in name)):
                p.add_(torch.randn_like(p) * std)


# ----------------------------------------------------------------------------- official models: keys, counts


@pytest.mark.parametrize("variant", ["S", "M", "L"])
def test_official_variants_buffers_and_part_counts(variant: str):
    """What test_archs_facts' table does not say: every buffer an int64 index, all saved, no attention mask; the
    counts of the parts."""
    model = build_arch(RSTT.official_network(variant))
    assert set(dict(model.named_buffers())) <= set(model.state_dict())  # the table counts the saved ones
    assert all(v.dtype == torch.int64 for v in model.buffers())
    assert not any("attn_mask" in k for k in model.state_dict())
    # spec table: one encoder block 74,784 + 343 h, one decoder block 112,416 + 1,274 h parameters
    enc = model.encoder_layers[1].blocks[0]
    dec = model.decoder_layers[2].blocks[0]
    assert sum(p.numel() for p in enc.parameters()) == 74_784 + 343 * 4
    assert sum(p.numel() for p in dec.parameters()) == 112_416 + 1_274 * 4
    assert sum(p.numel() for p in model.downsample.parameters()) == 590_208
    assert sum(p.numel() for p in model.upsample.parameters()) == 110_880


def test_official_positional_construction_is_the_same_model():
    """RSTT(embed_dim=96, depths=[4]*8) with the official defaults otherwise is RSTT-S."""
    assert key_list(RSTT(3, 96, [4] * 8)) == key_list(build_arch(RSTT.official_network("S")))


def _spec_index(tq: list[int], tkv: list[int], ws: int, frames_q: int) -> torch.Tensor:
    """(dt + Dq - 1) * (2ws-1)^2 + (dy + ws - 1) * (2ws-1) + (dx + ws - 1), tokens (frame, row, column)."""
    q = [(t, y, x) for t in tq for y in range(ws) for x in range(ws)]
    kv = [(t, y, x) for t in tkv for y in range(ws) for x in range(ws)]
    rows = [
        [
            (a[0] - b[0] + frames_q - 1) * (2 * ws - 1) ** 2
            + (a[1] - b[1] + ws - 1) * (2 * ws - 1)
            + a[2]
            - b[2]
            + ws
            - 1
            for b in kv
        ]
        for a in q
    ]
    return torch.tensor(rows)


def test_relative_position_indices_and_tables_follow_the_spec():
    model = build_arch(RSTT.official_network("S"))
    enc = model.encoder_layers[0].blocks[1].attn
    dec = model.decoder_layers[0].blocks[1]
    assert enc.relative_position_bias_table.shape == (343, 2)
    assert dec.attn1.relative_position_bias_table.shape == (637, 16)
    assert dec.attn2.relative_position_bias_table.shape == (637, 16)
    assert torch.equal(enc.relative_position_index, _spec_index(list(range(4)), list(range(4)), 4, 4))
    assert torch.equal(dec.attn1.relative_position_index, _spec_index(list(range(7)), list(range(7)), 4, 7))
    assert torch.equal(dec.attn2.relative_position_index, _spec_index(list(range(7)), [0, 2, 4, 6], 4, 7))
    assert dec.attn2.relative_position_index.shape == (112, 64)
    assert int(dec.attn1.relative_position_index.max()) == 636


def test_official_init_rules():
    """Linear trunc_normal(0.02) with zero bias, LayerNorm (1, 0), tables trunc_normal(0.02), convs PyTorch
    default, residual blocks kaiming x 0.1 (spec A.2 step 7)."""
    model = tiny()
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    weights = torch.cat([m.weight.flatten() for m in linears])
    assert abs(weights.std().item() - 0.02) < 0.002  # trunc_normal(std=0.02) cut at +-2 (timm's absolute bounds)
    assert all(torch.count_nonzero(m.bias) == 0 for m in linears)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert all(torch.all(m.weight == 1) and torch.count_nonzero(m.bias) == 0 for m in norms)
    table = model.encoder_layers[0].blocks[0].attn.relative_position_bias_table
    assert 0.01 < table.std() < 0.03
    conv = model.input_proj.proj[0]
    bound = 1 / math.sqrt(3 * 9)
    assert conv.bias.abs().max() <= bound and torch.count_nonzero(conv.bias) > 0  # default init: bias not zero
    rb = model.recon_trunk[0].conv1
    assert torch.count_nonzero(rb.bias) == 0 and rb.weight.std() < 0.1 * math.sqrt(2 / (16 * 9)) * 1.5


# ----------------------------------------------------------------------------- the spec's forward, official loops


def _official_window(size, window, shift):
    """get_window_size: a side not larger than the window becomes the window side, unshifted."""
    used, moved = list(window), list(shift)
    for i in range(2):
        if size[i] <= window[i]:
            used[i], moved[i] = size[i], 0
    return tuple(used), tuple(moved)


def _partition(x, ws):
    """(B, D, H, W, C) -> (B*nW, D*wh*ww, C), official window_partition + view."""
    b, d, h, w, c = x.shape
    x = x.view(b, d, h // ws[0], ws[0], w // ws[1], ws[1], c)
    return x.permute(0, 2, 4, 1, 3, 5, 6).contiguous().view(-1, d * ws[0] * ws[1], c)


def _reverse(windows, ws, b, d, h, w):
    x = windows.view(b, h // ws[0], w // ws[1], d, ws[0], ws[1], -1)
    return x.permute(0, 3, 1, 4, 2, 5, 6).contiguous().view(b, d, h, w, -1)


def _img_mask(d, hp, wp, ws, shift, dtype):
    """The official region labels (1, D, Hp, Wp, 1), literal slices (slice(-0, None) covers everything)."""
    img = torch.zeros((1, d, hp, wp, 1), dtype=dtype)
    cnt = 0
    for hs in (slice(0, -ws[0]), slice(-ws[0], -shift[0]), slice(-shift[0], None)):
        for wsl in (slice(0, -ws[1]), slice(-ws[1], -shift[1]), slice(-shift[1], None)):
            img[:, :, hs, wsl, :] = cnt
            cnt += 1
    return _partition(img, ws).squeeze(-1)  # nW, D*n


def _mask(dq, dkv, hp, wp, ws, shift, dtype):
    mq, mkv = _img_mask(dq, hp, wp, ws, shift, dtype), _img_mask(dkv, hp, wp, ws, shift, dtype)
    m = mkv.unsqueeze(1) - mq.unsqueeze(2)
    return m.masked_fill(m != 0, -100.0).masked_fill(m == 0, 0.0)


def _index(attn, ws):
    """Index of the true offsets into the table built for attn.window_size (== the buffer for full windows)."""
    tw = attn.window_size
    tq = list(range(attn.frames_q))
    tkv = list(range(0, attn.frames_q, (attn.frames_q + 1) // attn.frames_kv))
    q = [(t, y, x) for t in tq for y in range(ws[0]) for x in range(ws[1])]
    kv = [(t, y, x) for t in tkv for y in range(ws[0]) for x in range(ws[1])]
    idx = [
        [
            (a[0] - b[0] + attn.frames_q - 1) * (2 * tw[0] - 1) * (2 * tw[1] - 1)
            + (a[1] - b[1] + tw[0] - 1) * (2 * tw[1] - 1)
            + a[2]
            - b[2]
            + tw[1]
            - 1
            for b in kv
        ]
        for a in q
    ]
    idx = torch.tensor(idx)
    if tuple(ws) == tuple(tw):
        assert torch.equal(idx, attn.relative_position_index)
    return idx


def _attention(attn, q_in, kv_in, mask, ws):
    """WindowAttention3D.forward of the official code (q, kv linear; scale; bias; mask via view; softmax)."""
    kv_in = q_in if kv_in is None else kv_in
    bw, n1, c = q_in.shape
    n2 = kv_in.shape[1]
    h = attn.num_heads
    q = attn.q(q_in).reshape(bw, n1, 1, h, c // h).permute(2, 0, 3, 1, 4)[0]
    kv = attn.kv(kv_in).reshape(bw, n2, 2, h, c // h).permute(2, 0, 3, 1, 4)
    k, v = kv[0], kv[1]
    a = (q * (c // h) ** -0.5) @ k.transpose(-2, -1)
    bias = attn.relative_position_bias_table[_index(attn, ws).view(-1)].view(n1, n2, -1).permute(2, 0, 1)
    a = a + bias.unsqueeze(0)
    if mask is not None:
        nw = mask.shape[0]
        a = a.view(bw // nw, nw, h, n1, n2) + mask.unsqueeze(1).unsqueeze(0)
        a = a.view(-1, h, n1, n2)
    a = torch.softmax(a, dim=-1)
    return attn.proj((a @ v).transpose(1, 2).reshape(bw, n1, c))


def _windowed(attn, x, kv, ws, shift, mask):
    """Pad, cyclic shift, partition, attention, merge, reverse shift, crop (official block body)."""
    b, d1, h, w, c = x.shape
    pad_b, pad_r = (ws[0] - h % ws[0]) % ws[0], (ws[1] - w % ws[1]) % ws[1]
    x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b, 0, 0))
    if kv is not None:
        kv = F.pad(kv, (0, 0, 0, pad_r, 0, pad_b, 0, 0))
    hp, wp = x.shape[2:4]
    shifted = any(s > 0 for s in shift)
    if shifted:
        x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(2, 3))
        if kv is not None:
            kv = torch.roll(kv, shifts=(-shift[0], -shift[1]), dims=(2, 3))
    out = _attention(attn, _partition(x, ws), None if kv is None else _partition(kv, ws), mask if shifted else None, ws)
    y = _reverse(out.view(-1, d1, ws[0], ws[1], c), ws, b, d1, hp, wp)
    if shifted:
        y = torch.roll(y, shifts=(shift[0], shift[1]), dims=(2, 3))
    return y[:, :, :h, :w, :]


def _encoder_layer(layer, x):
    d, h, w = x.shape[1], x.shape[3], x.shape[4]
    x = x.permute(0, 1, 3, 4, 2)
    ws, shift = _official_window((h, w), layer.window_size, layer.shift_size)
    hp, wp = math.ceil(h / ws[0]) * ws[0], math.ceil(w / ws[1]) * ws[1]
    mask = _mask(d, d, hp, wp, ws, shift, x.dtype)
    for blk in layer.blocks:
        bws, bshift = _official_window((h, w), blk.window_size, blk.shift_size)
        x = x + _windowed(blk.attn, blk.norm1(x), None, bws, bshift, mask)
        x = x + blk.mlp(blk.norm2(x))
    return x.permute(0, 1, 4, 2, 3)


def _decoder_layer(layer, x, enc):
    d1, h, w = x.shape[1], x.shape[3], x.shape[4]
    d2 = enc.shape[1]
    x, enc = x.permute(0, 1, 3, 4, 2), enc.permute(0, 1, 3, 4, 2)
    ws, shift = _official_window((h, w), layer.window_size, layer.shift_size)
    hp, wp = math.ceil(h / ws[0]) * ws[0], math.ceil(w / ws[1]) * ws[1]
    mask_q, mask_qkv = _mask(d1, d1, hp, wp, ws, shift, x.dtype), _mask(d1, d2, hp, wp, ws, shift, x.dtype)
    for blk in layer.blocks:
        bws, bshift = _official_window((h, w), blk.window_size, blk.shift_size)
        x = x + _windowed(blk.attn1, blk.norm1(x), None, bws, bshift, mask_q)
        x = x + _windowed(blk.attn2, blk.norm2(x), blk.norm_kv(enc), bws, bshift, mask_qkv)
        x = x + blk.mlp(blk.norm3(x))
    return x.permute(0, 1, 4, 2, 3)


def official_structure_forward(m: RSTT, x: torch.Tensor) -> torch.Tensor:
    """RSTT.forward of the official code, written from the spec: per-frame convs, per-frame query loop."""
    b, d, _, h, w = x.shape
    up = F.interpolate(x.permute(0, 2, 1, 3, 4), (2 * d - 1, 4 * h, 4 * w), mode="trilinear", align_corners=False)
    conv = m.input_proj.proj[0]
    feats = torch.stack([F.leaky_relu(conv(x[:, i]), 0.01) for i in range(d)], dim=1)
    scale = 2 ** (len(m.encoder_layers) - 1)
    hp, wp = math.ceil(h / scale) * scale, math.ceil(w / scale) * scale
    feats = F.pad(feats, (0, wp - w, 0, hp - h))
    encoded = []
    for i, layer in enumerate(m.encoder_layers):
        feats = _encoder_layer(layer, feats)
        encoded.append(feats)
        if i != len(m.encoder_layers) - 1:
            feats = torch.stack([m.downsample[i].conv[0](feats[:, j]) for j in range(d)], dim=1)
    y = torch.zeros((b, 2 * d - 1, *feats.shape[2:]), dtype=x.dtype)
    for i in range(2 * d - 1):
        y[:, i] = feats[:, i // 2] if i % 2 == 0 else (feats[:, i // 2] + feats[:, i // 2 + 1]) / 2
    for i, layer in enumerate(m.decoder_layers):
        y = _decoder_layer(layer, y, encoded[-i - 1])
        if i != len(m.decoder_layers) - 1:
            y = torch.stack([m.upsample[i].deconv[0](y[:, j]) for j in range(y.shape[1])], dim=1)
    y = y[:, :, :, :h, :w]
    outs = []
    for i in range(2 * d - 1):
        f = y[:, i]
        for rb in m.recon_trunk:
            f = f + rb.conv2(F.relu(rb.conv1(f)))
        f = F.leaky_relu(F.pixel_shuffle(m.upconv1(f), 2), 0.1)
        f = F.leaky_relu(F.pixel_shuffle(m.upconv2(f), 2), 0.1)
        f = m.conv_last(F.leaky_relu(m.HRconv(f), 0.1))
        outs.append(f)
    return torch.stack(outs, dim=1) + up.permute(0, 2, 1, 3, 4)


@pytest.mark.parametrize(
    "size",
    [(32, 40), (9, 11)],
    ids=["32x40 (shift (0,2) at 4x5; in-block padding)", "9x11 (padded to 16x16; 2x2 windows at the bottom)"],
)
def test_forward_equals_the_official_structure(size):
    """float64, B=2, perturbed norms and biases; odd sizes are padded inside and cropped back."""
    model = tiny().double().eval()
    _perturb(model)
    x = torch.rand(2, 4, 3, *size, dtype=torch.float64)
    with torch.no_grad():
        out = model(x)
        ref = official_structure_forward(model, x)
    assert out.shape == (2, 7, 3, 4 * size[0], 4 * size[1])
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("size", [(1, 1), (5, 7), (17, 23), (30, 30)])
def test_forward_shape_any_size(size):
    model = tiny().eval()
    with torch.no_grad():
        y = model(torch.rand(1, 4, 3, *size))
    assert y.shape == (1, 7, 3, 4 * size[0], 4 * size[1]) and torch.isfinite(y).all()


@pytest.mark.parametrize(
    "shape, words",
    [
        ((1, 3, 3, 8, 8), "at least 4"),
        ((1, 5, 3, 8, 8), "exactly num_frames=4"),
        ((1, 4, 1, 8, 8), "3 (RGB)"),
        ((4, 3, 8, 8), "(B, N, 3, H, W)"),
    ],
)
def test_bad_input_is_a_clear_error(shape, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        tiny()(torch.rand(shape))


def test_other_num_frames():
    """num_frames 3 -> 5 frames (tables (2*5-1)*49 in the decoder, temporal key coordinates 0, 2, 4)."""
    model = tiny(num_frames=3).double().eval()
    _perturb(model)
    assert model.decoder_layers[0].blocks[0].attn1.relative_position_bias_table.shape[0] == 9 * 49
    x = torch.rand(1, 3, 3, 12, 12, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), official_structure_forward(model, x), rtol=1e-10, atol=1e-10)


def test_trilinear_base():
    """With conv_last zeroed the output is the trilinear base: output frame 2 of constant frames is
    (1/14) in0 + (13/14) in1 (not aligned, quirk 5 KEEP), frame 0 is in0, frame 6 is in3."""
    model = tiny().eval()
    with torch.no_grad():
        model.conv_last.weight.zero_()
        model.conv_last.bias.zero_()
        levels = torch.tensor([0.1, 0.5, 0.3, 0.9])
        x = levels.view(1, 4, 1, 1, 1).expand(1, 4, 3, 6, 5).contiguous()
        y = model(x)
    torch.testing.assert_close(y[0, 2], torch.full_like(y[0, 2], 0.1 / 14 + 0.5 * 13 / 14))
    torch.testing.assert_close(y[0, 0], torch.full_like(y[0, 0], 0.1))
    torch.testing.assert_close(y[0, 6], torch.full_like(y[0, 6], 0.9))


def test_every_parameter_but_downsample_3_gets_a_gradient():
    model = tiny(drop_path_rate=0.0)  # (stochastic depth would drop whole branches of the single sample)
    model(torch.rand(1, 4, 3, 12, 12)).square().mean().backward()
    no_grad = sorted(n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0))
    assert no_grad == ["downsample.3.conv.0.bias", "downsample.3.conv.0.weight"]  # quirk 1 (KEEP)


def test_drop_path_only_in_training():
    model = tiny(drop_path_rate=0.5)
    x = torch.rand(1, 4, 3, 8, 8)
    rates = [b.drop_path.p for layer in model.encoder_layers for b in layer.blocks]
    assert rates[0] == 0 and rates[-1] == 0.5 and len(rates) == 7
    dec = [b.drop_path.p for layer in model.decoder_layers for b in layer.blocks]
    assert dec == rates[::-1][: len(dec)]  # the encoder rates reversed (official)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_a_few_training_steps_lower_the_loss():
    model = tiny(drop_path_rate=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.rand(2, 4, 3, 8, 8)
    gt = F.interpolate(x.transpose(1, 2), size=(7, 32, 32), mode="trilinear").transpose(1, 2).flip(-1) + 0.2
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = (model(x) - gt).abs().mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_checkpoint_round_trip_with_module_prefix(tmp_path: Path):
    src = tiny(seed=1)
    path = tmp_path / "rstt_ddp.pth"
    torch.save({f"module.{k}": v for k, v in src.state_dict().items()}, path)
    dst = tiny(seed=2)
    load_official(dst, path)
    x = torch.rand(1, 4, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(src.eval()(x), dst.eval()(x))


# ----------------------------------------------------------------------------- config


def test_registry_names_and_config_errors():
    with pytest.raises(ValueError, match="window_size"):  # typo: nearest valid key
        build_arch({**TINY, "window_size": [[4, 4]] * 8})
    with pytest.raises(ValueError, match="missing required key"):
        build_arch({k: v for k, v in TINY.items() if k != "depths"})
    with pytest.raises(ValueError, match="even number"):
        build_arch({**TINY, "depths": [1, 1, 1]})
    with pytest.raises(ValueError, match="window_sizes"):
        build_arch({**TINY, "window_sizes": [[4, 4]] * 7})
    with pytest.raises(ValueError, match="divisible"):
        build_arch({**TINY, "embed_dim": 18})


# ----------------------------------------------------------------------------- evaluation and inference feed 4 frames


def _clips(root: Path, frames: int, size: tuple[int, int]) -> Path:
    from stvsr.data.io import write_image

    rng = np.random.default_rng(0)
    for i in range(frames):
        write_image(root / "GT" / "a" / f"{i:03d}.png", rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    return root / "GT"


def test_test_script_runs_rstt_on_4_frame_windows(tmp_path: Path, capsys):
    """codes/test.py's entry point with a tiny RSTT: an 8-frame clip of 9x11 LR frames (padded inside) gives two
    windows of 4 LR frames (the second the tail window) and all 8 frames scored; a window of 5 is refused."""
    from stvsr.eval.cli import main
    from stvsr.model.weights import save_state_dict

    gt = _clips(tmp_path, 8, (36, 44))
    save_state_dict(tiny(), tmp_path / "rstt.pth")
    opt = tmp_path / "tiny.yml"
    opt.write_text(
        "name: tiny\nnetwork_G: {which_model_G: RSTT, embed_dim: 16, depths: [2, 1, 2, 2, 2, 2, 1, 2], "
        "num_heads: [1, 2, 2, 4, 4, 2, 2, 1], window_sizes: [[4, 4], [4, 4], [4, 4], [4, 4], [4, 4], [4, 4], "
        "[4, 4], [4, 4]], back_RBs: 1}\n"
        f"datasets:\n  test: {{name: syn, dataroot_GT: '{gt}'}}\n"
        f"path: {{pretrain_model_G: '{tmp_path / 'rstt.pth'}', results_root: '{tmp_path / 'res'}'}}\n"
    )
    assert main(["-opt", str(opt), "--no_progress", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "8/8" in out and "pad_multiple=1" in out
    opt.write_text(opt.read_text() + "protocol: {window: 5, stride: 4}\n")
    assert main(["-opt", str(opt), "--no_progress", "--device", "cpu"]) == 2
    assert "takes exactly 4 LR frames per call" in capsys.readouterr().err


def test_infer_feeds_exactly_num_frames():
    from stvsr.infer import WindowRunner, infer_video, upsample_stream
    from stvsr.infer.media import InferError

    model = tiny()
    runner = WindowRunner(model)
    frames = [np.full((9, 11, 3), 16 * i, dtype=np.uint8) for i in range(6)]
    out = list(upsample_stream(frames, runner, window=4))
    assert len(out) == 11 and out[0].shape == (36, 44, 3)
    with pytest.raises(InferError, match="takes exactly 4 LR frames per call, got 3"):
        runner(frames[:3])  # a stream shorter than the window is one window of all its frames
    with pytest.raises(InferError, match="use --window 4"):
        infer_video(model, "in.mp4", "out.mp4", window=5)


# ----------------------------------------------------------------------------- training configs


@pytest.mark.parametrize("variant", ["S", "M", "L"])
def test_official_recipe_configs(variant: str):
    """options/train/train_rstt_{s,m,l}.yml: the official recipe (spec A.2 Training) and the model of the variant."""
    from stvsr.train import options
    from stvsr.train.schedulers import build_scheduler

    opt = options.load(ROOT / "options" / "train" / f"train_rstt_{variant.lower()}.yml")
    net = dict(opt["network_G"])
    assert net.pop("num_frames") == 4 and net == RSTT.official_network(variant)
    d, tr = opt["datasets"]["train"], opt["train"]
    assert (d["GT_size"], d["LQ_size"], d["N_frames"], d["batch_size"]) == (256, 64, 7, 7)
    assert d["use_flip"] and d["use_rot"] and d["random_reverse"] and d["interval_list"] == [1]
    assert (tr["optim"], tr["lr_G"], tr["beta1"], tr["beta2"], tr["weight_decay_G"]) == ("AdamW", 2e-4, 0.9, 0.99, 0)
    assert (tr["niter"], tr["warmup_iter"], tr["manual_seed"], tr["scheduler_order"]) == (2_000_000, -1, 0, "after")
    assert tr["losses"] == [{"type": "cb", "weight": 1.0, "eps": 1e-6, "reduction": "sum"}]
    # lr(e): 2e-4 -> 1e-7 over the first 400k, restart at 1e-4, then only down to about 5e-5 (quirk 2)
    sched = build_scheduler(torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=tr["lr_G"]), tr)
    lr = {e: sched._lr(2e-4, e) for e in (0, 399_999, 400_000, 799_999, 800_000, 1_199_999, 2_000_000)}
    assert lr[0] == 2e-4 and lr[399_999] < 1.1e-7 and lr[400_000] == pytest.approx(1e-4)
    assert lr[799_999] == pytest.approx(5.0e-5, rel=2e-3) and lr[1_199_999] == pytest.approx(7.5e-5, rel=2e-3)
    assert lr[2_000_000] == pytest.approx(5.0e-5, rel=2e-3) and lr[800_000] == pytest.approx(1e-4)


def test_demo_config_builds_a_small_rstt():
    from stvsr.train import options

    opt = options.load(ROOT / "options" / "train" / "train_rstt_demo.yml")
    model = build_arch(opt["network_G"])
    assert isinstance(model, RSTT) and count_parameters(model) < 1_000_000 and model.input_frames == 4
    assert opt["datasets"]["train"]["N_frames"] == 7 and opt["datasets"]["val"]["N_frames"] == 7
    assert opt["train"]["scheduler_order"] == "after"


def test_vimeo_sequence_folder_average():
    """RSTT's eval_vimeo90k.py averages clip means per sequence folder, then over folders (quirk 6): reported next
    to the mean over clips."""
    from stvsr.eval.protocol import Protocol, Results

    r = Results(Protocol())
    for clip, value in (("00001/0001", 30.0), ("00001/0002", 32.0), ("00002/0001", 40.0)):
        r.add(clip, 0, "im1.png", 0, {"psnr_y": value, "ssim_y": 0.5, "psnr_rgb": value, "ssim_rgb": 0.5})
    assert r.overall()["psnr_y"] == pytest.approx(34.0) and r.folder_mean()["psnr_y"] == pytest.approx(35.5)
    assert "mean of folders" in r.report()
    plain = Results(Protocol())
    plain.add("calendar", 0, "f.png", 0, {"psnr_y": 1.0, "ssim_y": 1.0, "psnr_rgb": 1.0, "ssim_rgb": 1.0})
    assert plain.folder_mean() is None and "mean of folders" not in plain.report()
