"""codes/test_vimeo.py: the three splits in one command, missing clips counted, the papers' table."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from data_support import make_vimeo_tree, shared
from stvsr.archs import build_arch
from stvsr.data.io import read_image
from stvsr.eval.vimeo_cli import main
from stvsr.metrics import calculate_psnr, calculate_ssim, quantize

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


def _table_rows(out: str) -> dict[str, list[str]]:
    return {
        line.split()[0]: line.split()
        for line in out.splitlines()
        if line.split()[:1] in (["fast"], ["medium"], ["slow"])
    }


def test_real_vimeo_clips_and_missing_counts(tmp_path: Path, capsys) -> None:
    seq = shared("vimeo_septuplet", "sequences")
    args = ["--model", "bicubic", "--dataroot_GT", str(seq), "--results_root", str(tmp_path), "--no_progress"]
    assert main(args) == 0
    rows = _table_rows(capsys.readouterr().out)
    # on disk: 00002/0004 (fast), 00002/0007 and 00002/0008 (slow), no medium clip (shared/data/README.md)
    assert rows["fast"][1:3] == ["1", "1224"] and rows["slow"][1:3] == ["2", "1611"]
    assert rows["medium"][1:3] == ["0", "4977"] and "none of 4977" in " ".join(rows["medium"])
    # the fast number, recomputed here from the frames: LR 1, 3, 5, 7 -> bicubic baseline -> 7 frames scored
    from stvsr.data.degrade import bi_downscale

    gts = [read_image(seq / "00002" / "0004" / f"im{n}.png") for n in range(1, 8)]
    x = torch.from_numpy(np.stack([bi_downscale(gts[i]) for i in (0, 2, 4, 6)]).astype(np.float32) / 255)
    y = build_arch({"which_model_G": "bicubic"})(x.permute(0, 3, 1, 2)[None])[0].permute(0, 2, 3, 1).numpy()
    out = quantize(y)
    psnr = np.mean([calculate_psnr(out[t], gts[t], test_y_channel=True) for t in range(7)])
    ssim = np.mean([calculate_ssim(out[t], gts[t], test_y_channel=True) for t in range(7)])
    assert float(rows["fast"][3]) == pytest.approx(psnr, abs=1e-4)
    assert float(rows["fast"][4]) == pytest.approx(ssim, abs=1e-4)
    lines = (tmp_path / "bicubic_Vimeo" / "bicubic_Vimeo_fast.csv").read_text().splitlines()
    assert lines[1].startswith("# protocol: ")
    assert len([r for r in csv.DictReader(x for x in lines if not x.startswith("#")) if r["frame"].isdigit()]) == 7


def test_lr_folder_missing_error_and_means(tmp_path: Path, capsys) -> None:
    gt, lr = make_vimeo_tree(tmp_path, ["00001/0001", "00001/0002", "00003/0001"], height=32, width=48)
    (tmp_path / "sep_slow_testset.txt").write_text("00001/0001\n00001/0002\n")
    (tmp_path / "sep_medium_testset.txt").write_text("00003/0001\n\n")  # blank line as in STDAN's lists
    (tmp_path / "sep_fast_testset.txt").write_text("00001/0001\n00009/0009")
    base = ["--model", "bicubic", "--dataroot_GT", str(gt), "--dataroot_LQ", str(lr), "--list_dir", str(tmp_path)]
    base += ["--results_root", str(tmp_path / "res"), "--no_progress"]
    shipped = str(Path(__file__).resolve().parents[1] / "options" / "test" / "test_zsm_vimeo.yml")
    assert main(["-opt", shipped, "--dataroot_GT", str(gt), "--list_dir", str(tmp_path), "--checkpoint", "x.pth"]) == 2
    assert "x.pth: no such file" in capsys.readouterr().err
    assert main([*base, "--missing", "error"]) == 2
    err = capsys.readouterr().err
    assert "split 'fast'" in err and "1 of 2 listed clips are missing" in err
    assert main(base) == 0
    out = capsys.readouterr().out
    rows = _table_rows(out)
    assert "degradation=folder" in out
    assert rows["slow"][1:3] == ["2", "0"] and rows["medium"][1:3] == ["1", "0"] and rows["fast"][1:3] == ["1", "1"]
    # split mean = mean over clips of the clip means
    lines = (tmp_path / "res" / "bicubic_Vimeo" / "bicubic_Vimeo_slow.csv").read_text().splitlines()
    table = list(csv.DictReader(x for x in lines if not x.startswith("#")))
    clip_means = [float(r["psnr_y"]) for r in table if r["frame"] == "mean"]
    assert len(clip_means) == 2 and float(rows["slow"][3]) == pytest.approx(np.mean(clip_means), abs=1e-4)


def test_split_datasets_come_from_the_dataset_registry(tmp_path: Path, capsys) -> None:
    gt, _ = make_vimeo_tree(tmp_path, ["00001/0001"], height=32, width=48)
    for split in ("slow", "medium", "fast"):
        (tmp_path / f"sep_{split}_testset.txt").write_text("00001/0001\n")
    opt = tmp_path / "vimeo.yml"
    opt.write_text(f"datasets:\n  mode: VimeoTests\n  dataroot_GT: {gt}\n  list_dir: {tmp_path}\n")
    assert main(["-opt", str(opt), "--model", "bicubic", "--results_root", str(tmp_path / "res")]) == 2
    assert "Did you mean 'VimeoTest'" in capsys.readouterr().err
