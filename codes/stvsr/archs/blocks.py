"""Building blocks shared by the Zooming Slow-Mo family (docs/models.md).

Module and attribute names are those of the official code: they are the ``state_dict`` keys of the
released checkpoints, and the order in which modules are registered is the order of those keys.

Where the official code loops over independent computations that share weights (frame pairs, the two
directions of a recurrence), the loops here run them as one batch: the results are the same up to
floating-point rounding, and on CPU and GPU alike fewer, larger kernels run faster.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from stvsr.ops import DCNSep

LRELU_SLOPE = 0.1


def lrelu(x: torch.Tensor) -> torch.Tensor:
    """LeakyReLU(0.1) in place: only ever applied to a fresh output that nothing else holds."""
    return F.leaky_relu_(x, LRELU_SLOPE)


def up2(x: torch.Tensor) -> torch.Tensor:
    """Bilinear x2, ``align_corners=False`` (as the official ``F.interpolate(scale_factor=2)``)."""
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def check_video(model: nn.Module, x: torch.Tensor, min_frames: int = 2) -> tuple[int, int, int, int, int]:
    """Validate a (B, N, 3, H, W) input against the model's contract; return its shape.

    Raises a ``ValueError`` that names the problem (rank, channels, frame count, or a size that is not a
    multiple of ``model.size_divisor``) instead of a ``view`` or window-partition error deep inside.
    """
    name = type(model).__name__
    if x.dim() != 5:
        raise ValueError(f"{name} expects a video tensor (B, N, 3, H, W), got shape {tuple(x.shape)}")
    b, n, c, h, w = x.shape
    if c != 3:
        raise ValueError(f"{name} expects 3 (RGB) channels in dimension 2 of (B, N, 3, H, W), got {c}")
    if n < min_frames:
        raise ValueError(f"{name} needs at least {min_frames} input frames, got N={n}")
    divisor = model.size_divisor
    if h % divisor or w % divisor:
        raise ValueError(
            f"{name}: input frame size {h}x{w} (HxW) is not a multiple of {divisor}; pad the low-resolution "
            f"frames to {-(-h // divisor) * divisor}x{-(-w // divisor) * divisor} (bottom/right, as the "
            f"evaluator does) and crop the output"
        )
    return b, n, c, h, w


def interleave(keys: torch.Tensor, mids: torch.Tensor) -> torch.Tensor:
    """[K0, M0, K1, M1, ..., K(N-1)] from keys (B, N, ...) and mids (B, N-1, ...), along dim 1."""
    pairs = torch.stack((keys[:, :-1], mids), dim=2).flatten(1, 2)
    return torch.cat((pairs, keys[:, -1:]), dim=1)


class ResidualBlock_noBN(nn.Module):
    """out = x + conv2(ReLU(conv1(x))); convs kaiming_normal(fan_in) x 0.1, zero bias (section 2.1)."""

    def __init__(self, nf: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(nf, nf, 3, 1, 1, bias=True)
        self.conv2 = nn.Conv2d(nf, nf, 3, 1, 1, bias=True)
        for conv in (self.conv1, self.conv2):
            nn.init.kaiming_normal_(conv.weight, a=0, mode="fan_in")
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x), inplace=True))


def make_layer(block: type[nn.Module], n_blocks: int, **kwargs) -> nn.Sequential:
    """``n_blocks`` instances of ``block`` in a Sequential (keys ``0.*``, ``1.*``, ...)."""
    return nn.Sequential(*(block(**kwargs) for _ in range(n_blocks)))


def add_pyramid_convs(module: nn.Module, nf: int) -> None:
    """Register ``fea_L2_conv1/2`` and ``fea_L3_conv1/2`` on ``module`` (keys at the module's own level)."""
    module.fea_L2_conv1 = nn.Conv2d(nf, nf, 3, 2, 1, bias=True)
    module.fea_L2_conv2 = nn.Conv2d(nf, nf, 3, 1, 1, bias=True)
    module.fea_L3_conv1 = nn.Conv2d(nf, nf, 3, 2, 1, bias=True)
    module.fea_L3_conv2 = nn.Conv2d(nf, nf, 3, 1, 1, bias=True)


def pyramid(module: nn.Module, l1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Levels 2 and 3 (H/2, H/4) of the three-level feature pyramid (section 2.2), with lrelu(0.1)."""
    l2 = lrelu(module.fea_L2_conv2(lrelu(module.fea_L2_conv1(l1))))
    l3 = lrelu(module.fea_L3_conv2(lrelu(module.fea_L3_conv1(l2))))
    return l2, l3


Pyramid = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (L1, L2, L3), each (B, C, H/2^k, W/2^k)


class PCD_Align(nn.Module):
    """Zooming Slow-Mo's two-branch pyramid deformable alignment, no cascading stage (section 2.3).

    ``forward(fea1, fea2)`` with pyramids ``[L1, L2, L3]`` returns ``[fea1 aligned, fea2 aligned]``
    (2*nf channels). ``dcn`` is the deformable conv class: ``DCNSep`` (ZSM) or ``DCNv2Pack`` (STDAN).
    The last offset conv of each level goes through :meth:`_last_offset`, where TMNet adds its temporal
    modulation (``stvsr.archs.tmnet``).
    """

    def __init__(self, nf: int = 64, groups: int = 8, dcn: type[nn.Module] = DCNSep) -> None:
        super().__init__()
        for s in (1, 2):  # registration order = key order: all of branch 1, then branch 2
            setattr(self, f"L3_offset_conv1_{s}", nn.Conv2d(nf * 2, nf, 3, 1, 1, bias=True))
            setattr(self, f"L3_offset_conv2_{s}", nn.Conv2d(nf, nf, 3, 1, 1, bias=True))
            setattr(self, f"L3_dcnpack_{s}", dcn(nf, nf, 3, stride=1, padding=1, dilation=1, deformable_groups=groups))
            for level in (2, 1):
                setattr(self, f"L{level}_offset_conv1_{s}", nn.Conv2d(nf * 2, nf, 3, 1, 1, bias=True))
                setattr(self, f"L{level}_offset_conv2_{s}", nn.Conv2d(nf * 2, nf, 3, 1, 1, bias=True))
                setattr(self, f"L{level}_offset_conv3_{s}", nn.Conv2d(nf, nf, 3, 1, 1, bias=True))
                setattr(
                    self,
                    f"L{level}_dcnpack_{s}",
                    dcn(nf, nf, 3, stride=1, padding=1, dilation=1, deformable_groups=groups),
                )
                setattr(self, f"L{level}_fea_conv_{s}", nn.Conv2d(nf * 2, nf, 3, 1, 1, bias=True))

    def _last_offset(self, s: int, level: int, off: torch.Tensor, t: torch.Tensor | None) -> torch.Tensor:
        """lrelu(conv(off)) with the last offset conv of ``level`` in branch ``s`` (``L3_offset_conv2``,
        ``L2_offset_conv3``, ``L1_offset_conv3``). ``t`` is unused here (TMNet's time input)."""
        conv = getattr(self, f"L3_offset_conv2_{s}" if level == 3 else f"L{level}_offset_conv3_{s}")
        return lrelu(conv(off))

    def _branch(self, s: int, a: Pyramid, b: Pyramid, t: torch.Tensor | None = None) -> torch.Tensor:
        """Align pyramid ``a`` using offsets from ``[a, b]``, with the convs of branch ``s``."""

        def m(name):
            return getattr(self, f"{name}_{s}")

        # level 3
        off3 = lrelu(m("L3_offset_conv1")(torch.cat((a[2], b[2]), dim=1)))
        off3 = self._last_offset(s, 3, off3, t)
        fea3 = lrelu(m("L3_dcnpack")(a[2], off3))
        # level 2; the x2 on the upsampled offset *features* is official (quirk 1, KEEP)
        off2 = lrelu(m("L2_offset_conv1")(torch.cat((a[1], b[1]), dim=1)))
        off2 = lrelu(m("L2_offset_conv2")(torch.cat((off2, up2(off3) * 2), dim=1)))
        off2 = self._last_offset(s, 2, off2, t)
        fea2 = m("L2_dcnpack")(a[1], off2)  # no activation (quirk 2, KEEP)
        fea2 = lrelu(m("L2_fea_conv")(torch.cat((fea2, up2(fea3)), dim=1)))
        # level 1
        off1 = lrelu(m("L1_offset_conv1")(torch.cat((a[0], b[0]), dim=1)))
        off1 = lrelu(m("L1_offset_conv2")(torch.cat((off1, up2(off2) * 2), dim=1)))
        off1 = self._last_offset(s, 1, off1, t)
        fea1 = m("L1_dcnpack")(a[0], off1)  # no activation
        return m("L1_fea_conv")(torch.cat((fea1, up2(fea2)), dim=1))  # no activation

    def forward(self, fea1: Pyramid, fea2: Pyramid) -> torch.Tensor:
        return torch.cat((self._branch(1, fea1, fea2), self._branch(2, fea2, fea1)), dim=1)


class Easy_PCD(nn.Module):
    """``fusion(PCD_Align(pyramid(f1), pyramid(f2)))`` with its own pyramid convs (section 2.4)."""

    def __init__(self, nf: int = 64, groups: int = 8, dcn: type[nn.Module] = DCNSep) -> None:
        super().__init__()
        add_pyramid_convs(self, nf)
        self.pcd_align = PCD_Align(nf=nf, groups=groups, dcn=dcn)
        self.fusion = nn.Conv2d(2 * nf, nf, 1, 1, bias=True)

    def forward(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        b = f1.shape[0]
        l1 = torch.cat((f1, f2), dim=0)  # both pyramids in one batch
        l2, l3 = pyramid(self, l1)
        fea1, fea2 = (l1[:b], l2[:b], l3[:b]), (l1[b:], l2[b:], l3[b:])
        return self.fusion(self.pcd_align(fea1, fea2))


class ConvLSTMCell(nn.Module):
    """Gates = conv([x, h]) split into i, f, o, g; c' = sig(f) c + sig(i) tanh(g); h' = sig(o) tanh(c')."""

    def __init__(self, input_dim: int, hidden_dim: int, kernel_size: int = 3, bias: bool = True) -> None:
        super().__init__()
        self.hidden_dim = hidden_dim
        self.conv = nn.Conv2d(input_dim + hidden_dim, 4 * hidden_dim, kernel_size, 1, kernel_size // 2, bias=bias)

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h, c = state
        i, f, o, g = torch.split(self.conv(torch.cat((x, h), dim=1)), self.hidden_dim, dim=1)
        c_next = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h_next = torch.sigmoid(o) * torch.tanh(c_next)
        return h_next, c_next


class DeformableConvLSTM(nn.Module):
    """One-layer ConvLSTM whose states are aligned to each input by ``Easy_PCD`` (section 2.5).

    ``forward(x)``: (B, T, C, H, W) -> hidden states (B, T, C, H, W). The initial state is zeros created
    like the input (same device and dtype): the official ``.cuda()`` is ZSM quirk 7 (FIX).
    """

    def __init__(
        self, nf: int = 64, groups: int = 8, dcn: type[nn.Module] = DCNSep, pcd: Callable[..., nn.Module] | None = None
    ) -> None:
        super().__init__()
        pcd = pcd or partial(Easy_PCD, dcn=dcn)  # MSITF passes its single-branch Easy_PCD
        # The official class registers cell_list first (in ConvLSTM.__init__): key order follows.
        self.cell_list = nn.ModuleList([ConvLSTMCell(nf, nf, 3)])
        self.pcd_h = pcd(nf=nf, groups=groups)
        self.pcd_c = pcd(nf=nf, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _, h, w = x.shape
        hidden = x.new_zeros(b, self.cell_list[0].hidden_dim, h, w)
        cell = hidden
        outputs = []
        for step in range(t):
            x_t = x[:, step]
            h_aligned = self.pcd_h(x_t, hidden)
            c_aligned = self.pcd_c(x_t, cell)
            hidden, cell = self.cell_list[0](x_t, (h_aligned, c_aligned))
            outputs.append(hidden)
        return torch.stack(outputs, dim=1)


class BiDeformableConvLSTM(nn.Module):
    """Both time directions through the *same* ``forward_net`` (quirk 4, KEEP), fused by a 1x1 conv.

    The two directions are independent recurrences with shared weights, so they run as one batch.
    """

    def __init__(
        self, nf: int = 64, groups: int = 8, dcn: type[nn.Module] = DCNSep, pcd: Callable[..., nn.Module] | None = None
    ) -> None:
        super().__init__()
        self.forward_net = DeformableConvLSTM(nf=nf, groups=groups, dcn=dcn, pcd=pcd)
        self.conv_1x1 = nn.Conv2d(2 * nf, nf, 1, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _c, h, w = x.shape
        both = self.forward_net(torch.cat((x, x.flip(1)), dim=0))
        out_f, out_b = both[:b], both[b:].flip(1)
        fused = self.conv_1x1(torch.cat((out_f, out_b), dim=2).view(b * t, -1, h, w))
        return fused.view(b, t, -1, h, w)


def add_zsm_head(module: nn.Module, nf: int) -> None:
    """Register the ZSM x4 upsampling head: ``upconv1``, ``upconv2``, ``HRconv``, ``conv_last`` (section 2.6)."""
    module.upconv1 = nn.Conv2d(nf, nf * 4, 3, 1, 1, bias=True)
    module.upconv2 = nn.Conv2d(nf, 64 * 4, 3, 1, 1, bias=True)
    module.HRconv = nn.Conv2d(64, 64, 3, 1, 1, bias=True)
    module.conv_last = nn.Conv2d(64, 3, 3, 1, 1, bias=True)


def zsm_head(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """lrelu(PS2(upconv1)) -> lrelu(PS2(upconv2)) -> lrelu(HRconv) -> conv_last; linear output."""
    out = lrelu(F.pixel_shuffle(module.upconv1(x), 2))
    out = lrelu(F.pixel_shuffle(module.upconv2(out), 2))
    out = lrelu(module.HRconv(out))
    return module.conv_last(out)
