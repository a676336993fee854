"""Model facts on the model class (stvsr.archs.base.StvsrArch): every registered architecture declares them,
the registry alone lists the models, and the training objective is a method apart from ``forward``. One table
holds what the official checkpoints fix for every registered model and variant: official settings -> exact
state_dict keys, shapes, param/buffer kind and order, parameter and buffer counts (README's models table)."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from spec_keys import key_list, read_keys
from stvsr.archs import ARCHS, StvsrArch, arch_arguments, build_arch, count_parameters, official_network
from stvsr.archs.bicubic import Bicubic
from stvsr.archs.msitf import MSITF
from stvsr.archs.rstt import RSTT, VARIANT_DEPTHS
from stvsr.archs.safa import SAFA
from stvsr.archs.starnet import STARnet
from stvsr.archs.stdan import STTrans2
from stvsr.archs.tmnet import TMNet
from stvsr.archs.zsm import LunaTokis
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


@dataclass(frozen=True)
class Official:
    """A registered model (or one variant of it) built with its official settings."""

    id: str  # the test id: the registered name, or name-variant
    cls: type[nn.Module]
    aliases: tuple[str, ...]
    network: dict[str, Any]  # network_G of the official configs
    keys: str | None  # tests/data/keys/<keys>.txt (a copy of the official list); None: an empty state_dict
    n_keys: int
    n_buffers: int  # buffers among the state_dict keys
    params: int
    buffer_elements: int  # elements of those buffers
    facts: dict[str, Any]  # attributes of the built model
    variant: str | None = None  # RSTT's S / M / L: the network is RSTT.official_network(variant)
    readme: bool = True  # a row of README's (and docs/models.md's) models table
    note: str = field(default="", compare=False)


ZSM_OFFICIAL = {"nf": 64, "nframes": 7, "groups": 8, "front_RBs": 5, "mid_RBs": 0, "back_RBs": 40, "HR_in": False}
RSTT_HEADS = [2, 4, 8, 16, 16, 8, 4, 2]


def rstt(depth: int) -> dict[str, Any]:
    return {"which_model_G": "RSTT", "embed_dim": 96, "depths": [depth] * 8, "num_heads": RSTT_HEADS,
            "window_sizes": [[4, 4]] * 8, "back_RBs": 0}  # fmt: skip


# id, class, aliases, official network_G, keys file; keys, buffers, parameters, buffer elements; model facts
OFFICIAL = [
    Official("LunaTokis", LunaTokis, ("zsm",), {"which_model_G": "LunaTokis", **ZSM_OFFICIAL}, "zsm",
             416, 0, 11_102_771, 0, {"size_divisor": 4}),
    Official("TMNet", TMNet, ("tmnet",), {"which_model_G": "TMNet", **ZSM_OFFICIAL}, "tmnet",
             482, 0, 12_263_523, 0, {"size_divisor": 4, "upscale": 4, "supports_time_factor": True}),
    Official("Net", MSITF, ("MSITF", "msitf"),
             {"which_model_G": "Net", "nf": 64, "nframes": 7, "groups": 8, "front_RBs": 5, "back_RBs": 40}, "msitf",
             432, 30, 5_585_611, 447_768, {"size_divisor": 1, "upscale": 4},
             note="persistent buffers only: the DCN modules' offset monitors are not saved"),
    Official("STTrans2", STTrans2, ("stdan",),
             {"which_model_G": "STTrans2", "nf": 64, "nframes": 7, "embed_dim": 72, "HR_in": False}, "stdan",
             914, 72, 8_292_843, 1_769_472, {"size_divisor": 8},
             note="params + buffers 10,062,315 (spec 4.4)"),
    Official("SAFA", SAFA, ("safa",), {"which_model_G": "SAFA"}, "safa",
             275, 30, 4_941_442, 1_930, {"size_divisor": 2, "upscale": 4, "supports_time_factor": True},
             note="MeanShift trainable too (quirk 4, KEEP)"),
    Official("STARnet", STARnet, ("starnet",),
             {"which_model_G": "STARnet", "base_filter": 256, "feat": 64, "num_stages": 3, "n_resblock": 5,
              "scale_factor": 4}, "starnet",
             462, 66, 111_610_863, 16_150, {"size_divisor": 1, "upscale": 4, "min_size": 32}),
    *(
        Official(f"RSTT-{v}", RSTT, ("rstt",), rstt(depth), f"rstt_{v.lower()}", n_keys, n_buffers, params,
                 elements, {"size_divisor": 1, "upscale": 4, "input_frames": 4}, variant=v)
        for v, depth, n_keys, n_buffers, params, elements in (
            ("S", 4, 728, 48, 4_485_275, 380_928),
            ("M", 6, 1080, 72, 6_079_895, 571_392),
            ("L", 8, 1432, 96, 7_674_515, 761_856),
        )
    ),
    Official("bicubic", Bicubic, ("Bicubic",), {"which_model_G": "bicubic"}, None, 0, 0, 0, 0,
             {"size_divisor": 1, "upscale": 4}, readme=False),
]  # fmt: skip
ROOT = Path(__file__).resolve().parents[1]


def test_the_table_covers_every_registered_model_and_variant() -> None:
    assert {row.network["which_model_G"] for row in OFFICIAL} == set(ARCHS)
    assert [row.variant for row in OFFICIAL if row.cls is RSTT] == list(VARIANT_DEPTHS)


@pytest.mark.parametrize("row", OFFICIAL, ids=lambda row: row.id)
def test_official_keys_shapes_and_counts(row: Official) -> None:
    name = row.network["which_model_G"]
    assert ARCHS.get(name) is row.cls and ARCHS.aliases(name) == sorted(row.aliases)
    assert all(ARCHS.get(alias) is row.cls for alias in row.aliases)
    # the official settings are what --model NAME (or RSTT.official_network(variant)) builds
    registered = RSTT.official_network(row.variant) if row.variant else official_network(name)
    assert arch_arguments(row.network) == arch_arguments(registered)
    model = build_arch(row.network)
    assert type(model) is row.cls
    mine, expected = key_list(model), read_keys(row.keys) if row.keys else []
    missing, extra = sorted(set(expected) - set(mine)), sorted(set(mine) - set(expected))
    assert not missing and not extra, f"missing {missing[:5]}, extra {extra[:5]}"
    assert mine == expected  # names, shapes, param/buffer and the order of the official state_dict
    assert len(mine) == row.n_keys and sum(kind == "buffer" for *_, kind in mine) == row.n_buffers
    assert count_parameters(model) == row.params
    state = model.state_dict()
    buffers = {k for k, _ in model.named_buffers() if k in state}
    assert sum(state[k].numel() for k in buffers) == row.buffer_elements, row.note
    assert sum(v.numel() for v in state.values()) == row.params + row.buffer_elements, row.note
    assert all(p.requires_grad for p in model.parameters()), row.note
    assert {fact: getattr(model, fact) for fact in row.facts} == row.facts


@pytest.mark.parametrize("doc", ["README.md", "docs/models.md"])
def test_models_table_of_the_docs_says_the_same_counts(doc: str) -> None:
    """Each model's row of the models table names its aliases, its parameter count and its number of keys."""
    lines = (ROOT / doc).read_text().splitlines()
    for name in dict.fromkeys(row.network["which_model_G"] for row in OFFICIAL if row.readme):
        [line] = [line for line in lines if line.startswith(f"| `{name}` ")]
        cells = line.split("|")
        rows = [row for row in OFFICIAL if row.network["which_model_G"] == name]
        assert re.findall(r"`([^`]+)`", cells[1]) == [name, *rows[0].aliases], (doc, line)
        for row in rows:
            assert number_in(row.params, cells[3]) and number_in(row.n_keys, cells[4]), (doc, row.id, line)


