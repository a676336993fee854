"""Swin Transformer body used by STDAN (``Spatial_decoder``, SwinIR-like; docs/models.md).

Key names follow the official checkpoint: ``conv_first``, ``patch_embed.norm``, ``layers.<i>.residual_group.
blocks.<j>.{norm1, attn.{relative_position_bias_table, relative_position_index, qkv, proj}, norm2, mlp.{fc1,
fc2}}``, ``attn_mask`` on shifted blocks (a buffer precomputed for ``img_size``), ``layers.<i>.conv``, ``norm``,
``conv_after_body``, ``conv_last``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


def _pair(ws: int | Sequence[int]) -> tuple[int, int]:
    return (ws, ws) if isinstance(ws, int) else (int(ws[0]), int(ws[1]))


def window_partition(x: torch.Tensor, ws: int | Sequence[int]) -> torch.Tensor:
    """(B, H, W, C) -> (B*nW, wh*ww, C), windows row-major, tokens row-major inside a window.

    ``ws`` is the window side, or (wh, ww) for a rectangular window (RSTT's windows shrink to a small side).
    """
    b, h, w, c = x.shape
    wh, ww = _pair(ws)
    x = x.view(b, h // wh, wh, w // ww, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, wh * ww, c)


def window_reverse(windows: torch.Tensor, ws: int | Sequence[int], h: int, w: int) -> torch.Tensor:
    """(B*nW, wh*ww, C) -> (B, H, W, C); inverse of :func:`window_partition`."""
    c = windows.shape[-1]
    wh, ww = _pair(ws)
    x = windows.view(-1, h // wh, w // ww, wh, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, h, w, c)


def relative_position_index(ws: int) -> torch.Tensor:
    """(ws*ws, ws*ws) int64: (y_a - y_b + ws - 1) * (2 ws - 1) + (x_a - x_b + ws - 1)."""
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)  # 2, N
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)  # N, N, 2
    return rel[:, :, 0] * (2 * ws - 1) + rel[:, :, 1]


def shifted_window_mask(h: int, w: int, ws: int | Sequence[int], shift: int | Sequence[int]) -> torch.Tensor:
    """(nW, wh*ww, wh*ww) float: -100 between tokens of different shift regions, 0 otherwise.

    ``ws`` and ``shift`` may be (h, w) pairs; a side with shift 0 is not split (one region along it, as the
    official slicing ``slice(-0, None)`` gives).
    """
    (wh, ww), (sh, sw) = _pair(ws), _pair(shift)

    def bands(size: int, shift: int) -> tuple[slice, ...]:
        return (slice(0, -size), slice(-size, -shift), slice(-shift, None)) if shift else (slice(None),)

    region = torch.zeros(1, h, w, 1)
    count = 0
    for hs in bands(wh, sh):
        for wsl in bands(ww, sw):
            region[:, hs, wsl, :] = count
            count += 1
    windows = window_partition(region, (wh, ww)).squeeze(-1)  # nW, N
    diff = windows.unsqueeze(1) - windows.unsqueeze(2)
    return diff.masked_fill(diff != 0, -100.0).masked_fill(diff == 0, 0.0)


def window_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, mask: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """softmax(q k^T * scale + bias + mask) v inside windows.

    q: (B*nW, heads, N1, d); k, v: (B*nW, heads, N2, d) (N2 = N1 for self-attention); bias: (heads, N1, N2);
    mask: (nW, N1, N2) or None, the windows of one image consecutive (as :func:`window_partition` orders them).
    Returns (B*nW, heads, N1, d).
    """
    bw, heads, n1, _ = q.shape
    n2 = k.shape[2]
    nw = 1
    if mask is not None:
        nw = mask.shape[0]
        bias = bias.unsqueeze(0) + mask.to(bias.dtype).unsqueeze(1)  # nW, heads, N1, N2
    bias = bias.reshape(1, nw * heads, n1, n2).to(q.dtype)
    # The windows of one image are folded into the head dimension so that bias and mask broadcast over the
    # batch. Fused attention serves inference; training on CPU uses the plain formula (the same computation),
    # whose backward there is faster and steadier than the fused kernel's.
    q = q.reshape(bw // nw, nw * heads, n1, -1)
    k, v = (t.reshape(bw // nw, nw * heads, n2, -1) for t in (k, v))
    if q.device.type == "cpu" and torch.is_grad_enabled():
        attn = torch.softmax(torch.matmul(q * scale, k.transpose(-2, -1)) + bias, dim=-1)
        out = torch.matmul(attn, v)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
    return out.reshape(bw, heads, n1, -1)


class DropPath(nn.Module):
    """Stochastic depth per sample, active in training only (STDAN quirk 3: KEEP)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.dim() - 1)
        return x * (keep + torch.rand(shape, dtype=x.dtype, device=x.device)).floor_().div_(keep)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside windows, with a learned relative position bias."""

    def __init__(self, dim: int, window_size: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window_size))
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B*nW, N, C); mask: (nW, N, N) or None."""
        bw, n, c = x.shape
        qkv = self.qkv(x).view(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B*nW, heads, N, d)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, -1).permute(2, 0, 1)  # heads, N, N
        out = window_attention(q, k, v, bias, mask, self.scale)
        return self.proj(out.transpose(1, 2).reshape(bw, n, c))


