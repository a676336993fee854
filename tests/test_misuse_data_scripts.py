"""The data scripts never destroy a user's data: create_lmdb and generate_LR refuse a destination that overlaps
their source (either way round), replace only what they wrote, check settings and the destination before the
work, say a full disk or a read-only destination in one line, and stop on SIGINT / SIGTERM / SIGHUP keeping what
is done, leaving no temporary, with exit code 128 + the signal's number."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from data_support import ROOT
from stvsr.data.io import DataError, read_image, write_image
from stvsr.data.lmdb_store import LmdbStore, LmdbWriter
from stvsr.data.make_lmdb import main as create_lmdb
from stvsr.data.make_lr import main as generate_lr

SCRIPTS = ROOT / "data_scripts"


def make_frames(root: Path, clips: int, frames: int, height: int = 24, width: int = 32, seed: int = 0) -> Path:
    """``root/<clip>/im<n>.png``: random (incompressible) frames; returns ``root``."""
    rng = np.random.default_rng(seed)
    for c in range(1, clips + 1):
        folder = root / f"{c:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(1, frames + 1):
            cv2.imwrite(str(folder / f"im{n}.png"), rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    return root


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative path -> bytes), to show that nothing was changed or removed."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def frames_in(folder: Path) -> list[Path]:
    """The finished frames under ``folder`` (not the hidden temporaries, which end in .png too)."""
    return [p for p in folder.rglob("*.png") if not p.name.startswith(".")]


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    """A dataset folder: ``gt/`` (2 clips x 3 frames) and a file that is not a frame."""
    make_frames(tmp_path / "ds" / "gt", clips=2, frames=3)
    (tmp_path / "ds" / "README.txt").write_text("the user's notes\n")
    return tmp_path / "ds"


def one_line_error(err: str) -> str:
    """The only line of ``err`` (and no traceback)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# --- create_lmdb: overlap and --overwrite (issue item 1) ---------------------------------------------------------


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])
def test_create_lmdb_refuses_dst_equal_to_src(dataset: Path, overwrite: list, capsys) -> None:
    before = snapshot(dataset)
    assert create_lmdb(["--src", str(dataset / "gt"), "--dst", str(dataset / "gt"), "--quiet", *overwrite]) == 2
    assert "is the same folder as --src" in one_line_error(capsys.readouterr().err)
    assert snapshot(dataset) == before and temporaries(dataset.parent) == []


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])
def test_create_lmdb_refuses_dst_holding_src(dataset: Path, overwrite: list, capsys) -> None:
    before = snapshot(dataset)
    assert create_lmdb(["--src", str(dataset / "gt"), "--dst", str(dataset), "--quiet", *overwrite]) == 2
    assert f"--dst {dataset} holds --src" in one_line_error(capsys.readouterr().err)
    assert snapshot(dataset) == before and temporaries(dataset.parent) == []


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])
def test_create_lmdb_refuses_dst_inside_src(dataset: Path, overwrite: list, capsys) -> None:
    before = snapshot(dataset)
    dst = dataset / "gt" / "gt.lmdb"
    assert create_lmdb(["--src", str(dataset / "gt"), "--dst", str(dst), "--quiet", *overwrite]) == 2
    assert "is inside --src" in one_line_error(capsys.readouterr().err)
    assert snapshot(dataset) == before and not dst.exists() and temporaries(dataset) == []


