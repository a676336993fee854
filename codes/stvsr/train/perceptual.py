"""VGG19 perceptual (feature) loss from a local weights file (STARnet's ``l_feat``; docs/training.md).

``VGGFeatureLoss(weights_path)(x, y)``: x, y RGB in [0, 1] with any leading dimensions (..., 3, H, W); both are
ImageNet-normalised inside (mean .485/.456/.406, std .229/.224/.225, as STARnet's inputs and targets are), go
through VGG19 ``features`` up to ``layer`` (default ``relu5_4`` = ``features[:36]``, the official
``FeatureExtractor(feature_layer=35)``), and the loss is the MSE (mean) between the features. The target's
features are computed without gradient (the official code detaches them). The network is frozen and in eval mode.

VGG19 is re-implemented here (same layer indices as torchvision's ``vgg19().features``); torchvision is not used.
Weights cannot be downloaded at run time: give the path of a local file. Accepted files (``torch.load``, tensors
only): a state_dict with torchvision's keys ``features.<i>.weight`` / ``features.<i>.bias`` (e.g. the ImageNet
``vgg19-dcbb9e9d.pth`` from https://download.pytorch.org/models/vgg19-dcbb9e9d.pth; ``classifier.*`` keys are
ignored), the same without the ``features.`` prefix (``<i>.weight``), or either wrapped as ``{'state_dict': ...}``.
Only the convolutions up to ``layer`` are needed.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from stvsr.imagenet import IMAGENET_MEAN, IMAGENET_STD
from stvsr.registry import LOSSES
from stvsr.schema import Key

# torchvision's VGG19 configuration "E": channels of the 3x3 convs, "M" = 2x2 max-pool
VGG19_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M")
HOW_TO_GET = (
    "Weights cannot be downloaded at run time here: on a machine with internet access download torchvision's "
    "ImageNet VGG19 (https://download.pytorch.org/models/vgg19-dcbb9e9d.pth), copy it to this machine and set "
    "weights_path of the vgg entry of train.losses (or train.feature_weights_path) to it"
)


def vgg19_layer_names() -> list[str]:
    """Names of ``features[i]``: conv1_1, relu1_1, conv1_2, relu1_2, pool1, conv2_1, ..."""
    names, block, idx = [], 1, 1
    for v in VGG19_CFG:
        if v == "M":
            names.append(f"pool{block}")
            block, idx = block + 1, 1
        else:
            names += [f"conv{block}_{idx}", f"relu{block}_{idx}"]
            idx += 1
    return names


def _features(last: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    cin = 3
    for v in VGG19_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=False)]
            cin = v
    return nn.Sequential(*layers[: last + 1])


def _read_weights(path: str | os.PathLike | None) -> dict[str, torch.Tensor]:
    if path is None or str(path) == "":
        raise ValueError(f"VGGFeatureLoss: no VGG19 weights file given. {HOW_TO_GET}.")
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"VGGFeatureLoss: VGG19 weights file not found: {source}. {HOW_TO_GET}.")
    try:
        obj = torch.load(source, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        raise ValueError(
            f"VGGFeatureLoss: {source} is not a readable PyTorch weights file ({type(exc).__name__}: {exc}). "
            f"{HOW_TO_GET}."
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"VGGFeatureLoss: {source} does not hold a state_dict of tensors. {HOW_TO_GET}.")
    state = {}
    for key, value in obj.items():
        key = key.removeprefix("module.")
        if key.startswith("features."):
            state[key[len("features.") :]] = value
        elif key.split(".", 1)[0].isdigit():
            state[key] = value
    return state


@LOSSES.register("vgg", aliases=("vgg19", "VGGFeatureLoss"))
class VGGFeatureLoss(nn.Module):
    """MSE between VGG19 features (through ``layer``) of x and y, RGB [0, 1] inputs (see the module docstring).

    Args:
        weights_path: the local VGG19 weights file (required; one clear error when missing or unreadable).
        layer: the last layer used, by name (``relu5_4``, ``conv5_4``, ``relu4_4``, ...) or ``features`` index.
        weight: a factor on the loss (1.0; a ``train.losses`` entry's ``weight`` is applied by the trainer).
    """

    kind: ClassVar[str] = "feature"
    OPTIONS: ClassVar[dict[str, Key]] = {
        "weights_path": Key(str, required=True, path=True, help="a local VGG19 weights file (nothing is downloaded)"),
        "layer": Key((str, int), "relu5_4", help="the last VGG19 layer used"),
    }

    def __init__(self, weights_path: str | os.PathLike | None, layer: str | int = "relu5_4", weight: float = 1.0):
        super().__init__()
        names = vgg19_layer_names()
        if isinstance(layer, int):
            if not 0 <= layer < len(names):
                raise ValueError(f"VGGFeatureLoss: layer index {layer} out of range 0..{len(names) - 1}")
            last = layer
        elif layer in names:
            last = names.index(layer)
        else:
            raise ValueError(f"VGGFeatureLoss: unknown layer {layer!r}; one of {', '.join(names)}")
        self.layer, self.weight = names[last], float(weight)
        self.features = _features(last)
        state = _read_weights(weights_path)
        own = self.features.state_dict()
        missing = [k for k in own if k not in state]
        wrong = [f"{k} file {tuple(state[k].shape)} vs VGG19 {tuple(v.shape)}" for k, v in own.items()
                 if k in state and state[k].shape != v.shape]  # fmt: skip
        if missing or wrong:
            problems = (f"missing {', '.join('features.' + k for k in missing[:6])}" if missing else "") + (
                f"{'; ' if missing else ''}shape mismatch {'; '.join(wrong[:4])}" if wrong else ""
            )
            raise ValueError(f"VGGFeatureLoss: {weights_path} is not a VGG19 state_dict ({problems}). {HOW_TO_GET}.")
        self.features.load_state_dict({k: state[k] for k in own})
        self.features.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> VGGFeatureLoss:
        super().train(mode)
        self.features.eval()  # always frozen, whatever the caller does
        return self

    def extract(self, x: torch.Tensor) -> torch.Tensor:
        """Features of a [0, 1] RGB batch (..., 3, H, W) -> (prod(...), C, h, w)."""
        if x.dim() < 3 or x.shape[-3] != 3:
            raise ValueError(f"VGGFeatureLoss expects RGB tensors (..., 3, H, W), got shape {tuple(x.shape)}")
        x = x.reshape(-1, *x.shape[-3:])
        return self.features((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape:
            raise ValueError(f"VGGFeatureLoss: prediction {tuple(x.shape)} and target {tuple(y.shape)} differ")
        with torch.no_grad():
            target = self.extract(y)
        return self.weight * F.mse_loss(self.extract(x), target)

    def extra_repr(self) -> str:
        return f"layer={self.layer!r}, weight={self.weight}"