class SwinTransformerBlock(nn.Module):
    """Pre-norm Swin block: x += DropPath(W-MSA(LN(x))); x += DropPath(MLP(LN(x))); odd blocks shift.

    Subclasses change ``attention`` (the window attention class) and :meth:`forward` (the norm placement).
    """

    attention: type[nn.Module] = WindowAttention

    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        num_heads: int,
        window_size: int = 8,
        shift_size: int = 0,
        mlp_ratio: float = 2.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.input_resolution = tuple(input_resolution)
        if min(self.input_resolution) <= window_size:  # official: no partition when the window covers all
            shift_size, window_size = 0, min(self.input_resolution)
        self.window_size, self.shift_size = window_size, shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = self.attention(dim, window_size, num_heads)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        mask = shifted_window_mask(*self.input_resolution, window_size, shift_size) if shift_size > 0 else None
        self.register_buffer("attn_mask", mask)  # None registers nothing: unshifted blocks have no key
        self._masks: dict[tuple, torch.Tensor] = {}  # masks for other sizes, computed once per size/device

    def _mask(self, h: int, w: int, like: torch.Tensor) -> torch.Tensor | None:
        if self.shift_size == 0:
            return None
        if (h, w) == self.input_resolution:
            return self.attn_mask
        key = (h, w, like.device)
        if key not in self._masks:
            self._masks[key] = shifted_window_mask(h, w, self.window_size, self.shift_size).to(like.device)
        return self._masks[key]

    def shifted_window_attention(self, x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
        """(B, H*W, C) tokens -> W-MSA (SW-MSA in shifted blocks) of them, same shape."""
        h, w = x_size
        b, length, c = x.shape
        ws, shift = self.window_size, self.shift_size
        y = x.view(b, h, w, c)
        if shift:
            y = torch.roll(y, shifts=(-shift, -shift), dims=(1, 2))
        y = self.attn(window_partition(y, ws), mask=self._mask(h, w, x))
        y = window_reverse(y, ws, h, w)
        if shift:
            y = torch.roll(y, shifts=(shift, shift), dims=(1, 2))
        return y.reshape(b, length, c)

    def forward(self, x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
        x = x + self.drop_path(self.shifted_window_attention(self.norm1(x), x_size))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class BasicLayer(nn.Module):
    """``depth`` Swin blocks (of class ``block``), every other one shifted by half a window."""

    block: type[SwinTransformerBlock] = SwinTransformerBlock

    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        drop_path: Sequence[float],
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        self.use_checkpoint = use_checkpoint
        self.blocks = nn.ModuleList(
            self.block(
                dim,
                input_resolution,
                num_heads,
                window_size,
                shift_size=0 if i % 2 == 0 else window_size // 2,
                mlp_ratio=mlp_ratio,
                drop_path=drop_path[i],
            )
            for i in range(depth)
        )

    def forward(self, x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
        for block in self.blocks:
            if self.use_checkpoint and torch.is_grad_enabled():  # recompute in backward (same random numbers)
                x = checkpoint(block, x, x_size, use_reentrant=False)
            else:
                x = block(x, x_size)
        return x


class RSTB(nn.Module):
    """Residual Swin Transformer block: tokens + flatten(conv(unflatten(BasicLayer(tokens))))."""

    def __init__(self, dim: int, **layer_kwargs) -> None:
        super().__init__()
        self.residual_group = BasicLayer(dim, **layer_kwargs)
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)

    def forward(self, x: torch.Tensor, x_size: tuple[int, int]) -> torch.Tensor:
        y = self.residual_group(x, x_size)
        b, _length, c = y.shape
        y = self.conv(y.transpose(1, 2).reshape(b, c, *x_size))
        return y.flatten(2).transpose(1, 2) + x


class PatchEmbed(nn.Module):
    """(B, C, H, W) -> LayerNorm over (B, H*W, C) tokens (key ``patch_embed.norm``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.flatten(2).transpose(1, 2))


class SwinBody(nn.Module):
    """STDAN's ``Spatial_decoder``: conv_first -> RSTBs -> norm -> conv_after_body (+ skip) -> conv_last.

    (B, in_chans, H, W) -> (B, in_chans, H, W); H and W must be multiples of ``window_size``. The shifted
    blocks' ``attn_mask`` buffers are precomputed for ``img_size`` x ``img_size`` and recomputed for other
    sizes. Stochastic depth: linspace(0, drop_path_rate, total blocks), active in training.
    ``use_checkpoint`` (official option, off by default) recomputes each block in the backward pass instead
    of storing its activations: much less training memory for about a third more time.
    """

    def __init__(
        self,
        in_chans: int = 64,
        embed_dim: int = 72,
        depths: Sequence[int] = (6, 6),
        num_heads: Sequence[int] | int = 6,
        window_size: int = 8,
        mlp_ratio: float = 2.0,
        img_size: int = 32,
        drop_path_rate: float = 0.1,
        use_checkpoint: bool = False,
    ) -> None:
        super().__init__()
        heads = [num_heads] * len(depths) if isinstance(num_heads, int) else list(num_heads)
        self.window_size = window_size
        self.conv_first = nn.Conv2d(in_chans, embed_dim, 3, 1, 1)
        self.patch_embed = PatchEmbed(embed_dim)
        dpr = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            start = sum(depths[:i])
            self.layers.append(
                RSTB(
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
        self.conv_last = nn.Conv2d(embed_dim, in_chans, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        f = self.conv_first(x)
        t = self.patch_embed(f)
        for layer in self.layers:
            t = layer(t, (h, w))
        t = self.norm(t)
        b, _, c = t.shape
        g = self.conv_after_body(t.transpose(1, 2).reshape(b, c, h, w)) + f
        return self.conv_last(g)


def init_transformer_weights(m: nn.Module) -> None:
    """The Swin-family init of one module: Linear weights trunc_normal(0.02) and zero bias, LayerNorm (1, 0)."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
