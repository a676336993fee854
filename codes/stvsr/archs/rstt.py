"""RSTT (CVPR 2022): ``RSTT`` (``models/RSTT.py``, ``models/layers.py``; docs/models.md, RSTT).

(B, 4, 3, h, w) RGB in [0, 1] -> (B, 7, 3, 4h, 4w), frames [F0, I0.5, F1, ..., F3], not clamped; any h and w
(the model zero-pads its features to multiples of 2^(encoder layers - 1) = 8 itself and crops back); exactly
``num_frames`` input frames (the relative position tables are sized for them). With the official settings
(``embed_dim=96``, ``num_heads=[2, 4, 8, 16, 16, 8, 4, 2]``, ``window_sizes=[[4, 4]] * 8``, ``back_RBs=0``) and
``depths=[4]*8`` / ``[6]*8`` / ``[8]*8`` it is RSTT-S / M / L: 4,485,275 / 6,079,895 / 7,674,515 parameters and
the 728 / 1,080 / 1,432 ``state_dict`` keys of the released checkpoints. No deformable convolution.

Pipeline: trilinear residual base; per-frame conv 3x3 + LeakyReLU(0.01); zero-pad; an encoder of 4 layers of
3-D (frames x window) shifted-window self-attention blocks, each followed (but the last) by a stride-2 conv;
query frames at the coarsest level (input frames and the means of neighbours); a decoder of 4 layers whose
blocks attend to themselves (7 frames) and to the encoder output of the same level (4 frames at temporal
coordinates 0, 2, 4, 6), with transposed-conv x2 between layers; crop; the ZSM x4 head; + the base.

The Swin pieces (window partition, shift masks, windowed attention, MLP, stochastic depth) are those of
:mod:`stvsr.archs.swin`; the 3-D attention folds the frames of a window into its tokens.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from stvsr.registry import ARCHS

from .base import StvsrArch
from .blocks import ResidualBlock_noBN, add_zsm_head, check_video, make_layer, zsm_head
from .msitf import trilinear_base
from .swin import (
    DropPath,
    Mlp,
    init_transformer_weights,
    shifted_window_mask,
    window_attention,
    window_partition,
    window_reverse,
)

Pair = tuple[int, int]

OFFICIAL_HEADS = (2, 4, 8, 16, 16, 8, 4, 2)
OFFICIAL_WINDOWS = ((4, 4),) * 8
VARIANT_DEPTHS = {"S": 4, "M": 6, "L": 8}  # depths = [d] * 8


def frame_coordinates(frames_q: int, frames_kv: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Temporal coordinates of the query and key frames: 0..Dq-1, and every ((Dq + 1) // Dkv)-th of them for
    the keys (the encoder frames 0, 2, 4, 6 among the 7 decoder frames; 0..D-1 for self-attention)."""
    return torch.arange(frames_q), torch.arange(0, frames_q, (frames_q + 1) // frames_kv)


def relative_position_index_3d(frames_q: int, frames_kv: int, table_window: Pair, window: Pair | None = None):
    """(Dq*wh*ww, Dkv*wh*ww) int64 index into a (2 Dq - 1)(2 Wh - 1)(2 Ww - 1) bias table built for the window
    ``table_window`` = (Wh, Ww): (dt + Dq - 1)(2 Wh - 1)(2 Ww - 1) + (dy + Wh - 1)(2 Ww - 1) + (dx + Ww - 1), with
    d = query - key coordinates; tokens ordered (frame, row, column).

    ``window`` (default ``table_window``) is the window actually used: smaller when a feature side is smaller
    than the window. The official code then fails (its index is only for the full window); here the same table
    is indexed by the true offsets, which is the full-window index wherever both exist.
    """
    wh, ww = table_window
    uh, uw = window or table_window
    tq, tkv = frame_coordinates(frames_q, frames_kv)
    ys, xs = torch.arange(uh), torch.arange(uw)
    q = torch.stack(torch.meshgrid(tq, ys, xs, indexing="ij")).flatten(1)  # 3, Nq
    kv = torch.stack(torch.meshgrid(tkv, ys, xs, indexing="ij")).flatten(1)  # 3, Nkv
    rel = q[:, :, None] - kv[:, None, :]  # 3, Nq, Nkv
    return (rel[0] + frames_q - 1) * (2 * wh - 1) * (2 * ww - 1) + (rel[1] + wh - 1) * (2 * ww - 1) + (rel[2] + ww - 1)


def fit_window(size: Pair, window: Pair, shift: Pair) -> tuple[Pair, Pair]:
    """The window and shift used on an (H, W) feature map: a side not larger than the window becomes the window
    side, unshifted (official ``get_window_size``)."""
    used, moved = list(window), list(shift)
    for i in range(2):
        if size[i] <= window[i]:
            used[i], moved[i] = size[i], 0
    return (used[0], used[1]), (moved[0], moved[1])


def video_windows(x: torch.Tensor, window: Pair) -> torch.Tensor:
    """(B, D, H, W, C) -> (B*nW, D*wh*ww, C): windows ordered (batch, row, column), tokens (frame, row, column)."""
    b, d, h, w, c = x.shape
    n = window[0] * window[1]
    y = window_partition(x.reshape(b * d, h, w, c), window)  # (B*D*nW, n, C)
    return y.view(b, d, -1, n, c).transpose(1, 2).reshape(-1, d * n, c)


def video_unwindows(y: torch.Tensor, window: Pair, b: int, d: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`video_windows`: (B*nW, D*wh*ww, C) -> (B, D, H, W, C)."""
    n, c = window[0] * window[1], y.shape[-1]
    y = y.view(b, -1, d, n, c).transpose(1, 2).reshape(-1, n, c)
    return window_reverse(y, window, h, w).view(b, d, h, w, c)


class WindowAttention3D(nn.Module):
    """Multi-head (cross-)attention inside 3-D windows (frames x wh x ww) with a relative position bias over
    (time, y, x). Keys: ``relative_position_bias_table`` ((2 Dq - 1)(2 wh - 1)(2 ww - 1), heads),
    ``relative_position_index`` (buffer), ``q`` (C -> C), ``kv`` (C -> 2C), ``proj``; scale head_dim^-0.5."""

    def __init__(
        self,
        dim: int,
        frames_q: int,
        frames_kv: int,
        window_size: Pair,
        num_heads: int,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
    ) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"RSTT: embed_dim={dim} is not divisible by num_heads={num_heads}")
        self.frames_q, self.frames_kv, self.window_size, self.num_heads = frames_q, frames_kv, window_size, num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        wh, ww = window_size
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * frames_q - 1) * (2 * wh - 1) * (2 * ww - 1), num_heads)
        )
        self.register_buffer("relative_position_index", relative_position_index_3d(frames_q, frames_kv, window_size))
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self._indices: dict[tuple, torch.Tensor] = {}  # indices of smaller windows, per window and device

    def _index(self, window: Pair) -> torch.Tensor:
        if window == tuple(self.window_size):
            return self.relative_position_index
        key = (window, self.relative_position_index.device)
        if key not in self._indices:
            index = relative_position_index_3d(self.frames_q, self.frames_kv, self.window_size, window)
            self._indices[key] = index.to(self.relative_position_index.device)
        return self._indices[key]

    def forward(self, x: torch.Tensor, kv: torch.Tensor | None, mask: torch.Tensor | None, window: Pair):
        """x: (B*nW, Dq*n, C) query tokens; kv: (B*nW, Dkv*n, C) or None (self-attention); mask: (nW, Nq, Nkv)."""
        kv = x if kv is None else kv
        bw, n1, c = x.shape
        n2 = kv.shape[1]
        heads = self.num_heads
        q = self.q(x).view(bw, n1, heads, c // heads).transpose(1, 2)
        k, v = self.kv(kv).view(bw, n2, 2, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)
        bias = self.relative_position_bias_table[self._index(window).reshape(-1)].view(n1, n2, heads)
        out = window_attention(q, k, v, bias.permute(2, 0, 1), mask, self.scale)
        return self.proj(out.transpose(1, 2).reshape(bw, n1, c))


def shifted_attention(
    attn: WindowAttention3D,
    x: torch.Tensor,
    kv: torch.Tensor | None,
    window: Pair,
    shift: Pair,
    mask: torch.Tensor | None,
) -> torch.Tensor:
    """(Shifted-)window attention of normalised video tokens x (B, Dq, H, W, C) to kv (B, Dkv, H, W, C) or to
    themselves: zero-pad H, W bottom/right to the window, roll by -shift, attend in windows, undo, crop."""
    b, dq, h, w, _ = x.shape
    ph, pw = (-h) % window[0], (-w) % window[1]
    shifted = shift[0] > 0 or shift[1] > 0
    streams = [x] if kv is None else [x, kv]
    for i, t in enumerate(streams):
        t = F.pad(t, (0, 0, 0, pw, 0, ph))
        if shifted:
            t = torch.roll(t, shifts=(-shift[0], -shift[1]), dims=(2, 3))
        streams[i] = video_windows(t, window)
    y = attn(streams[0], streams[1] if kv is not None else None, mask if shifted else None, window)
    y = video_unwindows(y, window, b, dq, h + ph, w + pw)
    if shifted:
        y = torch.roll(y, shifts=(shift[0], shift[1]), dims=(2, 3))
    return y[:, :, :h, :w]


class EncoderBlock(nn.Module):
    """``VSTSREncoderTransformerBlock``: x += DP(attn(LN1(x))) over the D frames of each window;
    x += DP(MLP(LN2(x)))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_frames: int,
        window_size: Pair,
        shift_size: Pair,
        mlp_ratio: float,
        qkv_bias: bool,
        qk_scale: float | None,
        drop_path: float,
    ) -> None:
        super().__init__()
        self.window_size, self.shift_size = window_size, shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention3D(dim, num_frames, num_frames, window_size, num_heads, qkv_bias, qk_scale)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: (B, D, H, W, C); mask: the layer's shift mask for this block's window (None: no shift)."""
        window, shift = fit_window(x.shape[2:4], self.window_size, self.shift_size)
        x = x + self.drop_path(shifted_attention(self.attn, self.norm1(x), None, window, shift, mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class DecoderBlock(nn.Module):
    """``VSTSRDecoderTransformerBlock``: x += DP(self-attn(LN1(x))) over the 2D-1 query frames;
    x += DP(cross-attn(LN2(x), norm_kv(enc))) to the D encoder frames; x += DP(MLP(LN3(x)))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_frames: int,
        window_size: Pair,
        shift_size: Pair,
        mlp_ratio: float,
        qkv_bias: bool,
        qk_scale: float | None,
        drop_path: float,
    ) -> None:
        super().__init__()
        out_frames = 2 * num_frames - 1
        self.window_size, self.shift_size = window_size, shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = WindowAttention3D(dim, out_frames, out_frames, window_size, num_heads, qkv_bias, qk_scale)
        self.attn2 = WindowAttention3D(dim, out_frames, num_frames, window_size, num_heads, qkv_bias, qk_scale)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(
        self, x: torch.Tensor, enc: torch.Tensor, mask_q: torch.Tensor | None, mask_kv: torch.Tensor | None
    ) -> torch.Tensor:
        """x: (B, 2D-1, H, W, C) queries; enc: (B, D, H, W, C) encoder features of the same level."""
        window, shift = fit_window(x.shape[2:4], self.window_size, self.shift_size)
        x = x + self.drop_path(shifted_attention(self.attn1, self.norm1(x), None, window, shift, mask_q))
        x = x + self.drop_path(shifted_attention(self.attn2, self.norm2(x), self.norm_kv(enc), window, shift, mask_kv))
        return x + self.drop_path(self.mlp(self.norm3(x)))


