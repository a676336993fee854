"""Vimeo7 and VimeoTest: sample contract, LR/GT alignment, LMDB = folders, options and data errors, real data."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from data_support import make_vimeo_tree, shared, to_uint8
from stvsr.data import DataError, Vimeo7, VimeoTest, build_dataset
from stvsr.data.degrade import bi_downscale
from stvsr.data.io import read_clip_list, read_image, write_image
from stvsr.data.make_lmdb import build_lmdb
from stvsr.data.make_lr import generate
from stvsr.registry import DATASETS

CLIPS = ["00001/0001", "00001/0002", "00002/0001"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vimeo")
    gt, lr = make_vimeo_tree(root, CLIPS, height=64, width=96)
    (root / "list.txt").write_text("\n".join(CLIPS))
    build_lmdb(gt, root / "gt.lmdb", root / "list.txt", progress=False)
    build_lmdb(lr, root / "lr.lmdb", root / "list.txt", progress=False)
    return {"gt": gt, "lr": lr, "gt_lmdb": root / "gt.lmdb", "lr_lmdb": root / "lr.lmdb", "list": root / "list.txt"}


def options(gt: Path, lr: Path, **extra) -> dict:
    return {"mode": "Vimeo7", "dataroot_GT": str(gt), "dataroot_LQ": str(lr), "GT_size": 32, "LQ_size": 8, **extra}


def interior_matches_bi(lqs: np.ndarray, gts: np.ndarray, lq_index: list[int], tolerance: int = 0) -> None:
    """LR frame k equals BI x4 of GT frame lq_index[k], away from the 2-pixel crop border (where BI of a
    crop lacks the neighbours outside it)."""
    for k, g in enumerate(lq_index):
        diff = np.abs(bi_downscale(gts[g], 4).astype(int) - lqs[k])[2:-2, 2:-2]
        assert diff.max() <= tolerance, f"LR frame {k} does not match BI of GT frame {g}"


def test_registered_and_built_by_mode(tree: dict) -> None:
    assert {"Vimeo7", "VimeoTest", "VideoFolder"} <= set(DATASETS)
    assert isinstance(build_dataset(options(tree["gt_lmdb"], tree["lr_lmdb"])), Vimeo7)
    with pytest.raises(DataError, match="Did you mean 'Vimeo7'"):
        build_dataset({"mode": "Vimeo8"})


@pytest.mark.parametrize("backend", ["lmdb", "img"])
def test_sample_contract(tree: dict, backend: str) -> None:
    gt, lr = (tree["gt_lmdb"], tree["lr_lmdb"]) if backend == "lmdb" else (tree["gt"], tree["lr"])
    ds = Vimeo7(options(gt, lr))
    assert len(ds) == 3
    sample = ds[1]
    assert set(sample) == {"LQs", "GT", "key"} and sample["key"] == "00001_0002"
    assert sample["LQs"].shape == (4, 3, 8, 8) and sample["GT"].shape == (7, 3, 32, 32)
    assert sample["LQs"].dtype == torch.float32 and 0 <= sample["GT"].min() and sample["GT"].max() <= 1


def test_lmdb_and_folders_give_identical_samples(tree: dict) -> None:
    a = Vimeo7(options(tree["gt_lmdb"], tree["lr_lmdb"]))
    b = Vimeo7(options(tree["gt"], tree["lr"]))
    for i in range(6):
        random.seed(i)
        sa = a[i % 3]
        random.seed(i)
        sb = b[i % 3]
        assert sa["key"] == sb["key"]
        assert torch.equal(sa["LQs"], sb["LQs"]) and torch.equal(sa["GT"], sb["GT"])


def test_crops_are_aligned_exactly_without_augmentation(tree: dict) -> None:
    ds = Vimeo7(options(tree["gt_lmdb"], tree["lr_lmdb"], use_flip=False, use_rot=False, random_reverse=False))
    for seed in range(5):
        random.seed(seed)
        s = ds[seed % 3]
        interior_matches_bi(to_uint8(s["LQs"]), to_uint8(s["GT"]), [0, 2, 4, 6])


def test_flips_reversal_and_transpose_keep_lr_and_gt_aligned(tree: dict) -> None:
    ds = Vimeo7(options(tree["gt"], tree["lr"], GT_size=48, LQ_size=12))
    seen_reversed = False
    for seed in range(12):
        random.seed(seed)
        s = ds[0]
        gts = to_uint8(s["GT"])
        # BI commutes with flips and transposition up to float summation order: at most 1 level.
        interior_matches_bi(to_uint8(s["LQs"]), gts, [0, 2, 4, 6], tolerance=1)
        seen_reversed |= not np.array_equal(gts[0], to_uint8(Vimeo7(options(tree["gt"], tree["lr"]))[0]["GT"])[0])
    assert seen_reversed


def test_temporal_order_is_forward_or_reversed_whole(tree: dict) -> None:
    full = Vimeo7(options(tree["gt"], tree["lr"], phase="val"))
    frames = to_uint8(full[0]["GT"])  # validation: whole frames, im1..im7 in order
    assert frames.shape == (7, 64, 96, 3)
    np.testing.assert_array_equal(frames[0], read_image(tree["gt"] / CLIPS[0] / "im1.png"))
    ds = Vimeo7(options(tree["gt"], tree["lr"], use_flip=False, use_rot=False, GT_size=64, LQ_size=16))
    orders = set()
    for seed in range(10):
        random.seed(seed)
        crop = to_uint8(ds[0]["GT"])
        window = [np.flatnonzero([np.array_equal(c, f[:64, : c.shape[1]]) for f in frames]) for c in crop]
        if all(len(w) == 1 for w in window):
            orders.add(tuple(int(w[0]) for w in window))
    assert orders <= {tuple(range(7)), tuple(range(6, -1, -1))} and orders


def test_configurable_inputs_and_frame_count(tree: dict) -> None:
    ds = Vimeo7(options(tree["gt"], tree["lr"], N_frames=5, LQ_index_list=[0, 4], phase="val"))
    s = ds[0]
    assert s["LQs"].shape[0] == 2 and s["GT"].shape[0] == 5
    interior_matches_bi(to_uint8(s["LQs"]), to_uint8(s["GT"]), [0, 4])


def test_dataloader_with_workers_reads_the_lmdb(tree: dict) -> None:
    ds = Vimeo7(options(tree["gt_lmdb"], tree["lr_lmdb"]))
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2)
    batch = next(iter(loader))
    assert batch["LQs"].shape == (3, 4, 3, 8, 8) and batch["GT"].shape == (3, 7, 3, 32, 32)
    assert batch["key"] == ["00001_0001", "00001_0002", "00002_0001"]


@pytest.mark.parametrize(
    "extra,message",
    [
        ({"GT_sise": 32}, "unknown option 'GT_sise'. Did you mean 'GT_size'"),
        ({"GT_size": 30}, r"GT_size 30 must equal LQ_size 8 x scale \(not set\)"),
        ({"GT_size": 24, "scale": 4}, r"GT_size 24 must equal LQ_size 8 x scale \(4\)"),
        ({"N_frames": 6}, "N_frames must be odd"),
        ({"interval_list": [2]}, "does not fit in clips of 7 frames"),
        ({"LQ_index_list": [0, 9]}, r"LQ_index_list \[0, 9\] must hold positions"),
        ({"missing": "ignore"}, "missing='ignore' is not one of"),
        ({"border_mode": True}, "border_mode: true is not supported"),
    ],
)
def test_bad_options_are_named(tree: dict, extra: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        Vimeo7(options(tree["gt"], tree["lr"], **extra))


def test_missing_data_root_and_required_option(tree: dict, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"dataroot_GT .*nowhere does not exist"):
        Vimeo7(options(tmp_path / "nowhere", tree["lr"]))
    with pytest.raises(DataError, match="Vimeo7.dataroot_LQ: required option is missing"):
        Vimeo7({"dataroot_GT": str(tree["gt"])})


def test_list_naming_missing_clips(tree: dict, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "list.txt").write_text("00001/0001\n00009/0001\n00009/0002\n")
    opt = options(tree["gt"], tree["lr"], list_file=str(tmp_path / "list.txt"))
    with pytest.raises(DataError, match=r"2 of 3 listed clips are missing .*\(00009/0001, 00009/0002\)"):
        Vimeo7(opt)
    with caplog.at_level(logging.WARNING):
        ds = Vimeo7({**opt, "missing": "skip"})
    assert ds.clips == ["00001/0001"] and "2 of 3 listed clips are missing" in caplog.text
    lmdb_opt = options(tree["gt_lmdb"], tree["lr_lmdb"], list_file=str(tmp_path / "list.txt"))
    with pytest.raises(DataError, match="2 of 3 listed clips are missing"):
        Vimeo7(lmdb_opt)


def test_lr_of_the_wrong_size_is_named(tree: dict, tmp_path: Path) -> None:
    for n in range(1, 8):
        write_image(tmp_path / "lr" / CLIPS[0] / f"im{n}.png", np.zeros((16, 23, 3), np.uint8))
    opt = options(tree["gt"], tmp_path / "lr", list_file=str(tree["list"]), missing="skip")
    with pytest.raises(DataError, match=r"clip 00001/0001: LR frames are 23x16 \(W x H\) .* but GT frames are 96x64"):
        Vimeo7(opt)[0]


def test_crop_larger_than_the_frames(tree: dict) -> None:
    with pytest.raises(DataError, match="smaller than LQ_size 32"):
        Vimeo7(options(tree["gt"], tree["lr"], GT_size=128, LQ_size=32))[0]


def test_official_pickle_key_file(tree: dict, tmp_path: Path) -> None:
    import pickle

    (tmp_path / "keys.pkl").write_bytes(pickle.dumps(["00002_0001", "00001_0001"]))
    ds = Vimeo7(options(tree["gt_lmdb"], tree["lr_lmdb"], cache_keys=str(tmp_path / "keys.pkl")))
    assert ds.clips == ["00001/0001", "00002/0001"]


# --- real data: the 16 Vimeo septuplets and the split lists -------------------------------------------------


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The 16 real septuplets through generate_LR (2 workers) and create_lmdb."""
    sequences = shared("vimeo_septuplet", "sequences")
    root = tmp_path_factory.mktemp("real")
    result = generate(sequences, root / "lr", "BI", 4, workers=2, progress=False)
    assert result["written"] == 112 and not result["failures"]
    build_lmdb(sequences, root / "gt.lmdb", workers=2, progress=False)
    build_lmdb(root / "lr", root / "lr.lmdb", progress=False)
    return {"sequences": sequences, "lr": root / "lr", "gt_lmdb": root / "gt.lmdb", "lr_lmdb": root / "lr.lmdb"}


