"""What a new user runs into with the evaluation and inference commands (issue 16): a trainer checkpoint is
evaluated with ``--checkpoint`` alone and a training YAML (or the saved experiments/<name>/options.yml) names
the model; a frame that fails to decode is found before the first network call; Ctrl-C keeps what was scored;
a text file is not a video; empty roots and empty clip folders are reported and score nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from data_support import synthetic_clips
from stvsr.data.degrade import bi_downscale
from stvsr.data.io import write_image
from stvsr.eval import cli as test_cli
from stvsr.eval import vimeo_cli
from stvsr.infer import cli as infer_cli
from stvsr.train import options
from stvsr.train.trainer import Trainer, find_latest_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread

ROOT = Path(__file__).resolve().parents[1]
# a small ZSM whose settings differ from the official ones (nf 64, 5 + 40 blocks): the demo's situation
SMALL_ZSM = {"which_model_G": "LunaTokis", "nf": 8, "nframes": 7, "groups": 2, "front_RBs": 1, "back_RBs": 1}


def clips(root: Path, lengths: dict[str, int], size: tuple[int, int] = (16, 24)) -> tuple[Path, Path]:
    return synthetic_clips(root, lengths, size)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """One iteration of codes/train.py's Trainer on a tiny Vimeo set: its YAML, saved options and checkpoint."""
    root = tmp_path_factory.mktemp("trained")
    rng = np.random.default_rng(0)
    for c in (1, 2):
        for f in range(1, 8):
            gt = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            write_image(root / "seq" / f"00001/{c:04d}" / f"im{f}.png", gt)
            write_image(root / "seq_LR" / f"00001/{c:04d}" / f"im{f}.png", bi_downscale(gt))
    raw = {
        "name": "small",
        "use_tb_logger": False,
        "device": "cpu",
        "datasets": {
            "train": {
                "mode": "Vimeo7",
                "dataroot_GT": str(root / "seq"),
                "dataroot_LQ": str(root / "seq_LR"),
                "N_frames": 3,
                "GT_size": 16,
                "LQ_size": 4,
                "batch_size": 2,
            }
        },
        "network_G": SMALL_ZSM,
        "path": {"root": str(root / "run")},
        "train": {"lr_G": 1e-3, "niter": 1, "T_period": [1]},
        "logger": {"print_freq": 1, "save_checkpoint_freq": 1},
    }
    yml = root / "train_small.yml"
    yml.write_text(yaml.safe_dump(raw))
    trainer = Trainer(options.load(yml))
    trainer.train()
    trainer.close()
    exp = root / "run" / "experiments" / "small"
    return {"yml": yml, "saved": exp / "options.yml", "checkpoint": find_latest_checkpoint(exp / "models")}


def test_trainer_checkpoint_alone_rebuilds_its_model(trained, tmp_path, capsys):
    gt, _ = clips(tmp_path, {"a": 7})
    ckpt = trained["checkpoint"]
    assert torch.load(ckpt, weights_only=True)["network_G"] == SMALL_ZSM
    common = ["--dataroot_GT", str(gt), "--results_root", str(tmp_path / "res"), "--no_progress", "--device", "cpu"]
    assert test_cli.main(["--checkpoint", str(ckpt), *common]) == 0
    assert "7/7" in capsys.readouterr().out
    # --model with the checkpoint: the checkpoint's settings, not the official nf-64 model that it does not fit
    assert test_cli.main(["--model", "zsm", "--checkpoint", str(ckpt), *common]) == 0
    capsys.readouterr()


@pytest.mark.parametrize("which", ["yml", "saved"])
def test_training_yaml_or_saved_options_name_the_model_everywhere(trained, tmp_path, capsys, which):
    gt, _ = clips(tmp_path, {"a": 7})
    opt = str(trained[which])
    common = ["--dataroot_GT", str(gt), "--results_root", str(tmp_path / "res"), "--no_progress", "--device", "cpu"]
    assert test_cli.main(["-opt", opt, *common]) == 0
    out = capsys.readouterr().out
    assert "7/7" in out and trained["checkpoint"].name in out
    # stvsr-infer and test_vimeo.py take the same model (settings resolved without running)
    infer = infer_cli.resolve(infer_cli.build_parser().parse_args(["-opt", opt, "-i", "in.mp4", "-o", "out.mp4"]))
    assert infer["network"] == SMALL_ZSM and infer["checkpoint"] == str(trained["checkpoint"])
    (tmp_path / "lists").mkdir()
    for split in ("slow", "medium", "fast"):
        (tmp_path / "lists" / f"sep_{split}_testset.txt").write_text("00001/0001\n")
    args = ["-opt", opt, "--dataroot_GT", str(gt), "--list_dir", str(tmp_path / "lists")]
    vimeo = vimeo_cli.resolve(vimeo_cli.build_parser().parse_args(args))
    assert vimeo["network"] == SMALL_ZSM and vimeo["checkpoint"] == str(trained["checkpoint"])


