"""``bicubic``: the parameter-free space-time baseline (no trained weights needed).

Space: MATLAB ``imresize(x, scale, 'bicubic')`` of every input frame (Keys cubic, a = -0.5, symmetric border;
no antialiasing when enlarging), computed in float64 by :func:`stvsr.data.degrade.imresize`, the same resizer
that makes the BI low-resolution frames; the result is not clamped or rounded (the evaluator quantises).
Time: each intermediate frame is the mean of its two upscaled neighbours.

(B, N, 3, h, w) RGB in [0, 1] -> (B, 2N-1, 3, scale*h, scale*w), frames [F0, I0.5, F1, ..., F(N-1)]; any
size (``size_divisor`` 1), any N >= 2, no parameters. Runs on the CPU in NumPy whatever the input's device;
the output comes back on the input's device and dtype. Not differentiable (inference only).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import nn

from stvsr.registry import ARCHS

from .blocks import check_video, interleave


@ARCHS.register("bicubic", aliases=("Bicubic",))
class Bicubic(nn.Module):
    """MATLAB-bicubic x``scale`` upsampling of each frame; intermediate frames = mean of neighbours."""

    size_divisor = 1
    config_keys: ClassVar[dict[str, str]] = {"scale": "scale"}
    config_required: ClassVar[tuple[str, ...]] = ()
    config_ignored: ClassVar[tuple[str, ...]] = ("nf", "nframes")

    def __init__(self, scale: int = 4) -> None:
        super().__init__()
        if scale < 1:
            raise ValueError(f"bicubic: scale must be a positive integer, got {scale}")
        self.upscale = int(scale)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from stvsr.data.degrade import imresize  # here: importing the archs must not import the data package

        b, n, c, h, w = check_video(self, x)
        s = self.upscale
        frames = x.detach().to("cpu", torch.float64).numpy().reshape(b * n * c, h, w).transpose(1, 2, 0)
        up = imresize(frames, float(s)) if s > 1 else frames  # (s*h, s*w, b*n*c), float64
        keys = torch.from_numpy(np.ascontiguousarray(up.transpose(2, 0, 1))).view(b, n, c, s * h, s * w)
        mids = 0.5 * (keys[:, :-1] + keys[:, 1:])
        return interleave(keys, mids).to(device=x.device, dtype=x.dtype)