def number_in(number: int, text: str) -> bool:
    """``number`` written with thousands commas stands in ``text`` as a whole number."""
    return re.search(rf"(?<![\d,]){number:,}(?![\d,])", text) is not None


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


@pytest.mark.parametrize(
    ("module", "names"),
    [("stvsr.archs.zsm", ("LunaTokis", "STTrans2")), ("stvsr.archs.msitf", ("Net",))],
    ids=["zsm", "msitf"],
)
def test_import_has_no_side_effects(module: str, names: tuple[str, ...]) -> None:
    code = (
        f"import sys; import {module}; from stvsr.registry import ARCHS; "
        "bad = [m for m in sys.modules if m.startswith(('stvsr.data', 'stvsr.train', 'torchvision'))]; "
        f"assert not bad, bad; assert all(name in ARCHS for name in {names!r}); "
        "from stvsr.ops import ext; assert not ext.state().tried, 'the DCN extension was loaded at import'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


SHARED_EXAMPLE = ROOT.parent / "shared" / "data" / "test_example" / "0625"
TINY_FOR_THE_REAL_CLIP = {
    "zsm": {"which_model_G": "zsm", "nf": 8, "nframes": 7, "groups": 8, "front_RBs": 1, "back_RBs": 2},
    "stdan": {"which_model_G": "stdan", "nf": 8, "nframes": 7, "embed_dim": 24, "extraction_depths": [1],
              "recon_depths": [1]},
    "msitf": {"which_model_G": "msitf", "nf": 8, "nframes": 7, "groups": 8, "front_RBs": 1, "back_RBs": 0,
              "swin_depths": [1], "swin_heads": 2, "attn_heads": 4},
}  # fmt: skip


@pytest.mark.skipif(not SHARED_EXAMPLE.is_dir(), reason=f"real test data not found at {SHARED_EXAMPLE}")
@pytest.mark.parametrize("arch", list(TINY_FOR_THE_REAL_CLIP))
def test_real_lr_clip(arch: str) -> None:
    """The official demo clip (Vimeo 0625, LR 112x64, inputs im1, im3, im5, im7) through a tiny model."""
    import cv2
    import numpy as np

    frames = [cv2.imread(str(SHARED_EXAMPLE / f"im{i}.png"), cv2.IMREAD_COLOR)[..., ::-1] for i in (1, 3, 5, 7)]
    x = torch.from_numpy(np.ascontiguousarray(np.stack(frames))).permute(0, 3, 1, 2).float().div(255).unsqueeze(0)
    assert x.shape == (1, 4, 3, 64, 112)
    torch.manual_seed(0)
    model = build_arch(TINY_FOR_THE_REAL_CLIP[arch]).eval()
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, 7, 3, 256, 448)
    assert torch.isfinite(y).all()