def test_real_septuplets_give_aligned_samples_from_lmdb_and_folders(real: dict) -> None:
    assert (real["gt_lmdb"] / "meta_info.txt").read_text().count("(256,448,3)") == 112
    assert (real["lr_lmdb"] / "meta_info.txt").read_text().count("(64,112,3)") == 112
    lmdb_ds = Vimeo7(options(real["gt_lmdb"], real["lr_lmdb"], GT_size=128, LQ_size=32))
    folder_ds = Vimeo7(options(real["sequences"], real["lr"], GT_size=128, LQ_size=32))
    assert len(lmdb_ds) == len(folder_ds) == 16
    plain = Vimeo7(options(real["gt_lmdb"], real["lr_lmdb"], GT_size=128, LQ_size=32, use_flip=False, use_rot=False))
    for i in range(0, 16, 3):
        random.seed(i)
        a = lmdb_ds[i]
        random.seed(i)
        b = folder_ds[i]
        assert a["key"] == b["key"] and torch.equal(a["LQs"], b["LQs"]) and torch.equal(a["GT"], b["GT"])
        assert a["LQs"].shape == (4, 3, 32, 32) and a["GT"].shape == (7, 3, 128, 128)
        random.seed(i)
        s = plain[i]
        interior_matches_bi(to_uint8(s["LQs"]), to_uint8(s["GT"]), [0, 2, 4, 6])


