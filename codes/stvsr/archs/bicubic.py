"""``bicubic``: the parameter-free space-time baseline (no trained weights needed).

Space: MATLAB ``imresize(x, scale, 'bicubic')`` of every input frame (Keys cubic, a = -0.5, symmetric border;
no antialiasing when enlarging), computed in float64 by :func:`stvsr.resize.imresize`, the same resizer
that makes the BI low-resolution frames; the result is not clamped or rounded (the evaluator quantises).
Time: each intermediate frame is the mean of its two upscaled neighbours; ``forward(x, t)`` with t (B, n) (or
n numbers) gives ``(1 - t) * F_i + t * F_(i+1)`` per stamp, in TMNet's order [F0, I0(t_1) .. I0(t_n), F1, ...],
the baseline of time-stamped samples (``Adobe240``) in training validation.

(B, N, 3, h, w) RGB in [0, 1] -> (B, 2N-1, 3, scale*h, scale*w), frames [F0, I0.5, F1, ..., F(N-1)]; any
size (``size_divisor`` 1), any N >= 2, no parameters. Runs on the CPU in NumPy whatever the input's device;
the output comes back on the input's device and dtype. Not differentiable (inference only).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch

from stvsr.registry import ARCHS
from stvsr.resize import imresize

from .base import StvsrArch
from .blocks import check_video, interleave


@ARCHS.register("bicubic", aliases=("Bicubic",))
class Bicubic(StvsrArch):
    """MATLAB-bicubic x``scale`` upsampling of each frame; intermediate frames = mean of neighbours."""

    size_divisor = 1
    takes_time = True  # forward(x, t): the baseline of time-stamped samples (not offered to stvsr-infer)
    config_ignored: ClassVar[tuple[str, ...]] = ("nf", "nframes")

    def __init__(self, scale: int = 4) -> None:
        super().__init__()
        if scale < 1:
            raise ValueError(f"bicubic: scale must be a positive integer, got {scale}")
        self.upscale = int(scale)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, t: torch.Tensor | Sequence[float] | None = None) -> torch.Tensor:
        b, n, c, h, w = check_video(self, x)
        s = self.upscale
        frames = x.detach().to("cpu", torch.float64).numpy().reshape(b * n * c, h, w).transpose(1, 2, 0)
        up = imresize(frames, float(s)) if s > 1 else frames  # (s*h, s*w, b*n*c), float64
        keys = torch.from_numpy(np.ascontiguousarray(up.transpose(2, 0, 1))).view(b, n, c, s * h, s * w)
        if t is None:
            mids = 0.5 * (keys[:, :-1] + keys[:, 1:])
            return interleave(keys, mids).to(device=x.device, dtype=x.dtype)
        stamps = torch.as_tensor(t, dtype=torch.float64).cpu()
        stamps = stamps.expand(b, -1) if stamps.dim() == 1 else stamps
        if stamps.dim() != 2 or stamps.shape[0] != b:
            raise ValueError(f"bicubic: time stamps must have shape (B, n) with B = {b}, got {tuple(stamps.shape)}")
        w1 = stamps[:, None, :, None, None, None]  # (B, 1, n, 1, 1, 1)
        mids = (1 - w1) * keys[:, :-1, None] + w1 * keys[:, 1:, None]  # (B, N-1, n, C, H, W)
        groups = torch.cat((keys[:, :-1, None], mids), dim=2).flatten(1, 2)
        return torch.cat((groups, keys[:, -1:]), dim=1).to(device=x.device, dtype=x.dtype)
