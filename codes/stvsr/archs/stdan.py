"""STDAN: ``STTrans2`` = Swin features + LSTFI + STDFA (docs/models.md).

(B, N, 3, H, W) RGB in [0, 1] -> (B, 2N-1, 3, 4H, 4W), frames [F0, I0.5, F1, ..., F(N-1)]; H and W
multiples of 8 (Swin windows of 8 at the input resolution); N >= 2 (official N = 4). With the official
settings it has 8,292,843 parameters and the 914 ``state_dict`` keys (842 parameters + 72 Swin buffers)
of the released ``STDAN_20220306.pth``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from stvsr.ops import DCNv2Pack, DeformableSampling, deform_sample
from stvsr.registry import ARCHS

from .base import StvsrArch
from .blocks import Easy_PCD, PCD_Align, add_pyramid_convs, check_video, interleave, lrelu, pyramid
from .swin import SwinBody


class PCD_Align_modified(PCD_Align):
    """One LSTFI step: y = fusion(PCD(A, B)); h' = pcd_h(y, hid); y = fusion_1x1([h', y]);
    hid = conv_h2(lrelu(conv_h1(y))). ``forward(hid, fea1, fea2) -> (y, hid)``."""

    def __init__(self, nf: int = 64, groups: int = 8) -> None:
        super().__init__(nf=nf, groups=groups, dcn=DCNv2Pack)
        self.fusion = nn.Conv2d(2 * nf, nf, 1, 1, bias=True)
        self.conv_h1 = nn.Conv2d(nf, nf, 3, 1, 1, bias=True)
        self.conv_h2 = nn.Conv2d(nf, nf, 3, 1, 1, bias=True)
        self.fusion_1x1 = nn.Conv2d(2 * nf, nf, 1, 1, bias=True)
        self.pcd_h = Easy_PCD(nf=nf, groups=groups, dcn=DCNv2Pack)

    def forward(self, hid: torch.Tensor, fea1, fea2) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        y = self.fusion(super().forward(fea1, fea2))
        y = self.fusion_1x1(torch.cat((self.pcd_h(y, hid), y), dim=1))
        return y, self.conv_h2(lrelu(self.conv_h1(y)))  # no activation after conv_h2


class QKVmap_generate(nn.Module):
    """Per-pixel linear maps (B, C, H, W) -> Q, K, V (keys ``w_qs``, ``w_ks``, ``w_vs``)."""

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.w_qs = nn.Linear(embed_dim, embed_dim, bias=True)
        self.w_ks = nn.Linear(embed_dim, embed_dim, bias=True)
        self.w_vs = nn.Linear(embed_dim, embed_dim, bias=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        tokens = x.permute(0, 2, 3, 1)
        return tuple(m(tokens).permute(0, 3, 1, 2) for m in (self.w_qs, self.w_ks, self.w_vs))


class Deformable_attention(nn.Module):
    """Deformable top-k attention of a query frame on one other frame (section 4.3, step 4).

    ``forward(q, k, v)`` on (P, C, H, W) batches of (query, key/value) frame pairs returns the pair
    weights w (P, H*W) and the attended values (P, C, H*W). The 3x3 deformable samples of K and V share
    one set of offsets and masks; relevance is an *unscaled* dot product, the top-2 of the 9 taps are
    softmax-weighted (quirk 1, KEEP).
    """

    def __init__(self, nf: int, kernel_size: int = 3, padding: int = 1, topk: int = 2, groups: int = 8) -> None:
        super().__init__()
        self.topk, self.kernel_size, self.padding = topk, kernel_size, padding
        self.offset_conv1 = nn.Conv2d(nf * 2, nf, 3, 1, 1, bias=True)
        self.offset_conv2 = nn.Conv2d(nf, nf, 3, 1, 1, bias=True)
        self.dcn_attention = DeformableSampling(nf, kernel_size, stride=1, padding=padding, deformable_groups=groups)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p, c, h, w = q.shape
        feat = lrelu(self.offset_conv2(lrelu(self.offset_conv1(torch.cat((q, k), dim=1)))))
        offset, mask = self.dcn_attention.offset_and_mask(feat)  # one set for K and V (as the official)
        dsp = self.dcn_attention
        ks = deform_sample(k, offset, mask, dsp.kernel_size, dsp.stride, dsp.padding, dsp.dilation,
                           dsp.deformable_groups)  # (P, C, K, HW)  # fmt: skip
        qf = q.reshape(p, c, 1, h * w)
        relevance = (ks * qf).sum(dim=1)  # (P, K, HW), no 1/sqrt(C)
        top, idx = torch.topk(relevance, self.topk, dim=1)  # (P, topk, HW)
        attn = torch.softmax(top, dim=1).unsqueeze(1)  # (P, 1, topk, HW)
        k_hat = (torch.gather(ks, 2, idx.unsqueeze(1).expand(p, c, self.topk, h * w)) * attn).sum(dim=2)
        weight = (qf.squeeze(2) * k_hat).sum(dim=1)  # (P, HW)
        v_hat = (self._sample_taps(v, offset, mask, idx) * attn).sum(dim=2)  # (P, C, HW)
        return weight, v_hat

    def _sample_taps(
        self, x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor, idx: torch.Tensor
    ) -> torch.Tensor:
        """The deformable samples of ``x`` at the selected taps only: (P, C, topk, HW).

        Equal to gathering the taps ``idx`` (P, topk, HW) from the full (P, C, K, HW) samples, without
        sampling the K - topk taps that are thrown away: each selected tap becomes a 1x1 deformable sample
        whose offset is the tap's base displacement plus its learned offset.
        """
        dsp = self.dcn_attention
        p, c, h, w = x.shape
        g, (kh, kw), topk = dsp.deformable_groups, dsp.kernel_size, idx.shape[1]
        sel = idx.view(p, topk, 1, 1, 1, h, w)
        off = offset.view(p, 1, g, kh * kw, 2, h, w).expand(p, topk, g, kh * kw, 2, h, w)
        off = torch.gather(off, 3, sel.expand(p, topk, g, 1, 2, h, w)).squeeze(3)  # P, topk, G, 2, H, W
        m = mask.view(p, 1, g, kh * kw, h, w).expand(p, topk, g, kh * kw, h, w)
        m = torch.gather(m, 3, sel.view(p, topk, 1, 1, h, w).expand(p, topk, g, 1, h, w)).squeeze(3)  # P, topk, G, H, W
        tap = sel.view(p, topk, 1, h, w).to(offset.dtype)
        base_y = torch.div(tap, kw, rounding_mode="floor") * dsp.dilation[0] - dsp.padding[0]
        base_x = torch.remainder(tap, kw) * dsp.dilation[1] - dsp.padding[1]
        off = off + torch.stack((base_y, base_x), dim=3)  # (dy, dx) interleaved per group, as the DCN layout
        samples = deform_sample(
            x.unsqueeze(1).expand(p, topk, c, h, w).reshape(p * topk, c, h, w),
            off.reshape(p * topk, 2 * g, h, w),
            m.reshape(p * topk, g, h, w),
            1,
            dsp.stride,
            0,
            1,
            g,
        )  # (P*topk, C, 1, HW)
        return samples.view(p, topk, c, h * w).transpose(1, 2)


class STDFA(nn.Module):
    """Spatial-temporal deformable feature aggregation over the 2N-1 frames (section 4.3, step 4).

    Every frame j attends to every other frame i; the (j, i) pairs run in batches of at most
    ``pair_chunk`` pairs (default: all pairs when gradients are needed, otherwise as many as fit in
    about 2**27 sampled elements) - the result does not depend on the chunking.
    """

    def __init__(self, in_chans: int = 64, embed_dim: int = 72, patch_size: int = 3, topk: int = 2) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.pair_chunk: int | None = None
        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
        self.qkv_maps = QKVmap_generate(embed_dim)
        self.deformable_corr = Deformable_attention(embed_dim, kernel_size=patch_size, padding=1, topk=topk)
        self.conv_last = nn.Conv2d(embed_dim, in_chans, 3, 1, 1)

    def _chunk(self, n_pairs: int, per_pair: int, needs_grad: bool) -> int:
        if self.pair_chunk:
            return self.pair_chunk
        if needs_grad:
            return n_pairs
        return max(1, min(n_pairs, (1 << 27) // max(1, per_pair)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C, H, W) -> (B*T, C, H, W)."""
        b, t, c, h, w = x.shape
        res = x.reshape(b * t, c, h, w)
        q, k, v = (m.view(b, t, self.embed_dim, h, w) for m in self.qkv_maps(self.conv_first(res)))
        pairs = [(j, i) for j in range(t) for i in range(t) if i != j]  # grouped by target j, i ascending
        taps = self.deformable_corr.kernel_size**2
        chunk = self._chunk(len(pairs), 2 * b * self.embed_dim * taps * h * w, torch.is_grad_enabled())
        weights, values = [], []
        for start in range(0, len(pairs), chunk):
            js, is_ = zip(*pairs[start : start + chunk])

            def sel(m, idx):
                return m[:, list(idx)].transpose(0, 1).reshape(-1, self.embed_dim, h, w)

            wgt, val = self.deformable_corr(sel(q, js), sel(k, is_), sel(v, is_))
            weights.append(wgt.view(len(js), b, h * w))
            values.append(val.view(len(js), b, self.embed_dim, h * w))
        weights = torch.cat(weights).view(t, t - 1, b, h * w)
        values = torch.cat(values).view(t, t - 1, b, self.embed_dim, h * w)
        alpha = torch.softmax(weights, dim=1).unsqueeze(3)  # over the T-1 other frames
        out = (values * alpha).sum(dim=1)  # (T, B, C, HW)
        out = out.transpose(0, 1).reshape(b * t, self.embed_dim, h, w)
        return self.conv_last(out) + res


