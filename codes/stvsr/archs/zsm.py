"""Zooming Slow-Mo (CVPR 2020): ``LunaTokis`` (docs/models.md).

(B, N, 3, H, W) RGB in [0, 1] -> (B, 2N-1, 3, 4H, 4W), frames [F0, I0.5, F1, ..., F(N-1)]; H and W
multiples of 4; any N >= 2. With the official settings (``nf=64, groups=8, front_RBs=5, back_RBs=40``) it
has 11,102,771 parameters and the 416 ``state_dict`` keys of the released ``xiang2020zooming.pth``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from stvsr.ops import DCNSep
from stvsr.registry import ARCHS

from .base import StvsrArch
from .blocks import (
    BiDeformableConvLSTM,
    PCD_Align,
    ResidualBlock_noBN,
    add_pyramid_convs,
    add_zsm_head,
    check_video,
    interleave,
    lrelu,
    make_layer,
    pyramid,
    zsm_head,
)


@ARCHS.register("LunaTokis", aliases=("zsm",))
class LunaTokis(StvsrArch):
    """Zooming Slow-Mo: feature interpolation by PCD alignment, deformable ConvLSTM, 40-RB reconstruction.

    Args (the official signature and defaults; the official *settings* are ``back_RBs=40, nframes=7``):
        nf: feature channels (64). Must be divisible by ``groups``.
        nframes: unused by the computation (official attribute only); any N >= 2 input frames work.
        groups: deformable groups of the 18 ``DCN_sep`` (8).
        front_RBs: residual blocks of the feature extractor (5).
        back_RBs: residual blocks of the reconstruction trunk (official 40).
    """

    size_divisor = 4
    upscale = 4
    official_settings: ClassVar[dict[str, Any]] = {
        "nf": 64,
        "nframes": 7,
        "groups": 8,
        "front_RBs": 5,
        "mid_RBs": 0,
        "back_RBs": 40,
        "HR_in": False,
    }
    # network_G keys: the constructor's arguments (StvsrArch.config_keys)
    config_required: ClassVar[tuple[str, ...]] = ("nf", "nframes", "groups", "front_RBs", "back_RBs")  # define_G
    config_ignored: ClassVar[tuple[str, ...]] = ("mid_RBs", "HR_in")  # in the official config, unused by its code

    def __init__(self, nf: int = 64, nframes: int = 3, groups: int = 8, front_RBs: int = 5, back_RBs: int = 10):
        super().__init__()
        if nf % groups:
            raise ValueError(f"LunaTokis: nf={nf} must be divisible by groups={groups}")
        self.nf, self.nframes, self.groups = nf, nframes, groups
        self.conv_first = nn.Conv2d(3, nf, 3, 1, 1, bias=True)
        self.feature_extraction = make_layer(ResidualBlock_noBN, front_RBs, nf=nf)
        add_pyramid_convs(self, nf)
        self.pcd_align = PCD_Align(nf=nf, groups=groups, dcn=DCNSep)
        self.fusion = nn.Conv2d(2 * nf, nf, 1, 1, bias=True)
        self.ConvBLSTM = BiDeformableConvLSTM(nf=nf, groups=groups, dcn=DCNSep)
        self.recon_trunk = make_layer(ResidualBlock_noBN, back_RBs, nf=nf)
        add_zsm_head(self, nf)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c, h, w = check_video(self, x)
        l1 = lrelu(self.conv_first(x.reshape(b * n, c, h, w)))
        l1 = self.feature_extraction(l1)  # no activation after the RBs (quirk 2, KEEP)
        l2, l3 = pyramid(self, l1)
        levels = [t.view(b, n, *t.shape[1:]) for t in (l1, l2, l3)]
        # Intermediate features for every adjacent pair (i, i+1), all pairs in one batch (shared weights).
        first = tuple(t[:, :-1].reshape(b * (n - 1), *t.shape[2:]) for t in levels)
        second = tuple(t[:, 1:].reshape(b * (n - 1), *t.shape[2:]) for t in levels)
        mids = self.fusion(self.pcd_align(first, second)).view(b, n - 1, self.nf, h, w)
        feats = self.ConvBLSTM(interleave(levels[0], mids))  # (B, 2N-1, nf, H, W)
        t = feats.shape[1]
        out = zsm_head(self, self.recon_trunk(feats.view(b * t, self.nf, h, w)))
        return out.view(b, t, 3, self.upscale * h, self.upscale * w)
