"""generate_LR (resume, BI/BD, layout, failures), create_lmdb (--check, --write-meta, errors), the demo set.

Misuse (overlapping folders, --overwrite, bad --scale, full or read-only destinations, stop signals) is in
test_misuse_data_scripts.py."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data_support import ROOT, make_vimeo_tree
from stvsr.data import Vimeo7, VimeoTest
from stvsr.data.degrade import bd_downscale, bi_downscale
from stvsr.data.demo import DemoSpec, ensure_demo_data, make_demo_data
from stvsr.data.io import DataError, read_image, write_image
from stvsr.data.lmdb_store import LmdbStore
from stvsr.data.make_lmdb import main as create_lmdb
from stvsr.data.make_lr import main as generate_lr


@pytest.fixture
def hr(tmp_path: Path) -> Path:
    make_vimeo_tree(tmp_path, ["00001/0001", "00001/0002"], height=24, width=32, frames=3)
    return tmp_path / "gt"


def test_generate_lr_keeps_the_tree_and_resumes(hr: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    dst = tmp_path / "out"
    assert generate_lr(["--src", str(hr), "--dst", str(dst), "--workers", "2", "--quiet"]) == 0
    assert "6 written, 0 already done" in capsys.readouterr().out
    lr = read_image(dst / "00001" / "0002" / "im3.png")
    np.testing.assert_array_equal(lr, bi_downscale(read_image(hr / "00001" / "0002" / "im3.png")))
    (dst / "00001" / "0001" / "im2.png").unlink()  # as if the run had been killed before this file
    assert generate_lr(["--src", str(hr), "--dst", str(dst), "--workers", "1", "--quiet"]) == 0
    assert "1 written, 5 already done" in capsys.readouterr().out
    assert generate_lr(["--src", str(hr), "--dst", str(dst), "--overwrite", "--mode", "bd", "--quiet"]) == 0
    assert "6 written, 0 already done" in capsys.readouterr().out
    np.testing.assert_array_equal(
        read_image(dst / "00001" / "0002" / "im3.png"), bd_downscale(read_image(hr / "00001" / "0002" / "im3.png"))
    )


def test_generate_lr_refuses_a_folder_inside_the_source(hr: Path, capsys: pytest.CaptureFixture) -> None:
    """LR frames inside --src would be read as HR frames by the next run (or by any tool reading --src)."""
    assert generate_lr(["--src", str(hr), "--dst", str(hr / "LRx4"), "--quiet"]) == 2
    assert "is inside --src" in capsys.readouterr().err and not (hr / "LRx4").exists()


def test_generate_lr_follows_a_linked_clip_folder(hr: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "0002").symlink_to(hr / "00001" / "0002", target_is_directory=True)
    assert generate_lr(["--src", str(linked), "--dst", str(tmp_path / "out"), "--quiet"]) == 0
    assert "3 written" in capsys.readouterr().out
    assert (tmp_path / "out" / "0002" / "im3.png").is_file()


def test_generate_lr_reports_bad_files_and_a_missing_source(hr: Path, tmp_path: Path, capsys) -> None:
    (hr / "00001" / "0001" / "im2.png").write_bytes(b"garbage")
    assert generate_lr(["--src", str(hr), "--dst", str(tmp_path / "out"), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert "im2.png: image" in captured.err and "cannot be decoded" in captured.err
    assert "5 written, 0 already done, 1 failed" in captured.out
    assert generate_lr(["--src", str(tmp_path / "nowhere"), "--dst", str(tmp_path / "x"), "--quiet"]) == 2
    assert "--src" in capsys.readouterr().err


def test_create_lmdb_check_and_errors(hr: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    db = tmp_path / "gt.lmdb"
    assert create_lmdb(["--src", str(hr), "--dst", str(db), "--quiet"]) == 0
    store = LmdbStore(db)
    assert store.keys() == [f"00001_000{c}_{n}" for c in (1, 2) for n in (1, 2, 3)]
    np.testing.assert_array_equal(store.get("00001_0002_3")[:, :, ::-1], read_image(hr / "00001/0002/im3.png"))
    assert create_lmdb(["--check", str(db), "--quiet"]) == 0
    assert "OK" in capsys.readouterr().out
    assert create_lmdb(["--src", str(hr), "--dst", str(db), "--quiet"]) == 2
    assert "already exists: pass --overwrite" in capsys.readouterr().err
    (tmp_path / "list.txt").write_text("00001/0001\n00003/0001\n")
    args = ["--src", str(hr), "--dst", str(tmp_path / "b.lmdb"), "--list", str(tmp_path / "list.txt"), "--quiet"]
    assert create_lmdb(args) == 2
    assert "1 of 2 listed clips are not under" in capsys.readouterr().err and not (tmp_path / "b.lmdb").exists()
    assert create_lmdb([*args, "--skip-missing"]) == 0
    meta = db / "meta_info.txt"
    meta.write_text(meta.read_text().replace("00001_0001_2 (24,32,3)", "00001_0001_2 (24,31,3)"))
    assert create_lmdb(["--check", str(db), "--quiet"]) == 1
    assert "00001_0001_2: 2304 bytes, expected 2232" in capsys.readouterr().err


def test_data_scripts_run_from_the_command_line(hr: Path, tmp_path: Path) -> None:
    script = ROOT / "data_scripts" / "generate_LR.py"
    run = subprocess.run(
        [sys.executable, str(script), "--src", str(hr), "--dst", str(tmp_path / "o"), "--quiet"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "o" / "00001" / "0001" / "im1.png").is_file()


TINY = DemoSpec(n_train=3, n_val=1, height=64, width=96, seed=3)


def test_demo_data_is_deterministic_from_the_seed(tmp_path: Path) -> None:
    a = make_demo_data(tmp_path / "a", TINY)
    b = make_demo_data(tmp_path / "b", TINY)
    c = make_demo_data(tmp_path / "c", DemoSpec(n_train=3, n_val=1, height=64, width=96, seed=4))
    files = sorted(p.relative_to(a) for p in (a / "sequences").rglob("*.png"))
    assert len(files) == 4 * 7
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert any((a / f).read_bytes() != (c / f).read_bytes() for f in files)
    frames = [read_image(a / "sequences" / "00001" / "0001" / f"im{n}.png") for n in (1, 7)]
    assert np.abs(frames[0].astype(int) - frames[1]).mean() > 1  # it moves
    np.testing.assert_array_equal(
        LmdbStore(a / "vimeo7_train_GT.lmdb").get("00001_0002_5"),
        LmdbStore(b / "vimeo7_train_GT.lmdb").get("00001_0002_5"),
    )


def test_ensure_demo_data_builds_once_and_refuses_foreign_folders(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    (tmp_path / f".demo.tmp-{int(dead.stdout)}").mkdir()  # left by a killed build
    root = ensure_demo_data(tmp_path / "demo", TINY)
    stamp = (root / "demo_info.json").stat().st_mtime_ns
    assert ensure_demo_data(tmp_path / "demo", TINY) == root
    assert (root / "demo_info.json").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]  # no temporary folder left
    write_image(tmp_path / "other" / "x.png", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(DataError, match="exists but is not a complete demo set"):
        ensure_demo_data(tmp_path / "other", TINY)


def test_default_demo_set_feeds_vimeo7_and_vimeo_test(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = ensure_demo_data(tmp_path_factory.mktemp("demo") / "vimeo_demo")  # the real size: 64 + 8 clips
    ds = Vimeo7(
        {
            "mode": "Vimeo7",
            "dataroot_GT": str(root / "vimeo7_train_GT.lmdb"),
            "dataroot_LQ": str(root / "vimeo7_train_LR7.lmdb"),
        }
    )
    assert len(ds) == 64
    random.seed(0)
    s = ds[5]
    assert s["LQs"].shape == (4, 3, 32, 32) and s["GT"].shape == (7, 3, 128, 128)
    val = VimeoTest(
        {
            "mode": "VimeoTest",
            "dataroot_GT": str(root / "sequences"),
            "dataroot_LQ": str(root / "sequences_LR"),
            "list_file": str(root / "sep_testlist.txt"),
        }
    )
    assert len(val) == 8 and val[0]["GT"].shape == (7, 3, 256, 448) and val[0]["key"] == "00002/0001"
