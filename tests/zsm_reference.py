"""Reference forwards of the Zooming Slow-Mo family (ZSM, TMNet, MSITF) written with the official loop structure:
one frame pair at a time, one PCD branch at a time, one ConvLSTM step and one direction at a time, out of place.

The models batch these loops; their tests compare the batched forward with the pieces here (in float64). What the
three models share is written once; where they differ the pieces take it as an argument: TMNet's PCD alignment
upsamples by size and adds its temporal modulation blocks (``t`` / ``t_back``), MSITF's aligns one branch only
(:func:`msitf_pcd_reference`) and reconstructs with a Swin body (kept in its own test file).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

Levels = Sequence[torch.Tensor]  # the pyramid of one frame (or of every frame): L1, L2, L3
Upsample = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.1)


def up(x: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
    """The official x2 bilinear upsampling (``scale_factor=2``, align_corners False); ``like`` is unused."""
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def resize(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """TMNet's size-based bilinear upsampling (``interpolate(size=...)``, align_corners False) to ``like``'s size."""
    return F.interpolate(x, size=list(like.shape[-2:]), mode="bilinear", align_corners=False)


def pyramid(module: nn.Module, l1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """L2 and L3 of the feature pyramid (two strided convs each) from L1."""
    l2 = lrelu(module.fea_L2_conv2(lrelu(module.fea_L2_conv1(l1))))
    return l2, lrelu(module.fea_L3_conv2(lrelu(module.fea_L3_conv1(l2))))


def frame_levels(module: nn.Module, l1: torch.Tensor, b: int, n: int) -> list[torch.Tensor]:
    """The pyramid of ``b * n`` frames' L1 features, each level viewed as (b, n, C, H, W)."""
    l2, l3 = pyramid(module, l1)
    return [v.view(b, n, *v.shape[1:]) for v in (l1, l2, l3)]


