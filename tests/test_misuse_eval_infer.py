"""Misuse of the evaluation and inference commands (issue 25): ``codes/test.py``, ``codes/test_vimeo.py`` and
``stvsr-infer`` each answer with one line and exit 2 for a checkpoint with NaN weights, a file that is not a
checkpoint, a CUDA device that is not there, protocol settings out of range, a results folder that cannot be
written (found before any work) and a run name that is not one folder; a disk that fills during the run costs
the files, not the report; SIGTERM and SIGHUP stop them as Ctrl-C does (what is done is kept, temporaries
removed, exit 128 + the signal's number)."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from stvsr.archs import build_arch
from stvsr.eval import cli as test_cli
from stvsr.eval import vimeo_cli
from stvsr.infer import cli as infer_cli

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread

ROOT = Path(__file__).resolve().parents[1]
TINY_ZSM = {"which_model_G": "LunaTokis", "nf": 8, "nframes": 7, "groups": 1, "front_RBs": 1, "back_RBs": 1}
COMMANDS = ("test", "vimeo", "infer")


def _noise_clips(root: Path, clips: int, frames: int, size: tuple[int, int], seed: int = 0) -> Path:
    """Random GT clip folders root/<clip>/000.png.. (written directly: fast, nothing to keep atomic here)."""
    rng = np.random.default_rng(seed)
    for c in range(clips):
        folder = root / f"c{c:02d}"
        folder.mkdir(parents=True)
        for t in range(frames):
            cv2.imwrite(str(folder / f"{t:03d}.png"), rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    return root


@pytest.fixture
def data(tmp_path: Path) -> dict[str, Path]:
    """What each command needs besides a model: GT clips (test.py), a Vimeo tree and its lists (test_vimeo.py),
    a folder of frames (stvsr-infer)."""
    gt = _noise_clips(tmp_path / "GT", 2, 7, (16, 24))
    for split in ("slow", "medium", "fast"):
        (tmp_path / f"sep_{split}_testset.txt").write_text("c00/c00\n")
    vimeo = tmp_path / "vimeo"  # one septuplet, clip 'c00/c00': the frames of c00 as im1.png .. im7.png
    (vimeo / "c00" / "c00").mkdir(parents=True)
    for n in range(1, 8):
        cv2.imwrite(str(vimeo / "c00" / "c00" / f"im{n}.png"), cv2.imread(str(gt / "c00" / f"{n - 1:03d}.png")))
    return {"gt": gt, "vimeo": vimeo, "lists": tmp_path, "frames": gt / "c00", "res": tmp_path / "res"}


def _argv(command: str, data: dict[str, Path], *extra: object) -> list[str]:
    if command == "test":
        args = ["--dataroot_GT", data["gt"], "--results_root", data["res"], "--no_progress"]
    elif command == "vimeo":
        args = ["--dataroot_GT", data["vimeo"], "--list_dir", data["lists"], "--results_root", data["res"]]
        args += ["--no_progress"]
    else:
        args = ["-i", data["frames"], "-o", data["res"] / "out.mp4", "--no-progress"]
    return [str(a) for a in [*args, *extra]]


def _main(command: str):
    return {"test": test_cli.main, "vimeo": vimeo_cli.main, "infer": infer_cli.main}[command]


def _one_line_error(capsys: pytest.CaptureFixture, command: str, data: dict[str, Path], *extra: object) -> str:
    """Run ``command``; it must exit 2 with exactly one line on stderr (no traceback); that line."""
    assert _main(command)(_argv(command, data, *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """The model must not be built nor run (the problem is found first)."""

    def refuse(*args, **kwargs):
        raise AssertionError("the work started before the problem was found")

    for module in (test_cli, vimeo_cli, infer_cli):
        monkeypatch.setattr(module, "build_model", refuse)
    monkeypatch.setattr(test_cli, "evaluate_clips", refuse)


def _temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".tmp-" in p.name)


# ------------------------------------------------------------------------------------------ checkpoints


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real checkpoint as codes/train.py writes it (weights under 'params', its network_G): it names its model."""
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pth"
    torch.manual_seed(0)
    state = build_arch(TINY_ZSM).state_dict()
    torch.save({"params": state, "network_G": TINY_ZSM}, path)
    return path


