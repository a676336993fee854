"""Swin-V2 reconstruction body used by MSITF (the modified ``Swin2SR``; docs/models.md, MSITF).

Differences from STDAN's Swin body (:mod:`stvsr.archs.swin`), all from Swin Transformer V2 / Swin2SR:

- **cosine attention**: cos(q, k) * exp(min(logit_scale, ln 100)), ``logit_scale`` (heads, 1, 1) learned,
  initialised to ln 10;
- **continuous position bias**: 16 * sigmoid(cpb_mlp(log-spaced relative coordinates)), with ``cpb_mlp`` =
  Linear(2, 512) -> ReLU -> Linear(512, heads, no bias) on the ``relative_coords_table`` buffer;
- qkv without bias, plus learned ``q_bias`` and ``v_bias`` (the key bias is 0);
- **post-norm** blocks: x + DropPath(norm1(attn(x))), then x + DropPath(norm2(mlp(x)));
- patch embeddings with a 1x1 ``proj`` conv (an MSITF modification; the body's one also has a LayerNorm, the
  RSTBs' ones have none); no upsampler inside.

Key names follow the official checkpoint: ``conv_first``, ``patch_embed.{proj, norm}``,
``layers.<i>.residual_group.blocks.<j>.{attn_mask (odd j), norm1, attn.{logit_scale, q_bias, v_bias,
relative_coords_table, relative_position_index, cpb_mlp.0, cpb_mlp.2, qkv, proj}, norm2, mlp.{fc1, fc2}}``,
``layers.<i>.{conv, patch_embed.proj}``, ``norm``, ``conv_after_body``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .swin import BasicLayer, SwinTransformerBlock, init_transformer_weights, relative_position_index

LOGIT_SCALE_MAX = math.log(1.0 / 0.01)  # exp(logit_scale) is clamped at 100


def relative_coords_table(ws: int) -> torch.Tensor:
    """(1, 2ws-1, 2ws-1, 2) float32: (dy, dx) in [-(ws-1), ws-1], / (ws-1), x 8, then sign * log2(1+|.|) / 3."""
    rel = torch.arange(-(ws - 1), ws, dtype=torch.float32)
    table = torch.stack(torch.meshgrid(rel, rel, indexing="ij"), dim=-1).unsqueeze(0)
    table = table / max(ws - 1, 1) * 8  # official: / (window - 1), then x 8 (a window of 1 has only (0, 0))
    return torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)


class WindowAttentionV2(nn.Module):
    """Cosine multi-head self-attention inside windows with a continuous (MLP) relative position bias."""

    def __init__(self, dim: int, window_size: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"Swin: dim={dim} is not divisible by num_heads={num_heads}")
        self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
        self.logit_scale = nn.Parameter(torch.log(10 * torch.ones(num_heads, 1, 1)))
        self.cpb_mlp = nn.Sequential(
            nn.Linear(2, 512, bias=True), nn.ReLU(inplace=True), nn.Linear(512, num_heads, bias=False)
        )
        self.register_buffer("relative_coords_table", relative_coords_table(window_size))
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def position_bias(self) -> torch.Tensor:
        """(heads, N, N): 16 * sigmoid(cpb_mlp(table)) gathered by ``relative_position_index``."""
        n = self.window_size**2
        table = self.cpb_mlp(self.relative_coords_table).view(-1, self.num_heads)
        bias = table[self.relative_position_index.view(-1)].view(n, n, self.num_heads).permute(2, 0, 1)
        return 16 * torch.sigmoid(bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B*nW, N, C); mask: (nW, N, N) or None."""
        bw, n, c = x.shape
        qkv_bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, qkv_bias).view(bw, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B*nW, heads, N, d)
        scale = torch.clamp(self.logit_scale, max=LOGIT_SCALE_MAX).exp()  # (heads, 1, 1)
        q = F.normalize(q, dim=-1) * scale
        k = F.normalize(k, dim=-1)
        bias = self.position_bias()
        nw = 1
        if mask is not None:
            nw = mask.shape[0]
            bias = bias.unsqueeze(0) + mask.to(bias.dtype).unsqueeze(1)  # nW, heads, N, N
        bias = bias.reshape(1, nw * self.num_heads, n, n).to(q.dtype)
        # softmax(scale * cos(q, k) + bias + mask) v, the windows of one image folded into the head dimension so
        # that bias and mask broadcast over the batch. As in swin.py: the plain formula for CPU training (its
        # backward is faster there), fused attention otherwise.
        q, k, v = (t.reshape(bw // nw, nw * self.num_heads, n, -1) for t in (q, k, v))
        if x.device.type == "cpu" and torch.is_grad_enabled():
            out = torch.matmul(torch.softmax(torch.matmul(q, k.transpose(-2, -1)) + bias, dim=-1), v)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0)
        return self.proj(out.reshape(bw, self.num_heads, n, -1).transpose(1, 2).reshape(bw, n, c))


class SwinV2Block(SwinTransformerBlock):
    """Post-norm Swin-V2 block: x += DropPath(LN(W-MSA(x))); x += DropPath(LN(MLP(x))); odd blocks shift.

    The same modules, buffers and key order as the pre-norm block, with the V2 window attention."""

    attention = WindowAttentionV2

    def forward(self, x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path(self.norm1(self.shifted_window_attention(x, x_size)))
        return x + self.drop_path(self.norm2(self.mlp(x)))


class BasicLayerV2(BasicLayer):
    block = SwinV2Block


class PatchEmbed1x1(nn.Module):
    """(B, C, H, W) -> (B, H*W, C) tokens through a 1x1 conv ``proj`` and an optional LayerNorm ``norm``."""

    def __init__(self, dim: int, norm: bool) -> None:
        super().__init__()
        self.proj = nn.Conv2d(dim, dim, 1, 1)
        self.norm = nn.LayerNorm(dim) if norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.proj(x).flatten(2).transpose(1, 2)
        return self.norm(t) if self.norm is not None else t


def _unembed(t: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
    """(B, H*W, C) tokens -> (B, C, H, W)."""
    b, _length, c = t.shape
    return t.transpose(1, 2).reshape(b, c, *x_size)


class RSTBV2(nn.Module):
    """Residual Swin-V2 group: tokens + patch_embed(conv(unembed(BasicLayerV2(tokens))))."""

    def __init__(self, dim: int, **layer_kwargs) -> None:
        super().__init__()
        self.residual_group = BasicLayerV2(dim, **layer_kwargs)
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)
        self.patch_embed = PatchEmbed1x1(dim, norm=False)

    def forward(self, x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
        return self.patch_embed(self.conv(_unembed(self.residual_group(x, x_size), x_size))) + x


class Swin2SRBody(nn.Module):
    """MSITF's ``recon_trunk``: y = conv_first(x); y + conv_after_body(unembed(norm(RSTBs(patch_embed(y))))).

    (B, in_chans, H, W) -> (B, embed_dim, H, W); H and W must be multiples of ``window_size`` (MSITF pads its
    features to multiples of 8). The shifted blocks' ``attn_mask`` buffers are precomputed for ``img_size``
    x ``img_size`` and computed for other sizes. Stochastic depth linspace(0, drop_path_rate, total blocks),
    active in training (MSITF quirk 11, KEEP). Init as Swin2SR: every Linear trunc_normal(0.02) with zero bias,
    LayerNorm (1, 0); convs PyTorch default; q_bias = v_bias = 0, logit_scale ln 10.
    """

    def __init__(
        self,
        in_chans: int = 64,
        embed_dim: int = 64,
        depths: Sequence[int] = (2, 2, 2, 2, 2, 2),
        num_heads: Sequence[int] | int = 4,
        window_size: int = 8,
        mlp_ratio: float = 2.0,
        img_size: int = 32,
        drop_path_rate: float = 0.1,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        heads = [num_heads] * len(depths) if isinstance(num_heads, int) else list(num_heads)
        if len(heads) != len(depths):
            raise ValueError(f"Swin: {len(heads)} num_heads for {len(depths)} depths")
        self.window_size = window_size
        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
        self.patch_embed = PatchEmbed1x1(embed_dim, norm=True)
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            start = sum(depths[:i])
            self.layers.append(
                RSTBV2(
                    embed_dim,
                    input_resolution=(img_size, img_size),
                    depth=depth,
                    num_heads=heads[i],
                    window_size=window_size,
                    mlp_ratio=mlp_ratio,
                    drop_path=dpr[start : start + depth],
                    use_checkpoint=use_checkpoint,
                )
            )
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
        self.apply(init_transformer_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h % self.window_size or w % self.window_size:
            raise ValueError(f"Swin2SRBody: feature size {h}x{w} is not a multiple of the window {self.window_size}")
        y = self.conv_first(x)
        t = self.patch_embed(y)
        for layer in self.layers:
            t = layer(t, (h, w))
        return self.conv_after_body(_unembed(self.norm(t), (h, w))) + y
