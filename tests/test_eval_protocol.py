"""stvsr.eval.protocol: window plans (Vid4 counts for both tail rules), averaging, report and CSV."""

from __future__ import annotations

import csv

import pytest

from stvsr.eval.protocol import Protocol, Results, plan_windows, scored_count

VID4 = {"calendar": 41, "city": 34, "foliage": 49, "walk": 47}


def test_vid4_counts_full_protocol() -> None:
    counts = {name: scored_count(n) for name, n in VID4.items()}
    assert counts == VID4 and sum(counts.values()) == 171
    assert [w.start for w in plan_windows(41)] == [0, 6, 12, 18, 24, 30, 34]
    assert [w.start for w in plan_windows(34)] == [0, 6, 12, 18, 24, 27]
    assert [w.start for w in plan_windows(49)] == [0, 6, 12, 18, 24, 30, 36, 42]
    assert [w.start for w in plan_windows(47)] == [0, 6, 12, 18, 24, 30, 36, 40]


def test_vid4_counts_official_zsm() -> None:
    zsm = Protocol(tail="official_zsm")
    counts = {name: scored_count(n, zsm) for name, n in VID4.items()}
    assert counts == {"calendar": 37, "city": 31, "foliage": 49, "walk": 43}
    assert sum(counts.values()) == 160
    scored = {t for w in plan_windows(41, zsm) for _, t in w.scored}
    assert scored == set(range(37))  # frames 37-40 never scored


def test_official_zsm_is_the_official_generator() -> None:
    """Same windows as ZSM's test_index_generation (post-c86c6b9), transcribed here."""

    def official(skip: bool, n_out: int, len_in: int) -> list:
        right, sele = n_out, []
        while right <= len_in:
            h = [right - n_out + x for x in range(n_out)]
            right += n_out - 1
            sele.append([h[::2], h])
        if skip and right < len_in - 1:
            h = [len_in - n_out + x for x in range(n_out)]
            sele.append([h[::2], h])
        return sele

    for length in range(7, 60):
        ours = [[list(w.inputs), list(w.outputs)] for w in plan_windows(length, Protocol(tail="official_zsm"))]
        assert ours == official(True, 7, length), length


def test_window_contents() -> None:
    plan = plan_windows(41)
    first, second, tail = plan[0], plan[1], plan[-1]
    assert first.inputs == (0, 2, 4, 6) and first.outputs == tuple(range(7))
    assert [t for _, t in first.scored] == list(range(7))
    assert [t for _, t in second.scored] == list(range(7, 13))  # shared frame 6 scored from the first window
    assert tail.inputs == (34, 36, 38, 40)  # odd-phase tail window
    assert tail.scored == ((3, 37), (4, 38), (5, 39), (6, 40))
    every = [t for w in plan for _, t in w.scored]
    assert sorted(every) == list(range(41)) and len(every) == len(set(every))
    assert plan_windows(7) == plan_windows(7, Protocol(tail="official_zsm"))  # Vimeo: one window
    with pytest.raises(ValueError, match="fewer than the protocol's window"):
        plan_windows(5, name="short")


def test_protocol_validation_and_description() -> None:
    p = Protocol.from_dict({"tail": "official_zsm", "degradation": "bi"})
    assert p.degradation == "BI" and p.tail == "official_zsm"
    with pytest.raises(ValueError, match="Did you mean 'crop_border'"):
        Protocol.from_dict({"crop_boder": 0})
    with pytest.raises(ValueError, match="protocol.tail"):
        Protocol(tail="zsm")
    with pytest.raises(ValueError, match="window"):
        Protocol(window=6)
    text = Protocol().describe(size_divisor=8)
    for part in ("color=y", "crop_border=0", "window=7", "stride=6", "tail=all", "pad_multiple=8", "pad_mode=zero",
                 "self_ensemble=False", "degradation=BI", "scale=4"):  # fmt: skip
        assert part in text


