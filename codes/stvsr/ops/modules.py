"""Deformable-convolution modules with the parameter names of the official checkpoints.

| class                | offsets and mask from          | offset conv name   | main weight init     |
|----------------------|--------------------------------|--------------------|----------------------|
| ``DCNv2``            | its own input                  | conv_offset_mask   | uniform +-1/sqrt(n)  |
| ``DCNSep``           | a separate feature ``feat``    | conv_offset_mask   | uniform +-1/sqrt(n)  |
| ``DCNv2Pack``        | a separate feature ``feat``    | conv_offset        | kaiming_uniform relu |
| ``DCNSepBounded``    | a separate feature ``feat``    | conv_offset        | uniform +-1/sqrt(n)  |
| ``DeformableSampling`` | a separate feature ``feat``  | conv_offset_mask   | (no weight)          |

The offset conv has 3*G*kh*kw outputs, split in three: the first two thirds are the offsets (kept
in order, so interleaved (dy, dx)), the last third goes through a sigmoid to give the mask. It is
zero-initialised: at init every offset is 0 and every mask 0.5. ``DCNSepBounded`` (MSITF) also bounds
the offsets to +-10 px by ``10 * tanh``.
"""

from __future__ import annotations

import logging
import math
import time

import torch
from torch import nn
from torch.nn.modules.utils import _pair

from .backends import is_compiling
from .functional import IntPair, deform_sample, modulated_deform_conv2d

logger = logging.getLogger(__name__)

OFFSET_WARNING_THRESHOLD = 100.0
_CHECK_EVERY = 50  # eager forwards of a module between two reads of its offset magnitude (a GPU sync)
_WARN_INTERVAL_S = 60.0
_last_warning = [-math.inf]


def offset_magnitudes(model: nn.Module) -> dict[str, float]:
    """Mean |offset| of the last forward of every deformable module of ``model``, by module name (one sync)."""
    heads = [(name, m.offset_magnitude) for name, m in model.named_modules() if isinstance(m, _OffsetMaskHead)]
    if not heads:
        return {}
    values = torch.stack([b.detach().float() for _, b in heads]).tolist()
    return {name: value for (name, _), value in zip(heads, values)}


def check_offsets(model: nn.Module, threshold: float = OFFSET_WARNING_THRESHOLD) -> dict[str, float]:
    """Warns (at most once a minute) when a deformable module's mean |offset| exceeds ``threshold``, as the
    official code does (training may be diverging). Returns the offending modules' magnitudes."""
    large = {name: v for name, v in offset_magnitudes(model).items() if not v <= threshold}  # NaN is large too
    now = time.monotonic()
    if large and now - _last_warning[0] > _WARN_INTERVAL_S:
        _last_warning[0] = now
        name, value = max(large.items(), key=lambda item: item[1] if item[1] == item[1] else math.inf)
        where = " ".join(filter(None, (type(model.get_submodule(name)).__name__, name)))
        others = f" ({len(large) - 1} other deformable module(s) above it)" if len(large) > 1 else ""
        logger.warning("%s: mean |offset| = %.1f > %g, training may be diverging%s", where, value, threshold, others)
    return large