def pcd_branch(
    m: Callable[[str], nn.Module],
    a: Levels,
    b: Levels,
    *,
    upsample: Upsample = up,
    source: Levels | None = None,
    modulate: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """One PCD_Align branch (spec 2.3), level 3 to level 1: offsets from (a, b), the deformable conv of ``source``
    (default ``a``). ``m(name)`` is the branch's module ``name`` (e.g. ``L3_dcnpack``). ``modulate(level, o)``
    adds a term to the last offset conv's output of each level, from that conv's input ``o`` (TMNet's TMBs)."""
    source = a if source is None else source

    def last(name: str, o: torch.Tensor, level: int) -> torch.Tensor:
        y = lrelu(m(name)(o))
        return y if modulate is None else y + modulate(level, o)

    o3 = last("L3_offset_conv2", lrelu(m("L3_offset_conv1")(torch.cat([a[2], b[2]], 1))), 3)
    f3 = lrelu(m("L3_dcnpack")(source[2], o3))
    o2 = lrelu(m("L2_offset_conv1")(torch.cat([a[1], b[1]], 1)))
    o2 = last("L2_offset_conv3", lrelu(m("L2_offset_conv2")(torch.cat([o2, upsample(o3, a[1]) * 2], 1))), 2)
    f2 = lrelu(m("L2_fea_conv")(torch.cat([m("L2_dcnpack")(source[1], o2), upsample(f3, a[1])], 1)))
    o1 = lrelu(m("L1_offset_conv1")(torch.cat([a[0], b[0]], 1)))
    o1 = last("L1_offset_conv3", lrelu(m("L1_offset_conv2")(torch.cat([o1, upsample(o2, a[0]) * 2], 1))), 1)
    return m("L1_fea_conv")(torch.cat([m("L1_dcnpack")(source[0], o1), upsample(f2, a[0])], 1))


def tmb_reference(block: nn.Module, o: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """TMNet's temporal modulation block: f_process(o) * t_process(t)."""
    f = lrelu(block.f_process[2](lrelu(block.f_process[0](o))))
    return f * lrelu(block.t_process[4](lrelu(block.t_process[2](lrelu(block.t_process[0](t))))))


def pcd_reference(
    pcd: nn.Module,
    fea1: Levels,
    fea2: Levels,
    t: torch.Tensor | None = None,
    t_back: torch.Tensor | None = None,
    *,
    upsample: Upsample = up,
) -> torch.Tensor:
    """The two-branch PCD_Align of ZSM and TMNet: branch 1 aligns fea1 to fea2, branch 2 fea2 to fea1.

    ZSM: ``t`` None, ``upsample`` :func:`up`. TMNet: ``upsample`` :func:`resize`; with ``t`` / ``t_back`` (its
    normalised stamps) the TMBs add to the last offset conv of each level (branch 1: TMB_A with t, branch 2: TMB_B
    with t_back)."""
    out = []
    for s, (a, b), tt, tag in ((1, (fea1, fea2), t, "A"), (2, (fea2, fea1), t_back, "B")):

        def m(name: str, s: int = s) -> nn.Module:
            return getattr(pcd, f"{name}_{s}")

        def modulate(level: int, o: torch.Tensor, tt: torch.Tensor = tt, tag: str = tag) -> torch.Tensor:
            return tmb_reference(getattr(pcd, f"TMB_{tag}_l{level}"), o, tt)

        out.append(pcd_branch(m, a, b, upsample=upsample, modulate=None if tt is None else modulate))
    return torch.cat(out, 1)


def msitf_pcd_reference(pcd: nn.Module, fea1: Levels, fea2: Levels) -> torch.Tensor:
    """MSITF's single-branch PCD_Align (spec 6.3 step 3): deforms (fea1 + fea1) / 2 at every level."""
    return pcd_branch(lambda name: getattr(pcd, f"{name}_1"), fea1, fea2, source=[(f + f) / 2 for f in fea1])


Pcd = Callable[[nn.Module, Levels, Levels], torch.Tensor]


def easy_pcd_reference(e: nn.Module, f1: torch.Tensor, f2: torch.Tensor, pcd: Pcd = pcd_reference) -> torch.Tensor:
    """Easy_PCD (the ConvLSTM's alignment of the state to the input): pyramid of the interleaved pair, PCD, fusion."""
    b, c, h, w = f1.shape
    l1 = torch.stack([f1, f2], 1).view(-1, c, h, w)  # official order: interleaved
    levels = frame_levels(e, l1, b, 2)
    return e.fusion(pcd(e.pcd_align, [v[:, 0] for v in levels], [v[:, 1] for v in levels]))


def pair_sequence(
    levels: Sequence[torch.Tensor], middle: Callable[[list[torch.Tensor], list[torch.Tensor]], list[torch.Tensor]]
) -> torch.Tensor:
    """[F0, middle(0, 1)..., F1, middle(1, 2)..., F(n-1)] (B, T, C, H, W): the L1 features of the input frames with
    the intermediate features ``middle(fea1, fea2)`` of each pair between them, one pair at a time."""
    seq = []
    for i in range(levels[0].shape[1] - 1):
        fea1, fea2 = [v[:, i] for v in levels], [v[:, i + 1] for v in levels]
        if i == 0:
            seq.append(fea1[0])
        seq += middle(fea1, fea2)
        seq.append(fea2[0])
    return torch.stack(seq, 1)


def bilstm_reference(convblstm: nn.Module, seq: torch.Tensor, nf: int, pcd: Pcd = pcd_reference) -> torch.Tensor:
    """The deformable ConvBLSTM, one step and one direction at a time (the backward direction shares the forward
    net's weights), then its 1x1 fusion: (B, T, C, H, W) -> (B * T, nf, H, W)."""
    b, t, _, h, w = seq.shape
    net = convblstm.forward_net

    def run(seq_in: torch.Tensor) -> torch.Tensor:
        hid = cell = seq_in.new_zeros(b, nf, h, w)
        outs = []
        for step in range(seq_in.shape[1]):
            xt = seq_in[:, step]
            ht, ct = easy_pcd_reference(net.pcd_h, xt, hid, pcd), easy_pcd_reference(net.pcd_c, xt, cell, pcd)
            gi, gf, go, gg = torch.split(net.cell_list[0].conv(torch.cat([xt, ht], 1)), nf, 1)
            cell = torch.sigmoid(gf) * ct + torch.sigmoid(gi) * torch.tanh(gg)
            hid = torch.sigmoid(go) * torch.tanh(cell)
            outs.append(hid)
        return torch.stack(outs, 1)

    rev = list(reversed(range(t)))
    both = torch.cat([run(seq), run(seq[:, rev])[:, rev]], 2)
    return convblstm.conv_1x1(both.view(b * t, -1, h, w))


def upsample_reference(m: nn.Module, feats: torch.Tensor) -> torch.Tensor:
    """The x4 tail: two (conv, pixel shuffle x2, lrelu), HRconv, lrelu, conv_last."""
    out = lrelu(F.pixel_shuffle(m.upconv1(feats), 2))
    out = lrelu(F.pixel_shuffle(m.upconv2(out), 2))
    return m.conv_last(lrelu(m.HRconv(out)))


def zsm_structure_forward(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Zooming Slow-Mo's official forward: one pair at a time, one LSTM direction at a time."""
    b, n, c, h, w = x.shape
    levels = frame_levels(m, m.feature_extraction(lrelu(m.conv_first(x.view(-1, c, h, w)))), b, n)
    s = pair_sequence(levels, lambda fea1, fea2: [m.fusion(pcd_reference(m.pcd_align, fea1, fea2))])
    t = s.shape[1]
    out = upsample_reference(m, m.recon_trunk(bilstm_reference(m.ConvBLSTM, s, m.nf)))
    return out.view(b, t, -1, 4 * h, 4 * w)


def perturb(model: nn.Module, std: float = 0.05, suffixes: tuple[str, ...] = ()) -> None:
    """Non-zero offset convs (and parameters whose names end with ``suffixes``), so that the deformable paths are
    exercised (they are zero at init)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "conv_offset" in name or name.endswith(suffixes):
                p.normal_(0, std)


def assert_matches_reference(ours: torch.Tensor, ref: torch.Tensor, rtol: float = 1e-10, atol: float = 1e-12) -> None:
    """float64 comparison; ``atol`` is relative to the reference's largest magnitude."""
    torch.testing.assert_close(ours, ref, rtol=rtol, atol=atol * ref.abs().max().item())