def _values(v: float) -> dict[str, float]:
    return {"psnr_y": v, "ssim_y": v / 100, "psnr_rgb": v - 1, "ssim_rgb": v / 200}


def test_averaging_report_and_csv(tmp_path) -> None:
    r = Results(Protocol(tail="official_zsm"), model="bicubic", size_divisor=1)
    for t, v in enumerate([30.0, 32.0]):  # clip a: mean 31
        r.add("a", t, f"{t}.png", 0, _values(v))
    for t in range(4):  # clip b: mean 20
        r.add("b", t, f"{t}.png", 0, _values(20.0))
    r.clip_lengths = {"a": 3, "b": 4}
    assert r.clip_mean("a")["psnr_y"] == 31.0
    assert r.overall()["psnr_y"] == pytest.approx(25.5)  # mean of clip means
    assert r.pooled()["psnr_y"] == pytest.approx(142 / 6)  # mean of frames
    text = r.report()
    assert text.splitlines()[1].startswith("protocol: ") and "tail=official_zsm" in text
    assert "2/3" in text and "6/7" in text and "25.5000" in text
    path = r.write_csv(tmp_path / "sub" / "res.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == "# model: bicubic" and lines[1].startswith("# protocol: ") and "tail=official_zsm" in lines[1]
    rows = list(csv.DictReader(line for line in lines if not line.startswith("#")))
    assert len(rows) == 6 + 2 + 2
    assert rows[-2]["frame"] == "mean_of_clips" and float(rows[-2]["psnr_y"]) == 25.5
    assert list(tmp_path.joinpath("sub").iterdir()) == [path]  # no temporary left behind


def test_time_factor_windows_feed_every_kth_frame() -> None:
    """TMNet's Adobe240 protocol: windows of 7, stride 6, the first and last frame in (t = 1/6 .. 5/6)."""
    adobe = Protocol(window=7, stride=6, time_factor=6)
    plan = plan_windows(15, adobe)
    assert [w.inputs for w in plan] == [(0, 6), (6, 12), (8, 14)]  # the tail window is always appended
    assert [t for _, t in plan[2].scored] == [13, 14]
    every = [t for w in plan for _, t in w.scored]
    assert sorted(every) == list(range(15)) and len(every) == len(set(every))
    assert plan_windows(9, Protocol(window=9, stride=8, time_factor=4))[0].inputs == (0, 4, 8)
    with pytest.raises(ValueError, match="time_factor"):
        Protocol(window=7, time_factor=4)  # 4 does not divide 6
    with pytest.raises(ValueError, match="time_factor"):
        Protocol(time_factor=1)
    assert "time_factor=6" in adobe.describe() and "time_factor" not in Protocol().describe()


def test_protocol_lists_every_problem_at_once() -> None:
    """One error (an OptionsError: a ValueError) with every problem: unknown keys and values out of range; a
    setting that depends on a wrong one (time_factor on a bad window, tile_overlap on a bad tile) is not judged."""
    from stvsr.schema import OptionsError

    bad = {"time_factor": 0, "window": 0, "stride": 0, "tile": 0, "crop_border": -1, "pad_multiple": 0, "colour": "y"}
    with pytest.raises(OptionsError) as info:
        Protocol.from_dict(bad)
    problems = info.value.problems
    assert len(problems) == 7 and str(info.value).startswith("7 problems")
    for key in ("time_factor = 0", "window = 0", "stride = 0", "tile = 0", "crop_border = -1", "pad_multiple = 0"):
        assert any(p.startswith(f"protocol.{key}:") for p in problems), key
    assert any("protocol.colour: unknown key. Did you mean 'color'" in p for p in problems)
    with pytest.raises(OptionsError, match="tile_overlap = 8: must be smaller than tile = 8"):
        Protocol(tile=8, tile_overlap=8)
    with pytest.raises(OptionsError, match=r"stride = 7: must be between 1 and window - 1 = 6"):
        Protocol(stride=7)
    assert Protocol.from_dict({"window": 9, "stride": 8, "time_factor": 4}).window == 9
