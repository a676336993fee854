"""train.losses (weighted registry entries, VGG included) and the optimiser registry: the flat keys of the
official schema give the same entries and the same values, to the bit, as the list form."""

from __future__ import annotations

import pytest
import torch

from stvsr.schema import OptionsError
from stvsr.train import L1Loss, VGGFeatureLoss, build_losses, build_optimizer, options

NET = {"which_model_G": "LunaTokis", "nf": 8, "nframes": 7, "groups": 8, "front_RBs": 1, "back_RBs": 1}


def raw_options(**train):
    return {
        "name": "losses",
        "datasets": {"train": {"mode": "Vimeo7", "dataroot_GT": "/nowhere/gt", "dataroot_LQ": "/nowhere/lq"}},
        "network_G": NET,
        "train": {"lr_G": 1e-4, "niter": 1, "T_period": [1], **train},
    }


@pytest.fixture
def vgg_file(tmp_path):
    """VGG19 weights up to relu1_2 (the first two convolutions), random."""
    state = {
        "features.0.weight": torch.randn(64, 3, 3, 3) * 0.1,
        "features.0.bias": torch.randn(64) * 0.1,
        "features.2.weight": torch.randn(64, 64, 3, 3) * 0.05,
        "features.2.bias": torch.randn(64) * 0.1,
    }
    path = tmp_path / "vgg.pth"
    torch.save(state, path)
    return str(path)


def test_flat_keys_and_list_give_the_same_entries_and_values(vgg_file):
    flat = options.validate(raw_options(
        pixel_criterion="l1", pixel_reduction="mean", pixel_weight=0.5,
        feature_criterion="vgg19", feature_weight=0.1, feature_weights_path=vgg_file))  # fmt: skip
    listed = options.validate(raw_options(losses=[
        {"type": "l1", "weight": 0.5, "reduction": "mean"},
        {"type": "vgg19", "weight": 0.1, "weights_path": vgg_file}]))  # fmt: skip
    assert flat["train"]["losses"] == listed["train"]["losses"]
    assert all(key not in flat["train"] for key in ("pixel_criterion", "feature_weight"))
    for entry in flat["train"]["losses"]:  # layer is a key of the entry; the tests' VGG file stops at relu1_2
        entry["layer"] = "relu1_2"
    pixel, feature = build_losses(flat["train"]["losses"])
    x, y = torch.rand(2, 3, 3, 16, 16), torch.rand(2, 3, 3, 16, 16)
    # the objective the trainer computed from the flat keys: weight * loss, pixel then feature
    expected = 0.5 * L1Loss("mean")(x, y) + 0.1 * VGGFeatureLoss(vgg_file, layer="relu1_2")(x, y)
    assert torch.equal(pixel(x, y) + feature(x, y), expected)


def test_default_objective_is_the_official_charbonnier_sum():
    tr = options.validate(raw_options())["train"]
    assert tr["losses"] == [{"type": "cb", "weight": 1.0, "eps": 1e-6, "reduction": "sum"}]
    pixel, feature = build_losses(tr["losses"])
    assert feature is None and pixel.sums
    x, y = torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8)
    assert torch.equal(pixel(x, y), 1.0 * torch.sqrt((x - y) * (x - y) + 1e-6).sum())


def test_loss_entry_problems_are_listed_with_their_paths():
    with pytest.raises(OptionsError) as info:
        options.validate(raw_options(losses=[{"type": "cbb"}, {"type": "vgg", "layr": "relu1_2"}, {"weight": 1}]))
    text = "\n".join(info.value.problems)
    assert "train.losses[0].type: Unknown loss 'cbb'. Did you mean 'cb'?" in text
    assert "train.losses[1].layr: unknown option 'layr'. Did you mean 'layer'?" in text
    assert "train.losses[1].weights_path: required option is missing" in text
    assert "train.losses[2]: expected a mapping with a type" in text
    with pytest.raises(OptionsError, match="give either losses or the flat keys"):
        options.validate(raw_options(losses=[{"type": "cb"}], pixel_weight=2))
    with pytest.raises(OptionsError, match="needs at least one pixel loss"):
        options.validate(raw_options(losses=[{"type": "vgg", "weights_path": "/x.pth"}]))


def test_optimisers_come_from_the_registry():
    params = [torch.nn.Parameter(torch.zeros(2))]
    for name, cls in (("Adam", torch.optim.Adam), ("AdamW", torch.optim.AdamW), ("Adamax", torch.optim.Adamax)):
        opt = build_optimizer(name, [{"params": params}], lr=1e-3, weight_decay=0.0, betas=(0.9, 0.99))
        assert type(opt) is cls and opt.defaults["betas"] == (0.9, 0.99)
    with pytest.raises(OptionsError, match="train.optim: Unknown optimizer 'adamw'"):
        options.validate(raw_options(optim="adamw"))
