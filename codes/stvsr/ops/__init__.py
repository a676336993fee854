"""Deformable convolution (DCNv2, modulated): one API, three backends of identical semantics.

Backends: ``ext`` (compiled C++/CUDA kernels from ``DCNv2_latest/``), ``torch`` (pure PyTorch, runs
everywhere) and ``torchvision`` (where it imports and works). See :mod:`stvsr.ops.backends`.
"""

from .backends import BACKENDS, available_backends, requested_backend
from .functional import deform_sample, modulated_deform_conv2d
from .modules import DCNSep, DCNv2, DCNv2Pack, DeformableSampling, check_offsets, offset_magnitudes

__all__ = [
    "BACKENDS",
    "DCNSep",
    "DCNv2",
    "DCNv2Pack",
    "DeformableSampling",
    "available_backends",
    "check_offsets",
    "deform_sample",
    "modulated_deform_conv2d",
    "offset_magnitudes",
    "requested_backend",
]