def test_create_lmdb_refuses_dst_linked_to_src(dataset: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "alias").symlink_to(dataset, target_is_directory=True)
    before = snapshot(dataset)
    assert create_lmdb(["--src", str(dataset / "gt"), "--dst", str(tmp_path / "alias"), "--overwrite"]) == 2
    assert "holds --src" in one_line_error(capsys.readouterr().err)
    assert snapshot(dataset) == before


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])
def test_create_lmdb_never_replaces_a_folder_that_is_not_an_lmdb(dataset: Path, tmp_path: Path, overwrite, capsys):
    other = tmp_path / "results"
    make_frames(other, clips=1, frames=2)
    (other / "data.mdb").write_bytes(b"not mine")  # a data.mdb among other files is still not an LMDB to replace
    before = snapshot(other)
    assert create_lmdb(["--src", str(dataset / "gt"), "--dst", str(other), "--quiet", *overwrite]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "is not an LMDB written by create_lmdb" in line and "never replaced, even with --overwrite" in line
    assert "pass --overwrite" not in line  # the message does not lead to deleting it
    assert snapshot(other) == before and temporaries(tmp_path) == []


def test_create_lmdb_never_replaces_a_file(dataset: Path, tmp_path: Path, capsys) -> None:
    target = tmp_path / "notes.lmdb"
    target.write_text("precious")
    assert create_lmdb(["--src", str(dataset / "gt"), "--dst", str(target), "--overwrite", "--quiet"]) == 2
    assert "is a file, not an LMDB folder" in one_line_error(capsys.readouterr().err)
    assert target.read_text() == "precious"


def test_create_lmdb_overwrite_replaces_a_real_lmdb(dataset: Path, tmp_path: Path, capsys) -> None:
    db = tmp_path / "gt.lmdb"
    other = make_frames(tmp_path / "other", clips=1, frames=2, seed=1)
    assert create_lmdb(["--src", str(dataset / "gt"), "--dst", str(db), "--quiet"]) == 0
    assert len(LmdbStore(db)) == 6
    assert create_lmdb(["--src", str(other), "--dst", str(db), "--quiet"]) == 2
    assert "already exists: pass --overwrite to replace it" in capsys.readouterr().err
    assert create_lmdb(["--src", str(other), "--dst", str(db), "--quiet", "--overwrite"]) == 0
    store = LmdbStore(db)
    assert store.keys() == ["0001_1", "0001_2"]
    np.testing.assert_array_equal(store.get("0001_2")[:, :, ::-1], read_image(other / "0001" / "im2.png"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds", "gt.lmdb", "other"]  # no temporary, no old copy


def test_lmdb_writer_overwrite_refuses_a_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("keep")
    with pytest.raises(DataError, match="never replaced"):
        LmdbWriter(tmp_path / "x", 2**20, overwrite=True)
    assert (tmp_path / "x" / "keep.txt").read_text() == "keep"


def test_create_lmdb_into_an_empty_folder(dataset: Path, tmp_path: Path) -> None:
    (tmp_path / "empty.lmdb").mkdir()
    assert create_lmdb(["--src", str(dataset / "gt"), "--dst", str(tmp_path / "empty.lmdb"), "--quiet"]) == 0
    assert len(LmdbStore(tmp_path / "empty.lmdb")) == 6


# --- create_lmdb: read-only and full destinations -----------------------------------------------------------------


def test_create_lmdb_read_only_destination_is_one_message(dataset: Path, readonly_fs: Path, capsys) -> None:
    assert create_lmdb(["--src", str(dataset / "gt"), "--dst", str(readonly_fs / "gt.lmdb"), "--quiet"]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "Read-only file system" in line and f"--dst {readonly_fs / 'gt.lmdb'}" in line


@pytest.fixture
def big_frames(tmp_path: Path) -> Path:
    """12 incompressible 256x256 frames: 2.3 MB of LMDB values, more than ``small_fs`` holds."""
    return make_frames(tmp_path / "big", clips=1, frames=12, height=256, width=256)


def test_create_lmdb_refuses_too_little_free_space_up_front(big_frames: Path, small_fs: Path, capsys) -> None:
    assert create_lmdb(["--src", str(big_frames), "--dst", str(small_fs / "gt.lmdb"), "--quiet"]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "the 12 frames need 2.2 MB" in line and "MB free" in line
    assert list(small_fs.iterdir()) == []


def test_create_lmdb_full_disk_during_the_build(big_frames: Path, small_fs: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr("stvsr.data.make_lmdb.free_space", lambda path: 2**40)  # let the up-front check pass
    args = ["--src", str(big_frames), "--dst", str(small_fs / "gt.lmdb"), "--quiet", "--batch", "2"]
    assert create_lmdb(args) == 2
    line = one_line_error(capsys.readouterr().err)
    assert f"cannot write {small_fs / 'gt.lmdb'}: No space left on device" in line and "MB free" in line
    assert "partial database was removed" in line
    assert list(small_fs.iterdir()) == []  # neither the database nor its temporary


# --- generate_LR: overlap (issue item 2) --------------------------------------------------------------------------


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]], ids=["plain", "overwrite"])
@pytest.mark.parametrize("where", ["same", "inside", "holding"])
def test_generate_lr_refuses_overlapping_dst(dataset: Path, where: str, overwrite: list, capsys) -> None:
    src = dataset / "gt"
    dst = {"same": src, "inside": src / "LRx4", "holding": dataset}[where]
    relation = {"same": "is the same folder as", "inside": "is inside", "holding": "holds"}[where]
    before = snapshot(dataset)
    assert generate_lr(["--src", str(src), "--dst", str(dst), "--quiet", *overwrite]) == 2
    assert f"{relation} --src" in one_line_error(capsys.readouterr().err)
    assert snapshot(dataset) == before and not (src / "LRx4").exists() and temporaries(dataset) == []


# --- generate_LR: settings checked before the work ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--scale", "0"], "--scale 0: BI needs an integer >= 2"),
        (["--scale", "1"], "--scale 1: BI needs an integer >= 2 (x1 would only copy the frames)"),
        (["--scale", "-4", "--mode", "BD"], "--scale -4: BD needs an integer >= 1"),
        (["--scale", "100"], "too small for BI x100"),
        (["--scale", "32", "--mode", "BD"], "too small for BD x32"),
        (["--mode", "BD", "--phase", "4"], "--phase 4: BD at --scale 4 needs a phase in 0..3"),
        (["--workers", "0"], "--workers 0"),
    ],
)
def test_generate_lr_bad_settings_are_one_message(dataset: Path, tmp_path: Path, extra, message, capsys) -> None:
    dst = tmp_path / "lr"
    assert generate_lr(["--src", str(dataset / "gt"), "--dst", str(dst), "--quiet", "--workers", "2", *extra]) == 2
    captured = capsys.readouterr()
    assert message in one_line_error(captured.err) and captured.out == ""
    assert not dst.exists()  # nothing written, not even the folder


def test_generate_lr_bd_x1_is_the_blur_alone(dataset: Path, tmp_path: Path, capsys) -> None:
    args = ["--src", str(dataset / "gt"), "--dst", str(tmp_path / "lr"), "--quiet", "--mode", "BD", "--scale", "1"]
    assert generate_lr(args) == 0
    assert read_image(tmp_path / "lr" / "0001" / "im1.png").shape == (24, 32, 3)


def test_generate_lr_scale_too_large_from_the_command_line(dataset: Path, tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(SCRIPTS / "generate_LR.py"), "--src", str(dataset / "gt"), "--dst", str(tmp_path / "o")]
        + ["--scale", "100", "--workers", "2", "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and "32x24: too small for BI x100" in one_line_error(run.stderr)


def test_generate_lr_stops_when_many_frames_fail_the_same_way(tmp_path: Path, capsys) -> None:
    src = tmp_path / "hr"
    src.mkdir()
    for n in range(40):
        (src / f"im{n:02d}.png").write_bytes(b"not a png")
    assert generate_lr(["--src", str(src), "--dst", str(tmp_path / "lr"), "--quiet", "--workers", "1"]) == 1
    line = one_line_error(capsys.readouterr().err)
    assert line.startswith("generate_LR: stopped: 20 frames failed the same way") and "cannot be decoded" in line


def test_generate_lr_read_only_destination_is_one_message(dataset: Path, readonly_fs: Path, capsys) -> None:
    assert generate_lr(["--src", str(dataset / "gt"), "--dst", str(readonly_fs / "lr"), "--quiet"]) == 2
    assert "Read-only file system" in one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_generate_lr_full_disk_stops_at_the_first_failed_write(tmp_path: Path, small_fs: Path, workers, capsys):
    src = make_frames(tmp_path / "hr", clips=2, frames=30, height=64, width=96)
    filler = small_fs / "filler"
    filler.write_bytes(b"\0" * (shutil.disk_usage(small_fs).free - 64 * 1024))  # about 16 LR frames still fit
    dst = small_fs / "lr"
    assert generate_lr(["--src", str(src), "--dst", str(dst), "--quiet", "--workers", workers]) == 1
    line = one_line_error(capsys.readouterr().err)
    assert ": No space left on device (" in line and "MB free on its file system)" in line
    written = len(frames_in(dst))
    assert 0 < written < 60 and f"stopped after {written} frames written (of 60, 0 already done)" in line
    assert "run the same command again" in line and temporaries(small_fs) == []
    assert all(read_image(p).shape == (16, 24, 3) for p in frames_in(dst))  # none half-written
    filler.unlink()
    assert generate_lr(["--src", str(src), "--dst", str(dst), "--quiet", "--workers", workers]) == 0
    assert f"{60 - written} written, {written} already done, 0 failed" in capsys.readouterr().out


# --- stop signals -------------------------------------------------------------------------------------------------


def wait_for(condition, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the command ended (exit {proc.returncode}) before it could be stopped: {proc.stderr.read()}")
        if time.monotonic() > end:
            proc.kill()
            pytest.fail("the command did not start its work in time")
        time.sleep(0.02)


@pytest.fixture(scope="module")
def many_frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """240 frames (4 clips of 60, 64x96): a few seconds of generate_LR on this machine."""
    return make_frames(tmp_path_factory.mktemp("many") / "hr", clips=4, frames=60, height=64, width=96)


@pytest.mark.parametrize(
    ("name", "workers", "group"),
    [("SIGTERM", "2", False), ("SIGHUP", "1", False), ("SIGINT", "2", True)],
    ids=["sigterm-2-workers", "sighup-1-worker", "ctrl-c-to-the-process-group"],
)
def test_generate_lr_stop_signal_keeps_the_frames_and_a_rerun_continues(
    many_frames: Path, tmp_path: Path, name: str, workers: str, group: bool
) -> None:
    dst = tmp_path / "lr"
    command = [sys.executable, str(SCRIPTS / "generate_LR.py"), "--src", str(many_frames), "--dst", str(dst)]
    command += ["--quiet", "--workers", workers]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    wait_for(lambda: any(frames_in(dst)), proc)
    sig = getattr(signal, name)
    if group:  # Ctrl-C in a terminal: the parent and its workers all get SIGINT
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    written = len(frames_in(dst))
    line = one_line_error(err)
    assert line.startswith(f"generate_LR: stopped by {name}: {written} frames written to {dst} in this run")
    assert "none is half-written: run the same command again to continue" in line and out == ""
    assert 0 < written < 240 and temporaries(dst) == []
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{240 - written} written, {written} already done, 0 failed" in rerun.stdout


SLOW_CREATE_LMDB = """
import sys, time
import stvsr.data.make_lmdb as m
read = m.read_image_bgr
def slow(path):
    time.sleep(0.02)
    return read(path)
m.read_image_bgr = slow
sys.exit(m.main(sys.argv[1:]))
"""


@pytest.mark.parametrize(("name", "replace"), [("SIGTERM", False), ("SIGHUP", True)], ids=["new", "overwrite"])
def test_create_lmdb_stop_signal_writes_nothing(many_frames: Path, tmp_path: Path, name: str, replace: bool) -> None:
    """A real create_lmdb process (its frame reading slowed down so that it can be stopped in the middle)."""
    db = tmp_path / "hr.lmdb"
    if replace:
        make_frames(tmp_path / "old", clips=1, frames=2)
        assert create_lmdb(["--src", str(tmp_path / "old"), "--dst", str(db), "--quiet"]) == 0
    before = snapshot(db) if replace else None
    args = ["--src", str(many_frames), "--dst", str(db), "--quiet", "--batch", "8", "--workers", "2"]
    args += ["--overwrite"] if replace else []
    command = [sys.executable, "-c", SLOW_CREATE_LMDB, *args]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: any(p.name.startswith(".hr.lmdb.tmp-") for p in tmp_path.iterdir()), proc)
    time.sleep(0.3)  # some values written
    sig = getattr(signal, name)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    line = one_line_error(err)
    state = "left as it was" if replace else "not created"
    assert line == (
        f"create_lmdb: stopped by {name}: nothing was written ({db} is {state}; the partial database was "
        "removed): run the same command again to build it"
    )
    assert temporaries(tmp_path) == [] and out == ""
    assert (snapshot(db) == before) if replace else not db.exists()
    assert create_lmdb(args) == 0 and len(LmdbStore(db)) == 240


def test_write_image_leaves_no_temporary_when_the_write_fails(small_fs: Path) -> None:
    """The building block generate_LR relies on: a failed write removes its temporary."""
    (small_fs / "filler").write_bytes(b"\0" * (shutil.disk_usage(small_fs).free - 4096))
    with pytest.raises(OSError):
        write_image(small_fs / "x.png", np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8))
    assert sorted(p.name for p in small_fs.iterdir()) == ["filler"]


def test_make_demo_data_stop_signal_keeps_nothing(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    command = [sys.executable, str(SCRIPTS / "make_demo_data.py"), "--root", str(root), "--train", "40", "--val", "1"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: any(p.name.startswith(".demo.tmp-") for p in tmp_path.iterdir()), proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "make_demo_data: stopped by SIGTERM: nothing was kept" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # neither the set nor its temporary folder
