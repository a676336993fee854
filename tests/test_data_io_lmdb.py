"""Frame IO (natural sort, clear errors, atomic writes) and LMDB stores (meta_info.txt, atomicity, checks)."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import cv2
import lmdb
import numpy as np
import pytest

from stvsr.data.io import (
    DataError,
    image_shape,
    list_clips,
    list_images,
    natural_key,
    read_clip_list,
    read_image,
    write_image,
)
from stvsr.data.lmdb_store import (
    LmdbStore,
    LmdbWriter,
    map_size_for,
    meta_from_database,
    parse_meta_line,
    read_keys_file,
)


def test_natural_sort_orders_vid4_names_by_number() -> None:
    names = ["Frame 10.png", "Frame 9.png", "Frame 100.png", "Frame 01.png"]
    assert sorted(names, key=natural_key) == ["Frame 01.png", "Frame 9.png", "Frame 10.png", "Frame 100.png"]
    assert sorted(["im10.png", "im2.png", "im1.png"], key=natural_key) == ["im1.png", "im2.png", "im10.png"]


def test_read_write_roundtrip_is_rgb_and_atomic(tmp_path: Path) -> None:
    img = np.zeros((5, 6, 3), np.uint8)
    img[..., 0] = 200  # red
    write_image(tmp_path / "a" / "x.png", img)
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["x.png"]  # no temporary left behind
    assert cv2.imread(str(tmp_path / "a" / "x.png"))[0, 0].tolist() == [0, 0, 200]  # BGR on disk
    np.testing.assert_array_equal(read_image(tmp_path / "a" / "x.png"), img)
    assert image_shape(tmp_path / "a" / "x.png") == (5, 6, 3)


def test_grey_and_alpha_images_become_rgb(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "g.png"), np.full((4, 4), 9, np.uint8))
    cv2.imwrite(str(tmp_path / "a.png"), np.full((4, 4, 4), 9, np.uint8))
    assert read_image(tmp_path / "g.png").shape == (4, 4, 3)
    assert read_image(tmp_path / "a.png").shape == (4, 4, 3)


def test_unreadable_missing_and_16bit_images_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"bad\.png cannot be decoded"):
        read_image(tmp_path / "bad.png")
    with pytest.raises(DataError, match=r"gone\.png does not exist"):
        read_image(tmp_path / "gone.png")
    cv2.imwrite(str(tmp_path / "deep.png"), np.zeros((4, 4, 3), np.uint16))
    with pytest.raises(DataError, match=r"deep\.png is uint16, not 8-bit"):
        read_image(tmp_path / "deep.png")


def test_listing_clips_and_missing_root(tmp_path: Path) -> None:
    for clip in ["b/2", "b/10", "a"]:
        write_image(tmp_path / clip / "f.png", np.zeros((2, 2, 3), np.uint8))
    assert list_clips(tmp_path) == ["a", "b/2", "b/10"]
    assert [p.name for p in list_images(tmp_path / "a")] == ["f.png"]
    with pytest.raises(DataError, match="does not exist"):
        list_clips(tmp_path / "nowhere")


def test_listing_follows_links_to_clip_folders_without_looping(tmp_path: Path) -> None:
    """A data root made of links to clip folders lists them (os.walk alone skips them: clips silently missing); a
    link back up the tree is not followed (no endless walk, no clip listed twice)."""
    store, root = tmp_path / "store", tmp_path / "root"
    for clip in ["calendar", "city"]:
        write_image(store / clip / "f.png", np.zeros((2, 2, 3), np.uint8))
    write_image(root / "walk" / "f.png", np.zeros((2, 2, 3), np.uint8))
    (root / "calendar").symlink_to(store / "calendar", target_is_directory=True)
    (root / "sub").mkdir()
    (root / "sub" / "city").symlink_to(store / "city", target_is_directory=True)
    (root / "sub" / "loop").symlink_to(root, target_is_directory=True)
    (root / "walk" / "self").symlink_to(root / "walk", target_is_directory=True)
    assert list_clips(root) == ["calendar", "sub/city", "walk"]


def test_clip_list_tolerates_blank_lines_crlf_and_no_final_newline(tmp_path: Path) -> None:
    (tmp_path / "list.txt").write_bytes(b"00001/0001\r\n\n  00001/0002 \n00002/0003")
    assert read_clip_list(tmp_path / "list.txt") == ["00001/0001", "00001/0002", "00002/0003"]
    with pytest.raises(DataError, match="missing.txt does not exist"):
        read_clip_list(tmp_path / "missing.txt")


def write_db(path: Path, values: dict[str, np.ndarray], **kwargs) -> None:
    with LmdbWriter(path, map_size_for(v.nbytes for v in values.values()), batch=2, **kwargs) as w:
        for key, value in values.items():
            w.put(key, value)


@pytest.fixture
def values() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    shapes = {"00001_0001_1": (8, 12, 3), "00001_0001_2": (8, 12, 3), "00001_0002_1": (5, 7, 3)}
    return {k: rng.integers(0, 256, size=s).astype(np.uint8) for k, s in shapes.items()}


def test_lmdb_roundtrip_with_readable_meta_info(tmp_path: Path, values: dict) -> None:
    write_db(tmp_path / "x.lmdb", values)
    lines = (tmp_path / "x.lmdb" / "meta_info.txt").read_text().splitlines()
    assert lines[0].startswith("#") and lines[3].startswith("00001_0002_1 (5,7,3) crc32:")
    store = LmdbStore(tmp_path / "x.lmdb")
    assert store.keys() == list(values)
    for key, value in values.items():
        np.testing.assert_array_equal(store.get(key), value)
    assert all(problem is None for _, problem in store.check())
    assert store.extra_keys() == []
    assert [p.name for p in tmp_path.iterdir()] == ["x.lmdb"]  # no temporary folder left


def test_interrupted_write_leaves_nothing_under_the_final_name(tmp_path: Path, values: dict) -> None:
    with pytest.raises(RuntimeError, match="killed"), LmdbWriter(tmp_path / "x.lmdb", 2**20, batch=1) as w:
        w.put("a", values["00001_0001_1"])
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_stale_temporary_of_a_dead_run_is_removed(tmp_path: Path, values: dict) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    stale = tmp_path / f".x.lmdb.tmp-{int(dead.stdout)}"
    stale.mkdir()
    write_db(tmp_path / "x.lmdb", values)
    assert not stale.exists()


def test_existing_database_needs_overwrite(tmp_path: Path, values: dict) -> None:
    write_db(tmp_path / "x.lmdb", values)
    with pytest.raises(DataError, match="already exists: pass --overwrite"):
        write_db(tmp_path / "x.lmdb", values)
    write_db(tmp_path / "x.lmdb", {"k_1": values["00001_0002_1"]}, overwrite=True)
    assert LmdbStore(tmp_path / "x.lmdb").keys() == ["k_1"]
    assert [p.name for p in tmp_path.iterdir()] == ["x.lmdb"]


def test_value_of_the_wrong_size_is_named(tmp_path: Path, values: dict) -> None:
    write_db(tmp_path / "x.lmdb", values)
    meta = tmp_path / "x.lmdb" / "meta_info.txt"
    meta.write_text(meta.read_text().replace("00001_0001_2 (8,12,3)", "00001_0001_2 (8,13,3)"))
    store = LmdbStore(tmp_path / "x.lmdb")
    with pytest.raises(DataError, match=r"value of key 00001_0001_2 has 288 bytes but meta_info.txt says"):
        store.get("00001_0001_2")
    problems = dict(store.check())
    assert problems["00001_0001_2"].startswith("288 bytes, expected 312")
    with pytest.raises(DataError, match="key nope is not in"):
        store.get("nope")


def test_corrupt_value_fails_the_checksum(tmp_path: Path, values: dict) -> None:
    write_db(tmp_path / "x.lmdb", values)
    env = lmdb.open(str(tmp_path / "x.lmdb"))
    with env.begin(write=True) as txn:
        txn.put(b"00001_0001_1", bytes(values["00001_0001_1"].size))
    env.close()
    problems = dict(LmdbStore(tmp_path / "x.lmdb").check())
    assert problems["00001_0001_1"] == "checksum mismatch (corrupt value)"


def test_missing_meta_info_says_what_to_do(tmp_path: Path) -> None:
    env = lmdb.open(str(tmp_path / "official.lmdb"), map_size=2**20)
    with env.begin(write=True) as txn:  # the official layout: values only, fixed shape, no meta_info.txt
        txn.put(b"00001_0001_1", bytes(2 * 3 * 3))
        txn.put(b"00001_0001_2", bytes(range(18)))
    env.close()
    with pytest.raises(DataError, match="meta_info.txt is missing.*--write-meta"):
        LmdbStore(tmp_path / "official.lmdb")
    with pytest.raises(DataError, match="has 18 bytes, not 24"):
        meta_from_database(tmp_path / "official.lmdb", (2, 4, 3))
    assert meta_from_database(tmp_path / "official.lmdb", (2, 3, 3)) == 2
    store = LmdbStore(tmp_path / "official.lmdb")
    assert store.get("00001_0001_2").reshape(-1).tolist() == list(range(18))


def test_not_an_lmdb_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no data.mdb"):
        LmdbStore(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        LmdbStore(tmp_path / "nowhere.lmdb")


def test_meta_lines_of_basicsr_and_malformed_ones() -> None:
    entry = parse_meta_line("000_00000000.png (720,1280,3) 1", "meta")
    assert (entry.key, entry.shape, entry.crc32) == ("000_00000000", (720, 1280, 3), None)
    assert parse_meta_line("  # comment", "meta") is None
    with pytest.raises(DataError, match="meta_info.txt:3: cannot parse"):
        parse_meta_line("key 720x1280", "meta_info.txt:3")


def test_official_key_files_in_every_form(tmp_path: Path) -> None:
    forms = {
        "list.pkl": ["00001_0002", "00001_0001"],
        "set.pkl": {"00001_0002", "00001_0001"},
        "dict.pkl": {"keys": ["00001_0002", "00001_0001"], "resolution": "3_256_448"},
    }
    for name, obj in forms.items():
        (tmp_path / name).write_bytes(pickle.dumps(obj))
        assert read_keys_file(tmp_path / name) == ["00001_0001", "00001_0002"]
    (tmp_path / "bad.pkl").write_bytes(pickle.dumps({"name": "x"}))
    with pytest.raises(DataError, match="dict without 'keys'"):
        read_keys_file(tmp_path / "bad.pkl")
    (tmp_path / "l.txt").write_text("00001/0002\n00001/0001")
    assert read_keys_file(tmp_path / "l.txt") == ["00001_0001", "00001_0002"]


def test_map_size_covers_the_values() -> None:
    assert map_size_for([256 * 448 * 3] * 1000) > 1000 * 256 * 448 * 3
    assert map_size_for([]) >= 16 * 2**20


# ------------------------------------------------------------------ damaged databases (issue 16, items 1-2)
REPO = Path(__file__).resolve().parents[1]
SIGBUS_CODES = (-7, 135)  # killed by SIGBUS (subprocess) / the shell's 128 + 7


def big_values(n: int = 12) -> dict[str, np.ndarray]:
    """Values larger than a page (stored on overflow pages, as real frames are)."""
    rng = np.random.default_rng(1)
    return {
        f"00001_{c:04d}_{f}": rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
        for c in (1, 2)
        for f in range(1, n // 2 + 1)
    }


def child_env() -> dict[str, str]:
    import os

    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO / "codes"))


def run_child(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=child_env(), capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize("keep", [0.5, 0.0, 100 / 4096])
def test_truncated_lmdb_is_one_clear_message_not_a_bus_error(tmp_path: Path, keep: float) -> None:
    db = tmp_path / "x.lmdb"
    write_db(db, big_values())
    data = db / "data.mdb"
    full = data.stat().st_size
    with open(data, "r+b") as f:
        f.truncate(int(full * keep) if keep >= 0.5 else int(4096 * keep))
    check = subprocess.run(
        [sys.executable, str(REPO / "data_scripts" / "create_lmdb.py"), "--check", str(db), "--quiet"],
        env=child_env(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert check.returncode not in SIGBUS_CODES, "create_lmdb --check died of SIGBUS"
    assert check.returncode == 1, check.stderr
    lines = [line for line in check.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"LMDB {db} is damaged" in lines[0] and "--overwrite" in lines[0], check.stderr
    assert "Traceback" not in check.stderr
    if keep >= 0.5:
        assert "truncated" in lines[0] and f"{full:,} bytes" in lines[0]
    # the training side: a dataset on the damaged LMDB (every value read) is a DataError, not a crash
    read_all = (
        "import sys\nfrom stvsr.data.lmdb_store import LmdbStore\nfrom stvsr.data.io import DataError\n"
        "try:\n    s = LmdbStore(sys.argv[1])\n    [s.get(k) for k in s.keys()]\n"
        "except DataError as exc:\n    print(exc)\n    sys.exit(3)\n"
    )
    child = run_child(read_all, str(db))
    assert child.returncode not in SIGBUS_CODES, "reading the LMDB died of SIGBUS"
    assert child.returncode == 3 and "is damaged" in child.stdout, child.stdout + child.stderr


def corrupt_value(db: Path, value: np.ndarray) -> None:
    """Overwrite bytes of ``value`` inside data.mdb (as a bad disk or copy would), not through LMDB."""
    data = db / "data.mdb"
    raw = bytearray(data.read_bytes())
    at = raw.find(value.tobytes()[:256])
    assert at > 0
    raw[at + 100 : at + 110] = bytes(255 - b for b in raw[at + 100 : at + 110])
    data.write_bytes(bytes(raw))


def test_corrupt_bytes_are_found_when_read_and_name_the_key(tmp_path: Path) -> None:
    from stvsr.data.lmdb_store import CorruptValueError

    db = tmp_path / "x.lmdb"
    values = big_values()
    write_db(db, values)
    bad = "00001_0002_2"
    corrupt_value(db, values[bad])
    store = LmdbStore(db)
    with pytest.raises(CorruptValueError, match=rf"value of key {bad} is corrupt") as info:
        store.get(bad)
    assert info.value.key == bad
    for key in values:
        if key != bad:
            np.testing.assert_array_equal(store.get(key), values[key])
    assert LmdbStore(db, verify=False).get(bad).shape == values[bad].shape  # checksum: off reads it as it is
    assert [k for k, problem in store.check() if problem] == [bad]


def test_vimeo7_checksum_policy_error_or_skip(tmp_path: Path, caplog) -> None:
    from stvsr.data import Vimeo7
    from stvsr.data.make_lmdb import build_lmdb

    rng = np.random.default_rng(0)
    for clip in ("00001/0001", "00001/0002"):
        for f in range(1, 8):
            write_image(tmp_path / "gt" / clip / f"im{f}.png", rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
            write_image(tmp_path / "lr" / clip / f"im{f}.png", rng.integers(0, 256, (4, 4, 3), dtype=np.uint8))
    build_lmdb(tmp_path / "gt", tmp_path / "gt.lmdb", progress=False)
    build_lmdb(tmp_path / "lr", tmp_path / "lr.lmdb", progress=False)
    corrupt_value(tmp_path / "gt.lmdb", read_image(tmp_path / "gt" / "00001/0001" / "im3.png")[:, :, ::-1].copy())
    opt = {
        "mode": "Vimeo7", "dataroot_GT": str(tmp_path / "gt.lmdb"), "dataroot_LQ": str(tmp_path / "lr.lmdb"),
        "N_frames": 7, "GT_size": 16, "LQ_size": 4, "random_reverse": False, "use_shuffle": False,
        "phase": "val",
    }  # fmt: skip
    with pytest.raises(DataError, match="key 00001_0001_3 is corrupt"):
        Vimeo7(opt)[0]
    skipping = Vimeo7({**opt, "checksum": "skip"})
    with caplog.at_level("WARNING"):
        assert skipping[0]["key"] == "00001_0002"  # the next good clip
    assert "00001_0001_3" in caplog.text
    assert Vimeo7({**opt, "checksum": "off"})[0]["key"] == "00001_0001"
