"""SAFA, Scale-Adaptive Feature Aggregation (WACV 2024): ``SAFA`` (docs/models.md, SAFA).

A pair model: two key frames, already upsampled x4 to the high-resolution size, and a time t in [0, 1] give
one HR frame per t, by optical-flow warping plus a residual. The official model (``SAFA()``, the defaults
here) has 4,941,442 parameters and the 275 ``state_dict`` keys (245 parameters + 30 BatchNorm buffers) of
``tests/data/keys/safa.txt``, without prefix: an official ``flownet.pkl`` loads with ``strict=True`` once its
``module.`` prefix is stripped (``stvsr.model.weights.load_official`` does that).

Three ways to call it:

- ``model(lqs)``, the framework contract: (B, N, 3, h, w) RGB in [0, 1] LR frames -> (B, 2N-1, 3, 4h, 4w),
  frames [F0, I0.5, F1, ..., F(N-1)], in train and eval mode. Inside:
  1. every LR frame is upsampled x4 with bicubic interpolation, as the official ``inference_img.py`` does
     with OpenCV ``INTER_CUBIC``: ``F.interpolate(mode='bicubic', align_corners=False)`` is the same filter
     (Keys a = -0.75, half-pixel centres, replicated border). With ``upsample_quantize=True`` (default) the
     result is clamped and rounded to 8 bits as OpenCV does on uint8 frames: on 8-bit inputs it then equals
     ``cv2.resize(..., fx=4, fy=4, interpolation=cv2.INTER_CUBIC)`` within one grey level (OpenCV's 8-bit path
     rounds in 11-bit fixed point: about 1 value in 10^5 differs by 1 with OpenCV 4.13 to 5.0; tested); without
     it the float result differs from OpenCV's float32 result by < 1e-6 (no clamping, no rounding);
  2. RGB -> BGR (the model was trained on BGR frames; its ImageNet RGB normalisation is applied to BGR,
     quirk 5, KEEP), and back to RGB at the end;
  3. each adjacent pair (k, k+1) is run at t = 0.5 (the frame between them) and at t = 0 (key frame k);
     the last key frame is the last pair's t = 1 output. **Key-frame policy**: a key frame is predicted
     by the pair where it is the left frame (t = 0), the last one by the last pair (t = 1); the other
     prediction of each key frame is not computed.
- ``model.forward_times(lqs, time_factor)``: the same with ``time_factor - 1`` frames at t = k/time_factor
  between each pair: (B, N, 3, h, w) -> (B, (N-1)*time_factor + 1, 3, 4h, 4w); ``time_factor=2`` is
  ``model(lqs)`` in eval mode.
- ``model.inference(lowres, t)``, the official call: lowres (B, 6, H, W) = two BGR key frames already
  at HR size; ``t`` a float or a (B,1,1,1) tensor -> [out(0), out(t), out(1)]; ``t`` a list of floats ->
  one output per t. ``model.forward_official(lowres, timestep)`` is the official ``forward`` (9 fixed
  timesteps; returns the flows, the gates of t = 1/8 and the 9 frames).

Sizes: the HR size must be a multiple of 8 (the ResNet head and the flow blocks work down to H/8 and back), so
the LR frames must be multiples of 2 (``size_divisor = 2``; the official ``inference_img.py`` pads the HR
frames to a multiple of 32, which is not needed).

Branch gate (``gate``): each flow block picks a processing scale (H/2, H/4 or H/8) from two sigmoid
probabilities p. In train mode it is a Bernoulli draw with a straight-through gradient (``RoundSTE``,
official). In eval mode the official code draws too (quirk 6: outputs differ from call to call);
here ``gate='threshold'`` (default) uses s = (p >= 0.5), deterministic, and ``gate='sample'`` is the
official draw. When gradients are off, only the branches some sample selected are computed (the official
code does that for a batch of one; the result is the same); with gradients on, all three are computed and
masked, so that the straight-through gradient reaches the gate (the official B > 1 path).

BatchNorm: the 10 BN layers of the ResNet head stay in eval mode in train mode (``train()`` re-applies it,
official), so their running statistics never change.

Training (the trainer calls ``model.training_objective(lqs, gt, pixel, feature)``): the official supervision
at [t=0, t, t=1] (quirk 1, FIX). The first and last LR frames (0 and N-1) are the key frames, i.e. GT frames 0
and M = 2N-2; per sample a k is drawn uniformly in 1..M-1 with torch's global RNG (seeded runs are
reproducible) and t = k/M. ``model.supervised(lqs)`` gives a :class:`SAFATrainOutput` (the three RGB frames
and their GT indices [0, k, M]); the loss (``model.supervised_loss``) is the sum over
the three frames of ``pixel(out_i, gt_i)`` (with ``l1`` / mean, the official L1: mean per frame, summed
over the frames), plus the same sum of ``feature`` when given. With a Vimeo septuplet (N_frames 7: 4 LR
frames) t is one of 1/6..5/6; with N_frames 3 (2 LR frames) t = 0.5.

Small variants (keyword arguments; the defaults are the official model): ``c`` (80; ``nf`` in ``network_G``)
feature channels,
``block_num`` (6) flow blocks, ``depth`` (2) Resblocks per flow block, ``last_RBs`` (12) Resblocks of
``lastconv``, ``head_nf`` (64) width of the ResNet-18 head (layer2 is twice as wide).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from stvsr.imagenet import IMAGENET_MEAN, IMAGENET_STD
from stvsr.registry import ARCHS

from .base import Criterion, StvsrArch
from .blocks import check_video

GATES = ("threshold", "sample")


def conv(in_planes: int, out_planes: int, kernel_size: int = 3, stride: int = 1, padding: int = 1) -> nn.Sequential:
    """Conv2d with bias followed by a per-channel PReLU (keys ``0.weight``, ``0.bias``, ``1.weight``)."""
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size, stride, padding, bias=True), nn.PReLU(out_planes)
    )


def _resize(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Bilinear resize by ``scale``, ``align_corners=False`` (the official ``F.interpolate`` calls)."""
    return F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)


