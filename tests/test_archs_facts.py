"""Model facts on the model class (stvsr.archs.base.StvsrArch): every registered architecture declares them,
the registry alone lists the models, and the training objective is a method apart from ``forward``."""

from __future__ import annotations

import inspect

import pytest
import torch
from torch import nn

from stvsr.archs import ARCHS, StvsrArch, arch_arguments, build_arch, official_network
from stvsr.runner import ModelFacts

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread

SAFA_SMALL = {"which_model_G": "safa", "nf": 8, "block_num": 2, "depth": 1, "last_RBs": 1, "head_nf": 8}
STARNET_TINY = {
    "which_model_G": "starnet",
    "base_filter": 16,
    "feat": 8,
    "num_stages": 2,
    "n_resblock": 1,
    "scale_factor": 4,
    "rbpn_resblocks": 1,
    "unet_nf": 4,
    "unet_depth": 3,
}


def feature(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return 0.1 * (a - b).pow(2).mean()


@pytest.mark.parametrize("name", list(ARCHS))
def test_every_registered_model_declares_its_facts(name: str) -> None:
    cls = ARCHS.get(name)
    assert issubclass(cls, StvsrArch)
    facts = ModelFacts.of(cls)  # the class alone says them (an instance may refine upscale / input_frames)
    assert facts.size_multiple >= 1 and facts.upscale >= 1
    # --model NAME builds the official settings: valid network_G keys of this architecture
    assert arch_arguments(official_network(name))[0] is cls
    keys = cls.config_keys()
    params = inspect.signature(cls).parameters
    assert set(keys.values()) == set(params) - set(cls.config_hidden)
    assert set(cls.config_required) <= set(keys) and not set(cls.config_ignored) & set(keys)
    if facts.supports_time_factor:
        assert callable(getattr(cls, "forward_times", None))


def test_config_keys_are_the_constructor_arguments_but_two_renames() -> None:
    """Only SAFA (nf -> c) and STDAN (nframes -> n_outputs) name a network_G key otherwise than the argument."""
    renamed = {name: {k: v for k, v in ARCHS.get(name).config_keys().items() if k != v} for name in ARCHS}
    assert {name: r for name, r in renamed.items() if r} == {"SAFA": {"nf": "c"}, "STTrans2": {"nframes": "n_outputs"}}
    assert "scale" not in ARCHS.get("stdan").config_keys()  # ignored by the official code: no network_G key
    with pytest.raises(ValueError, match="network_G.c: unknown key for SAFA"):  # the argument name is no key
        build_arch({**SAFA_SMALL, "c": 8})


def test_model_help_lists_every_registered_model() -> None:
    from stvsr.eval import cli, vimeo_cli
    from stvsr.infer import cli as infer_cli

    for parser in (cli.build_parser(), vimeo_cli.build_parser(), infer_cli.build_parser()):
        text = next(a.help for a in parser._actions if "--model" in a.option_strings)
        assert all(name in text for name in ARCHS), text


def test_default_objective_is_the_criteria_on_forward() -> None:
    torch.manual_seed(0)
    model = build_arch({"which_model_G": "zsm", "nf": 8, "nframes": 3, "groups": 8, "front_RBs": 1, "back_RBs": 1})
    x, gt = torch.rand(1, 2, 3, 8, 8), torch.rand(1, 3, 3, 32, 32)
    out = model(x)
    expected = nn.L1Loss()(out, gt) + feature(out, gt)
    torch.testing.assert_close(model.training_objective(x, gt, nn.L1Loss(), feature), expected, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("network", "shapes", "loss_before"),
    [
        # the loss values of the same seeds when forward returned SAFATrainOutput / STARnetTrainOutput in train mode
        # and the trainer called model.training_loss(model(lqs), gt, pixel, feature)
        (SAFA_SMALL, ((3, 4, 3, 8, 8), (3, 7, 3, 32, 32)), 0.9514274001121521),
        (STARNET_TINY, ((2, 3, 3, 16, 16), (2, 5, 3, 64, 64)), 8761.2294921875),
    ],
)
def test_pair_models_forward_a_tensor_in_train_mode_and_keep_their_objective(network, shapes, loss_before) -> None:
    torch.manual_seed(0)
    model = build_arch(network).train()
    g = torch.Generator().manual_seed(7)
    x, gt = torch.rand(*shapes[0], generator=g), torch.rand(*shapes[1], generator=g)
    torch.manual_seed(3)
    loss = model.training_objective(x, gt, nn.L1Loss(), feature)
    assert loss.item() == pytest.approx(loss_before, rel=1e-5)
    out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == gt.shape
    with pytest.raises(ValueError, match="no time stamps"):
        model.training_objective(x, gt, nn.L1Loss(), time=torch.full((shapes[0][0], 1), 0.5))