def test_help_lists_every_registered_model():
    from stvsr.archs import ARCHS

    for parser in (test_cli.build_parser(), vimeo_cli.build_parser(), infer_cli.build_parser()):
        text = " ".join(parser.format_help().split())
        assert all(name in text for name in ARCHS), text


def test_frame_that_fails_to_decode_is_found_before_the_network_runs(tmp_path, capsys, monkeypatch):
    gt, _ = clips(tmp_path, {"a": 7, "b": 7})
    bad = gt / "b" / "004.png"
    bad.write_bytes(bad.read_bytes()[:60])  # a valid PNG header (size readable), then nothing

    def no_network(*args, **kwargs):
        raise AssertionError("the network ran before the frames were checked")

    monkeypatch.setattr(test_cli, "evaluate_clips", no_network)
    args = ["--model", "bicubic", "--dataroot_GT", str(gt), "--results_root", str(tmp_path / "res")]
    assert test_cli.main([*args, "--no_progress"]) == 2
    err = capsys.readouterr().err
    assert "1 of 14 frames cannot be read" in err and str(bad) in err and "Traceback" not in err


def test_failure_or_ctrl_c_part_way_keeps_what_was_scored(tmp_path, capsys, monkeypatch):
    """A frame that decodes in the check but not when read (or Ctrl-C) part-way: the clips already scored are
    written as a partial report that names the problem; exit 2 (130 for Ctrl-C), no traceback."""
    from stvsr.data.io import DataError
    from stvsr.data.video_folder import Clip

    gt, _ = clips(tmp_path, {"a": 7, "b": 7})
    real_gt = Clip.gt
    for error, code in ((DataError(f"image {gt / 'b' / '002.png'} cannot be decoded"), 2), (KeyboardInterrupt(), 130)):

        def failing_gt(self, t, error=error):
            if self.name == "b" and t == 2:
                raise error
            return real_gt(self, t)

        monkeypatch.setattr(Clip, "gt", failing_gt)
        args = ["--model", "bicubic", "--dataroot_GT", str(gt), "--results_root", str(tmp_path / "res"), "--name", "p"]
        assert test_cli.main([*args, "--no_progress"]) == code
        captured = capsys.readouterr()
        assert "PARTIAL" in captured.out and "7/7" in captured.out and "Traceback" not in captured.err
        report = (tmp_path / "res" / "p" / "p_all_partial.txt").read_text()
        assert "a " in report and "PARTIAL" in report
        if code == 2:
            assert "002.png cannot be decoded" in captured.err


def test_vimeo_failure_or_ctrl_c_part_way_keeps_the_splits_scored(tmp_path, capsys, monkeypatch):
    """test_vimeo.py: a clip that fails to decode (or Ctrl-C) in the second split keeps the first split's table
    and the clips of the second already scored, as a partial report; exit 2 (130 for Ctrl-C), no traceback."""
    from data_support import make_vimeo_tree
    from stvsr.data.io import DataError
    from stvsr.data.vimeo import VimeoTest

    gt, lr = make_vimeo_tree(tmp_path, ["00001/0001", "00001/0002", "00001/0003"], height=16, width=24)
    (tmp_path / "sep_fast_testset.txt").write_text("00001/0001\n")
    (tmp_path / "sep_medium_testset.txt").write_text("00001/0002\n00001/0003\n")
    (tmp_path / "sep_slow_testset.txt").write_text("00001/0001\n")
    real_item = VimeoTest.__getitem__
    bad = gt / "00001" / "0003" / "im4.png"
    for error, code in ((DataError(f"image {bad} cannot be decoded"), 2), (KeyboardInterrupt(), 130)):

        def failing_item(self, i, error=error):
            sample = real_item(self, i)
            if sample["key"] == "00001/0003":
                raise error
            return sample

        monkeypatch.setattr(VimeoTest, "__getitem__", failing_item)
        args = ["--model", "bicubic", "--dataroot_GT", str(gt), "--dataroot_LQ", str(lr), "--list_dir", str(tmp_path)]
        args += ["--results_root", str(tmp_path / "res"), "--name", "v", "--no_progress"]
        assert vimeo_cli.main(args) == code
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err and "PARTIAL: split medium: 1 of 2 clips scored" in captured.out
        rows = [line.split() for line in captured.out.splitlines() if line.split()[:1] in (["fast"], ["medium"])]
        assert [r[:2] for r in rows] == [["fast", "1"], ["medium", "1"]]
        assert "slow" not in [line.split()[:1][0] for line in captured.out.splitlines() if line.split()]
        report = (tmp_path / "res" / "v" / "v_table_partial.txt").read_text()
        assert "PARTIAL" in report and "00001/0002" in report
        assert (tmp_path / "res" / "v" / "v_medium_partial.csv").is_file()
        assert not (tmp_path / "res" / "v" / "v_table.txt").exists()
        if code == 2:
            assert str(bad) in captured.err


