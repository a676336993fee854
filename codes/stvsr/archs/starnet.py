"""STARnet (CVPR 2020): ``fbpn_sr_rbpn_v4_ref.Net``, the V4 core + flow-refinement U-Net (docs/models.md, STARnet).

Two classes with the same weights and the official ``state_dict`` (``model.*``, ``flow_net.*``; 462 keys,
111,610,863 parameters with the official settings):

- :class:`STARnetPair`: the native pair model. ``forward(t_im1, t_im2, t_flow_f, t_flow_b, train=True)`` on
  ImageNet-normalised LR frames (B, 3, h, w) and flows in network units (B, 2, h, w) (``-clip(px, ±150)/150``,
  see :mod:`stvsr.archs.flow`); returns (HR I_t, HR I_1, HR I_2, LR I_t), normalised, or with ``train=True`` four
  [aux, final] lists followed by the refined flow_f and flow_b.
- :class:`STARnet` (registered ``STARnet`` / ``starnet``): the framework contract. (B, N, 3, h, w) RGB in [0, 1]
  -> (B, 2N-1, 3, 4h, 4w) [F0, I0.5, F1, ...] in [0, 1]. Each adjacent pair (k, k+1) runs the pair model
  (flows from ``flow_provider``, DIS by default); ``I(k+1/2)`` is that pair's I_t. **Key-frame policy**: a key
  frame is predicted by both pairs it belongs to; ``key_frames='left'`` (default) takes F_k from the pair
  (k, k+1) where it is the first frame (its I_1) and the last frame from the last pair (its I_2);
  ``key_frames='mean'`` averages the two predictions of interior key frames. ``native`` is the pair call.

In training the trainer calls :meth:`STARnet.training_objective`: :meth:`STARnet.supervised` gives a
:class:`STARnetTrainOutput` and :meth:`STARnet.supervised_loss` applies the official weighting (section 7.6).
``RBPN.res_feat3`` never gets a gradient, so DistributedDataParallel needs ``find_unused_parameters=True``
(``train.find_unused_parameters: true``).

Quirks (section 7.8): the constructor loads no pretrained RBPN (1, FIXED: load explicitly); flows enter as
``-flow/150`` (2, KEPT); the U-Net correction ends in a sigmoid, so it is in (0, 1) (3, KEPT); updates are
``x + LeakyReLU(x - y)`` (4, KEPT); ``RBPN.res_feat3`` keeps its parameters, its (discarded) output is not
computed (5).

Flows: the official weights were trained with pyflow (Ce Liu); the default DIS provider keeps the convention and
scaling but is a substitute, so the official checkpoints lose some fidelity with it (not quantified here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from stvsr.imagenet import denormalize, normalize  # denormalize: the official denorm(vgg=True), exact constants
from stvsr.registry import ARCHS

from .base import Criterion, StvsrArch
from .blocks import check_video
from .flow import DISFlow, FlowProvider, build_flow_provider, to_network_flow

KERNELS = {2: (6, 2, 2), 4: (8, 4, 2), 8: (12, 8, 2)}  # scale -> (kernel, stride, padding) of the (de)convs


# ----------------------------------------------------------------------------------------------- blocks
def _act(kind: str | None) -> nn.Module | None:
    if kind is None:
        return None
    if kind == "prelu":
        return nn.PReLU()  # one shared slope, 0.25 at init
    if kind == "lrelu":
        return nn.LeakyReLU(0.1)
    raise ValueError(f"unknown activation {kind!r}")


class ConvBlock(nn.Module):
    """Conv2d (bias) then an optional activation (keys ``conv``, ``act``)."""

    def __init__(self, cin: int, cout: int, k: int = 3, s: int = 1, p: int = 1, act: str | None = "prelu"):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, s, p, bias=True)
        act_module = _act(act)
        if act_module is not None:
            self.act = act_module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.act(x) if hasattr(self, "act") else x


class DeconvBlock(nn.Module):
    """ConvTranspose2d (bias) then an optional activation (keys ``deconv``, ``act``)."""

    def __init__(self, cin: int, cout: int, k: int = 4, s: int = 2, p: int = 1, act: str | None = "prelu"):
        super().__init__()
        self.deconv = nn.ConvTranspose2d(cin, cout, k, s, p, bias=True)
        act_module = _act(act)
        if act_module is not None:
            self.act = act_module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.deconv(x)
        return self.act(x) if hasattr(self, "act") else x


class ResnetBlock(nn.Module):
    """act(conv2(act(conv1(x))) + x); one activation module used twice (a PReLU slope is shared)."""

    def __init__(self, n: int, act: str = "prelu"):
        super().__init__()
        self.conv1 = nn.Conv2d(n, n, 3, 1, 1, bias=True)
        self.conv2 = nn.Conv2d(n, n, 3, 1, 1, bias=True)
        self.act = _act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.act(self.conv1(x))) + x)


class UpBlock(nn.Module):
    """Back-projection up: h0 = D1(x); h1 = D2(C(h0) - x); h0 + h1 (all k8 s4 p2 for x4, PReLU)."""

    def __init__(self, n: int, k: int, s: int, p: int):
        super().__init__()
        self.up_conv1 = DeconvBlock(n, n, k, s, p)
        self.up_conv2 = ConvBlock(n, n, k, s, p)
        self.up_conv3 = DeconvBlock(n, n, k, s, p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0 = self.up_conv1(x)
        return h0 + self.up_conv3(self.up_conv2(h0) - x)


class DownBlock(nn.Module):
    """Back-projection down: l0 = C1(x); l1 = C2(D(l0) - x); l0 + l1."""

    def __init__(self, n: int, k: int, s: int, p: int):
        super().__init__()
        self.down_conv1 = ConvBlock(n, n, k, s, p)
        self.down_conv2 = DeconvBlock(n, n, k, s, p)
        self.down_conv3 = ConvBlock(n, n, k, s, p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        l0 = self.down_conv1(x)
        return l0 + self.down_conv3(self.down_conv2(l0) - x)


class PyramidModule(nn.Module):
    """Three-level residual pyramid (section 7.3, 6); ``n`` channels at level 1, 2n and 4n below."""

    def __init__(self, n: int, act: str = "lrelu"):
        super().__init__()
        for i in range(1, 6):
            setattr(self, f"l1_{i}", ResnetBlock(n, act))
        for i in range(1, 5):
            setattr(self, f"l2_{i}", ResnetBlock(2 * n, act))
        for i in range(1, 4):
            setattr(self, f"l3_{i}", ResnetBlock(4 * n, act))
        self.down1 = ConvBlock(n, 2 * n, 4, 2, 1, act)
        self.down2 = ConvBlock(2 * n, 4 * n, 4, 2, 1, act)
        self.up1 = DeconvBlock(2 * n, n, 4, 2, 1, act)
        self.up2 = DeconvBlock(4 * n, 2 * n, 4, 2, 1, act)
        self.final = ConvBlock(n, n, 3, 1, 1, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a1 = self.l1_1(x)
        b1 = self.l2_1(self.down1(a1))
        c1 = self.l3_1(self.down2(b1))
        a2 = self.l1_2(a1 + self.up1(b1))
        b2 = self.l2_2(b1 + self.down1(a2) + self.up2(c1))
        c2 = self.l3_2(c1 + self.down2(b2))
        a3 = self.l1_3(a2 + self.up1(b2))
        b3 = self.l2_3(b2 + self.down1(a3) + self.up2(c2))
        c3 = self.l3_3(c2 + self.down2(b3))
        a4 = self.l1_4(a3 + self.up1(b3))
        b4 = self.l2_4(b3 + self.down1(a4) + self.up2(c3))
        a5 = self.l1_5(a4 + self.up1(b4))
        return self.final(a5)


class DBPNS(nn.Module):
    """The DBPN inside RBPN: 1x1 to ``feat``, ``num_stages`` up-projections with down-projections between, then a
    1x1 fusion of [h_last, ..., h_1] (keys feat1, up1, down1, up2, down2, up3, output for 3 stages)."""

    def __init__(self, base_filter: int, feat: int, num_stages: int, kernel: tuple[int, int, int]):
        super().__init__()
        self.num_stages = num_stages
        self.feat1 = ConvBlock(base_filter, feat, 1, 1, 0)
        for i in range(1, num_stages + 1):
            setattr(self, f"up{i}", UpBlock(feat, *kernel))
            if i < num_stages:
                setattr(self, f"down{i}", DownBlock(feat, *kernel))
        self.output = ConvBlock(num_stages * feat, feat, 1, 1, 0, act=None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up1(self.feat1(x))
        hs = [h]
        for i in range(2, self.num_stages + 1):
            h = getattr(self, f"up{i}")(getattr(self, f"down{i - 1}")(h))
            hs.append(h)
        return self.output(torch.cat(hs[::-1], 1))


class RBPN(nn.Module):
    """Net_S: two-frame RBPN (``nFrames=2``); returns (HR image, HR 64-channel feature)."""

    def __init__(self, base_filter: int, feat: int, num_stages: int, n_resblock: int, kernel: tuple[int, int, int]):
        super().__init__()
        self.feat0 = ConvBlock(3, base_filter, 3, 1, 1)
        self.feat1 = ConvBlock(8, base_filter, 3, 1, 1)
        self.DBPN = DBPNS(base_filter, feat, num_stages, kernel)
        self.res_feat1 = nn.Sequential(
            *[ResnetBlock(base_filter, "prelu") for _ in range(n_resblock)], DeconvBlock(base_filter, feat, *kernel)
        )
        self.res_feat2 = nn.Sequential(
            *[ResnetBlock(feat, "prelu") for _ in range(n_resblock)], ConvBlock(feat, feat, 3, 1, 1)
        )
        # computed and discarded by the official code with nFrames = 2 (quirk 5): parameters kept, never run
        self.res_feat3 = nn.Sequential(
            *[ResnetBlock(feat, "prelu") for _ in range(n_resblock)], ConvBlock(feat, base_filter, *kernel)
        )
        self.output = ConvBlock(feat, 3, 3, 1, 1, act=None)

    def forward(
        self, x: torch.Tensor, neighbour: torch.Tensor, flow: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        h0 = self.DBPN(self.feat0(x))
        h1 = self.res_feat1(self.feat1(torch.cat((x, neighbour, flow), 1)))
        h = h0 + self.res_feat2(h0 - h1)
        return self.output(h), h


def _kaiming_init(module: nn.Module) -> None:
    """Official core init: kaiming_normal_ (fan_in, gain sqrt 2) on every (transposed) conv, zero bias."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class STARV4(nn.Module):
    """The V4 core ``fbpn_sr_rbpn_v4.Net`` (58,092,269 parameters, 306 keys with the official settings).

    ``forward(t_im1, t_im2, t_flow_f, t_flow_b, train=True)`` as the official one (no flow refinement). No
    pretrained RBPN is loaded here (quirk 1, FIXED): load one with
    ``stvsr.model.weights.load_official(core.RBPN, ...)``.
    """

    def __init__(self, base_filter: int = 256, feat: int = 64, num_stages: int = 3, n_resblock: int = 5,
                 scale_factor: int = 4, rbpn_resblocks: int = 5, output_init_scale: float = 1.0) -> None:  # fmt: skip
        super().__init__()
        if scale_factor not in KERNELS:
            raise ValueError(f"STARnet: scale_factor must be one of {sorted(KERNELS)}, got {scale_factor}")
        kernel = KERNELS[scale_factor]
        self.scale_factor = scale_factor
        lrelu = "lrelu"
        self.motion_feat = ConvBlock(4, base_filter, 3, 1, 1, lrelu)
        self.motion = nn.Sequential(
            *[ResnetBlock(base_filter, lrelu) for _ in range(2)], ConvBlock(base_filter, feat, 3, 1, 1, lrelu)
        )
        self.t_net_lr = nn.Sequential(
            *[ResnetBlock(5 * feat, lrelu) for _ in range(2)], ConvBlock(5 * feat, 2 * feat, 3, 1, 1, lrelu)
        )
        self.t_net_hr = nn.Sequential(
            ConvBlock(3 * feat, feat, 1, 1, 0, lrelu), PyramidModule(feat, lrelu), ConvBlock(feat, feat, 3, 1, 1, lrelu)
        )
        for name in ("interp_block", "motion_up_f", "motion_up_b"):
            blocks = [ResnetBlock(5 * feat, lrelu) for _ in range(n_resblock)]
            setattr(self, name, nn.Sequential(*blocks, DeconvBlock(5 * feat, feat, *kernel, act=lrelu)))
        self.motion_down = nn.Sequential(
            *[ResnetBlock(feat, lrelu) for _ in range(2)], ConvBlock(feat, 2 * feat, *kernel, act=lrelu)
        )
        self.reconstruction_l = ConvBlock(2 * feat, 3, 3, 1, 1, act=None)
        self.reconstruction_h = ConvBlock(feat, 3, 3, 1, 1, act=None)
        self.RBPN = RBPN(base_filter, feat, num_stages, rbpn_resblocks, kernel)
        _kaiming_init(self)
        if output_init_scale != 1.0:  # not official: small initial outputs help tiny models trained from scratch
            for conv in (self.reconstruction_h.conv, self.reconstruction_l.conv, self.RBPN.output.conv):
                conv.weight.data.mul_(output_init_scale)

    @staticmethod
    def _bp(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + F.leaky_relu(x - y, 0.1)  # quirk 4 (KEEP): x + LeakyReLU(x - y)

    def forward(self, t_im1: torch.Tensor, t_im2: torch.Tensor, t_flow_f: torch.Tensor, t_flow_b: torch.Tensor,
                train: bool = True) -> tuple:  # fmt: skip
        aux_h1, h1 = self.RBPN(t_im1, t_im2, t_flow_f)
        aux_h2, h2 = self.RBPN(t_im2, t_im1, t_flow_b)
        l1, l2 = self.motion_down(h1), self.motion_down(h2)
        m = self.motion(self.motion_feat(torch.cat((t_flow_f, t_flow_b), 1)))
        m_half = self.motion(self.motion_feat(torch.cat((t_flow_f / 2.0, t_flow_b / 2.0), 1)))

        ht = self.interp_block(torch.cat((l1, l2, m), 1))
        m_up = F.interpolate(m, scale_factor=self.scale_factor, mode="bilinear", align_corners=True)
        ht = self._bp(ht, self.t_net_hr(torch.cat((h1, h2, m_up), 1)))
        lt = self.motion_down(ht)
        lt = self._bp(lt, self.t_net_lr(torch.cat((l1, l2, m), 1)))
        aux_ht, aux_l = (self.reconstruction_h(ht), self.reconstruction_l(lt)) if train else (None, None)

        h_b = self.motion_up_b(torch.cat((l1, lt, m_half), 1))
        h1 = self._bp(h1, h_b)
        l1 = self._bp(l1, self.motion_down(h_b))
        h_f = self.motion_up_f(torch.cat((lt, l2, m_half), 1))
        h2 = self._bp(h2, h_f)
        l2 = self._bp(l2, self.motion_down(h_f))
        h_tf = self.motion_up_f(torch.cat((l1, lt, m_half), 1))
        ht = self._bp(ht, h_tf)
        lt = self._bp(lt, self.motion_down(h_tf))
        h_tb = self.motion_up_b(torch.cat((lt, l2, m_half), 1))
        ht = self._bp(ht, h_tb)
        lt = self._bp(lt, self.motion_down(h_tb))

        out_ht, out_h1 = self.reconstruction_h(ht), self.reconstruction_h(h1)
        out_h2, out_l = self.reconstruction_h(h2), self.reconstruction_l(lt)
        if train:
            return [aux_ht, out_ht], [aux_h1, out_h1], [aux_h2, out_h2], [aux_l, out_l]
        return out_ht, out_h1, out_h2, out_l


# ------------------------------------------------------------------------------------- flow U-Net
class DoubleConv(nn.Module):
    """(conv 3x3 -> BN -> ReLU) x 2 (keys ``conv.0``, ``conv.1``, ``conv.3``, ``conv.4``)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class _Wrap(nn.Module):
    """A module holding ``conv`` (the official ``inconv`` / ``up`` / ``outconv`` key level)."""

    def __init__(self, conv: nn.Module):
        super().__init__()
        self.conv = conv


class _Down(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.mpconv = nn.Sequential(nn.MaxPool2d(2), DoubleConv(cin, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mpconv(x)


class FlowUNet(nn.Module):
    """``autoencoder_v4.UNet(8, 2)``: ``depth`` max-pool levels (official 5), widths ``nf * 2**i`` capped at the
    deepest level; bilinear x2 (align_corners=True) up, zero-padded to the skip's size, concat [skip, up];
    1x1 output then **sigmoid** (quirk 3, KEEP). PyTorch default init. Needs inputs of at least 2**depth px."""

    def __init__(self, in_ch: int = 8, out_ch: int = 2, nf: int = 64, depth: int = 5):
        super().__init__()
        if depth < 1:
            raise ValueError(f"STARnet: unet_depth must be >= 1, got {depth}")
        self.depth = depth
        widths = [nf * 2**i for i in range(depth)]  # encoder widths; the bottom repeats the last one
        self.inc = _Wrap(DoubleConv(in_ch, widths[0]))
        for i in range(1, depth + 1):
            setattr(self, f"down{i}", _Down(widths[i - 1], widths[min(i, depth - 1)]))
        for j in range(1, depth + 1):
            skip = widths[depth - j]
            setattr(self, f"up{j}", _Wrap(DoubleConv(2 * skip, widths[max(depth - j - 1, 0)])))
        self.outc = _Wrap(nn.Conv2d(widths[0], out_ch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.inc.conv(x)]
        for i in range(1, self.depth + 1):
            skips.append(getattr(self, f"down{i}")(skips[-1]))
        y = skips.pop()
        for j in range(1, self.depth + 1):
            skip = skips.pop()
            y = F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=True)
            dy, dx = skip.shape[-2] - y.shape[-2], skip.shape[-1] - y.shape[-1]
            y = F.pad(y, (dx // 2, dx - dx // 2, dy // 2, dy - dy // 2))
            y = getattr(self, f"up{j}").conv(torch.cat((skip, y), 1))
        return torch.sigmoid(self.outc.conv(y))


# --------------------------------------------------------------------------------------- full model
class STARnetPair(nn.Module):
    """``fbpn_sr_rbpn_v4_ref.Net``: flow refinement by the shared U-Net, then the V4 core (native call)."""

    def __init__(self, base_filter: int = 256, feat: int = 64, num_stages: int = 3, n_resblock: int = 5,
                 scale_factor: int = 4, rbpn_resblocks: int = 5, unet_nf: int = 64, unet_depth: int = 5,
                 refine_flow: bool = True, output_init_scale: float = 1.0) -> None:  # fmt: skip
        super().__init__()
        for name, value in (("base_filter", base_filter), ("feat", feat), ("num_stages", num_stages),
                            ("unet_nf", unet_nf)):  # fmt: skip
            if value < 1:
                raise ValueError(f"STARnet: {name} must be >= 1, got {value}")
        self.model = STARV4(base_filter, feat, num_stages, n_resblock, scale_factor, rbpn_resblocks, output_init_scale)
        self.flow_net = FlowUNet(8, 2, unet_nf, unet_depth)
        self.upscale = scale_factor
        self.refine_flow = bool(refine_flow)  # False: the first official stage (V4 core alone; U-Net unused)
        self.min_size = 2**unet_depth if refine_flow else 1  # the U-Net's max-pools reach 0 px below this

    def forward(self, t_im1: torch.Tensor, t_im2: torch.Tensor, t_flow_f: torch.Tensor, t_flow_b: torch.Tensor,
                train: bool = True) -> tuple:  # fmt: skip
        """Official semantics: inputs ImageNet-normalised, flows in network units (see module docstring)."""
        # in eval mode both refinements run as one U-Net batch (identical results, BatchNorm uses its running
        # statistics); in train mode two calls, as the official code (each call's own batch statistics)
        if self.refine_flow and self.flow_net.training:
            t_flow_f = t_flow_f + self.flow_net(torch.cat((t_flow_f, t_im1, t_im2), 1))
            t_flow_b = t_flow_b + self.flow_net(torch.cat((t_flow_b, t_im2, t_im1), 1))
        elif self.refine_flow:
            both = self.flow_net(torch.cat((torch.cat((t_flow_f, t_im1, t_im2), 1),
                                            torch.cat((t_flow_b, t_im2, t_im1), 1)), 0))  # fmt: skip
            t_flow_f, t_flow_b = t_flow_f + both[: len(t_flow_f)], t_flow_b + both[len(t_flow_f) :]
        outputs = self.model(t_im1, t_im2, t_flow_f, t_flow_b, train=train)
        return (*outputs, t_flow_f, t_flow_b) if train else outputs


@dataclass
class STARnetTrainOutput:
    """What :meth:`STARnet.supervised` returns (pairs batched as B * (N - 1), pair-major within a sample).

    frames: (B, 2N-1, 3, sH, sW) final predictions in [0, 1] (not clamped), the contract order.
    ht, h1, h2, lt: [aux, final] ImageNet-normalised predictions of I_t, I_1, I_2 (HR) and LR I_t per pair.
    flow_f, flow_b: refined flows (network units); lq1, lq2: the pairs' LR inputs in [0, 1] (for the flow loss).
    """

    frames: torch.Tensor
    ht: list[torch.Tensor]
    h1: list[torch.Tensor]
    h2: list[torch.Tensor]
    lt: list[torch.Tensor]
    flow_f: torch.Tensor
    flow_b: torch.Tensor
    lq1: torch.Tensor
    lq2: torch.Tensor


@ARCHS.register("STARnet", aliases=("starnet",))
class STARnet(STARnetPair, StvsrArch):
    """STARnet under the framework contract (sliding pairs); same weights and keys as :class:`STARnetPair`.

    Args (official settings are the defaults):
        base_filter, feat, num_stages, n_resblock, scale_factor: ``fbpn_sr_rbpn_v4_ref.Net`` (256, 64, 3, 5, 4).
        rbpn_resblocks: ResnetBlocks per RBPN branch (official 5, fixed in its code; smaller for tiny models).
        unet_nf, unet_depth: flow U-Net base width and number of max-pools (official 64, 5).
        refine_flow: False skips the U-Net (the official first stage trains the V4 core alone, ``main.py``); its
            parameters stay in the state_dict. With it off the flow loss is off too.
        flow: flow provider name (``'dis'``: OpenCV DIS, MEDIUM preset); ``model.flow_provider`` may be replaced
            by any :class:`~stvsr.archs.flow.FlowProvider` (e.g. a pyflow wrapper).
        key_frames: ``'left'`` or ``'mean'`` (see the module docstring).
        flow_loss_weight: weight of the flow-refinement loss in :meth:`supervised_loss` (official stage 2: 0.1; 0
            turns it off and saves four flow computations per pair).
        output_init_scale: factor on the initial weights of the three output convs (``reconstruction_h``,
            ``reconstruction_l``, ``RBPN.output``). 1.0 = official init. Not official: with the official kaiming
            init the untrained network's outputs are tens of units off (normalised), and a small model trained
            from scratch spends its first hundreds of iterations shrinking them; 0.01 starts near the mean colour.
    """

    size_divisor = 1  # any LR size of at least 2**unet_depth (32) px works; the output is exactly x4
    official_settings: ClassVar[dict[str, Any]] = {
        "base_filter": 256,
        "feat": 64,
        "num_stages": 3,
        "n_resblock": 5,
        "scale_factor": 4,
    }
    config_required: ClassVar[tuple[str, ...]] = ("base_filter", "feat", "num_stages", "n_resblock", "scale_factor")
    config_ignored: ClassVar[tuple[str, ...]] = ("nframes",)

    def __init__(self, base_filter: int = 256, feat: int = 64, num_stages: int = 3, n_resblock: int = 5,
                 scale_factor: int = 4, rbpn_resblocks: int = 5, unet_nf: int = 64, unet_depth: int = 5,
                 refine_flow: bool = True, flow: str = "dis", key_frames: str = "left",
                 flow_loss_weight: float = 0.1, output_init_scale: float = 1.0) -> None:  # fmt: skip
        super().__init__(base_filter, feat, num_stages, n_resblock, scale_factor, rbpn_resblocks, unet_nf, unet_depth,
                         refine_flow, output_init_scale)  # fmt: skip
        if key_frames not in ("left", "mean"):
            raise ValueError(f"STARnet: key_frames must be 'left' or 'mean', got {key_frames!r}")
        self.flow_provider: FlowProvider = build_flow_provider(flow) if flow else DISFlow()
        self.key_frames = key_frames
        self.flow_loss_weight = float(flow_loss_weight)

    def native(self, t_im1: torch.Tensor, t_im2: torch.Tensor, t_flow_f: torch.Tensor, t_flow_b: torch.Tensor,
               train: bool = True) -> tuple:  # fmt: skip
        """The official pair call (``fbpn_sr_rbpn_v4_ref.Net.forward``)."""
        return STARnetPair.forward(self, t_im1, t_im2, t_flow_f, t_flow_b, train=train)

    @torch.no_grad()
    def network_flow(self, im1: torch.Tensor, im2: torch.Tensor) -> torch.Tensor:
        """Flow im1 -> im2 (LR batches in [0, 1]) from the flow provider, in network units (-clip(px)/150)."""
        return to_network_flow(self.flow_provider(im1, im2).to(device=im1.device, dtype=im1.dtype))

    def network_flows(self, im1: torch.Tensor, im2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(flow_f, flow_b) of LR pairs, network units: the official inputs ``get_flow(I1, I2), get_flow(I2, I1)``."""
        return self.network_flow(im1, im2), self.network_flow(im2, im1)

    def _assemble(self, ht: torch.Tensor, h1: torch.Tensor, h2: torch.Tensor, b: int, n: int) -> torch.Tensor:
        """[F0, I0.5, F1, ...] from per-pair (B, N-1, 3, H, W) predictions, with the key-frame policy."""
        keys = torch.cat((h1, h2[:, -1:]), 1)  # 'left': F_k from pair k, the last one from the last pair
        if self.key_frames == "mean" and n > 2:
            keys = torch.cat((h1[:, :1], 0.5 * (h1[:, 1:] + h2[:, :-1]), h2[:, -1:]), 1)
        frames = torch.stack((keys[:, :-1], ht), 2).flatten(1, 2)
        return torch.cat((frames, keys[:, -1:]), 1)

    def _check_size(self, x: torch.Tensor) -> tuple[int, int, int, int, int]:
        b, n, c, h, w = check_video(self, x)
        if min(h, w) < self.min_size:
            raise ValueError(
                f"STARnet: input frame size {h}x{w} (HxW) is too small: the flow U-Net needs at least "
                f"{self.min_size} px per side (2**unet_depth); pad the low-resolution frames"
            )
        return b, n, c, h, w

    def supervised(self, x: torch.Tensor, time: None = None) -> STARnetTrainOutput:
        """Every output the official objective supervises (train-mode pair calls, the pairs of a clip batched):
        see :class:`STARnetTrainOutput`; :meth:`supervised_loss` takes it. No time stamps."""
        b, n, c, h, w = self._check_size(x)
        s = self.upscale
        first = x[:, :-1].reshape(b * (n - 1), c, h, w)
        second = x[:, 1:].reshape(b * (n - 1), c, h, w)
        flow_f, flow_b = self.network_flows(first, second)
        ht, h1, h2, lt, ref_f, ref_b = self.native(normalize(first), normalize(second), flow_f, flow_b, True)
        per_pair = [denormalize(t[-1]).view(b, n - 1, 3, s * h, s * w) for t in (ht, h1, h2)]
        frames = self._assemble(*per_pair, b, n)
        return STARnetTrainOutput(frames, ht, h1, h2, lt, ref_f, ref_b, first, second)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, 3, h, w) -> (B, 2N-1, 3, sh, sw). In train mode the final predictions of :meth:`supervised`
        (not clamped); in eval mode one pair at a time, clamped to [0, 1]."""
        if self.training:
            return self.supervised(x).frames
        b, n = self._check_size(x)[:2]
        outs = []
        for k in range(n - 1):  # one pair at a time: bounds the memory of evaluation on large frames
            f1, f2 = x[:, k], x[:, k + 1]
            flow_f, flow_b = self.network_flows(f1, f2)
            ht, h1, h2, _ = self.native(normalize(f1), normalize(f2), flow_f, flow_b, False)
            outs.append(torch.stack([denormalize(t) for t in (ht, h1, h2)], 1))
        ht, h1, h2 = torch.stack(outs, 1).unbind(2)  # each (B, N-1, 3, sH, sW)
        return self._assemble(ht, h1, h2, b, n).clamp(0, 1)

    def supervised_loss(
        self, out: STARnetTrainOutput, gt: torch.Tensor, pixel: Criterion, feature: Criterion | None = None
    ) -> torch.Tensor:
        """The official STARnet objective (``main_refinement_flow.py``, ``--train_obj STAR``), per pair:

        ``l_pix = P(I_t) + 0.5 P(I_1) + 0.5 P(I_2) + P(LR I_t)`` with each ``P`` over [aux, final] weighted
        [0.4, 1.0]; ``pixel`` is applied to ImageNet-normalised tensors, as the official L1 is (it is then a
        per-channel 1/std scaling of the [0, 1] L1). ``l_feat``: the same weighting of ``feature`` (given [0, 1]
        RGB: the denormalised, unclamped prediction and the GT). ``l_flow = MSE(flow_f, gt_f) + MSE(flow_b,
        gt_b)`` in network units, gt_f = net(flow(LR1 -> LR_t)) + net(flow(LR_t -> LR2)) (the official naive sum),
        times ``flow_loss_weight``. The pairs of a clip are batched, so a mean criterion averages over them.

        The LR target (LR I_t) is the bicubic /scale of the GT middle frame: ``F.interpolate(mode='bicubic',
        antialias=True)``, PyTorch's port of PIL's BICUBIC resampling (the official LR target is PIL BICUBIC of
        the uint8 HR frame; not rounded here). ``pixel`` and ``feature`` carry their weights already.
        """
        t = gt.shape[1]
        n = (t + 1) // 2
        hh, ww = gt.shape[-2:]
        targets = {
            "h1": gt[:, 0 : t - 1 : 2].reshape(-1, 3, hh, ww),
            "ht": gt[:, 1:t:2].reshape(-1, 3, hh, ww),
            "h2": gt[:, 2:t:2].reshape(-1, 3, hh, ww),
        }
        if targets["ht"].shape[0] != out.ht[-1].shape[0]:
            raise ValueError(f"STARnet.supervised_loss: GT has {t} frames, expected {2 * n - 1} for the model output")
        s = self.upscale
        targets["lt"] = F.interpolate(targets["ht"], size=(hh // s, ww // s), mode="bicubic", align_corners=False,
                                      antialias=True)  # fmt: skip
        terms = (("ht", 1.0), ("h1", 0.5), ("h2", 0.5), ("lt", 1.0))
        loss = gt.new_zeros(())
        for name, w in terms:
            target = targets[name]
            target_n = normalize(target)
            for stage_w, pred in zip((0.4, 1.0), getattr(out, name)):
                loss = loss + w * stage_w * pixel(pred, target_n)
                if feature is not None:
                    loss = loss + w * stage_w * feature(denormalize(pred), target)
        if self.flow_loss_weight > 0 and self.refine_flow:
            lq_t = targets["lt"].clamp(0, 1)
            gt_f = self.network_flow(out.lq1, lq_t) + self.network_flow(lq_t, out.lq2)
            gt_b = self.network_flow(out.lq2, lq_t) + self.network_flow(lq_t, out.lq1)
            flow_loss = F.mse_loss(out.flow_f, gt_f) + F.mse_loss(out.flow_b, gt_b)
            loss = loss + self.flow_loss_weight * flow_loss
        return loss

    def extra_repr(self) -> str:
        return f"flow_provider={self.flow_provider!r}, key_frames={self.key_frames!r}"
