"""codes/test.py end to end: the bicubic baseline on short real Vid4 clips, a tiny random ZSM on synthetic
clips, and the errors that must come before any computation."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from data_support import synthetic_clips
from stvsr.archs import build_arch
from stvsr.data.degrade import bi_downscale
from stvsr.data.io import write_image
from stvsr.eval.cli import main
from stvsr.metrics import calculate_psnr, calculate_ssim, quantize
from stvsr.model.weights import save_state_dict

ROOT = Path(__file__).resolve().parents[1]
SHARED_VID4 = ROOT.parent / "shared" / "data" / "Vid4" / "GT"
TINY_ZSM = {"which_model_G": "LunaTokis", "nf": 8, "nframes": 7, "groups": 8, "front_RBs": 1, "back_RBs": 1}


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread


def _short_vid4(tmp_path: Path, clip: str, frames: int) -> Path:
    """The first ``frames`` frames of a real Vid4 clip, cropped to 96x128 (keeps the test fast)."""
    import cv2

    if not SHARED_VID4.is_dir():
        pytest.skip(f"real test data {SHARED_VID4} is absent (see shared/data/README.md); this test needs it")
    src = sorted((SHARED_VID4 / clip).iterdir())[:frames]
    for path in src:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)[:96, :128, ::-1]
        write_image(tmp_path / "GT" / clip / path.name, np.ascontiguousarray(img))
    return tmp_path / "GT"


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    lines = path.read_text().splitlines()
    header = [line for line in lines if line.startswith("#")]
    return header, list(csv.DictReader(line for line in lines if not line.startswith("#")))


def test_bicubic_on_real_vid4_clips(tmp_path: Path, capsys) -> None:
    gt_root = _short_vid4(tmp_path, "calendar", 11)
    _short_vid4(tmp_path, "city", 9)
    results = tmp_path / "res"
    args = ["--model", "bicubic", "--dataroot_GT", str(gt_root), "--results_root", str(results), "--name", "b"]
    assert main([*args, "--no_progress", "--save_images"]) == 0
    out = capsys.readouterr().out
    assert "protocol: color=y" in out and "tail=all" in out and "11/11" in out and "9/9" in out
    header, rows = _read_csv(results / "b" / "b_all.csv")
    assert any("tail=all" in line and "degradation=BI" in line for line in header)
    frames = [r for r in rows if r["frame"].isdigit()]
    assert len(frames) == 20
    # recompute one frame independently: the saved image is the quantised output; its scores are in the CSV
    import cv2

    row = next(r for r in frames if r["clip"] == "calendar" and r["frame"] == "9")  # tail window, odd inputs
    saved = cv2.imread(str(results / "b" / "images" / "calendar" / (Path(row["name"]).stem + ".png")))[..., ::-1]
    gt = cv2.imread(str(gt_root / "calendar" / row["name"]))[..., ::-1]
    assert float(row["psnr_y"]) == pytest.approx(calculate_psnr(saved, gt, test_y_channel=True), abs=1e-5)
    assert float(row["ssim_rgb"]) == pytest.approx(calculate_ssim(saved, gt), abs=1e-5)
    # and the frame is what the baseline makes from BI LR frames 4, 6, 8, 10 (window 4..10, position 5)
    lr = [bi_downscale(cv2.imread(str(p))[..., ::-1].copy()) for p in sorted((gt_root / "calendar").iterdir())]
    x = torch.from_numpy(np.stack([lr[t] for t in (4, 6, 8, 10)]).astype(np.float32) / 255).permute(0, 3, 1, 2)
    y = build_arch({"which_model_G": "bicubic"})(x[None])[0, 5].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(quantize(y), saved)
    # official_zsm: calendar's 11 frames -> window 0 only (7 scored), city's 9 -> 7
    assert main([*args, "--no_progress", "--tail", "official_zsm"]) == 0
    assert "7/11" in capsys.readouterr().out
    _, rows = _read_csv(results / "b" / "b_official_zsm.csv")
    assert len([r for r in rows if r["frame"].isdigit()]) == 14
    clip_means = {r["clip"]: float(r["psnr_y"]) for r in rows if r["frame"] == "mean"}
    overall = next(float(r["psnr_y"]) for r in rows if r["frame"] == "mean_of_clips")
    assert overall == pytest.approx(np.mean(list(clip_means.values())), abs=1e-5)


def _synthetic_clips(root: Path, lengths: dict[str, int], size=(24, 36)) -> tuple[Path, Path]:
    return synthetic_clips(root, lengths, size)


def test_tiny_zsm_script_with_lr_folder(tmp_path: Path) -> None:
    """A random tiny ZSM through ``python codes/test.py`` (a subprocess, as a user runs it), LR from a folder,
    a frame width (36/4 = 9) that needs padding to ZSM's multiple of 4."""
    gt, lr = _synthetic_clips(tmp_path, {"a": 8})
    model = build_arch(TINY_ZSM)
    save_state_dict(model, tmp_path / "zsm.pth")
    opt = tmp_path / "tiny.yml"
    opt.write_text(
        "name: tiny\nnetwork_G: {which_model_G: LunaTokis, nf: 8, nframes: 7, groups: 8, front_RBs: 1, back_RBs: 1}\n"
        f"datasets:\n  test: {{name: syn, dataroot_GT: '{gt}', dataroot_LQ: '{lr}'}}\n"
        f"path: {{pretrain_model_G: '{tmp_path / 'zsm.pth'}', results_root: '{tmp_path / 'res'}'}}\n"
        "protocol: {tail: all}\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "STVSR_DCN_BACKEND": "torch"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "codes" / "test.py"), "-opt", str(opt), "--no_progress"],
        check=False, capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "8/8" in proc.stdout and "degradation=folder" in proc.stdout and "pad_multiple=4" in proc.stdout
    _, rows = _read_csv(tmp_path / "res" / "tiny" / "tiny_all.csv")
    frames = [r for r in rows if r["frame"].isdigit()]
    assert [int(r["frame"]) for r in frames] == list(range(8))
    assert [int(r["window_start"]) for r in frames] == [0] * 7 + [1]


def test_errors_before_computation(tmp_path: Path, capsys) -> None:
    gt, lr = _synthetic_clips(tmp_path, {"a": 7, "b": 7})

    def error(*args: str) -> str:
        assert main([*args, "--no_progress", "--results_root", str(tmp_path / "res")]) == 2
        return capsys.readouterr().err

    # LR clip without GT
    (lr / "c").mkdir()
    write_image(lr / "c" / "000.png", np.zeros((6, 9, 3), np.uint8))
    assert "LR clip(s) without GT: c" in error("--model", "bicubic", "--dataroot_GT", str(gt), "--dataroot_LQ", str(lr))
    # frame count mismatch
    (lr / "a" / "006.png").unlink()
    msg = error("--model", "bicubic", "--dataroot_GT", str(gt), "--dataroot_LQ", str(lr), "--clips", "a")
    assert "7 GT frames" in msg and "6 LR frames" in msg
    # frame size mismatch (LR not GT/4), and GT frames of different sizes
    write_image(lr / "b" / "003.png", np.zeros((5, 9, 3), np.uint8))
    msg = error("--model", "bicubic", "--dataroot_GT", str(gt), "--dataroot_LQ", str(lr), "--clips", "b")
    assert "003.png" in msg and "must be 9x6" in msg
    write_image(gt / "a" / "002.png", np.zeros((28, 36, 3), np.uint8))
    assert "different sizes" in error("--model", "bicubic", "--dataroot_GT", str(gt), "--clips", "a")
    # missing GT root, clip shorter than the window
    assert "does not exist" in error("--model", "bicubic", "--dataroot_GT", str(tmp_path / "nope"))
    (gt / "b" / "006.png").unlink()
    assert "fewer than the window" in error("--model", "bicubic", "--dataroot_GT", str(gt), "--clips", "b")
    # checkpoint for another architecture; model typo; unknown YAML key
    stdan = build_arch(
        {
            "which_model_G": "stdan",
            "nf": 8,
            "nframes": 7,
            "embed_dim": 24,
            "extraction_depths": [2],
            "recon_depths": [2],
        }
    )
    save_state_dict(stdan, tmp_path / "stdan.pth")
    opt = tmp_path / "o.yml"
    opt.write_text(
        "network_G: {which_model_G: LunaTokis, nf: 8, nframes: 7, groups: 8, front_RBs: 1, back_RBs: 1}\n"
        f"datasets: {{test: {{dataroot_GT: '{gt}'}}}}\n"
    )
    msg = error("-opt", str(opt), "--checkpoint", str(tmp_path / "stdan.pth"))
    assert "does not fit LunaTokis" in msg and "another architecture" in msg
    assert "Did you mean" in error("--model", "bicubc", "--dataroot_GT", str(gt))
    # the shipped Vid4 config: its checkpoint is checked before any data is read
    shipped = str(ROOT / "options" / "test" / "test_zsm_vid4.yml")
    assert "xiang2020zooming.pth: no such file" in error("-opt", shipped, "--checkpoint", "xiang2020zooming.pth")
    opt.write_text("nme: x\n")
    assert "Did you mean 'name'" in error("-opt", str(opt))


def test_test_clips_come_from_the_dataset_registry(tmp_path: Path, capsys, monkeypatch) -> None:
    """datasets.test.mode names any registered dataset of test clips (default VideoFolder): a new benchmark dataset
    is one registered class, not a new command."""
    from stvsr.data.video_folder import VideoFolder
    from stvsr.registry import DATASETS

    built = []

    class FirstClipOnly(VideoFolder):
        """A stand-in benchmark: the first clip of a folder."""

        def __init__(self, opt) -> None:
            built.append(opt["mode"])
            super().__init__(opt)
            self.clips = self.clips[:1]

    monkeypatch.setitem(DATASETS._items, "FirstClipOnly", FirstClipOnly)  # registered for this test only
    gt, _ = synthetic_clips(tmp_path, {"a": 7, "b": 7}, (32, 48))
    opt = tmp_path / "test.yml"
    opt.write_text(f"datasets:\n  test:\n    mode: FirstClipOnly\n    dataroot_GT: {gt}\n")
    args = ["-opt", str(opt), "--model", "bicubic", "--results_root", str(tmp_path / "res"), "--no_progress"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert built == ["FirstClipOnly"] and "mean over 1 clips" in out and "7/7" in out
    opt.write_text(f"datasets:\n  test:\n    mode: VideoFolders\n    dataroot_GT: {gt}\n")
    assert main(args) == 2
    assert "Did you mean 'VideoFolder'" in capsys.readouterr().err
