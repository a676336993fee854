"""TMNet's two-stage recipe: the Adobe240 dataset mode (windows of consecutive frames with time stamps), the
trainer passing the stamps to the model, train.trainable / train.freeze, and the strict pretrained load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from data_support import to_uint8
from stvsr.data import DATASETS, DataError, build_dataset
from stvsr.data.degrade import bi_downscale
from stvsr.data.io import write_image
from stvsr.model.weights import CheckpointMismatchError, load_official
from stvsr.train import options
from stvsr.train.trainer import Trainer, select_trainable

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_TMNET = {"which_model_G": "TMNet", "nf": 8, "nframes": 7, "groups": 4, "front_RBs": 1, "back_RBs": 1}
CONFIGS = Path(__file__).resolve().parents[1] / "options" / "train"


def make_adobe(root: Path, clips: dict[str, int], size: tuple[int, int] = (32, 48)) -> tuple[Path, Path]:
    """Clips of consecutive frames ``frame_<k>.png`` (frame k = a base image shifted by k pixels: real motion),
    GT under root/gt and BI x4 LR under root/lr."""
    rng = np.random.default_rng(0)
    h, w = size
    for name, length in clips.items():
        base = rng.integers(0, 256, (h, w + length, 3)).astype(np.uint8)
        for k in range(length):
            frame = np.ascontiguousarray(base[:, k : k + w])
            write_image(root / "gt" / name / f"frame_{k}.png", frame)
            write_image(root / "lr" / name / f"frame_{k}.png", bi_downscale(frame, 4))
    return root / "gt", root / "lr"


@pytest.fixture(scope="module")
def adobe(tmp_path_factory):
    return make_adobe(tmp_path_factory.mktemp("adobe"), {"clipA": 12, "set/clipB": 7})


def test_registered():
    assert DATASETS.get("Adobe240").__name__ == "Adobe240"


def test_validation_windows_inputs_first_and_last_gt_all_time_stamps(adobe):
    gt, lr = adobe
    ds = build_dataset({"mode": "Adobe240", "phase": "val", "dataroot_GT": str(gt), "dataroot_LQ": str(lr)})
    # clipA (12 frames): windows at 0 and 6 would need 13; stride N-1 = 6 gives start 0 only; clipB: start 0
    assert [(ds.clips[i].name, s) for i, s in ds.items] == [("clipA", 0), ("set/clipB", 0)]
    sample = ds[0]
    assert sample["LQs"].shape == (2, 3, 8, 12) and sample["GT"].shape == (7, 3, 32, 48)
    assert sample["time"].dtype == torch.float32
    torch.testing.assert_close(sample["time"], torch.tensor([1, 2, 3, 4, 5]) / 6.0)
    assert sample["key"] == "clipA/frame_0.png"
    frames = [np.asarray(__import__("cv2").imread(str(gt / "clipA" / f"frame_{k}.png"))[..., ::-1]) for k in range(7)]
    assert np.array_equal(to_uint8(sample["GT"]), np.stack(frames))  # natural order, frames 0..6
    lr_frames = [__import__("cv2").imread(str(lr / "clipA" / f"frame_{k}.png"))[..., ::-1] for k in (0, 6)]
    assert np.array_equal(to_uint8(sample["LQs"]), np.stack(lr_frames))


def test_training_windows_crops_and_degradation_on_the_fly(adobe):
    gt, _ = adobe
    ds = build_dataset(
        {"mode": "Adobe240", "dataroot_GT": str(gt), "clips": ["clipA"], "GT_size": 16, "LQ_size": 4, "N_frames": 5}
    )
    assert len(ds) == 12 - 5 + 1  # a window at every frame
    sample = ds[3]
    assert sample["LQs"].shape == (2, 3, 4, 4) and sample["GT"].shape == (5, 3, 16, 16)
    torch.testing.assert_close(sample["time"], torch.tensor([0.25, 0.5, 0.75]))


def test_reverse_keeps_inputs_at_the_ends_of_gt(tmp_path):
    """With random_reverse the window runs backwards: LQ 0 is the LR of GT 0 and LQ 1 of GT 6 either way.
    (LR frames of the crop size, so that the crop is the whole frame.)"""
    import random

    gt, lr = make_adobe(tmp_path, {"c": 7}, size=(32, 32))
    opt = {"mode": "Adobe240", "dataroot_GT": str(gt), "dataroot_LQ": str(lr), "GT_size": 32, "LQ_size": 8}
    ds = build_dataset({**opt, "use_flip": False, "use_rot": False})

    def read(root, k):
        return to_uint8(build_dataset({**opt, "phase": "val", "dataroot_GT": str(root), "dataroot_LQ": None,
                                                       "scale": 1})[0]["GT"])[k]  # fmt: skip

    gts = [read(gt, k) for k in range(7)]
    lrs = [read(lr, k) for k in range(7)]
    seen = set()
    for seed in range(8):
        random.seed(seed)
        s = ds[0]
        g, q = to_uint8(s["GT"]), to_uint8(s["LQs"])
        first = next(k for k in range(7) if np.array_equal(g[0], gts[k]))
        assert first in (0, 6)
        order = list(range(7)) if first == 0 else list(range(6, -1, -1))
        assert all(np.array_equal(g[i], gts[k]) for i, k in enumerate(order))
        assert np.array_equal(q[0], lrs[order[0]]) and np.array_equal(q[1], lrs[order[-1]])
        seen.add(first)
    assert seen == {0, 6}  # both directions occur


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ({"N_frames": 13}, ["shorter than N_frames 13", "set/clipB"]),
        ({"N_frame": 7}, ["N_frame", "N_frames"]),
        ({"use_time": False}, ["use_time"]),
        ({"GT_size": 30}, ["GT_size 30"]),
    ],
)
def test_option_errors(adobe, extra, words):
    gt, _ = adobe
    with pytest.raises(DataError) as info:
        build_dataset({"mode": "Adobe240", "dataroot_GT": str(gt), **extra})
    for word in words:
        assert word in str(info.value)


# ------------------------------------------------------------------ trainer: time stamps, freezing, strict load
def stage_options(tmp_path, adobe, **train):
    gt, lr = adobe
    raw = {
        "name": "tmnet_tiny",
        "use_tb_logger": False,
        "device": "cpu",
        "datasets": {
            "train": {
                "mode": "Adobe240",
                "dataroot_GT": str(gt),
                "dataroot_LQ": str(lr),
                "GT_size": 16,
                "LQ_size": 4,
                "batch_size": 2,
                "n_workers": 0,
            },
            "val": {"mode": "Adobe240", "phase": "val", "dataroot_GT": str(gt), "dataroot_LQ": str(lr)},
        },
        "network_G": dict(TINY_TMNET),
        "path": {"root": str(tmp_path / "run")},
        "train": {"lr_G": 1e-2, "niter": 2, "T_period": [10], "val_freq": 2, **train},
        "logger": {"print_freq": 1, "save_checkpoint_freq": 100},
    }
    return raw


def _perturbed_stage1(path: Path) -> dict[str, torch.Tensor]:
    """A 'stage 1' checkpoint: a tiny TMNet with non-zero offset convs (so that every parameter matters)."""
    torch.manual_seed(1)
    model = __import__("stvsr.archs", fromlist=["build_arch"]).build_arch(TINY_TMNET)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "conv_offset" in name:
                p.normal_(0, 0.05)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save({"params": state}, path)
    return state


def test_stage2_trains_only_tmb_with_time_stamps(tmp_path, adobe):
    ckpt = tmp_path / "stage1.pth"
    before = _perturbed_stage1(ckpt)
    raw = stage_options(tmp_path, adobe, trainable=["TMB"])
    raw["path"].update(pretrain_model_G=str(ckpt), strict_load=True)
    trainer = Trainer(options.validate(raw, None))
    try:
        trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
        assert len(trainable) == 42 and all("TMB" in n for n in trainable)
        calls = []
        trainer.model.register_forward_hook(lambda m, args, out: calls.append((len(args), out.shape[1])))
        result = trainer.train()
        assert np.isfinite(result["loss"]) and np.isfinite(result["psnr_y"])
    finally:
        trainer.close()
    assert calls[0] == (2, 7)  # forward(LQs, time): 2 frames + 5 stamps -> 7 frames
    after = trainer.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("TMB" in k for k in changed)
    assert len(changed) == 42  # every TMB tensor moved


def test_pretrained_load_with_a_missing_key_fails_in_strict_mode(tmp_path, adobe):
    ckpt = tmp_path / "stage1_missing.pth"
    state = _perturbed_stage1(ckpt)
    del state["layersFusion.6.bias"]
    torch.save(state, ckpt)
    raw = stage_options(tmp_path, adobe)
    raw["path"].update(pretrain_model_G=str(ckpt), strict_load=True)
    with pytest.raises(CheckpointMismatchError, match="layersFusion.6.bias"):
        Trainer(options.validate(raw, None))
    raw["path"]["strict_load"] = False  # non-strict: loads the rest
    Trainer(options.validate(raw, None)).close()


def test_official_pth_loads_strictly_with_or_without_module_prefix(tmp_path):
    build = __import__("stvsr.archs", fromlist=["build_arch"]).build_arch
    torch.manual_seed(0)
    src = build(TINY_TMNET)
    for prefix in ("", "module."):
        path = tmp_path / f"tmnet{prefix or '_plain'}.pth"
        torch.save({prefix + k: v for k, v in src.state_dict().items()}, path)
        torch.manual_seed(1)
        dst = build(TINY_TMNET)
        load_official(dst, path, strict=True)
        assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))


def test_select_trainable_patterns():
    model = __import__("stvsr.archs", fromlist=["build_arch"]).build_arch(TINY_TMNET)
    kept = select_trainable(model, ["TMB"], ["pcd_align.TMB_B_*"])  # a glob matches the whole name
    assert kept and all("TMB_A" in n for n in kept) and len(kept) == 21
    kept = select_trainable(model, None, ["layers", "conv_first"])
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in model.named_parameters() if "layers" in n or "conv_first" in n}
    with pytest.raises(ValueError, match="'TBM' matches no parameter"):
        select_trainable(model, ["TBM"])
    with pytest.raises(ValueError, match="no parameter is left"):
        select_trainable(model, ["TMB"], ["TMB"])


def test_time_stamps_need_a_model_that_takes_them(tmp_path, adobe):
    raw = stage_options(tmp_path, adobe)
    raw["network_G"] = {"which_model_G": "zsm", "nf": 8, "nframes": 7, "groups": 4, "front_RBs": 1, "back_RBs": 1}
    trainer = Trainer(options.validate(raw, None))
    try:
        with pytest.raises(ValueError, match="carry time stamps.*LunaTokis"):
            trainer.train()
    finally:
        trainer.close()


def test_trainable_option_is_checked():
    raw = options.read_mapping(CONFIGS / "train_tmnet_stage2.yml")
    raw["train"]["trainable"] = "TMB"
    with pytest.raises(options.OptionsError, match="train.trainable"):
        options.validate(raw, CONFIGS / "train_tmnet_stage2.yml")


def test_shipped_configs_carry_the_official_recipe():
    one = options.load(CONFIGS / "train_tmnet.yml")
    two = options.load(CONFIGS / "train_tmnet_stage2.yml")
    assert one["network_G"]["which_model_G"] == two["network_G"]["which_model_G"] == "TMNet"
    t1, t2 = one["train"], two["train"]
    assert (t1["lr_G"], t1["niter"], t1["restarts"]) == (4e-4, 600000, [150000, 300000, 450000])
    assert t1["T_period"] == [150000] * 4
    assert one["datasets"]["train"]["batch_size"] == 24 and one["datasets"]["train"]["mode"] == "Vimeo7"
    assert t1["trainable"] is None and t1["find_unused_parameters"]
    assert (t2["lr_G"], t2["niter"], t2["restarts"]) == (4e-4, 1500, [500, 100, 1500])
    assert t2["T_period"] == [500, 1000, 1500, 2000]
    assert t2["trainable"] == ["TMB"] and two["path"]["strict_load"]
    assert two["datasets"]["train"]["mode"] == "Adobe240" and two["datasets"]["train"]["batch_size"] == 22
    demo2 = options.load(CONFIGS / "train_tmnet_stage2_demo.yml")
    demo1 = options.load(CONFIGS / "train_tmnet_demo.yml")
    assert demo2["network_G"] == demo1["network_G"] and demo2["train"]["trainable"] == ["TMB"]
    assert Path(demo2["path"]["pretrain_model_G"]).parent == Path(demo1["path"]["models"])