@pytest.mark.parametrize("command", COMMANDS)
def test_checkpoint_with_nan_weights_is_refused(command, tiny_checkpoint, data, tmp_path, capsys):
    """Not 7 dB nor a black video with exit 0: one line naming the tensor that holds a NaN, nothing written."""
    obj = torch.load(tiny_checkpoint, weights_only=True)
    obj["params"]["conv_last.weight"][0, 0, 0, 0] = float("nan")
    nan = tmp_path / "diverged.pth"
    torch.save(obj, nan)
    err = _one_line_error(capsys, command, data, "--checkpoint", nan, "--device", "cpu")
    assert f"checkpoint {nan}" in err and "NaN or infinite" in err and "conv_last.weight" in err
    assert not (data["res"] / "out.mp4").exists() and not list(data["res"].rglob("*.txt"))
    # the same file with its NaN replaced is accepted: the refusal is about the NaN
    obj["params"]["conv_last.weight"][0, 0, 0, 0] = 0.0
    torch.save(obj, nan)
    name = [] if command == "infer" else ["--name", "ok"]
    assert _main(command)(_argv(command, data, "--checkpoint", nan, "--device", "cpu", *name)) == 0
    capsys.readouterr()


@pytest.mark.parametrize("kind", ["empty", "truncated", "text"])
def test_file_that_is_not_a_checkpoint_is_said_by_every_command(kind, tiny_checkpoint, data, tmp_path, capsys,
                                                                 monkeypatch):  # fmt: skip
    """With or without --model: 'checkpoint X: not a PyTorch checkpoint (...)', not 'no model' nor a traceback."""
    _no_network(monkeypatch)
    bad = tmp_path / f"{kind}.pth"
    if kind == "empty":
        bad.write_bytes(b"")
    elif kind == "truncated":
        bad.write_bytes(tiny_checkpoint.read_bytes()[: tiny_checkpoint.stat().st_size // 2])
    else:
        bad.write_text("https://example.org/weights/zsm.pth\n")
    reason = {"empty": "empty file", "truncated": "truncated", "text": "a text file"}[kind]
    for command in COMMANDS:
        for model in ([], ["--model", "LunaTokis"]):
            err = _one_line_error(capsys, command, data, "--checkpoint", bad, *model)
            assert f"checkpoint {bad}: not a PyTorch checkpoint" in err and reason in err, (command, model, err)


# ---------------------------------------------------------------------------------------- device, names


@pytest.mark.parametrize("command", COMMANDS)
def test_device_that_is_not_here_is_one_line(command, data, capsys, monkeypatch):
    _no_network(monkeypatch)
    assert "not a device" in _one_line_error(capsys, command, data, "--model", "bicubic", "--device", "tpu9")
    if not torch.cuda.is_available():
        err = _one_line_error(capsys, command, data, "--model", "bicubic", "--device", "cuda")
        assert "--device cuda: CUDA is not available" in err


@pytest.mark.parametrize("command", ["test", "vimeo"])
def test_run_name_must_be_one_folder(command, data, capsys, monkeypatch):
    _no_network(monkeypatch)
    for name in ("..", "a/b", "", ".hidden"):
        err = _one_line_error(capsys, command, data, "--model", "bicubic", "--name", name)
        assert f"--name {name!r}" in err
    assert sorted(p.name for p in data["res"].parent.iterdir()) == sorted(
        ["GT", "vimeo", "sep_slow_testset.txt", "sep_medium_testset.txt", "sep_fast_testset.txt"]
    )  # nothing made anywhere (no results folder, no '../' one)


# ---------------------------------------------------------------------------------------------- protocol


def test_every_protocol_problem_at_once(data, tmp_path, capsys, monkeypatch):
    _no_network(monkeypatch)
    flags = ["--time_factor", 0, "--window", 0, "--stride", 0, "--tile", 0, "--crop_border", -1, "--pad_multiple", 0]
    assert test_cli.main(_argv("test", data, "--model", "bicubic", *flags)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "6 problems" in err
    for key in ("time_factor = 0", "window = 0", "stride = 0", "tile = 0", "crop_border = -1", "pad_multiple = 0"):
        assert f"protocol.{key}" in err, key
    assert "tile_overlap = 16: must be smaller than tile = 8" in _one_line_error(
        capsys, "test", data, "--model", "bicubic", "--tile", 8
    )
    # a YAML: a typo and a bad value, both reported
    opt = tmp_path / "t.yml"
    opt.write_text(yaml.safe_dump({"protocol": {"crop_boder": 4, "stride": 9}}))
    for command in ("test", "vimeo"):
        assert _main(command)(_argv(command, data, "-opt", opt, "--model", "bicubic")) == 2
        err = capsys.readouterr().err
        assert "Did you mean 'crop_border'" in err and "protocol.stride = 9" in err and "Traceback" not in err


def test_crop_border_larger_than_the_frames_before_the_first_window(data, tmp_path, capsys, monkeypatch):
    """16x24 GT frames: a crop border of 100 (or 3, which leaves 10 rows, less than SSIM's window) is refused
    before any window is computed; 2 is accepted."""
    monkeypatch.setattr(test_cli, "evaluate_clips", lambda *a, **k: pytest.fail("a window was computed"))
    for border in (100, 3):
        err = _one_line_error(capsys, "test", data, "--model", "bicubic", "--crop_border", border).lower()
        assert f"crop_border {border} leaves" in err and "24x16" in err
    opt = tmp_path / "v.yml"
    opt.write_text(yaml.safe_dump({"protocol": {"crop_border": 100}}))
    monkeypatch.setattr(vimeo_cli, "evaluate_split", lambda *a, **k: pytest.fail("a window was computed"))
    assert "crop_border 100 leaves" in _one_line_error(capsys, "vimeo", data, "-opt", opt, "--model", "bicubic")
    monkeypatch.undo()
    assert test_cli.main(_argv("test", data, "--model", "bicubic", "--crop_border", 2)) == 0
    capsys.readouterr()


# ------------------------------------------------------------------------------------------ results folder


@pytest.mark.parametrize("command", COMMANDS)
def test_read_only_results_folder_is_refused_before_any_work(command, readonly_fs, data, capsys, monkeypatch):
    _no_network(monkeypatch)
    data = {**data, "res": readonly_fs / "res"}
    err = _one_line_error(capsys, command, data, "--model", "bicubic")
    assert "Read-only file system" in err or "cannot create" in err


@pytest.mark.parametrize("command", COMMANDS)
def test_full_results_folder_is_refused_before_any_work(command, small_fs, data, capsys, monkeypatch):
    _no_network(monkeypatch)
    (small_fs / "res").mkdir()
    _fill(small_fs)
    err = _one_line_error(capsys, command, {**data, "res": small_fs / "res"}, "--model", "bicubic")
    assert "No space left on device" in err and "MB free" in err


@pytest.mark.parametrize("command", ["test", "vimeo"])
def test_results_root_that_is_a_file_is_refused(command, data, capsys, monkeypatch):
    _no_network(monkeypatch)
    data["res"].parent.joinpath("file").write_text("")
    err = _one_line_error(capsys, command, {**data, "res": data["res"].parent / "file"}, "--model", "bicubic")
    assert "--results_root" in err and "cannot create the folder" in err


def _fill(folder: Path) -> None:
    """Fill the file system of ``folder`` (a small tmpfs) up to the last byte."""
    with open(folder / "ballast", "wb", buffering=0) as f:
        for chunk in (65536, 512):
            try:
                while True:
                    f.write(b"\0" * chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC


@pytest.mark.parametrize("command", ["test", "vimeo"])
def test_disk_that_fills_during_the_run_keeps_the_printed_report(command, small_fs, data, capsys, monkeypatch):
    """The probe passed, then the disk filled: the report is printed anyway, one error line names the file and
    the free space, no traceback, no temporary left."""
    module, name = (test_cli, "evaluate_clips") if command == "test" else (vimeo_cli, "evaluate_split")
    real = getattr(module, name)

    def evaluate_then_fill(*args, **kwargs):
        results = real(*args, **kwargs)
        _fill(small_fs)
        return results

    monkeypatch.setattr(module, name, evaluate_then_fill)
    assert _main(command)(_argv(command, {**data, "res": small_fs / "res"}, "--model", "bicubic", "--name", "r")) == 2
    out, err = capsys.readouterr()
    assert ("mean of clips" in out) if command == "test" else ("PSNR-Y" in out and "fast" in out)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "No space left on device" in err and "MB free" in err and "printed above" in err
    assert _temporaries(small_fs) == []


def test_save_images_on_a_full_disk_keeps_the_partial_report(small_fs, tmp_path, capsys):
    """--save_images fills the disk part-way: one line naming the frame and the free space, the partial report
    printed (and written, or said that it could not be), no temporary left, exit 2."""
    gt = _noise_clips(tmp_path / "big", 3, 13, (192, 256))  # about 80 kB per output frame: 2 MB after 25
    args = ["--model", "bicubic", "--dataroot_GT", gt, "--results_root", small_fs, "--name", "s", "--save_images"]
    assert test_cli.main([str(a) for a in [*args, "--no_progress"]]) == 2
    out, err = capsys.readouterr()
    assert "PARTIAL" in out and "Traceback" not in err
    assert "--save_images: cannot write" in err and "No space left on device" in err and "MB free" in err
    assert _temporaries(small_fs) == []
    saved = (small_fs / "s" / "s_all_partial.txt").exists()
    assert saved or "cannot write" in err.splitlines()[-1]


# ---------------------------------------------------------------------------------------------- signals


def _child_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_test_py_keeps_a_partial_report_on_sigterm_and_sighup(signum, tmp_path):
    """codes/test.py as Slurm, `timeout` or a dropped SSH session stop it: after the first clip was scored the
    signal arrives; the partial report and CSV are written and named, exit 128 + the signal's number."""
    gt = _noise_clips(tmp_path / "GT", 16, 19, (96, 128))
    cmd = [sys.executable, str(ROOT / "codes" / "test.py"), "--model", "bicubic", "--dataroot_GT", str(gt),
           "--results_root", str(tmp_path / "res"), "--name", "sig", "--no_progress", "--device", "cpu"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_child_env())
    try:
        log = []
        for line in proc.stderr:  # the log: one line per scored clip
            log.append(line)
            if "PSNR-Y" in line:
                proc.send_signal(signum)
                break
        out, rest = proc.communicate(timeout=120)
    finally:
        proc.kill()
    err = "".join(log) + rest
    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err and f"stopped by a signal ({name})" in err and "partial report kept" in err
    report = (tmp_path / "res" / "sig" / "sig_all_partial.txt").read_text()
    assert "PARTIAL" in report and "c00 " in report and "PARTIAL" in out
    assert (tmp_path / "res" / "sig" / "sig_all_partial.csv").is_file()
    assert _temporaries(tmp_path / "res") == []


def test_stvsr_infer_leaves_no_temporary_on_sigterm_or_sighup(tmp_path):
    """Two interrupted runs of stvsr-infer (SIGTERM, then SIGHUP) writing a video: each removes its temporary
    video, leaves no output, says so and exits 143 / 129."""
    frames = _noise_clips(tmp_path / "in", 1, 150, (48, 64)) / "c00"
    out = tmp_path / "out" / "video.mp4"
    cmd = [sys.executable, str(ROOT / "codes" / "infer.py"), "-i", str(frames), "-o", str(out), "--model",
           "bicubic", "--no-progress", "--device", "cpu"]  # fmt: skip
    for signum in (signal.SIGTERM, signal.SIGHUP):
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_child_env())
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and proc.poll() is None:  # until the temporary video has data
                if any(p.stat().st_size > 0 for p in out.parent.glob(".video.mp4.tmp-*")):
                    break
                time.sleep(0.02)
            assert proc.poll() is None, "the run ended before it could be interrupted"
            proc.send_signal(signum)
            _, err = proc.communicate(timeout=120)
        finally:
            proc.kill()
        name = signal.Signals(signum).name
        assert proc.returncode == 128 + signum, err
        assert "Traceback" not in err and f"stopped by a signal ({name})" in err and "partial video" in err
        assert sorted(p.name for p in out.parent.iterdir()) == []  # no video, no temporary


def test_vimeo_keeps_the_splits_scored_on_sigterm(tmp_path, capsys, monkeypatch):
    """test_vimeo.py stopped by SIGTERM in its second clip: the partial table and CSV of what was scored, exit 143
    (the signal sent to this process: the command's own handler turns it into the partial report)."""
    from data_support import make_vimeo_tree
    from stvsr.data.vimeo import VimeoTest

    gt, lr = make_vimeo_tree(tmp_path, ["00001/0001", "00001/0002", "00001/0003"], height=16, width=24)
    for split in ("slow", "medium", "fast"):
        (tmp_path / f"sep_{split}_testset.txt").write_text("00001/0001\n00001/0002\n00001/0003\n")
    real_item = VimeoTest.__getitem__

    def item(self, i):
        if i == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_item(self, i)

    monkeypatch.setattr(VimeoTest, "__getitem__", item)
    args = ["--model", "bicubic", "--dataroot_GT", gt, "--dataroot_LQ", lr, "--list_dir", tmp_path, "--splits", "fast"]
    assert vimeo_cli.main([str(a) for a in [*args, "--results_root", tmp_path / "res", "--name", "v"]]) == 143
    out, err = capsys.readouterr()
    assert "PARTIAL: split fast: 1 of 3 clips" in out and "stopped by a signal (SIGTERM)" in err
    assert (tmp_path / "res" / "v" / "v_fast_partial.csv").is_file()
    assert "PARTIAL" in (tmp_path / "res" / "v" / "v_table_partial.txt").read_text()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the command's handlers are gone again


@pytest.mark.parametrize("output", ["video.mp4", "frames"])
def test_stvsr_infer_on_a_disk_that_fills(output, small_fs, tmp_path, capsys):
    """The output outgrows a 2 MB file system: one line naming the file, the reason and the free space; the
    temporary video is removed (frames already written to a folder are kept, and counted), exit 2."""
    frames = _noise_clips(tmp_path / "in", 1, 60, (64, 80)) / "c00"
    argv = ["-i", frames, "-o", small_fs / output, "--model", "bicubic", "--device", "cpu", "--crf", 0]
    assert infer_cli.main([str(a) for a in [*argv, "--no-progress"]]) == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert "No space left on device" in err and "MB free" in err
    assert _temporaries(small_fs) == []
    if output == "frames":
        kept = len(list((small_fs / "frames").glob("*.png")))
        assert kept > 0 and f"the {kept} frames before it are kept" in err
    else:
        assert "partial video was removed" in err and not (small_fs / output).exists()