class _OffsetMaskHead(nn.Module):
    """Owns the zero-initialised offset conv and turns its output into (offset, mask)."""

    offset_conv_name = "conv_offset_mask"

    def __init__(
        self,
        offset_in_channels: int,
        kernel_size: IntPair,
        stride: IntPair,
        padding: IntPair,
        dilation: IntPair,
        deformable_groups: int,
        offset_bound: float | None = None,
    ) -> None:
        super().__init__()
        kernel_size = _pair(kernel_size)
        self.kernel_size, self.stride, self.padding, self.dilation = (
            kernel_size,
            _pair(stride),
            _pair(padding),
            _pair(dilation),
        )
        self.deformable_groups = deformable_groups
        self.offset_bound = offset_bound
        conv = nn.Conv2d(
            offset_in_channels,
            3 * deformable_groups * kernel_size[0] * kernel_size[1],
            kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            bias=True,
        )
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
        self.add_module(self.offset_conv_name, conv)
        # Mean |offset| of the last forward, kept on the device: recording it is one fused reduction, no
        # host sync and no Python state, so torch.compile traces it. Not in the state_dict.
        self.register_buffer("offset_magnitude", torch.zeros(()), persistent=False)
        self._forwards = 0

    def offset_and_mask(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        o1, o2, mask = torch.chunk(getattr(self, self.offset_conv_name)(feat), 3, dim=1)
        offset = torch.cat((o1, o2), dim=1)
        if self.offset_bound is not None:  # MSITF bounds offsets to +-offset_bound px
            offset = self.offset_bound * torch.tanh(offset)
        self._record_offsets(offset)
        return offset, torch.sigmoid(mask)

    def _record_offsets(self, offset: torch.Tensor) -> None:
        if torch.jit.is_tracing():
            return
        self.offset_magnitude.copy_(offset.detach().abs().mean())
        if is_compiling():
            return  # a compiled model is checked from outside (the trainer calls check_offsets)
        self._forwards += 1
        if self._forwards % _CHECK_EVERY == 1:  # eager use: the official per-forward warning, rate-limited
            check_offsets(self)


class _ModulatedDeformConv(_OffsetMaskHead):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        deformable_groups: int = 1,
        bias: bool = True,
        offset_in_channels: int | None = None,
        offset_bound: float | None = None,
    ) -> None:
        super().__init__(
            offset_in_channels or in_channels, kernel_size, stride, padding, dilation, deformable_groups, offset_bound
        )
        if in_channels % deformable_groups:
            raise ValueError(f"in_channels={in_channels} is not divisible by deformable_groups={deformable_groups}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *self.kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """CharlesShang DCNv2 init: uniform +-1/sqrt(C*kh*kw), bias 0."""
        bound = 1.0 / math.sqrt(self.in_channels * self.kernel_size[0] * self.kernel_size[1])
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def deform(self, x: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        offset, mask = self.offset_and_mask(feat)
        return modulated_deform_conv2d(
            x, offset, mask, self.weight, self.bias, self.stride, self.padding, self.dilation, self.deformable_groups
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, deformable_groups={self.deformable_groups}"
        )


class DCNv2(_ModulatedDeformConv):
    """DCNv2 whose offsets and mask come from its own input: ``forward(x)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.deform(x, x)


class DCNSep(_ModulatedDeformConv):
    """Zooming Slow-Mo's ``DCN_sep``: deforms ``x`` with offsets and mask computed from ``feat``."""

    def forward(self, x: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        return self.deform(x, feat)


class DCNv2Pack(DCNSep):
    """STDAN's ``DCNv2Pack``: as ``DCNSep`` with the offset conv named ``conv_offset`` and kaiming init."""

    offset_conv_name = "conv_offset"

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, nonlinearity="relu")
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class DCNSepBounded(DCNSep):
    """MSITF's ``DCN_sep`` (mmcv-style class over ``torchvision.ops.deform_conv2d``): as ``DCNSep`` with the
    offset conv named ``conv_offset`` (zero-initialised) and offsets ``offset_bound * tanh(.)``, 10 by default.

    Main weight uniform +-1/sqrt(C*kh*kw), bias 0, as ``DCNSep`` (docs/backends.md).
    """

    offset_conv_name = "conv_offset"

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        deformable_groups: int = 1,
        bias: bool = True,
        offset_in_channels: int | None = None,
        offset_bound: float | None = 10.0,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            deformable_groups,
            bias,
            offset_in_channels,
            offset_bound,
        )


class DeformableSampling(_OffsetMaskHead):
    """STDAN's ``DSP_sep2``: mask-modulated deformable samples of ``x``, no convolution.

    ``forward(x, feat)`` returns (B, C, kh*kw, Ho*Wo), offsets and mask computed from ``feat``.
    """

    def __init__(
        self,
        in_channels: int,
        kernel_size: IntPair = 3,
        stride: IntPair = 1,
        padding: IntPair = 1,
        dilation: IntPair = 1,
        deformable_groups: int = 1,
        offset_in_channels: int | None = None,
    ) -> None:
        super().__init__(offset_in_channels or in_channels, kernel_size, stride, padding, dilation, deformable_groups)
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        offset, mask = self.offset_and_mask(feat)
        return deform_sample(
            x, offset, mask, self.kernel_size, self.stride, self.padding, self.dilation, self.deformable_groups
        )