def test_text_file_is_not_a_video(tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a video\n" * 40)
    out = tmp_path / "out.mp4"
    assert infer_cli.main(["-i", str(text), "-o", str(out), "--model", "bicubic", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"input {text} is not a video" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_empty_roots_and_empty_clip_folders_are_reported(tmp_path, capsys, caplog):
    # test_vimeo.py on an existing but empty root: nothing scored is an error, not a table of dashes
    (tmp_path / "sequences").mkdir()
    for split in ("slow", "medium", "fast"):
        (tmp_path / f"sep_{split}_testset.txt").write_text("00001/0001\n00001/0002\n")
    args = ["--model", "bicubic", "--dataroot_GT", str(tmp_path / "sequences"), "--no_progress"]
    assert vimeo_cli.main([*args, "--results_root", str(tmp_path / "res")]) == 2
    err = capsys.readouterr().err
    assert "nothing to score" in err and "slow 0 of 2" in err and "it is empty" in err
    # codes/test.py: a clip folder without images is named, not ignored silently
    gt, _ = clips(tmp_path, {"a": 7})
    (gt / "empty_clip").mkdir()
    with caplog.at_level("INFO"):
        assert (
            test_cli.main(["--model", "bicubic", "--dataroot_GT", str(gt), "--results_root", str(tmp_path / "r")]) == 0
        )
    assert "1 clip folder(s) with frames (a)" in caplog.text
    assert "1 folder(s) hold no image and are not scored: empty_clip" in caplog.text


def test_stvsr_infer_text_file_subprocess_has_one_line(tmp_path):
    """As a user runs it: one line on stderr, exit 2."""
    text = tmp_path / "readme.txt"
    text.write_text("plain text\n" * 100)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "codes" / "infer.py"), "-i", str(text), "-o", str(tmp_path / "o.mp4"),
         "--model", "bicubic"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "is not a video" in proc.stderr


class _TimeBlend(torch.nn.Module):
    """A model with ``forward_times``: nearest x4 of the key frames and their linear blend at t = j/k; it records
    the mean of each LR frame it is given (which identifies the frame in the clip below)."""

    supports_time_factor = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[list[int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_times(x, 2)

    def forward_times(self, x: torch.Tensor, k: int) -> torch.Tensor:
        self.seen.append([round(float(v) * 255) for v in x[0].mean(dim=(1, 2, 3))])
        frames = [x[:, 0]]
        for a, b in zip(x[:, :-1].unbind(1), x[:, 1:].unbind(1), strict=True):
            frames += [a + (b - a) * j / k for j in range(1, k)] + [b]
        return torch.stack(frames, 1).repeat_interleave(4, -2).repeat_interleave(4, -1)


def test_time_factor_protocol_calls_forward_times_on_every_kth_frame(tmp_path, capsys):
    """codes/test.py with TMNet's Adobe240 protocol (time factor 6): the model sees frames 0 and 6, 6 and 12, and
    the tail window's 7 and 13; frame t of the clip is grey 20 + 10 t, so the blend is exact (PSNR > 300 dB)."""
    from stvsr.data.video_folder import VideoFolder
    from stvsr.eval.evaluator import EvalError, evaluate_clips
    from stvsr.eval.protocol import Protocol

    for t in range(14):
        grey = np.full((8, 12, 3), 20 + 10 * t, dtype=np.uint8)
        write_image(tmp_path / "GT" / "c" / f"{t:03d}.png", np.repeat(np.repeat(grey, 4, 0), 4, 1))
        write_image(tmp_path / "LR" / "c" / f"{t:03d}.png", grey)
    clips = VideoFolder({"dataroot_GT": str(tmp_path / "GT"), "dataroot_LQ": str(tmp_path / "LR")}).clips
    model = _TimeBlend()
    adobe = Protocol(window=7, stride=6, time_factor=6, degradation="folder")
    results = evaluate_clips(model, clips, adobe, progress=False)
    assert model.seen == [[20, 80], [80, 140], [90, 150]]
    assert len(results.frames) == 14 and all(f.values["psnr_y"] > 300 for f in results.frames)
    assert "time_factor=6" in results.report()
    with pytest.raises(EvalError, match="time_factor 6: Bicubic"):
        from stvsr.archs import build_arch

        evaluate_clips(build_arch({"which_model_G": "bicubic"}), clips, adobe, progress=False)
    # the same from the command line; test_vimeo.py refuses it (septuplets are x2)
    args = ["--model", "bicubic", "--dataroot_GT", str(tmp_path / "GT"), "--time_factor", "6", "--no_progress"]
    assert test_cli.main([*args, "--results_root", str(tmp_path / "res")]) == 2
    assert "makes one intermediate frame per pair only" in capsys.readouterr().err


def test_time_factor_models_come_from_the_registry(capsys):
    """--time-factor's help and the errors name the registered models with forward_times."""
    from stvsr.archs import time_factor_models

    assert time_factor_models() == ["SAFA", "TMNet"]
    with pytest.raises(SystemExit):
        infer_cli.main(["--help"])
    assert "forward_times (SAFA, TMNet)" in " ".join(capsys.readouterr().out.split())
