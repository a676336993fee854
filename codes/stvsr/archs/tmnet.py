"""TMNet (CVPR 2021): ``TMNet`` (docs/models.md, TMNet), Zooming Slow-Mo with controllable time.

TMNet is the Zooming Slow-Mo network (``stvsr.archs.zsm``, whose blocks it uses unchanged: RBs, pyramid, the
two-branch ``PCD_Align``, the bidirectional deformable ConvLSTM, the x4 head) plus:

- six **temporal modulation blocks** (TMB) in the main ``pcd_align``: at the last offset conv of each level,
  ``O = lrelu(conv(o)) + TMB(o, t')``, with ``TMB_A_l{3,2,1}`` and ``t' = t/0.5 - 1`` in branch 1,
  ``TMB_B_l{3,2,1}`` and ``t_back' = (1 - t)/0.5 - 1`` in branch 2. A TMB is
  ``f_process(o) * t_process(t')``: two 3x3 convs with lrelu on the features, three bias-free 1x1 convs with
  lrelu on the scalar time, a channel-wise modulation. The ``Easy_PCD`` blocks inside the LSTM have none;
- **LFC** (locally temporal feature comparison) before the ConvLSTM: each frame of the interpolated sequence
  D is compared with its neighbours (replicated at the ends) through two deformable convs and a 1x1 fusion
  stack, and the LSTM input is ``D + layersFusion([a0, D_i, a2])``;
- a global feature residual: ``recon_trunk(lstm features) + D`` before the head.

Calls:

- ``net(x)``: (B, N, 3, H, W) RGB in [0, 1] -> (B, 2N-1, 3, 4H, 4W), [F0, I0.5, F1, ..., F(N-1)], the TMBs
  unused (the official "single frame" mode, as ZSM);
- ``net(x, t)`` with t (B, n) time stamps in [0, 1] (or n floats, the same for every sample) ->
  (B, N + (N-1)n, 3, 4H, 4W) in the official order [F0, I0(t_1) .. I0(t_n), F1, I1(t_1), ..., F(N-1)]; the
  official uses are 2 frames with t = [1/6, 2/6, 1/2, 4/6, 5/6] and 4 frames with t = [0.5];
- ``net.forward_times(x, k)``: the frames at t = 1/k .. (k-1)/k between each pair ((N-1)k + 1 frames), what
  ``stvsr-infer --time-factor k`` uses.

H and W must be multiples of 4 (quirk 4, FIX: the official try/except reshape silently mis-shapes sizes
that are 2 mod 4; the evaluator and ``stvsr-infer`` pad). With the official settings (``nf=64, nframes=7,
groups=8, front_RBs=5, back_RBs=40``) it has 12,263,523 parameters and the 482 ``state_dict`` keys of
the official key list (tests/data/keys/tmnet.txt: ZSM's 416, then 42 TMB keys inside ``pcd_align``, then 24 LFC
keys at the end).
The official code hard-codes 64 channels in the TMBs and LFC (so nf must be 64 there); here they follow
``nf`` and ``groups``, which is the same model at the official settings and lets tests use tiny widths.

The official loops (one pair and one time stamp at a time, one LFC frame at a time) run here as batches with
shared weights: the same results up to floating-point rounding (``tests/test_archs_tmnet.py`` compares with
the loop structure in float64).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from stvsr.ops import DCNSep
from stvsr.registry import ARCHS

from .base import StvsrArch
from .blocks import (
    LRELU_SLOPE,
    BiDeformableConvLSTM,
    PCD_Align,
    Pyramid,
    ResidualBlock_noBN,
    add_pyramid_convs,
    add_zsm_head,
    check_video,
    lrelu,
    make_layer,
    pyramid,
    zsm_head,
)
from .zsm import LunaTokis


class TMB(nn.Module):
    """Temporal modulation block: ``f_process(x) * t_process(t)``; x (B, nf, H, W), t (B, 1, 1, 1)."""

    def __init__(self, nf: int = 64) -> None:
        super().__init__()
        self.t_process = nn.Sequential(
            nn.Conv2d(1, nf, 1, 1, 0, bias=False),
            nn.LeakyReLU(LRELU_SLOPE),
            nn.Conv2d(nf, nf, 1, 1, 0, bias=False),
            nn.LeakyReLU(LRELU_SLOPE),
            nn.Conv2d(nf, nf, 1, 1, 0, bias=False),
            nn.LeakyReLU(LRELU_SLOPE),
        )
        self.f_process = nn.Sequential(
            nn.Conv2d(nf, nf, 3, 1, 1, bias=True),
            nn.LeakyReLU(LRELU_SLOPE, inplace=True),
            nn.Conv2d(nf, nf, 3, 1, 1, bias=True),
            nn.LeakyReLU(LRELU_SLOPE, inplace=True),
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.f_process(x) * self.t_process(t)


class TimePCD_Align(PCD_Align):
    """ZSM's two-branch PCD alignment with the six TMBs (registered after the PCD convs: the official key order).

    ``forward(fea1, fea2)`` is ZSM's; ``forward(fea1, fea2, t, t_back)`` (each (B, 1, 1, 1), already mapped to
    ``t/0.5 - 1`` and ``(1 - t)/0.5 - 1``) adds ``TMB_A_l<k>(o, t)`` in branch 1 and ``TMB_B_l<k>(o, t_back)``
    in branch 2 to the last offset conv of level k.
    """

    def __init__(self, nf: int = 64, groups: int = 8, dcn: type[nn.Module] = DCNSep) -> None:
        super().__init__(nf=nf, groups=groups, dcn=dcn)
        for level in (1, 2, 3):
            setattr(self, f"TMB_A_l{level}", TMB(nf))
            setattr(self, f"TMB_B_l{level}", TMB(nf))

    def _last_offset(self, s: int, level: int, off: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        out = super()._last_offset(s, level, off, t)
        if t is None:
            return out
        return out + getattr(self, f"TMB_{'A' if s == 1 else 'B'}_l{level}")(off, t)

    def forward(
        self, fea1: Pyramid, fea2: Pyramid, t: torch.Tensor | None = None, t_back: torch.Tensor | None = None
    ) -> torch.Tensor:
        return torch.cat((self._branch(1, fea1, fea2, t), self._branch(2, fea2, fea1, t_back)), dim=1)


def _offset_convs(nf: int) -> nn.Sequential:
    """LFC offset features: conv 3x3 2nf -> nf, lrelu, conv 3x3 nf -> nf (no final activation)."""
    return nn.Sequential(
        nn.Conv2d(2 * nf, nf, 3, 1, 1, bias=True), nn.LeakyReLU(LRELU_SLOPE), nn.Conv2d(nf, nf, 3, 1, 1, bias=True)
    )


@ARCHS.register("TMNet", aliases=("tmnet",))
class TMNet(StvsrArch):
    """TMNet: ZSM with temporal modulation blocks (any t in (0, 1)), LFC and a global feature residual.

    Args (the official signature and defaults; the official *settings* are ``back_RBs=40, nframes=7``):
        nf: feature channels (64). Must be divisible by ``groups``.
        nframes: unused by the computation (official attribute only); any N >= 2 input frames work.
        groups: deformable groups of the 20 ``DCN_sep`` (8).
        front_RBs: residual blocks of the feature extractor (5).
        back_RBs: residual blocks of the reconstruction trunk (official 40).
    """

    size_divisor = 4
    upscale = 4
    supports_time_factor = True  # forward_times(lqs, k): frames at t = 1/k .. (k-1)/k (stvsr-infer --time-factor)
    takes_time = True  # forward(x, t): the trainer passes a sample's 'time' (B, n) when it carries one
    official_settings: ClassVar[dict[str, Any]] = LunaTokis.official_settings  # the official test configs alike
    config_required: ClassVar[tuple[str, ...]] = ("nf", "nframes", "groups", "front_RBs", "back_RBs")
    # in the official configs, unused by the official code ('use_time' belongs to the official dataset block)
    config_ignored: ClassVar[tuple[str, ...]] = ("mid_RBs", "HR_in")

    def __init__(self, nf: int = 64, nframes: int = 3, groups: int = 8, front_RBs: int = 5, back_RBs: int = 10):
        super().__init__()
        if nf % groups:
            raise ValueError(f"TMNet: nf={nf} must be divisible by groups={groups}")
        self.nf, self.nframes, self.groups = nf, nframes, groups
        # registration order = the official key order: the ZSM modules, then the LFC
        self.conv_first = nn.Conv2d(3, nf, 3, 1, 1, bias=True)
        self.feature_extraction = make_layer(ResidualBlock_noBN, front_RBs, nf=nf)
        add_pyramid_convs(self, nf)
        self.pcd_align = TimePCD_Align(nf=nf, groups=groups, dcn=DCNSep)
        self.fusion = nn.Conv2d(2 * nf, nf, 1, 1, bias=True)
        self.ConvBLSTM = BiDeformableConvLSTM(nf=nf, groups=groups, dcn=DCNSep)
        self.recon_trunk = make_layer(ResidualBlock_noBN, back_RBs, nf=nf)
        add_zsm_head(self, nf)
        self.layersAtBOffset = _offset_convs(nf)
        self.layersAtB = DCNSep(nf, nf, 3, stride=1, padding=1, dilation=1, deformable_groups=groups)
        self.layersCtBOffset = _offset_convs(nf)
        self.layersCtB = DCNSep(nf, nf, 3, stride=1, padding=1, dilation=1, deformable_groups=groups)
        self.layersFusion = nn.Sequential(
            nn.Conv2d(3 * nf, 3 * nf, 1, 1, 0, bias=True),
            nn.LeakyReLU(LRELU_SLOPE),
            nn.Conv2d(3 * nf, 3 * nf, 1, 1, 0, bias=True),
            nn.LeakyReLU(LRELU_SLOPE),
            nn.Conv2d(3 * nf, 3 * nf, 1, 1, 0, bias=True),
            nn.LeakyReLU(LRELU_SLOPE),
            nn.Conv2d(3 * nf, nf, 1, 1, 0, bias=True),
        )

    # ------------------------------------------------------------ time stamps
    @staticmethod
    def time_stamps(time_factor: int) -> list[float]:
        """The stamps 1/k, ..., (k-1)/k of ``time_factor`` k (k = 6 gives the official 1/6 .. 5/6)."""
        if isinstance(time_factor, bool) or int(time_factor) != time_factor or time_factor < 2:
            raise ValueError(f"TMNet: time_factor must be an integer >= 2, got {time_factor!r}")
        k = int(time_factor)
        return [i / k for i in range(1, k)]

    def _check_time(self, t: torch.Tensor | Sequence[float], x: torch.Tensor) -> torch.Tensor:
        """t as a (B, n) tensor of x's dtype and device; a ValueError that says what is wrong otherwise."""
        b = x.shape[0]
        if not isinstance(t, torch.Tensor):  # numbers from the caller: check their values here (no device sync)
            values = [float(v) for v in t]
            if not all(0.0 <= v <= 1.0 for v in values):
                raise ValueError(f"TMNet: time stamps must lie in [0, 1] (between the frames of a pair), got {values}")
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t.dim() == 1:
            t = t.expand(b, -1)
        if t.dim() != 2 or t.shape[0] != b or t.shape[1] < 1:
            raise ValueError(
                f"TMNet: time stamps must have shape (B, n) with B = {b} (or be n numbers), got {tuple(t.shape)}"
            )
        return t

    # ------------------------------------------------------------ forward
    def _interpolate(self, levels: list[torch.Tensor], t: torch.Tensor | None) -> torch.Tensor:
        """The sequence D: key features and ``fusion(pcd_align(...))`` per pair and stamp, in the official order.

        levels: (B, N, nf, H/2^k, W/2^k) for k = 0, 1, 2. Returns (B, N + (N-1)n, nf, H, W), n = 1 without t.
        All pairs and stamps run as one batch (shared weights), pair-major then stamp, as the official loops.
        """
        b, n = levels[0].shape[:2]
        k = 1 if t is None else t.shape[1]

        def pairs(offset: int) -> tuple[torch.Tensor, ...]:
            out = []
            for v in levels:
                v = v[:, offset : offset + n - 1, None].expand(b, n - 1, k, *v.shape[2:])
                out.append(v.reshape(b * (n - 1) * k, *v.shape[3:]))
            return tuple(out)

        if t is None:
            aligned = self.pcd_align(pairs(0), pairs(1))
        else:
            stamps = t[:, None, :].expand(b, n - 1, k).reshape(-1, 1, 1, 1)
            t_fwd = stamps / 0.5 - 1  # the official mapping of t and of 1 - t to [-1, 1]
            t_back = (1 - stamps) / 0.5 - 1
            aligned = self.pcd_align(pairs(0), pairs(1), t_fwd, t_back)
        keys = levels[0]
        mids = self.fusion(aligned).view(b, n - 1, k, *keys.shape[2:])
        groups = torch.cat((keys[:, :-1, None], mids), dim=2).flatten(1, 2)  # [F_i, I_i(t_1) .. I_i(t_n)]
        return torch.cat((groups, keys[:, -1:]), dim=1)

    def _compare(self, d: torch.Tensor) -> torch.Tensor:
        """LFC: D + layersFusion([a0, D_i, a2]) with neighbours (i-1, i, i+1), replicated at both ends."""
        b, t, c, h, w = d.shape
        index = torch.arange(t, device=d.device)
        before = d[:, (index - 1).clamp(min=0)].reshape(b * t, c, h, w)  # [0, 0, 1, ..., T-2]
        after = d[:, (index + 1).clamp(max=t - 1)].reshape(b * t, c, h, w)  # [1, 2, ..., T-1, T-1]
        centre = d.reshape(b * t, c, h, w)
        a0 = lrelu(self.layersAtB(before, self.layersAtBOffset(torch.cat((before, centre), dim=1))))
        a2 = lrelu(self.layersCtB(after, self.layersCtBOffset(torch.cat((after, centre), dim=1))))
        return d + self.layersFusion(torch.cat((a0, centre, a2), dim=1)).view(b, t, c, h, w)

    def forward(self, x: torch.Tensor, t: torch.Tensor | Sequence[float] | None = None) -> torch.Tensor:
        b, n, c, h, w = check_video(self, x)
        stamps = None if t is None else self._check_time(t, x)
        l1 = lrelu(self.conv_first(x.reshape(b * n, c, h, w)))
        l1 = self.feature_extraction(l1)  # no activation after the RBs (ZSM quirk 2, KEEP)
        l2, l3 = pyramid(self, l1)
        levels = [v.view(b, n, *v.shape[1:]) for v in (l1, l2, l3)]
        d = self._interpolate(levels, stamps)  # (B, T, nf, H, W)
        feats = self.ConvBLSTM(self._compare(d))
        frames = d.shape[1]
        out = self.recon_trunk(feats.view(b * frames, self.nf, h, w)) + d.view(b * frames, self.nf, h, w)
        out = zsm_head(self, out)
        return out.view(b, frames, 3, self.upscale * h, self.upscale * w)

    def forward_times(self, lqs: torch.Tensor, time_factor: int) -> torch.Tensor:
        """(B, N, 3, h, w) -> (B, (N-1)*time_factor + 1, 3, 4h, 4w): each key frame, then the frames at
        t = 1/k .. (k-1)/k of its pair (k = ``time_factor``), then the last key frame. Every stamp goes through
        the TMBs, k = 2 too (t = [0.5], an official use); ``forward(x)`` is the TMB-free x2 mode."""
        return self.forward(lqs, self.time_stamps(time_factor))
