"""TMNet: its TMBs and ZSM part of the keys, contract with and without time stamps, equivalence with the official
loops (zsm_reference); its keys and counts are in test_archs_facts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from arch_support import assert_every_parameter_gets_a_gradient, evaluate_tiny, raises_saying
from data_support import synthetic_clips
from spec_keys import key_list, read_keys
from stvsr.archs import build_arch
from stvsr.archs.tmnet import TMNet
from zsm_reference import (
    assert_matches_reference,
    bilstm_reference,
    frame_levels,
    lrelu,
    pair_sequence,
    pcd_reference,
    perturb,
    resize,
    upsample_reference,
)

OFFICIAL = {
    "which_model_G": "TMNet",
    "nf": 64,
    "nframes": 7,
    "groups": 8,
    "front_RBs": 5,
    "mid_RBs": 0,
    "back_RBs": 40,
    "HR_in": False,
}
TINY = {"which_model_G": "tmnet", "nf": 8, "nframes": 7, "groups": 8, "front_RBs": 1, "back_RBs": 1}
OFFICIAL_STAMPS = [1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6]

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


def tiny(seed: int = 0, **overrides) -> TMNet:
    torch.manual_seed(seed)
    return build_arch({**TINY, **overrides})


def test_official_temporal_modulation_blocks():
    """The 42 TMB tensors of the official model, which stage 2 trains (keys and counts: test_archs_facts)."""
    model = build_arch(OFFICIAL)
    assert sum(p.numel() for n, p in model.named_parameters() if "TMB" in n) == 492_672
    assert sum(1 for n, _ in model.named_parameters() if "TMB" in n) == 42


def test_zsm_part_equals_zsm_keys():
    """TMNet's first 416 keys minus the TMBs are ZSM's, in ZSM's order (the blocks are ZSM's)."""
    zsm = [row for row in read_keys("zsm")]
    mine = [row for row in key_list(build_arch(OFFICIAL)) if "TMB" not in row[0] and not row[0].startswith("layers")]
    assert mine == zsm


# ------------------------------------------------------------------ reference from the spec (A.1)
def official_structure_forward(m: TMNet, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
    """The official forward's loop structure: pair by pair, stamp by stamp, LFC frame by frame, one LSTM
    direction at a time (zsm_reference: TMNet's PCD upsamples by size and modulates its offsets with t)."""
    b, n, c, h, w = x.shape
    if t is not None:
        t_n = t.shape[1]
        tt = t.reshape(b * t_n, 1, 1, 1)
        t_back = 1 - tt
        tt = (tt / 0.5 - 1).view(b, t_n, 1, 1, 1)
        t_back = (t_back / 0.5 - 1).view(b, t_n, 1, 1, 1)

    def middle(fea1, fea2):
        if t is None:
            return [m.fusion(pcd_reference(m.pcd_align, fea1, fea2, upsample=resize))]
        stamps = [(tt[:, k], t_back[:, k]) for k in range(t_n)]
        return [m.fusion(pcd_reference(m.pcd_align, fea1, fea2, *ts, upsample=resize)) for ts in stamps]

    d = pair_sequence(_levels(m, x), middle)
    T = d.shape[1]
    compared = []
    for i in range(T):
        idx = [0, 0, 1] if i == 0 else [T - 2, T - 1, T - 1] if i == T - 1 else [i - 1, i, i + 1]
        f0, f1, f2 = (d[:, j] for j in idx)
        a0 = lrelu(m.layersAtB(f0, m.layersAtBOffset(torch.cat([f0, f1], 1))))
        a2 = lrelu(m.layersCtB(f2, m.layersCtBOffset(torch.cat([f2, f1], 1))))
        compared.append(m.layersFusion(torch.cat([a0, f1, a2], 1)))
    feats = bilstm_reference(m.ConvBLSTM, d + torch.stack(compared, 1), m.nf)
    out = upsample_reference(m, m.recon_trunk(feats) + d.view(b * T, -1, h, w))
    return out.view(b, T, -1, 4 * h, 4 * w)


def _model64():
    model = tiny(front_RBs=1, back_RBs=1).double().eval()
    perturb(model, std=0.5)  # offsets non-zero: the deformable paths are exercised
    with torch.no_grad():  # the TMB convs are default-initialised; make their contribution clearly visible
        for name, p in model.named_parameters():
            if "TMB" in name:
                p.mul_(3)
    return model


def test_no_time_equals_official_loop_structure():
    model = _model64()
    x = torch.rand(2, 3, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        ours, ref = model(x), official_structure_forward(model, x)
    assert ours.shape == ref.shape == (2, 5, 3, 32, 32)
    assert_matches_reference(ours, ref)


@pytest.mark.parametrize("stamp", [0.5, 0.3])
def test_one_stamp_equals_official_loop_structure(stamp: float):
    """4 frames with one stamp -> 7 frames. At t = 0.5 (an official use) t' = t_back' = 0 and the bias-free
    t_process gives 0: the TMBs add nothing and the output is the no-t output; at 0.3 they change it."""
    model = _model64()
    x = torch.rand(1, 4, 3, 8, 12, dtype=torch.float64)
    t = torch.full((1, 1), stamp, dtype=torch.float64)
    with torch.no_grad():
        ours, ref = model(x, t), official_structure_forward(model, x, t)
        plain = model(x)
    assert ours.shape == ref.shape == (1, 7, 3, 32, 48)
    assert_matches_reference(ours, ref)
    if stamp == 0.5:
        assert_matches_reference(ours, plain)
    else:
        assert (ours - plain).abs().max() > 1e-3 * plain.abs().max()


def test_five_stamps_equal_official_loop_structure_per_sample_stamps():
    """2 frames with the official t = 1/6 .. 5/6 -> 7 frames; a batch whose samples have different stamps."""
    model = _model64()
    x = torch.rand(2, 2, 3, 8, 8, dtype=torch.float64)
    t = torch.tensor([OFFICIAL_STAMPS, [0.1, 0.3, 0.5, 0.7, 0.9]], dtype=torch.float64)
    with torch.no_grad():
        ours, ref = model(x, t), official_structure_forward(model, x, t)
    assert ours.shape == ref.shape == (2, 7, 3, 32, 32)
    assert_matches_reference(ours, ref)


def test_five_stamps_order_over_several_pairs():
    """3 frames, 5 stamps: [F0, I0(t1..t5), F1, I1(t1..t5), F2] (13 frames). Each intermediate frame equals the
    same call with that stamp alone at the same place, which pins the order (up to the LSTM context, so run
    the order check on the sequence D, before the LSTM)."""
    model = _model64()
    x = torch.rand(1, 3, 3, 8, 8, dtype=torch.float64)
    t = torch.tensor([OFFICIAL_STAMPS], dtype=torch.float64)
    with torch.no_grad():
        ours, ref = model(x, t), official_structure_forward(model, x, t)
        assert ours.shape == (1, 13, 3, 32, 32)
        assert_matches_reference(ours, ref)
        levels = _levels(model, x)
        d = model._interpolate(levels, t)
        for k, stamp in enumerate(OFFICIAL_STAMPS):
            single = model._interpolate(levels, torch.tensor([[stamp]], dtype=torch.float64))  # [F0, I0, F1, I1, F2]
            for pair in range(2):
                torch.testing.assert_close(d[:, 6 * pair + 1 + k], single[:, 2 * pair + 1], rtol=1e-12, atol=1e-12)
        for key in range(3):
            assert torch.equal(d[:, 6 * key], levels[0][:, key])


def _levels(model, x):
    b, n, c, h, w = x.shape
    return frame_levels(model, model.feature_extraction(lrelu(model.conv_first(x.view(-1, c, h, w)))), b, n)


def test_forward_times_is_stamps_k_over_factor():
    model = tiny().eval()
    x = torch.rand(1, 3, 3, 8, 8)
    with torch.no_grad():
        y = model.forward_times(x, 4)
        assert torch.equal(y, model(x, torch.tensor([[0.25, 0.5, 0.75]])))
    assert y.shape == (1, 9, 3, 32, 32)
    assert TMNet.time_stamps(6) == pytest.approx(OFFICIAL_STAMPS)
    with pytest.raises(ValueError, match="integer >= 2"):
        model.forward_times(x, 1)


@pytest.mark.parametrize(
    ("t", "words"),
    [
        (torch.rand(3, 2), ["(B, n)", "B = 1"]),
        (torch.rand(1, 2, 1), ["(B, n)"]),
        ([0.5, 1.5], ["[0, 1]"]),
    ],
)
def test_bad_time_is_a_clear_error(t, words):
    with raises_saying(words):
        tiny()(torch.rand(1, 2, 3, 8, 8), t)


def test_bad_size_is_a_clear_error():
    """Quirk 4 FIX: 2 mod 4 sizes are refused (the official reshape fallback silently mis-shapes them)."""
    with pytest.raises(ValueError, match="multiple of 4"):
        tiny()(torch.rand(1, 2, 3, 10, 8))


def test_gradients_with_and_without_time():
    """Without t the 42 TMB tensors get no gradient (official single-frame mode); with t every parameter does
    (offset convs perturbed: at init they are zero and cut the gradient of the offset-feature convs)."""
    model = tiny().train()
    perturb(model)
    x = torch.rand(1, 2, 3, 8, 8)
    torch.sqrt((model(x) - torch.rand(1, 3, 3, 32, 32)) ** 2 + 1e-6).sum().backward()
    no_grad = {n for n, p in model.named_parameters() if p.grad is None}
    assert no_grad == {n for n, _ in model.named_parameters() if "TMB" in n} and len(no_grad) == 42
    model.zero_grad(set_to_none=True)
    out = model(x, torch.tensor([[0.25, 0.5, 0.75]]))
    torch.sqrt((out - torch.rand(1, 5, 3, 32, 32)) ** 2 + 1e-6).sum().backward()
    assert_every_parameter_gets_a_gradient(model)


def test_build_arch_errors_name_the_key():
    with pytest.raises(ValueError, match="Did you mean 'back_RBs'"):
        build_arch({**TINY, "back_RB": 2})
    with pytest.raises(ValueError, match="divisible by groups=8"):
        build_arch({**TINY, "nf": 12})


# ------------------------------------------------------------------ evaluation scripts and stvsr-infer
ROOT = Path(__file__).resolve().parents[1]


def test_shipped_test_configs_and_official_settings(tmp_path: Path):
    """options/test/test_tmnet_{vid4,vimeo}.yml and --model TMNet: the official model, zero padding to x4,
    every Vid4 frame scored (the official script appends the last window)."""
    from stvsr.eval import cli, vimeo_cli

    official = dict(OFFICIAL)
    vid4 = cli.resolve(cli.build_parser().parse_args(["-opt", str(ROOT / "options/test/test_tmnet_vid4.yml")]))
    for name in ("slow", "medium", "fast"):
        (tmp_path / f"sep_{name}_testset.txt").write_text("00001/0001\n")
    vimeo_args = ["-opt", str(ROOT / "options/test/test_tmnet_vimeo.yml"), "--list_dir", str(tmp_path)]
    vimeo = vimeo_cli.resolve(vimeo_cli.build_parser().parse_args(vimeo_args))
    for settings in (vid4, vimeo):
        assert settings["network"] == official
        assert settings["protocol"].resolved_pad(TMNet.size_divisor) == 4 and settings["strict"]
    assert vid4["protocol"].window == 7 and vid4["protocol"].stride == 6 and vid4["protocol"].tail == "all"
    model_only = cli.resolve(cli.build_parser().parse_args(["--model", "TMNet", "--dataroot_GT", str(tmp_path)]))
    assert model_only["network"] == official


def _clip(root: Path, frames: int = 8, size: tuple[int, int] = (24, 36)) -> None:
    synthetic_clips(root, {"a": frames}, size)


def test_tiny_tmnet_through_test_py(tmp_path: Path, capsys):
    """A random tiny TMNet through codes/test.py's entry point; LR 6x9 padded to 8x12 by the protocol."""
    _clip(tmp_path)
    evaluate_tiny(tmp_path, tiny(), TINY, "{tail: all}")
    out = capsys.readouterr().out
    assert "8/8" in out and "pad_multiple=4" in out


def test_adobe240_protocol_config_and_tiny_tmnet(tmp_path: Path, capsys):
    """options/test/test_tmnet_adobe240.yml is the official multiple-frames protocol (windows of 7, stride 6,
    first and last frame in, t = 1/6 .. 5/6); a tiny TMNet through codes/test.py with it scores every frame of a
    13-frame clip, and the tail window's frames equal the model's own forward_times on frames 6 and 12."""
    import numpy as np

    from stvsr.data.io import list_images, read_image
    from stvsr.eval import cli
    from stvsr.metrics import quantize
    from stvsr.model.weights import save_state_dict

    adobe = cli.resolve(cli.build_parser().parse_args(["-opt", str(ROOT / "options/test/test_tmnet_adobe240.yml")]))
    assert adobe["network"] == dict(OFFICIAL) and adobe["strict"]
    p = adobe["protocol"]
    assert (p.window, p.stride, p.time_factor, p.tail) == (7, 6, 6, "all")
    _clip(tmp_path, frames=13, size=(16, 32))
    save_state_dict(tiny(), tmp_path / "tmnet.pth")
    net = ", ".join(f"{k}: {v}" for k, v in TINY.items())
    opt = tmp_path / "tiny.yml"  # the tiny model with the protocol given as flags
    opt.write_text(f"network_G: {{{net}}}\n")
    args = ["-opt", str(opt), "--checkpoint", str(tmp_path / "tmnet.pth"), "--dataroot_GT", str(tmp_path / "GT")]
    args += ["--dataroot_LQ", str(tmp_path / "LR"), "--results_root", str(tmp_path / "res"), "--name", "a"]
    args += ["--window", "7", "--stride", "6", "--time_factor", "6", "--save_images", "--no_progress"]
    assert cli.main([*args, "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "13/13" in out and "time_factor=6" in out
    lr = np.stack([read_image(q) for q in list_images(tmp_path / "LR" / "a")])
    x = torch.from_numpy(lr[[6, 12]]).permute(0, 3, 1, 2)[None].float().div(255.0)
    with torch.no_grad():
        ref = quantize(tiny().eval().forward_times(x, 6)[0].permute(0, 2, 3, 1).numpy())
    saved = np.stack([read_image(q) for q in list_images(tmp_path / "res" / "a" / "images" / "a")])
    assert saved.shape[0] == 13 and np.abs(saved[7:].astype(int) - ref[1:].astype(int)).max() <= 1


def test_stvsr_infer_time_factor(tmp_path: Path):
    """stvsr-infer --time-factor 4 with a tiny TMNet on a folder of 5 LR frames (one window): 4 * 4 + 1 output
    frames, equal to the model's own forward_times on the window zero-padded to x4, cropped and quantised."""
    import numpy as np
    import yaml

    from stvsr.data.io import list_images, read_image
    from stvsr.infer.cli import main
    from stvsr.metrics import quantize
    from stvsr.model.weights import save_state_dict

    _clip(tmp_path, frames=5)
    save_state_dict(tiny(), tmp_path / "tmnet.pth")
    opt = tmp_path / "tmnet.yml"
    opt.write_text(yaml.safe_dump({"network_G": TINY, "path": {"pretrain_model_G": str(tmp_path / "tmnet.pth")}}))
    out = tmp_path / "out"
    args = ["-opt", str(opt), "-i", str(tmp_path / "LR" / "a"), "--fps", "24", "-o", str(out)]
    assert main([*args, "--time-factor", "4", "--window", "5", "--device", "cpu", "--no-progress"]) == 0
    frames = np.stack([read_image(p) for p in list_images(out)])
    assert frames.shape == (4 * 4 + 1, 24, 36, 3)
    lr = np.stack([read_image(p) for p in list_images(tmp_path / "LR" / "a")])
    x = torch.from_numpy(lr).permute(0, 3, 1, 2)[None].float().div(255.0)
    x = F.pad(x.flatten(0, 1), (0, 3, 0, 2)).unflatten(0, x.shape[:2])  # 6x9 -> 8x12
    with torch.no_grad():
        ref = tiny().eval().forward_times(x, 4)[0, ..., :24, :36]
    ref = quantize(ref.permute(0, 2, 3, 1).numpy())
    assert np.abs(frames.astype(int) - ref.astype(int)).max() <= 1  # PNG round trip of the same numbers
