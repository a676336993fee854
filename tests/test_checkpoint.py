"""stvsr.model.weights: every official / framework format loads strictly; mismatches give one clear message."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from stvsr.archs import build_arch
from stvsr.model.weights import (
    CheckpointMismatchError,
    NotACheckpointError,
    load_official,
    probe_checkpoint,
    save_state_dict,
)

ZSM_TINY = {"which_model_G": "LunaTokis", "nf": 8, "nframes": 7, "groups": 8, "front_RBs": 1, "back_RBs": 1}
STDAN_TINY = {
    "which_model_G": "STTrans2",
    "nf": 8,
    "nframes": 7,
    "embed_dim": 24,
    "extraction_depths": [2],
    "recon_depths": [2],
}


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


def _model(options, seed):
    torch.manual_seed(seed)
    return build_arch(options)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _prefixed(state):
    return {f"module.{k}": v for k, v in state.items()}


FORMATS = {
    "plain": lambda s: s,
    "module-prefix": _prefixed,
    "params": lambda s: {"params": s},
    "params_ema": lambda s: {"params_ema": s},
    "state_dict": lambda s: {"state_dict": s, "epoch": 3},
    "params-module-prefix": lambda s: {"params": _prefixed(s), "iter": 5000},
}


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("options", [ZSM_TINY, STDAN_TINY], ids=["zsm", "stdan"])
def test_every_format_loads_strictly(tmp_path: Path, fmt: str, options):
    source, target = _model(options, 1), _model(options, 2)
    assert not _same_weights(source, target)
    path = tmp_path / "weights.pth"
    torch.save(FORMATS[fmt](source.state_dict()), path)
    report = load_official(target, path)
    assert report.ok
    assert _same_weights(source, target)
    x = torch.rand(1, 2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(source.eval()(x), target.eval()(x))


def test_official_size_zsm_roundtrip(tmp_path: Path):
    """A file with exactly the official keys (as xiang2020zooming.pth) loads with strict=True."""
    options = {"which_model_G": "LunaTokis", "nf": 64, "nframes": 7, "groups": 8, "front_RBs": 5, "back_RBs": 40}
    source, target = _model(options, 1), _model(options, 2)
    save_state_dict(source, tmp_path / "xiang2020zooming.pth")
    assert [p.name for p in tmp_path.iterdir()] == ["xiang2020zooming.pth"]  # no temporary file left
    assert load_official(target, tmp_path / "xiang2020zooming.pth").ok
    assert _same_weights(source, target)


def test_params_ema_can_be_chosen(tmp_path: Path):
    a, b, target = _model(ZSM_TINY, 1), _model(ZSM_TINY, 2), _model(ZSM_TINY, 3)
    path = tmp_path / "both.pth"
    torch.save({"params": a.state_dict(), "params_ema": b.state_dict()}, path)
    assert load_official(target, path).wrapper_key == "params"
    assert _same_weights(a, target)
    assert load_official(target, path, key="params_ema").wrapper_key == "params_ema"
    assert _same_weights(b, target)


def test_a_wrong_checkpoint_reports_every_kind_of_mismatch(tmp_path: Path):
    """back_RBs 3 vs 1 (unexpected keys), nf 16 vs 8 (shapes), one key removed (missing), in one message."""
    other = _model({**ZSM_TINY, "nf": 16, "back_RBs": 3}, 1)
    state = other.state_dict()
    del state["conv_first.bias"]
    path = tmp_path / "wrong.pth"
    torch.save(state, path)
    target = _model(ZSM_TINY, 2)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointMismatchError) as info:
        load_official(target, path)
    message = str(info.value)
    assert "wrong.pth" in message and "LunaTokis" in message
    assert "missing keys (1" in message and "conv_first.bias" in message
    assert "unexpected keys (8" in message and "recon_trunk.1.conv1.weight" in message
    assert "shape mismatches (" in message and "conv_first.weight file (16, 3, 3, 3) vs model (8, 3, 3, 3)" in message
    assert "... and" in message  # long lists are truncated
    assert len(message.splitlines()) <= 6
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())  # nothing loaded


def test_non_strict_loads_what_matches(tmp_path: Path):
    source = _model(ZSM_TINY, 1)
    state = source.state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["conv_last.bias"]
    target = _model(ZSM_TINY, 2)
    report = load_official(target, state, strict=False)
    assert report.missing == ["conv_last.bias"] and report.unexpected == ["extra.weight"]
    assert torch.equal(target.conv_first.weight, source.conv_first.weight)
    assert not torch.equal(target.conv_last.bias, source.conv_last.bias)


def test_stdan_attn_mask_buffer_shapes_are_checked():
    """A model built for another img_size has other attn_mask shapes: reported, not silently loaded."""
    state = _model(STDAN_TINY, 1).state_dict()
    target = _model({**STDAN_TINY, "img_size": 16}, 2)
    with pytest.raises(CheckpointMismatchError, match=r"attn_mask file \(16, 64, 64\) vs model \(4, 64, 64\)"):
        load_official(target, state)


def test_unreadable_inputs(tmp_path: Path):
    model = _model(ZSM_TINY, 1)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_official(model, tmp_path / "nope.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pth"):
        load_official(model, garbage)
    torch.save({"epoch": 3, "optimizer": {"lr": 1.0}}, tmp_path / "no_weights.pth")
    with pytest.raises(ValueError, match="no state_dict found"):
        load_official(model, tmp_path / "no_weights.pth")


def test_data_parallel_wrapper_is_unwrapped():
    source, target = _model(ZSM_TINY, 1), _model(ZSM_TINY, 2)
    assert load_official(torch.nn.DataParallel(target), _prefixed(source.state_dict())).ok
    assert _same_weights(source, target.cpu())  # DataParallel moves the model to cuda:0 where there is one


def test_whole_file_pickling_other_objects_is_explained_not_called_damaged(tmp_path):
    """A complete torch file that also pickles a Python object (an argparse.Namespace, as some official
    checkpoints do) is no damaged file: the probe passes it on, and the loader says how to load a trusted one."""
    model = build_arch({"which_model_G": "SAFA", "nf": 8, "block_num": 1, "depth": 1, "last_RBs": 1, "head_nf": 8})
    path = tmp_path / "with_args.pth"
    torch.save({"params": model.state_dict(), "args": argparse.Namespace(lr=1e-4)}, path)
    assert probe_checkpoint(path) is None
    with pytest.raises(ValueError, match="weights_only=True"):
        load_official(model, path)
    path.write_bytes(path.read_bytes()[:-200])  # the same file cut short: damaged
    with pytest.raises(NotACheckpointError, match="truncated or damaged"):
        probe_checkpoint(path)