def test_split_lists_parse_to_the_documented_counts() -> None:
    counts = {"fast": 1225, "medium": 4977, "slow": 1613}
    for split, count in counts.items():
        path = shared("vimeo_septuplet", f"sep_{split}_testset.txt")
        clips = read_clip_list(path)
        assert len(clips) == len(set(clips)) == count
        assert all(len(c.split("/")) == 2 for c in clips)
    assert not shared("vimeo_septuplet", "sep_fast_testset.txt").read_bytes().endswith(b"\n")  # the quirk


def test_vimeo_test_reports_missing_clips_and_runs_the_present_ones(caplog: pytest.LogCaptureFixture) -> None:
    sequences = shared("vimeo_septuplet", "sequences")
    opt = {
        "mode": "VimeoTest",
        "dataroot_GT": str(sequences),
        "list_file": str(shared("vimeo_septuplet", "sep_slow_testset.txt")),
    }
    with pytest.raises(DataError, match="1611 of 1613 listed clips are missing"):
        VimeoTest(opt)
    with caplog.at_level(logging.WARNING):
        ds = build_dataset({**opt, "missing": "skip"})
    assert "1611 of 1613" in caplog.text and ds.clips == ["00002/0007", "00002/0008"]
    s = ds[0]
    assert s["key"] == "00002/0007" and s["LQs"].shape == (4, 3, 64, 112) and s["GT"].shape == (7, 3, 256, 448)
    gts = to_uint8(s["GT"])
    np.testing.assert_array_equal(gts[6], read_image(sequences / "00002" / "0007" / "im7.png"))
    for k, g in enumerate([0, 2, 4, 6]):  # LR made on the fly with BI from GT frames 1, 3, 5, 7
        np.testing.assert_array_equal(to_uint8(s["LQs"])[k], bi_downscale(gts[g], 4))


def test_clip_with_a_missing_frame_is_reported_up_front(tmp_path: Path) -> None:
    gt, lr = make_vimeo_tree(tmp_path, ["00001/0001", "00001/0002"], height=32, width=32)
    (lr / "00001" / "0002" / "im5.png").unlink()
    with pytest.raises(DataError, match=r"1 of 2 listed clips are missing .*\(00001/0002\)"):
        Vimeo7(options(gt, lr))
