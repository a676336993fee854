"""MSITF: ``Net`` (``models/modules/mystvsr07.py``; docs/models.md, MSITF).

(B, N, 3, h, w) RGB in [0, 1] -> (B, 2N-1, 3, 4h, 4w), frames [F0, I0.5, F1, ..., F(N-1)], not clamped; any
h and w (the model zero-pads its LR features to multiples of 8 itself and crops back); any N >= 2. With the
official settings (``nf=64, nframes=7, groups=8, front_RBs=5, back_RBs=40``) it has 5,585,611 parameters and
the 432 ``state_dict`` keys (402 parameters + 30 Swin buffers) of the released checkpoints.

Pipeline: trilinear residual base; conv_first + 5 RBs + pyramid; single-branch PCD feature interpolation of
every adjacent pair; bidirectional deformable ConvLSTM; per-pixel temporal attention; Swin-V2 reconstruction
trunk (modified Swin2SR, :mod:`stvsr.archs.swinv2`); the ZSM x4 head; + the trilinear base.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from stvsr.ops.modules import DCNSepBounded
from stvsr.registry import ARCHS

from .base import StvsrArch
from .blocks import (
    BiDeformableConvLSTM,
    PCD_Align,
    Pyramid,
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
from .swinv2 import Swin2SRBody

FEATURE_MULTIPLE = 8  # the LR features are zero-padded to multiples of 8 (Swin windows, pyramid levels)


def trilinear_base(x: torch.Tensor, scale: int = 4) -> torch.Tensor:
    """The global residual base: x (B, N, 3, h, w) trilinearly resized to (B, 2N-1, 3, scale*h, scale*w).

    ``align_corners=False``, so output frame i samples input time (i + 0.5) * N / (2N-1) - 0.5 (clamped to
    [0, N-1]): not aligned to the input frames (quirk 5, KEEP).
    """
    n, h, w = x.shape[1], x.shape[-2], x.shape[-1]
    up = F.interpolate(x.transpose(1, 2), size=(2 * n - 1, scale * h, scale * w), mode="trilinear", align_corners=False)
    return up.transpose(1, 2)


class PCD_Align_single(PCD_Align):
    """MSITF's ``PCD_Align``: branch 1 of the ZSM alignment only (keys ``*_1``), returns F1 (nf channels).

    The official code deforms (fea1 + fea1) / 2 = fea1 at every level, with offsets from [fea1, fea2]
    (quirk 1, KEEP): exactly branch 1 of :class:`stvsr.archs.blocks.PCD_Align`, whose ``_branch`` this reuses.
    """

    def __init__(self, nf: int = 64, groups: int = 8, dcn: type[nn.Module] = DCNSepBounded) -> None:
        super().__init__(nf=nf, groups=groups, dcn=dcn)
        for name in [name for name in self._modules if name.endswith("_2")]:  # drop branch 2
            delattr(self, name)

    def forward(self, fea1: Pyramid, fea2: Pyramid) -> torch.Tensor:
        return self._branch(1, fea1, fea2)


class Easy_PCD_single(nn.Module):
    """MSITF's ``Easy_PCD``: own pyramid, single-branch PCD, ``fusion`` conv 1x1 nf -> nf."""

    def __init__(self, nf: int = 64, groups: int = 8) -> None:
        super().__init__()
        add_pyramid_convs(self, nf)
        self.pcd_align = PCD_Align_single(nf=nf, groups=groups)
        self.fusion = nn.Conv2d(nf, nf, 1, 1, bias=True)

    def forward(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        b = f1.shape[0]
        l1 = torch.cat((f1, f2), dim=0)  # both pyramids in one batch
        l2, l3 = pyramid(self, l1)
        return self.fusion(self.pcd_align((l1[:b], l2[:b], l3[:b]), (l1[b:], l2[b:], l3[b:])))


class TemporalAttention(nn.Module):
    """Multi-head self-attention over time at every pixel: tokens (B*H*W, T, C), ``qkv`` with bias, scale
    head_dim^-0.5, ``proj``; no dropout; PyTorch default init. ``forward`` returns the attention output only
    (the caller adds the residual)."""

    def __init__(self, dim: int, num_heads: int = 8) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"TemporalAttention: dim={dim} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, C, H, W) -> (B, T, C, H, W)."""
        b, t, c, h, w = x.shape
        tokens = x.permute(0, 3, 4, 1, 2).reshape(b * h * w, t, c)
        q, k, v = self.qkv(tokens).view(-1, t, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        if x.device.type == "cpu" and torch.is_grad_enabled():
            out = torch.matmul(torch.softmax(torch.matmul(q * self.scale, k.transpose(-2, -1)), dim=-1), v)
        else:
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        out = self.proj(out.transpose(1, 2).reshape(-1, t, c))
        return out.view(b, h, w, t, c).permute(0, 3, 4, 1, 2)


@ARCHS.register("Net", aliases=("MSITF", "msitf"))
class MSITF(StvsrArch):
    """MSITF: multi-scale interpolation (single-branch PCD), deformable ConvLSTM, temporal attention and a
    Swin-V2 reconstruction trunk, on a trilinear residual base. Registered as ``Net`` (the official
    ``which_model_G``, quirk 2 FIX), ``MSITF`` and ``msitf``.

    Args (official signature and defaults = the official settings):
        nf: feature channels (64); also the Swin embed dim. Divisible by ``groups``, ``swin_heads`` and
            ``attn_heads``.
        nframes: unused by the computation (quirk 6, KEEP); any N >= 2 input frames work.
        groups: deformable groups of the 9 ``DCN_sep`` (8).
        front_RBs: residual blocks of the feature extractor (5).
        back_RBs: unused (the RB trunk was replaced by Swin2SR; quirk 6, KEEP).

    Keyword-only extensions (not in the official code; the defaults are the official model), for small test
    and demo models: ``swin_depths`` (2,)*6, ``swin_heads`` 4, ``attn_heads`` 8 (temporal attention),
    ``mlp_ratio`` 2, ``drop_path_rate`` 0.1, ``img_size`` 32 (the size the shifted-window ``attn_mask``
    buffers are precomputed for; 32 to load the official checkpoints), ``use_checkpoint`` False (recompute
    the Swin blocks in the backward pass: less training memory, about a third more time).
    """

    size_divisor = 1  # any LR size: the features are padded to multiples of 8 inside (as the official)
    upscale = 4
    official_settings: ClassVar[dict[str, Any]] = {"nf": 64, "nframes": 7, "groups": 8, "front_RBs": 5, "back_RBs": 40}
    config_required: ClassVar[tuple[str, ...]] = ("nf", "nframes", "groups", "front_RBs", "back_RBs")
    config_ignored: ClassVar[tuple[str, ...]] = ("mid_RBs", "HR_in")  # in the ZSM-derived configs, unused

    def __init__(
        self,
        nf: int = 64,
        nframes: int = 7,
        groups: int = 8,
        front_RBs: int = 5,
        back_RBs: int = 40,
        *,
        swin_depths: Sequence[int] = (2, 2, 2, 2, 2, 2),
        swin_heads: int = 4,
        attn_heads: int = 8,
        mlp_ratio: float = 2.0,
        drop_path_rate: float = 0.1,
        img_size: int = 32,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        for what, value in (("groups", groups), ("swin_heads", swin_heads), ("attn_heads", attn_heads)):
            if value < 1 or nf % value:
                raise ValueError(f"MSITF: nf={nf} must be divisible by {what}={value}")
        if not swin_depths or min(swin_depths) < 1:
            raise ValueError(f"MSITF: swin_depths={list(swin_depths)} must be a non-empty list of positive ints")
        if img_size < 8 or img_size % 8:
            raise ValueError(f"MSITF: img_size={img_size} must be a positive multiple of 8 (the Swin window)")
        self.nf, self.nframes, self.groups, self.back_RBs = nf, nframes, groups, back_RBs
        self.in_frames, self.ot_frames = 1 + nframes // 2, nframes  # official attributes, unused
        self.conv_first = nn.Conv2d(3, nf, 3, 1, 1, bias=True)
        self.feature_extraction = make_layer(ResidualBlock_noBN, front_RBs, nf=nf)
        add_pyramid_convs(self, nf)
        self.pcd_align = PCD_Align_single(nf=nf, groups=groups)
        self.fusion = nn.Conv2d(nf, nf, 1, 1, bias=True)
        # ZSM's bidirectional deformable ConvLSTM with the single-branch Easy_PCD aligning h and c (quirk 1)
        self.ConvBLSTM = BiDeformableConvLSTM(nf=nf, groups=groups, pcd=Easy_PCD_single)
        self.attn = TemporalAttention(nf, num_heads=attn_heads)
        self.recon_trunk = Swin2SRBody(
            in_chans=nf,
            embed_dim=nf,
            depths=tuple(swin_depths),
            num_heads=swin_heads,
            window_size=8,
            mlp_ratio=mlp_ratio,
            img_size=img_size,
            drop_path_rate=drop_path_rate,
            use_checkpoint=use_checkpoint,
        )
        add_zsm_head(self, nf)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c, h, w = check_video(self, x)
        base = trilinear_base(x, self.upscale)
        l1 = lrelu(self.conv_first(x.reshape(b * n, c, h, w)))
        hp, wp = -(-h // FEATURE_MULTIPLE) * FEATURE_MULTIPLE, -(-w // FEATURE_MULTIPLE) * FEATURE_MULTIPLE
        l1 = self.feature_extraction(F.pad(l1, (0, wp - w, 0, hp - h)))  # zero features bottom/right
        l2, l3 = pyramid(self, l1)
        levels = [t.view(b, n, *t.shape[1:]) for t in (l1, l2, l3)]
        # Intermediate features of every adjacent pair (i, i+1), all pairs in one batch (shared weights).
        first = tuple(t[:, :-1].reshape(b * (n - 1), *t.shape[2:]) for t in levels)
        second = tuple(t[:, 1:].reshape(b * (n - 1), *t.shape[2:]) for t in levels)
        mids = self.fusion(self.pcd_align(first, second)).view(b, n - 1, self.nf, hp, wp)
        feats = self.ConvBLSTM(interleave(levels[0], mids))  # (B, 2N-1, nf, Hp, Wp)
        feats = feats + self.attn(feats)
        t = feats.shape[1]
        out = self.recon_trunk(feats.view(b * t, self.nf, hp, wp))[:, :, :h, :w]
        out = zsm_head(self, out.contiguous())
        return out.view(b, t, 3, self.upscale * h, self.upscale * w) + base
