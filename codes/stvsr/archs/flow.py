"""Optical flow for flow-input models (STARnet): the provider protocol, an OpenCV DIS provider, official scaling.

Convention (pyflow's, as STARnet's official code): ``flow = provider(im1, im2)`` is (B, 2, h, w) in **pixels**,
channels (u, v) = (x, y), such that ``im1(p) ≈ im2(p + flow(p))`` (backward-warping ``im2`` with ``flow``
reproduces ``im1``). STARnet's network input is :func:`to_network_flow`: ``-clip(flow_px, ±150) / 150`` (the
official ``rescale_flow(flow, -1, 1)`` with swapped arguments: sign inverted, 1 unit = 150 px; quirk 2, KEPT).

The official weights were trained with **pyflow** (Ce Liu's coarse-to-fine variational flow, pathak22/pyflow:
``alpha=0.012, ratio=0.75, minWidth=20, nOuterFPIterations=7, nInnerFPIterations=1, nSORIterations=30``, RGB,
float64). It is not installable here (a Cython/C++ build absent from the package index), so the default provider
is OpenCV's DIS (:class:`DISFlow`). DIS keeps the direction, channel order and scaling, but its flow fields differ
from pyflow's (smoother patches, grey-level only), so official checkpoints lose some fidelity with it; the loss
is not quantified here (no pyflow to compare against). Any callable with the protocol below can be plugged in
(``model.flow_provider = my_pyflow_wrapper``) to evaluate the official weights faithfully.

Why DIS and not Farneback: on 112x64 LR Vimeo frames (the training size) DIS with the MEDIUM preset had the
lowest error of the OpenCV methods available in the headless build (measured on the 8 Vimeo clips of
``../shared/data``: end-point error 0.14 px on synthetic smooth affine warps of up to ~4 px vs 0.26 px for
Farneback(0.5, 3, 9, 5, 5, 1.1); mean absolute warping error of real frame pairs (im1, im3) 1.80 vs 1.88 grey
levels, 20.8 with zero flow), and is ~3x faster (0.5 ms vs 1.4 ms per pair on one core). TV-L1 needs
opencv-contrib (not installed).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

MAX_FLOW = 150.0  # official max_flow: flows are clipped to +-150 px, then mapped to [-1, 1] with a sign flip


@runtime_checkable
class FlowProvider(Protocol):
    """``provider(im1, im2) -> flow``: im1, im2 (B, 3, h, w) RGB in [0, 1]; flow (B, 2, h, w) float32 in pixels on
    the inputs' device, (u, v) = (x, y), with ``im1(p) ≈ im2(p + flow(p))``. Not differentiated through."""

    def __call__(self, im1: torch.Tensor, im2: torch.Tensor) -> torch.Tensor: ...


def to_network_flow(flow_px: torch.Tensor, max_flow: float = MAX_FLOW) -> torch.Tensor:
    """Pixels -> STARnet input units: ``-clip(flow, ±max_flow) / max_flow`` (official ``rescale_flow``)."""
    return -flow_px.clamp(-max_flow, max_flow) / max_flow


def from_network_flow(flow_net: torch.Tensor, max_flow: float = MAX_FLOW) -> torch.Tensor:
    """STARnet units -> pixels (the inverse of :func:`to_network_flow` inside the clipping range)."""
    return -flow_net * max_flow


def _to_gray_uint8(x: torch.Tensor) -> np.ndarray:
    """(B, 3, h, w) RGB [0, 1] -> (B, h, w) uint8 luma (OpenCV's RGB2GRAY weights .299/.587/.114, rounded)."""
    rgb = (x.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    import cv2  # OpenCV for STARnet's flow only: importing the models does not load it

    return np.stack([cv2.cvtColor(np.ascontiguousarray(im), cv2.COLOR_RGB2GRAY) for im in rgb])


class DISFlow:
    """OpenCV Dense Inverse Search flow (Kroeger et al. 2016), ``cv2.DISOpticalFlow``, on uint8 grey frames.

    Args:
        preset: ``'medium'`` (default), ``'fast'`` or ``'ultrafast'`` (OpenCV presets). MEDIUM: finest scale 1,
            patch 8, patch stride 3, 25 gradient-descent iterations, 5 variational-refinement iterations
            (alpha 20, delta 5, gamma 10), mean normalisation and spatial propagation on.
        patch_size, patch_stride: override the preset's patch geometry when given.

    Deterministic for a given input (CPU). Frames go through uint8 (as pyflow's inputs came from 8-bit PNGs).
    Frames smaller than OpenCV accepts (width and height < 12) are edge-padded to 16 px and the flow cropped.
    """

    PRESETS = ("ultrafast", "fast", "medium")
    MIN_SIDE = 12  # cv2 DIS needs a width or height of at least 12 px; smaller frames are edge-padded to 16

    def __init__(self, preset: str = "medium", patch_size: int | None = None, patch_stride: int | None = None):
        if preset not in self.PRESETS:
            raise ValueError(f"DISFlow: preset must be one of {', '.join(self.PRESETS)}, got {preset!r}")
        self.preset, self.patch_size, self.patch_stride = preset, patch_size, patch_stride
        self._dis = None

    def _engine(self):
        if self._dis is None:
            import cv2  # as above

            self._dis = cv2.DISOpticalFlow_create(getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{self.preset.upper()}"))
            if self.patch_size is not None:
                self._dis.setPatchSize(int(self.patch_size))
            if self.patch_stride is not None:
                self._dis.setPatchStride(int(self.patch_stride))
        return self._dis

    def __getstate__(self) -> dict:  # the OpenCV object does not pickle (DataLoader workers, deepcopy)
        return {**self.__dict__, "_dis": None}

    def __call__(self, im1: torch.Tensor, im2: torch.Tensor) -> torch.Tensor:
        if im1.shape != im2.shape or im1.dim() != 4 or im1.shape[1] != 3:
            raise ValueError(
                f"DISFlow: expects two (B, 3, h, w) RGB batches, got {tuple(im1.shape)} and {tuple(im2.shape)}"
            )
        a, b = _to_gray_uint8(im1), _to_gray_uint8(im2)
        h, w = a.shape[1:]
        if max(h, w) < self.MIN_SIDE:  # OpenCV's DIS refuses frames this small: replicate the border, then crop
            pad = [(0, 0), (0, max(16 - h, 0)), (0, max(16 - w, 0))]
            a, b = np.pad(a, pad, mode="edge"), np.pad(b, pad, mode="edge")
        dis = self._engine()
        flows = np.stack([dis.calc(x, y, None) for x, y in zip(a, b)])[:, :h, :w]  # (B, h, w, 2) float32, (u, v)
        return torch.from_numpy(flows).permute(0, 3, 1, 2).contiguous().to(im1.device)

    def __repr__(self) -> str:
        return f"DISFlow(preset={self.preset!r})"


FLOW_PROVIDERS = {"dis": DISFlow}


def build_flow_provider(name: str) -> FlowProvider:
    """A provider by name (``'dis'``, ``'dis_fast'``, ``'dis_ultrafast'``)."""
    key = name.lower()
    if key == "dis":
        return DISFlow("medium")
    if key.startswith("dis_") and key[4:] in DISFlow.PRESETS:
        return DISFlow(key[4:])
    raise ValueError(f"unknown flow provider {name!r}: one of dis, dis_fast, dis_ultrafast (OpenCV DIS presets)")