def warp(img: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward warp: out(y, x) = img(y + flow_y, x + flow_x), bilinear, border padding.

    ``flow`` (B, 2, H, W) in pixels, channel 0 horizontal, channel 1 vertical; sampled with ``grid_sample``
    (``align_corners=True``: pixel centres at -1 .. 1, so a pixel is 2 / (W - 1) in grid units).
    """
    b, _, h, w = flow.shape
    xs = torch.linspace(-1.0, 1.0, w, device=flow.device, dtype=flow.dtype).view(1, 1, 1, w).expand(b, 1, h, w)
    ys = torch.linspace(-1.0, 1.0, h, device=flow.device, dtype=flow.dtype).view(1, 1, h, 1).expand(b, 1, h, w)
    grid = torch.cat((xs + flow[:, 0:1] / ((w - 1.0) / 2.0), ys + flow[:, 1:2] / ((h - 1.0) / 2.0)), 1)
    return F.grid_sample(img, grid.permute(0, 2, 3, 1), mode="bilinear", padding_mode="border", align_corners=True)


class RoundSTE(torch.autograd.Function):
    """Bernoulli draw (or threshold at 0.5) in the forward pass, identity gradient in the backward pass.

    A NaN probability (a diverged network) passes through as NaN instead of failing ``torch.bernoulli``, so that it
    reaches the loss, where the trainer's guard skips the step and stops after ``train.max_bad_steps``."""

    @staticmethod
    def forward(ctx, p: torch.Tensor, sample: bool = True) -> torch.Tensor:  # type: ignore[override]
        if not sample:
            return (p >= 0.5).to(p.dtype)
        invalid = torch.isnan(p)
        draw = torch.bernoulli(torch.where(invalid, torch.zeros_like(p), p.clamp(0.0, 1.0)))
        return torch.where(invalid, p, draw)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return grad, None


class Resblock(nn.Module):
    """out = PReLU(beta * conv(PReLU(conv(x))) + x), beta (1, c, 1, 1) initialised to 0: PReLU(x) at init."""

    def __init__(self, c: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(c, c, 3, 1, dilation, dilation=dilation),
            nn.PReLU(c),
            nn.Conv2d(c, c, 3, 1, dilation, dilation=dilation),
        )
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.prelu = nn.PReLU(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prelu(self.conv(x) * self.beta + x)


# ------------------------------------------------------------------ ResNet-18 parts of the head
class BasicBlock(nn.Module):
    """The ResNet basic block (torchvision names: conv1, bn1, conv2, bn2, downsample)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class MeanShift(nn.Conv2d):
    """1x1 conv 3->3 initialised to (x - mean) / std per channel (ImageNet RGB statistics).

    Trainable (quirk 4, KEEP: the official ``requires_grad = False`` is set on the module, not on its
    parameters, and its 12 parameters are in the checkpoint).
    """

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__(3, 3, kernel_size=1)
        std_t = torch.tensor(std, dtype=torch.float32)
        with torch.no_grad():
            self.weight.copy_(torch.diag(1.0 / std_t).view(3, 3, 1, 1))
            self.bias.copy_(-torch.tensor(mean, dtype=torch.float32) / std_t)


class Head(nn.Module):
    """Per-frame features at H/2: ResNet-18 stem, layer1 and layer2 (no pretrained weights), fused at H/2.

    out0(f0) + up2(out1(f1)) + up4(out2(f2)), with f0 (``cnn0``: conv1, bn1, relu; H/2), f1 (``cnn1``:
    maxpool, layer1; H/4) and f2 (``cnn2``: layer2; H/8). ``nf`` is the ResNet width (64 in resnet18).
    """

    def __init__(self, c: int, nf: int = 64) -> None:
        super().__init__()
        self.cnn0 = nn.Sequential(nn.Conv2d(3, nf, 7, 2, 3, bias=False), nn.BatchNorm2d(nf), nn.ReLU(inplace=True))
        self.cnn1 = nn.Sequential(nn.MaxPool2d(3, 2, 1), nn.Sequential(BasicBlock(nf, nf), BasicBlock(nf, nf)))
        self.cnn2 = nn.Sequential(nn.Sequential(BasicBlock(nf, 2 * nf, stride=2), BasicBlock(2 * nf, 2 * nf)))
        # torchvision's ResNet initialisation, before the SAFA layers are added
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self.out0 = nn.Conv2d(nf, c, 1, 1, 0)
        self.out1 = nn.Conv2d(nf, c, 1, 1, 0)
        self.out2 = nn.Conv2d(2 * nf, c, 1, 1, 0)
        self.normalize = MeanShift()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f0 = self.cnn0(self.normalize(x))
        f1 = self.cnn1(f0)
        f2 = self.cnn2(f1)
        return self.out0(f0) + _resize(self.out1(f1), 2.0) + _resize(self.out2(f2), 4.0)


# ------------------------------------------------------------------ flow estimation
class RecurrentBlock(nn.Module):
    """One flow block: gate a scale (H/2, H/4, H/8 of the image), run the shared stem + Resblocks there.

    x = [f, F_down, warp(i0), warp(i1), tmap] (3c + 7 channels); f <- the gated branch mix; F <- convflow(f) + F.
    """

    def __init__(self, c: int, dilation: int = 1, depth: int = 2) -> None:
        super().__init__()
        self.conv_stem = conv(3 * c + 6 + 1, c, 3, 1, 1)
        self.conv_backbone = nn.ModuleList(Resblock(c, dilation) for _ in range(depth))

    def _branch(self, x: torch.Tensor, scale: float) -> torch.Tensor:
        y = self.conv_stem(x if scale == 1 else _resize(x, scale))
        for block in self.conv_backbone:
            y = block(y)
        return y if scale == 1 else _resize(y, 1 / scale)

    def forward(
        self,
        feat: torch.Tensor,
        i0: torch.Tensor,
        i1: torch.Tensor,
        flow: torch.Tensor,
        tmap: torch.Tensor,
        convflow: nn.Module,
        getscale: nn.Module,
        sample: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        flow_down = _resize(flow, 0.5)
        w0 = warp(i0, flow_down[:, :2] * 0.5)
        w1 = warp(i1, flow_down[:, 2:4] * 0.5)
        x = torch.cat((feat, flow_down, w0, w1, tmap), 1)
        s = RoundSTE.apply(getscale(x), sample).unsqueeze(2).unsqueeze(3)  # (B, 2, 1, 1) in {0, 1}
        s0, s1 = s[:, 0:1], s[:, 1:2]
        weights = (s0 * s1, (1 - s0) * s1, 1 - s1)  # full, half and quarter resolution
        # with gradients on, every branch runs (the straight-through gradient of a gate needs all three);
        # without, only the branches some sample selected (an unselected branch adds exactly 0)
        run_all = torch.is_grad_enabled()
        out = None
        for weight, scale in zip(weights, (1.0, 0.5, 0.25)):
            if run_all or bool((weight > 0).any()):
                term = self._branch(x, scale) * weight
                out = term if out is None else out + term
        assert out is not None  # the three weights sum to 1
        return out, convflow(out) + flow, s


class Flownet(nn.Module):
    """Head (``convimg``), pair fusion (``shuffle``), ``block_num`` recurrent flow blocks with a shared
    ``convflow`` (c -> 24, PixelShuffle 2: 6 flow channels at full size) and a shared gate ``getscale``."""

    def __init__(self, block_num: int = 6, c: int = 80, depth: int = 2, head_nf: int = 64) -> None:
        super().__init__()
        self.block_num = block_num
        self.convimg = Head(c, head_nf)
        self.shuffle = conv(2 * c, c, 3, 1, 1)
        self.convblock = nn.ModuleList(RecurrentBlock(c, 1, depth) for _ in range(block_num))
        self.convflow = nn.Sequential(nn.Conv2d(c, 4 * 6, 3, 1, 1), nn.PixelShuffle(2))
        self.getscale = nn.Sequential(
            conv(3 * c + 6 + 1, c, 1, 1, 0),
            conv(c, c, 1, 2, 0),
            nn.AdaptiveAvgPool2d((1, 1)),
            nn.Flatten(),
            nn.Linear(c, 2),
            nn.Sigmoid(),
        )

    def extract_feat(self, lowres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(feat, i0, i1) of a (B, 6, H, W) pair: Head of each frame, and their fusion."""
        i0 = self.convimg(lowres[:, :3])
        i1 = self.convimg(lowres[:, 3:6])
        return self.shuffle(torch.cat((i0, i1), 1)), i0, i1

    def forward(
        self, i0: torch.Tensor, i1: torch.Tensor, feat: torch.Tensor, tmap: torch.Tensor, flow: torch.Tensor,
        sample: bool = True,
    ) -> tuple[list[torch.Tensor], torch.Tensor]:  # fmt: skip
        """The flows after each block and the gates (B, 2 * block_num, 1, 1)."""
        flows, scales = [], []
        for block in self.convblock:
            feat, flow, s = block(feat, i0, i1, flow, tmap, self.convflow, self.getscale, sample)
            flows.append(flow)
            scales.append(s)
        return flows, torch.cat(scales, 1)


class SAFATrainOutput(NamedTuple):
    """What :meth:`SAFA.supervised` returns: RGB frames (B, 3, 3, H, W) at [t=0, t, t=1] and the GT indices
    (B, 3) they are supervised with, [0, k, 2N-2]."""

    frames: torch.Tensor
    gt_index: torch.Tensor


@ARCHS.register("SAFA", aliases=("safa",))
class SAFA(StvsrArch):
    """SAFA: scale-adaptive flow estimation between two pre-upsampled key frames, warping and a residual.

    Args (all optional; the defaults are the official model, whose constructor takes no arguments):
        c: feature channels (80; the ``network_G`` key is ``nf``). Even.
        block_num: recurrent flow blocks (6).
        depth: Resblocks per flow block (2).
        last_RBs: Resblocks of the synthesis network ``lastconv`` (12).
        head_nf: width of the ResNet-18 head (64; layer2 has twice as many channels).
        gate: eval-mode branch gate, ``'threshold'`` (p >= 0.5, deterministic, default) or ``'sample'``
            (the official Bernoulli draw). Train mode always draws.
        upsample_quantize: round the bicubic pre-upsampling of ``forward`` / ``forward_times`` to 8 bits,
            as OpenCV on uint8 frames (True).
    """

    size_divisor = 2  # LR; the HR size (x4) must be a multiple of 8
    upscale = 4
    supports_time_factor = True
    official_settings: ClassVar[dict[str, Any]] = {}  # the official SAFA() takes no arguments
    config_renames: ClassVar[dict[str, str]] = {"nf": "c"}
    config_required: ClassVar[tuple[str, ...]] = ()
    config_ignored: ClassVar[tuple[str, ...]] = ("nframes",)  # a pair model: any N >= 2 works

    def __init__(
        self,
        c: int = 80,
        block_num: int = 6,
        depth: int = 2,
        last_RBs: int = 12,
        head_nf: int = 64,
        gate: str = "threshold",
        upsample_quantize: bool = True,
    ) -> None:
        super().__init__()
        if c < 2 or c % 2:
            raise ValueError(f"SAFA: c (nf) = {c} must be an even number >= 2")
        if block_num < 1 or head_nf < 1:
            raise ValueError(f"SAFA: block_num ({block_num}) and head_nf ({head_nf}) must be >= 1")
        if gate not in GATES:
            raise ValueError(f"SAFA: gate {gate!r} is not one of {', '.join(map(repr, GATES))}")
        self.c, self.gate, self.upsample_quantize = c, gate, bool(upsample_quantize)
        self.block = Flownet(block_num, c=c, depth=depth, head_nf=head_nf)
        self.lastconv = nn.Sequential(
            conv(2 * c + 1, c, 3, 2, 1),
            *(Resblock(c) for _ in range(last_RBs)),
            conv(c, 2 * c),
            nn.PixelShuffle(2),
            nn.Conv2d(c // 2, 12, 3, 1, 1),
            nn.PixelShuffle(2),
        )

    # ------------------------------------------------------------ modes
    def train(self, mode: bool = True) -> SAFA:
        """Train mode everywhere except the head's BatchNorm layers, which stay in eval mode (official)."""
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    def _sample_gate(self) -> bool:
        return self.training or self.gate == "sample"

    # ------------------------------------------------------------ the official computation
    def _synthesize(
        self,
        lowres: torch.Tensor,
        i0: torch.Tensor,
        i1: torch.Tensor,
        feat: torch.Tensor,
        tmap: torch.Tensor,
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """One HR frame (B, 3, H, W) BGR at the time of ``tmap`` (B, 1, H/2, W/2); also the flows and gates."""
        zero = lowres.new_zeros(lowres.shape[0], 6, *lowres.shape[2:])
        flows, scales = self.block(i0, i1, feat, tmap, zero, self._sample_gate())
        flow = flows[-1]
        mask = torch.sigmoid(flow[:, 4:5])
        warped = warp(lowres[:, :3], flow[:, :2]) * mask + warp(lowres[:, 3:6], flow[:, 2:4]) * (1 - mask)
        flow_down = _resize(flow, 0.5)
        w0 = warp(i0, flow_down[:, :2] * 0.5)
        w1 = warp(i1, flow_down[:, 2:4] * 0.5)
        res = self.lastconv(torch.cat((tmap, w0, w1), 1))
        return torch.clamp(warped + res, 0, 1), flows, scales

    @staticmethod
    def _time_maps(lowres: torch.Tensor, timestep: float | Sequence[float] | torch.Tensor) -> list[torch.Tensor]:
        """Constant t maps at (B, 1, H/2, W/2): [0, t, 1] for a float or tensor t, one per t for a list."""
        b, _, h, w = lowres.shape
        one = lowres.new_ones(b, 1, h // 2, w // 2)
        if isinstance(timestep, (list, tuple)):
            return [one * float(t) for t in timestep]
        if torch.is_tensor(timestep):
            t = timestep.to(lowres).reshape(-1, 1, 1, 1)
            if t.shape[0] not in (1, b):
                raise ValueError(f"SAFA: timestep tensor of {t.shape[0]} values for a batch of {b}")
            tmap = one * t
        else:
            tmap = one * float(timestep)
        return [one * 0, tmap, one]

    @staticmethod
    def _check_lowres(lowres: torch.Tensor) -> None:
        if lowres.dim() != 4 or lowres.shape[1] != 6:
            raise ValueError(f"SAFA: lowres must be (B, 6, H, W) (two BGR key frames), got {tuple(lowres.shape)}")
        if lowres.shape[2] % 8 or lowres.shape[3] % 8:
            raise ValueError(
                f"SAFA: lowres size {lowres.shape[2]}x{lowres.shape[3]} (HR, pre-upsampled) is not a multiple of 8"
            )

    def inference(
        self, lowres: torch.Tensor, timestep: float | Sequence[float] | torch.Tensor = 0.5
    ) -> list[torch.Tensor]:
        """The official ``inference``: lowres (B, 6, H, W) BGR key frames at HR size, H and W multiples of 8.

        ``timestep`` a float or a (B, 1, 1, 1) tensor -> [out(0), out(t), out(1)]; a list of floats -> one
        frame per t. Each frame (B, 3, H, W) BGR in [0, 1].
        """
        self._check_lowres(lowres)
        feat, i0, i1 = self.block.extract_feat(lowres)
        return [self._synthesize(lowres, i0, i1, feat, tmap)[0] for tmap in self._time_maps(lowres, timestep)]

    def forward_official(
        self, lowres: torch.Tensor, timestep: float | torch.Tensor = 0.5
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """The official ``forward``: t = 0, 1/8, ..., 1 whatever ``timestep`` (quirk 1).

        Returns the flows of t = 1 (the 6 block flows and the final flow again, concatenated along the width:
        (B, 6, H, 7W)), the gates of t = 1/8 (B, 2 * block_num, 1, 1) and the 9 frames (B, 3, H, W) BGR.
        """
        self._check_lowres(lowres)
        feat, i0, i1 = self.block.extract_feat(lowres)
        merged, gates, flows = [], [], []
        for tmap in self._time_maps(lowres, [k / 8 for k in range(9)]):
            out, flows, scales = self._synthesize(lowres, i0, i1, feat, tmap)
            merged.append(out)
            gates.append(scales)
        return torch.cat([*flows, flows[-1]], 3), gates[1], merged

    # ------------------------------------------------------------ the framework contract
    def upsample(self, lqs: torch.Tensor) -> torch.Tensor:
        """Bicubic x4 of (..., 3, h, w) frames (OpenCV INTER_CUBIC semantics; see the module docstring)."""
        shape = lqs.shape
        up = F.interpolate(lqs.reshape(-1, *shape[-3:]), scale_factor=4, mode="bicubic", align_corners=False)
        if self.upsample_quantize:
            up = torch.round(up.clamp(0, 1) * 255) / 255
        return up.reshape(*shape[:-2], *up.shape[-2:])

    def _pair_frames(self, lqs: torch.Tensor, times: Sequence[float]) -> torch.Tensor:
        """(B, N, 3, h, w) RGB -> frames at the given times of every pair, then the last key frame (t = 1)."""
        b, n = lqs.shape[:2]
        up = self.upsample(lqs).flip(2)  # (B, N, 3, H, W) BGR
        feats = self.block.convimg(up.flatten(0, 1)).unflatten(0, (b, n))  # the head once per frame
        frames = []
        for p in range(n - 1):
            lowres = up[:, p : p + 2].flatten(1, 2)
            i0, i1 = feats[:, p], feats[:, p + 1]
            feat = self.block.shuffle(torch.cat((i0, i1), 1))
            pair_times = [*times, 1.0] if p == n - 2 else list(times)
            for tmap in self._time_maps(lowres, pair_times):
                frames.append(self._synthesize(lowres, i0, i1, feat, tmap)[0])
        return torch.stack(frames, 1).flip(2)  # RGB

    def forward_times(self, lqs: torch.Tensor, time_factor: int) -> torch.Tensor:
        """(B, N, 3, h, w) RGB LR -> (B, (N-1)*time_factor + 1, 3, 4h, 4w): frames at t = k/time_factor,
        k = 0 .. time_factor - 1, between each pair, then the last key frame (key-frame policy above)."""
        if int(time_factor) != time_factor or time_factor < 1:
            raise ValueError(f"SAFA: time_factor must be a positive integer, got {time_factor!r}")
        check_video(self, lqs)
        return self._pair_frames(lqs, [k / int(time_factor) for k in range(int(time_factor))])

    def forward(self, lqs: torch.Tensor) -> torch.Tensor:
        """(B, N, 3, h, w) RGB LR -> (B, 2N-1, 3, 4h, 4w) [F0, I0.5, F1, ...] (in train mode the branch gates
        draw, see the module docstring)."""
        check_video(self, lqs)
        return self._pair_frames(lqs, [0.0, 0.5])

    # ------------------------------------------------------------ training
    def supervised(self, lqs: torch.Tensor, time: None = None) -> SAFATrainOutput:
        """The frames the official training supervises (quirk 1, FIX): per sample a k drawn in 1..M-1 (M = 2N-2),
        the frames at [t=0, t=k/M, t=1] between LR frames 0 and N-1 and their GT indices [0, k, M] (module
        docstring). No time stamps (``takes_time`` is False)."""
        b, n = check_video(self, lqs)[:2]
        m = 2 * n - 2
        k = torch.randint(1, m, (b,))  # the global CPU generator: seeded runs repeat
        t = (k.to(lqs.dtype) / m).to(lqs.device)
        lowres = self.upsample(lqs[:, [0, n - 1]]).flip(2).flatten(1, 2)  # BGR (B, 6, H, W)
        frames = torch.stack(self.inference(lowres, t), 1).flip(2)
        index = torch.stack((torch.zeros_like(k), k, torch.full_like(k, m)), 1).to(lqs.device)
        return SAFATrainOutput(frames, index)

    def supervised_loss(
        self, out: SAFATrainOutput, gt: torch.Tensor, pixel: Criterion, feature: Criterion | None = None
    ) -> torch.Tensor:
        """sum over the three supervised frames ``out`` of ``pixel(out_i, gt_i)`` (+ ``feature(out_i, gt_i)``);
        ``gt`` (B, 2N-1, 3, H, W) RGB, the batch GT."""
        expected = int(out.gt_index[0, 2]) + 1
        if gt.dim() != 5 or gt.shape[1] != expected:
            raise ValueError(
                f"SAFA.supervised_loss: GT of shape {tuple(gt.shape)}, expected (B, {expected}, 3, H, W): "
                f"2N-1 frames for N LR frames (the LR frames must be GT frames 0, 2, ..., 2N-2)"
            )
        rows = torch.arange(gt.shape[0], device=gt.device)[:, None]
        target = gt[rows, out.gt_index.to(gt.device)]  # (B, 3, 3, H, W)
        loss = sum(pixel(out.frames[:, i], target[:, i]) for i in range(3))
        if feature is not None:
            loss = loss + sum(feature(out.frames[:, i], target[:, i]) for i in range(3))
        return loss  # type: ignore[return-value]
