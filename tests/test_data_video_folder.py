"""VideoFolder: Vid4 as it really is (names, lengths, sizes), windows, LR from folders or generated, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data_support import shared, to_uint8
from stvsr.data import DataError, VideoFolder, build_dataset
from stvsr.data.degrade import bd_downscale, bi_downscale
from stvsr.data.io import image_shape, read_image, write_image
from stvsr.runner import window_starts

VID4 = {"calendar": (41, 576, 720), "city": (34, 576, 704), "foliage": (49, 480, 720), "walk": (47, 480, 720)}


def test_window_starts_follow_the_full_protocol() -> None:
    assert window_starts(41, 7, 6) == [0, 6, 12, 18, 24, 30, 34]  # calendar: tail window ends on frame 40
    assert window_starts(34, 7, 6) == [0, 6, 12, 18, 24, 27]
    assert window_starts(49, 7, 6) == [0, 6, 12, 18, 24, 30, 36, 42]  # foliage: covered without a tail
    assert window_starts(47, 7, 6)[-1] == 40
    assert window_starts(7, 7, 6) == [0] and window_starts(6, 7, 6) == []


def test_vid4_gt_loads_as_four_clips_with_their_lengths_and_sizes() -> None:
    ds = VideoFolder({"mode": "VideoFolder", "dataroot_GT": str(shared("Vid4", "GT"))})
    assert [c.name for c in ds.clips] == list(VID4)
    for clip in ds.clips:
        length, h, w = VID4[clip.name]
        assert len(clip) == length
        assert {image_shape(p) for p in clip.gt_paths} == {(h, w, 3)}
    foliage = ds.clip(2)
    assert foliage.frame_names[:3] == ["Frame 01.png", "Frame 02.png", "Frame 03.png"]  # two digits, natural order
    assert foliage.frame_names[-1] == "Frame 49.png"
    calendar = ds.clip(0)
    assert calendar.frame_names[9:11] == ["Frame 010.png", "Frame 011.png"]
    lr = calendar.lq(0)  # generated on the fly, BI
    assert lr.shape == (144, 180, 3)
    np.testing.assert_array_equal(lr, bi_downscale(read_image(calendar.gt_paths[0])))


def test_vid4_windows_read_only_their_frames() -> None:
    ds = build_dataset({"mode": "VideoFolder", "dataroot_GT": str(shared("Vid4", "GT")), "window": 7})
    assert len(ds) == 7 + 6 + 8 + 8
    sample = ds[6]  # calendar's tail window: frames 34..40, inputs 34, 36, 38, 40
    assert sample["key"] == "calendar" and sample["start"] == 34
    assert sample["LQs"].shape == (4, 3, 144, 180) and sample["GT"].shape == (7, 3, 576, 720)
    gts = to_uint8(sample["GT"])
    np.testing.assert_array_equal(gts[-1], read_image(shared("Vid4", "GT", "calendar", "Frame 041.png")))
    np.testing.assert_array_equal(to_uint8(sample["LQs"])[1], bi_downscale(gts[2]))


@pytest.fixture
def clips(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for clip, n in [("a", 3), ("b", 4)]:
        for t in range(n):
            frame = rng.integers(0, 256, size=(24, 33, 3)).astype(np.uint8)  # 33 -> mod-cropped to 32
            write_image(tmp_path / "gt" / clip / f"{t + 1}.png", frame)
            write_image(tmp_path / "lr" / clip / f"{t + 1}.png", bi_downscale(frame))
    return tmp_path


def test_lr_from_a_folder_and_bd_on_the_fly(clips: Path) -> None:
    ds = VideoFolder({"dataroot_GT": str(clips / "gt"), "dataroot_LQ": str(clips / "lr")})
    s = ds[1]
    assert s["key"] == "b" and s["LQs"].shape == (4, 3, 6, 8) and s["GT"].shape == (4, 3, 24, 32)
    bd = VideoFolder({"dataroot_GT": str(clips / "gt"), "degradation": "BD"})
    gt = bd.clip(0).gt(0)
    np.testing.assert_array_equal(bd.clip(0).lq(0), bd_downscale(gt))


def test_gt_and_lr_clips_of_different_lengths(clips: Path) -> None:
    (clips / "lr" / "b" / "4.png").unlink()
    with pytest.raises(DataError, match=r"clip 'b': 4 GT frames in .* but 3 LR frames in"):
        VideoFolder({"dataroot_GT": str(clips / "gt"), "dataroot_LQ": str(clips / "lr")})


def test_gt_and_lr_frames_of_different_sizes(clips: Path) -> None:
    write_image(clips / "lr" / "a" / "2.png", np.zeros((6, 9, 3), np.uint8))
    ds = VideoFolder({"dataroot_GT": str(clips / "gt"), "dataroot_LQ": str(clips / "lr")})
    ds.clip(0).lq(0)
    with pytest.raises(DataError, match=r"clip 'a' frame 2.png: LR is 9x6 \(W x H\) .* so LR must be 8x6 at x4"):
        ds.clip(0).lq(1)


def test_missing_lr_clip_root_and_unreadable_frame(clips: Path) -> None:
    write_image(clips / "gt" / "c" / "1.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DataError, match=r"clip 'c' has GT frames in .* but no LR folder"):
        VideoFolder({"dataroot_GT": str(clips / "gt"), "dataroot_LQ": str(clips / "lr")})
    with pytest.raises(DataError, match=r"dataroot_LQ .*nowhere does not exist"):
        VideoFolder({"dataroot_GT": str(clips / "gt"), "dataroot_LQ": str(clips / "nowhere")})
    (clips / "gt" / "d").mkdir()
    with pytest.raises(DataError, match=r"clip 'd': no image in"):
        VideoFolder({"dataroot_GT": str(clips / "gt"), "clips": ["d"]})
    (clips / "gt" / "c" / "1.png").write_bytes(b"\x89PNG broken")
    ds = VideoFolder({"dataroot_GT": str(clips / "gt"), "clips": ["c"]})
    with pytest.raises(DataError, match=r"c/1\.png cannot be decoded"):
        ds[0]


def test_bad_options(clips: Path) -> None:
    with pytest.raises(DataError, match="Did you mean 'dataroot_LQ'"):
        VideoFolder({"dataroot_GT": str(clips / "gt"), "dataroot_LR": "x"})
    with pytest.raises(DataError, match="degradation='XY' is not one of"):
        VideoFolder({"dataroot_GT": str(clips / "gt"), "degradation": "XY"})
    with pytest.raises(DataError, match="clips shorter than window 5: a, b"):
        VideoFolder({"dataroot_GT": str(clips / "gt"), "window": 5})
