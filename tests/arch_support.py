"""Checks the model tests (tests/test_archs_*.py) share: an error that says given words, a gradient for every
parameter, a tiny model through codes/test.py's entry point."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn


@contextmanager
def raises_saying(words: Iterable[str], exception: type[Exception] = ValueError) -> Iterator[Any]:
    """The block raises ``exception`` whose message holds every one of ``words``."""
    with pytest.raises(exception) as info:
        yield info
    for word in words:
        assert word in str(info.value)


def assert_every_parameter_gets_a_gradient(model: nn.Module) -> None:
    """After a backward pass: every parameter has a non-zero gradient, and every gradient is finite."""
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not torch.count_nonzero(p.grad)]
    assert not no_grad, f"no gradient for {no_grad}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def evaluate_tiny(root: Path, model: nn.Module, network: Mapping[str, Any], protocol: str) -> None:
    """Saves ``model``, writes the test YAML ``root/tiny.yml`` (name tiny, the clips of root/GT and root/LR,
    results under root/res, ``protocol``) and runs codes/test.py's entry point with it on the CPU."""
    from stvsr.eval.cli import main
    from stvsr.model.weights import save_state_dict

    save_state_dict(model, root / "model.pth")
    net = ", ".join(f"{k}: {v}" for k, v in network.items())
    opt = root / "tiny.yml"
    opt.write_text(
        f"name: tiny\nnetwork_G: {{{net}}}\n"
        f"datasets:\n  test: {{name: syn, dataroot_GT: '{root / 'GT'}', dataroot_LQ: '{root / 'LR'}'}}\n"
        f"path: {{pretrain_model_G: '{root / 'model.pth'}', results_root: '{root / 'res'}'}}\n"
        f"protocol: {protocol}\n"
    )
    assert main(["-opt", str(opt), "--no_progress", "--device", "cpu"]) == 0