def layer_mask(size: Pair, window: Pair, shift: Pair, frames_q: int, frames_kv: int, like: torch.Tensor):
    """The shift mask of a layer's shifted blocks, (nW, Dq*n, Dkv*n): the 2-D Swin mask of the padded map,
    the same for every pair of frames (official ``EncoderLayer``/``DecoderLayer``); None when unshifted."""
    window, shift = fit_window(size, window, shift)
    if not (shift[0] or shift[1]):
        return None
    hp, wp = -(-size[0] // window[0]) * window[0], -(-size[1] // window[1]) * window[1]
    mask = shifted_window_mask(hp, wp, window, shift).to(device=like.device, dtype=like.dtype)
    return mask.repeat(1, frames_q, frames_kv)


class EncoderLayer(nn.Module):
    """``depth`` encoder blocks, odd ones shifted by half a window. (B, D, C, H, W) -> (B, D, C, H, W)."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        num_frames: int,
        window_size: Pair,
        drop_path: Sequence[float],
        **block,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = (window_size[0] // 2, window_size[1] // 2)
        self.num_frames = num_frames
        self.blocks = nn.ModuleList(
            EncoderBlock(
                dim,
                num_heads,
                num_frames,
                window_size,
                (0, 0) if i % 2 == 0 else self.shift_size,
                drop_path=drop_path[i],
                **block,
            )
            for i in range(depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 1, 3, 4, 2)  # B, D, H, W, C
        d, h, w = x.shape[1:4]
        mask = layer_mask((h, w), self.window_size, self.shift_size, d, d, x)
        for block in self.blocks:
            x = block(x, mask)
        return x.permute(0, 1, 4, 2, 3)


class DecoderLayer(nn.Module):
    """``depth`` decoder blocks attending to one encoder output. (B, 2D-1, C, H, W), (B, D, C, H, W) ->
    (B, 2D-1, C, H, W)."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        num_frames: int,
        window_size: Pair,
        drop_path: Sequence[float],
        **block,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = (window_size[0] // 2, window_size[1] // 2)
        self.blocks = nn.ModuleList(
            DecoderBlock(
                dim,
                num_heads,
                num_frames,
                window_size,
                (0, 0) if i % 2 == 0 else self.shift_size,
                drop_path=drop_path[i],
                **block,
            )
            for i in range(depth)
        )

    def forward(self, x: torch.Tensor, enc: torch.Tensor) -> torch.Tensor:
        x, enc = x.permute(0, 1, 3, 4, 2), enc.permute(0, 1, 3, 4, 2)  # B, D, H, W, C
        dq, h, w, dkv = x.shape[1], x.shape[2], x.shape[3], enc.shape[1]
        mask_q = layer_mask((h, w), self.window_size, self.shift_size, dq, dq, x)
        mask_kv = layer_mask((h, w), self.window_size, self.shift_size, dq, dkv, x)
        for block in self.blocks:
            x = block(x, enc, mask_q, mask_kv)
        return x.permute(0, 1, 4, 2, 3)


class InputProj(nn.Module):
    """Per-frame conv 3x3 + LeakyReLU(0.01) (key ``input_proj.proj.0``)."""

    def __init__(self, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(in_chans, embed_dim, 3, 1, 1), nn.LeakyReLU(0.01, inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, d = x.shape[:2]
        return self.proj(x.flatten(0, 1)).unflatten(0, (b, d))


class Downsample(nn.Module):
    """Per-frame Conv2d(k4, s2, p1) (key ``downsample.i.conv.0``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(dim, dim, kernel_size=4, stride=2, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, d = x.shape[:2]
        return self.conv(x.flatten(0, 1)).unflatten(0, (b, d))


class Upsample(nn.Module):
    """Per-frame ConvTranspose2d(k2, s2) (key ``upsample.i.deconv.0``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.deconv = nn.Sequential(nn.ConvTranspose2d(dim, dim, kernel_size=2, stride=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, d = x.shape[:2]
        return self.deconv(x.flatten(0, 1)).unflatten(0, (b, d))


def query_frames(x: torch.Tensor) -> torch.Tensor:
    """(B, D, ...) -> (B, 2D-1, ...): frame 2k = x[k], frame 2k+1 = (x[k] + x[k+1]) / 2."""
    mids = (x[:, :-1] + x[:, 1:]) / 2
    pairs = torch.stack((x[:, :-1], mids), dim=2).flatten(1, 2)
    return torch.cat((pairs, x[:, -1:]), dim=1)


@ARCHS.register("RSTT", aliases=("rstt",))
class RSTT(StvsrArch):
    """RSTT: a Swin-style U-shaped encoder-decoder over space and time, on a trilinear residual base.

    Args (the official signature and defaults; the official *settings* are RSTT-S/M/L, ``depths`` [4]*8,
    [6]*8, [8]*8 with ``back_RBs=0``, see :meth:`official_network`):
        in_chans: input channels (3).
        embed_dim: feature channels (96), divisible by every ``num_heads``.
        depths: blocks per layer, encoder layers then decoder layers (an even number of layers).
        num_heads: attention heads per layer.
        num_frames: input frames (4): the model takes exactly this many and gives 2 * num_frames - 1.
        window_sizes: (wh, ww) window per layer.
        mlp_ratio: MLP hidden / embed_dim (2).
        qkv_bias, qk_scale: bias of ``q``/``kv``; attention scale (None: head_dim^-0.5).
        drop_path_rate: stochastic depth, linspace(0, rate) over the encoder blocks, reversed in the decoder (0.1,
            active in training).
        back_RBs: residual blocks before the upsampler (``recon_trunk``; 0 in the official configs).

    The official constructor also takes ``drop_rate``, ``attn_drop_rate``, ``norm_layer`` and ``patch_norm``;
    the official configs leave them at their defaults (no dropout, LayerNorm), which this model implements.
    """

    size_divisor = 1  # any LR size: padded to multiples of 8 inside, as the official model
    upscale = 4
    # RSTT-S (configs/RSTT-S-eval-*.yml); M and L: official_network("M") / ("L")
    official_settings: ClassVar[dict[str, Any]] = {
        "embed_dim": 96,
        "depths": [VARIANT_DEPTHS["S"]] * 8,
        "num_heads": list(OFFICIAL_HEADS),
        "window_sizes": [list(w) for w in OFFICIAL_WINDOWS],
        "back_RBs": 0,
    }
    config_required: ClassVar[tuple[str, ...]] = ("embed_dim", "depths", "num_heads", "window_sizes", "back_RBs")

    @classmethod
    def official_network(cls, variant: str = "S") -> dict[str, Any]:
        """The ``network_G`` of ``configs/RSTT-{S,M,L}.yml``."""
        return {
            "which_model_G": "RSTT",
            **copy.deepcopy(cls.official_settings),
            "depths": [VARIANT_DEPTHS[variant.upper()]] * 8,
        }

    def __init__(
        self,
        in_chans: int = 3,
        embed_dim: int = 96,
        depths: Sequence[int] = (8,) * 8,
        num_heads: Sequence[int] = OFFICIAL_HEADS,
        num_frames: int = 4,
        window_sizes: Sequence[Sequence[int]] | None = None,
        mlp_ratio: float = 2.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_path_rate: float = 0.1,
        back_RBs: int = 0,
    ) -> None:
        super().__init__()
        depths, num_heads = [int(d) for d in depths], [int(h) for h in num_heads]
        windows = [tuple(w) for w in (OFFICIAL_WINDOWS if window_sizes is None else window_sizes)]
        layers = len(depths)
        if layers < 2 or layers % 2 or min(depths) < 1:
            raise ValueError(f"RSTT: depths={depths} must list an even number (>= 2) of positive block counts")
        if len(num_heads) != layers:
            raise ValueError(f"RSTT: num_heads={num_heads} must have one entry per layer ({layers})")
        if len(windows) != layers or any(len(w) != 2 or min(w) < 1 for w in windows):
            raise ValueError(f"RSTT: window_sizes={window_sizes} must be {layers} pairs [h, w] of positive ints")
        if num_frames < 2:
            raise ValueError(f"RSTT: num_frames={num_frames} must be >= 2")
        n_enc = layers // 2
        enc_dpr = torch.linspace(0, drop_path_rate, sum(depths[:n_enc])).tolist()
        dec_dpr = enc_dpr[::-1]
        if sum(depths[n_enc:]) > len(dec_dpr):
            raise ValueError(f"RSTT: depths={depths}: the decoder has more blocks than the encoder (official rule)")
        self.embed_dim, self.num_frames, self.num_layers = embed_dim, num_frames, layers
        self.num_enc_layers = self.num_dec_layers = n_enc
        self.scale = 2 ** (n_enc - 1)  # the official attribute: the padding multiple of the features
        self.input_frames = num_frames  # the evaluator and stvsr-infer feed exactly this many frames
        block = {"mlp_ratio": mlp_ratio, "qkv_bias": qkv_bias, "qk_scale": qk_scale}

        self.input_proj = InputProj(in_chans, embed_dim)
        self.encoder_layers = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for i in range(n_enc):
            start = sum(depths[:i])
            self.encoder_layers.append(
                EncoderLayer(
                    embed_dim,
                    depths[i],
                    num_heads[i],
                    num_frames,
                    windows[i],
                    drop_path=enc_dpr[start : start + depths[i]],
                    **block,
                )
            )
            self.downsample.append(Downsample(embed_dim))  # the last one is built but unused (quirk 1, KEEP)
        self.decoder_layers = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in range(n_enc):
            j, start = n_enc + i, sum(depths[n_enc : n_enc + i])
            self.decoder_layers.append(
                DecoderLayer(
                    embed_dim,
                    depths[j],
                    num_heads[j],
                    num_frames,
                    windows[j],
                    drop_path=dec_dpr[start : start + depths[j]],
                    **block,
                )
            )
            if i != n_enc - 1:
                self.upsample.append(Upsample(embed_dim))
        self.recon_trunk = make_layer(ResidualBlock_noBN, back_RBs, nf=embed_dim)
        add_zsm_head(self, embed_dim)
        for m in self.modules():  # official _init_weights (after the RBs' own init, which it leaves alone)
            init_transformer_weights(m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _, h, w = check_video(self, x, min_frames=self.num_frames)
        if n != self.num_frames:
            raise ValueError(
                f"RSTT takes exactly num_frames={self.num_frames} input frames (its attention tables are sized for "
                f"them), got N={n}: feed windows of {self.num_frames} LR frames (the protocol's 7-frame windows)"
            )
        base = trilinear_base(x, self.upscale)
        feats = self.input_proj(x)
        hp, wp = -(-h // self.scale) * self.scale, -(-w // self.scale) * self.scale
        feats = F.pad(feats, (0, wp - w, 0, hp - h))  # zero features bottom/right
        encoded = []
        for i, layer in enumerate(self.encoder_layers):
            feats = layer(feats)
            encoded.append(feats)
            if i != self.num_enc_layers - 1:
                feats = self.downsample[i](feats)
        y = query_frames(feats)
        for i, layer in enumerate(self.decoder_layers):
            y = layer(y, encoded[-i - 1])
            if i != self.num_dec_layers - 1:
                y = self.upsample[i](y)
        t = y.shape[1]
        y = y[:, :, :, :h, :w].reshape(b * t, self.embed_dim, h, w)
        out = zsm_head(self, self.recon_trunk(y))
        return out.view(b, t, 3, self.upscale * h, self.upscale * w) + base