@ARCHS.register("STTrans2", aliases=("stdan",))
class STTrans2(StvsrArch):
    """STDAN: Swin feature extraction, LSTFI (bidirectional recurrent PCD), STDFA, Swin reconstruction.

    Args (official signature; ``scale``, ``n_inputs``, ``n_outputs`` and ``window_size`` are ignored by
    the official code and here too, quirk 6):
        nf: feature channels (64).
        embed_dim: Swin and STDFA width (72); must be divisible by the heads (6) and by 8.
        img_size: the size the shifted-window ``attn_mask`` buffers are precomputed for; 32 to load the
            official checkpoint (quirk 4). ``feature_recon`` always uses 32, as the official.
        groups: deformable groups of the 12 ``DCNv2Pack`` (8).

    Keyword-only extensions (not in the official code; the defaults are the official model), for small
    test and ablation models: ``extraction_depths`` (6, 6), ``recon_depths`` (6,)*6, ``num_heads`` 6,
    ``drop_path_rate`` 0.1; and ``use_checkpoint`` (False; the official Swin option, not exposed by the
    official STTrans2): recompute the Swin blocks in the backward pass, for much less training memory.
    """

    size_divisor = 8
    upscale = 4
    official_settings: ClassVar[dict[str, Any]] = {"nf": 64, "nframes": 7, "embed_dim": 72}
    config_renames: ClassVar[dict[str, str]] = {"nframes": "n_outputs"}
    config_hidden: ClassVar[tuple[str, ...]] = ("scale",)
    config_required: ClassVar[tuple[str, ...]] = ("nf", "nframes", "embed_dim")
    config_ignored: ClassVar[tuple[str, ...]] = ("HR_in",)

    def __init__(
        self,
        scale: int = 1,
        n_inputs: int = 2,
        n_outputs: int = 1,
        nf: int = 64,
        embed_dim: int = 72,
        img_size: int = 32,
        groups: int = 8,
        window_size: int = 8,
        *,
        extraction_depths: Sequence[int] = (6, 6),
        recon_depths: Sequence[int] = (6, 6, 6, 6, 6, 6),
        num_heads: int = 6,
        drop_path_rate: float = 0.1,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        if nf % groups:
            raise ValueError(f"STTrans2: nf={nf} must be divisible by groups={groups}")
        if embed_dim % num_heads or embed_dim % 8:
            raise ValueError(f"STTrans2: embed_dim={embed_dim} must be divisible by num_heads={num_heads} and by 8")
        self.nf, self.in_frames, self.ot_frames = nf, n_inputs, n_outputs
        swin = {"embed_dim": embed_dim, "num_heads": num_heads, "window_size": 8, "mlp_ratio": 2.0,
                "drop_path_rate": drop_path_rate, "use_checkpoint": use_checkpoint}  # fmt: skip
        self.conv_first = nn.Conv2d(3, nf, 3, 1, 1, bias=True)
        add_pyramid_convs(self, nf)
        self.pcd_align_modified = PCD_Align_modified(nf=nf, groups=groups)
        self.feature_extraction = SwinBody(nf, depths=tuple(extraction_depths), img_size=img_size, **swin)
        self.stdfa = STDFA(in_chans=nf, embed_dim=embed_dim, patch_size=3, topk=2)
        self.feature_recon = SwinBody(nf, depths=tuple(recon_depths), img_size=32, **swin)
        # LeakyReLU(0.01) here, no activations inside the upsampler (quirk 2, KEEP)
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(nf, nf, 3, 1, 1), nn.LeakyReLU(0.01, inplace=True))
        self.upsample = nn.Sequential(
            nn.Conv2d(nf, 4 * nf, 3, 1, 1), nn.PixelShuffle(2), nn.Conv2d(nf, 4 * nf, 3, 1, 1), nn.PixelShuffle(2)
        )
        self.conv_last = nn.Conv2d(nf, 3, 3, 1, 1)
        self.fusion_f_b = nn.Conv2d(2 * nf, nf, 1, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c, h, w = check_video(self, x)
        l1 = lrelu(self.conv_first(x.reshape(b * n, c, h, w)))
        l1 = self.feature_extraction(l1)
        l2, l3 = pyramid(self, l1)
        levels = [t.view(b, n, *t.shape[1:]) for t in (l1, l2, l3)]
        # LSTFI: the same module runs forward over pairs (i, i+1) and backward over (N-1-i, N-2-i), each
        # direction from a zero hidden state; the two directions are one batch of 2B.
        rev = [t.flip(1) for t in levels]
        hid = x.new_zeros(2 * b, self.nf, h, w)
        steps = []
        for i in range(n - 1):
            fea1 = tuple(torch.cat((t[:, i], r[:, i]), dim=0) for t, r in zip(levels, rev))
            fea2 = tuple(torch.cat((t[:, i + 1], r[:, i + 1]), dim=0) for t, r in zip(levels, rev))
            y, hid = self.pcd_align_modified(hid, fea1, fea2)
            steps.append(y)
        fwd = torch.stack([s[:b] for s in steps], dim=1)  # pair i at index i
        bwd = torch.stack([s[b:] for s in steps[::-1]], dim=1)  # re-reversed: pair i at index i
        mids = self.fusion_f_b(torch.cat((fwd, bwd), dim=2).view(b * (n - 1), 2 * self.nf, h, w))
        seq = interleave(levels[0], mids.view(b, n - 1, self.nf, h, w))  # (B, 2N-1, nf, H, W)
        t = seq.shape[1]
        feats = self.feature_recon(self.stdfa(seq))
        feats = self.conv_last(self.upsample(self.conv_before_upsample(feats)))
        return feats.view(b, t, 3, self.upscale * h, self.upscale * w)
