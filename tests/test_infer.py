"""stvsr-infer: video (or frames) in, video (or frames) out.

A short real clip (9 Vid4 'walk' frames, downscaled to 46x34, 24 fps, with an AAC audio track and BT.709 tags)
is encoded into an MP4 here; the command runs on it with the bicubic baseline and a tiny random ZSM.
"""

from __future__ import annotations

import math
import weakref
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from data_support import shared
from stvsr.archs import build_arch
from stvsr.data.io import list_images, read_image, write_image
from stvsr.eval.protocol import Protocol, plan_windows
from stvsr.infer import InferError, infer_video, upsample_stream
from stvsr.infer.cli import main
from stvsr.metrics import quantize
from stvsr.model.weights import save_state_dict
from stvsr.runner import stream_windows

av = pytest.importorskip("av")

pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.one_thread

N = 9  # input frames
RATE = Fraction(24)
LR_W, LR_H = 46, 34  # not multiples of 4: ZSM pads (to 48x36) and crops back
TINY_ZSM = {"which_model_G": "LunaTokis", "nf": 8, "nframes": 7, "groups": 1, "front_RBs": 1, "back_RBs": 1}
BT709 = {"color_primaries": 1, "color_trc": 1, "colorspace": 1, "color_range": 1}


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _write_clip(path: Path, frames: list[np.ndarray], rate: Fraction = RATE, audio: bool = True) -> None:
    """An H.264 MP4 (crf 4, BT.709 tags) and, when asked, a mono AAC track as long as the video."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        video.options = {"crf": "4"}
        for key, value in BT709.items():
            setattr(video.codec_context, key, value)
        sound = out.add_stream("aac", rate=44100, layout="mono") if audio else None
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(
                format="yuv420p", dst_colorspace="itu709", dst_color_range="MPEG"
            )
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            n = int(44100 * len(frames) / rate)
            wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / 44100)).astype(np.float32)[None]
            for k in range(0, n, 1024):
                chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, k : k + 1024]), "fltp", "mono")
                chunk.sample_rate, chunk.pts = 44100, k
                out.mux(sound.encode(chunk))
            out.mux(sound.encode(None))


def _decode(path: Path) -> tuple[list[np.ndarray], object]:
    """Every frame of a video as uint8 RGB, and its video stream's facts."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24", src_color_range=int(f.color_range) or None) for f in c.decode(v)]
        cc = v.codec_context
        facts = {
            "rate": v.average_rate,
            "size": (cc.width, cc.height),
            "color": {k: int(getattr(cc, k)) for k in BT709},
            "streams": [s.type for s in c.streams],
            "audio": c.streams.audio[0].codec_context.name if c.streams.audio else None,
            "duration": float(c.duration) / 1e6 if c.duration else None,
        }
    return frames, facts


@pytest.fixture(scope="module")
def walk_frames() -> list[np.ndarray]:
    import cv2

    folder = shared("Vid4", "GT", "walk")
    # every other frame: enough motion between neighbours for the order check to be unambiguous
    return [cv2.resize(read_image(p), (LR_W, LR_H), interpolation=cv2.INTER_AREA) for p in list_images(folder)[::2][:N]]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory, walk_frames: list[np.ndarray]) -> Path:
    path = tmp_path_factory.mktemp("clip") / "walk.mp4"
    _write_clip(path, walk_frames)
    return path


@pytest.fixture(scope="module")
def clip_frames(clip: Path) -> list[np.ndarray]:
    """The input as the decoder sees it (what the model gets)."""
    return _decode(clip)[0]


@pytest.fixture(scope="module")
def tiny_zsm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A -opt YAML for a tiny random ZSM and its checkpoint. The random output is rescaled to a realistic spread
    (std 0.25), as in tests/test_runner_tiling.py, so that tiling differences are measured against real contrast."""
    import yaml

    root = tmp_path_factory.mktemp("tiny_zsm")
    torch.manual_seed(0)
    model = build_arch(TINY_ZSM).eval()
    with torch.no_grad():
        x = torch.nn.functional.interpolate(torch.rand(4, 3, 9, 12), size=(36, 48), mode="bilinear")[None]
        k = 0.25 / model(x).std().item()
        model.conv_last.weight.mul_(k)
        model.conv_last.bias.mul_(k)
        model.conv_last.bias.add_(0.5)
    save_state_dict(model, root / "tiny.pth")
    opt = {"network_G": TINY_ZSM, "path": {"pretrain_model_G": str(root / "tiny.pth")}, "device": "cpu"}
    (root / "infer_tiny.yml").write_text(yaml.safe_dump(opt))
    return root / "infer_tiny.yml"


def _run(*args: object) -> int:
    return main([str(a) for a in args] + ["--no-progress"])


def _bicubic(frames: list[np.ndarray]) -> np.ndarray:
    """The bicubic baseline on the whole sequence at once: the reference order and content."""
    model = build_arch({"which_model_G": "bicubic"})
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)[None].float() / 255
    return quantize(model(x)[0].permute(0, 2, 3, 1).numpy())


# ------------------------------------------------------------------------------------------ window plan


@pytest.mark.parametrize("window", [2, 3, 4, 5])
def test_windows_cover_every_frame_once(window: int) -> None:
    """Every input frame is used, the tail included; outputs are (N-1)t+1 in order, none repeated or dropped."""
    for n in range(1, 40):
        plan = list(stream_windows(range(n), window))
        assert all(frames == list(range(s, s + len(frames))) for s, frames in plan)
        assert sorted({i for _, frames in plan for i in frames}) == list(range(n))
        assert all(len(frames) == min(window, n) for _, frames in plan)
        if window == 4 and 2 * n - 1 >= Protocol().window:  # the evaluation protocol's windows, tail='all'
            assert [s for s, _ in plan] == [w.start // 2 for w in plan_windows(2 * n - 1)]
        if n < 2:
            continue
        for t in (2, 4, 8):

            def runner(batch: list[int], t: int = t) -> list[int]:  # output k of a window = its time index
                return list(range(batch[0] * t, batch[-1] * t + 1))

            assert list(upsample_stream(range(n), runner, window, t)) == list(range((n - 1) * t + 1))


# --------------------------------------------------------------------------------------- bicubic, video


def test_bicubic_video_in_video_out(clip: Path, clip_frames: list[np.ndarray], tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.mp4"
    assert _run("--input", clip, "--output", out, "--model", "bicubic") == 0
    report = capsys.readouterr().out
    frames, facts = _decode(out)
    assert len(clip_frames) == N
    assert len(frames) == 2 * N - 1
    assert facts["size"] == (4 * LR_W, 4 * LR_H)
    assert facts["rate"] == 2 * RATE
    assert facts["color"] == BT709  # colour tags copied
    assert facts["streams"] == ["video", "audio"] and facts["audio"] == "aac"  # audio kept
    assert facts["duration"] == pytest.approx(N / RATE, abs=0.1)  # same duration as the input
    assert f"{N} frames, {LR_W}x{LR_H}, 24 fps" in report
    assert f"{2 * N - 1} frames, {4 * LR_W}x{4 * LR_H}, 48 fps" in report and "copied (aac)" in report
    # order: each output frame is closest to the bicubic reference frame of the same index (the reference
    # runs on the whole sequence at once; the command ran 3 windows, the last a tail window)
    ref = _bicubic(clip_frames)
    for k, frame in enumerate(frames):
        scores = [_psnr(frame, r) for r in ref]
        assert int(np.argmax(scores)) == k, f"output frame {k} looks like reference frame {np.argmax(scores)}"
        assert scores[k] > 35


def test_frames_out_exact_and_slow_motion(clip: Path, clip_frames: list[np.ndarray], tmp_path: Path) -> None:
    """PNG output is lossless: equal to the bicubic baseline on the whole sequence; --keep-frame-rate keeps
    the input rate (slow motion) and drops the audio, which would no longer fit."""
    folder = tmp_path / "frames"
    assert _run("-i", clip, "-o", folder, "--model", "bicubic") == 0
    names = [p.name for p in list_images(folder)]
    assert names == [f"{k:06d}.png" for k in range(2 * N - 1)]
    np.testing.assert_array_equal(np.stack([read_image(folder / n) for n in names]), _bicubic(clip_frames))

    slow = tmp_path / "slow.mkv"
    report = infer_video(build_arch({"which_model_G": "bicubic"}), clip, slow, keep_frame_rate=True, progress=False)
    frames, facts = _decode(slow)
    assert len(frames) == 2 * N - 1 and facts["rate"] == RATE and facts["streams"] == ["video"]
    assert "slow motion" in report.audio and report.output_frames == 2 * N - 1

    webm = tmp_path / "out.webm"  # VP9; WebM cannot hold AAC: the audio is dropped, saying why
    report = infer_video(build_arch({"which_model_G": "bicubic"}), clip, webm, progress=False)
    frames, facts = _decode(webm)
    assert len(frames) == 2 * N - 1 and facts["streams"] == ["video"] and "cannot hold" in report.audio


# ----------------------------------------------------------------------------------------- tiny ZSM


def test_tiny_zsm_video_and_tiling(
    clip: Path, walk_frames: list[np.ndarray], tiny_zsm: Path, tmp_path: Path, capsys
) -> None:
    """A tiny random ZSM from -opt: the 46x34 clip (padded to 48x36 inside) gives 2N-1 frames of 184x136.
    Tiled (24x24 LR tiles, overlap 12) agrees with untiled to the evaluator's tolerance (>= 50 dB, as
    tests/test_runner_tiling.py) on frames whose size is a multiple of 4 (otherwise the untiled run sees the zero
    padding at the bottom/right edge and the tiles do not: ~31 dB, differences along those edges only)."""
    out = tmp_path / "zsm.mp4"
    assert _run("-opt", tiny_zsm, "-i", clip, "-o", out) == 0
    frames, facts = _decode(out)
    assert len(frames) == 2 * N - 1 and facts["size"] == (4 * LR_W, 4 * LR_H) and facts["rate"] == 2 * RATE
    assert "3 windows" in capsys.readouterr().out  # 0-3, 3-6, and the tail window 5-8

    import cv2

    src = tmp_path / "in"
    for i, frame in enumerate(walk_frames[:6]):
        write_image(src / f"Frame {i + 1}.png", cv2.resize(frame, (48, 36), interpolation=cv2.INTER_AREA))
    whole, tiled = tmp_path / "whole", tmp_path / "tiled"
    assert _run("-opt", tiny_zsm, "-i", src, "-o", whole, "--fps", 30) == 0
    assert _run("-opt", tiny_zsm, "-i", src, "-o", tiled, "--tile", 24, "--tile-overlap", 12) == 0
    a = np.stack([read_image(p) for p in list_images(whole)])
    b = np.stack([read_image(p) for p in list_images(tiled)])
    assert a.shape == b.shape == (11, 4 * 36, 4 * 48, 3)
    assert a.std() > 20  # a realistic spread, not a constant image
    assert not np.array_equal(a, b)  # tiling did happen
    assert _psnr(a, b) >= 50


# ------------------------------------------------------------------------------------ time factor (SAFA)


class _FakeTimeModel(nn.Module):
    """Nearest x4 in space, linear blend in time: forward_times(x, t) gives (N-1)t+1 frames (the SAFA API)."""

    supports_time_factor = True
    size_divisor = 4
    upscale = 4

    def forward_times(self, x: torch.Tensor, time_factor: int) -> torch.Tensor:
        assert x.shape[-1] % 4 == 0 and x.shape[-2] % 4 == 0  # padded by the caller
        up = x.repeat_interleave(4, -1).repeat_interleave(4, -2)
        out = [up[:, :1]]
        for i in range(x.shape[1] - 1):
            for k in range(1, time_factor + 1):
                out.append(torch.lerp(up[:, i : i + 1], up[:, i + 1 : i + 2], k / time_factor))
        return torch.cat(out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_times(x, 2)


@pytest.mark.parametrize("factor", [4, 8])
def test_time_factor(clip: Path, clip_frames: list[np.ndarray], tmp_path: Path, factor: int) -> None:
    model = _FakeTimeModel()
    folder = tmp_path / "frames"
    report = infer_video(model, clip, folder, time_factor=factor, progress=False)
    assert report.output_frames == (N - 1) * factor + 1 and report.output.rate == factor * RATE
    x = torch.from_numpy(np.stack(clip_frames)).permute(0, 3, 1, 2)[None].float() / 255
    pad = torch.nn.functional.pad(x, (0, (-LR_W) % 4, 0, (-LR_H) % 4))
    ref = quantize(model.forward_times(pad, factor)[0, :, :, : 4 * LR_H, : 4 * LR_W].permute(0, 2, 3, 1).numpy())
    got = np.stack([read_image(p) for p in list_images(folder)])
    np.testing.assert_array_equal(got, ref)


def test_safa_time_factor_4(clip: Path, tmp_path: Path) -> None:
    """The real SAFA (tiny, random) through the command: --time-factor 4 gives 4(N-1)+1 frames at 4x the rate,
    with the audio kept (same duration)."""
    import yaml

    from stvsr.archs import ARCHS

    if "SAFA" not in ARCHS:
        pytest.skip("SAFA is not in this checkout")
    network = {"which_model_G": "safa", "nf": 8, "block_num": 2, "depth": 1, "last_RBs": 1, "head_nf": 8}
    save_state_dict(build_arch(network), tmp_path / "safa.pth")
    opt = tmp_path / "safa.yml"
    opt.write_text(yaml.safe_dump({"network_G": network, "path": {"pretrain_model_G": str(tmp_path / "safa.pth")}}))
    out = tmp_path / "safa.mp4"
    assert _run("-opt", opt, "-i", clip, "-o", out, "--time-factor", 4, "--device", "cpu") == 0
    frames, facts = _decode(out)
    assert len(frames) == 4 * (N - 1) + 1 and facts["rate"] == 4 * RATE and facts["size"] == (4 * LR_W, 4 * LR_H)
    assert facts["audio"] == "aac"


# ---------------------------------------------------------------------------------------------- memory


def test_memory_does_not_grow_with_length(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """40 input frames: at most window + 2 input frames are alive at any time (counted with weak references
    on the frames the reader returns), and output frames are written as they are produced."""
    from stvsr.data import io
    from stvsr.infer import media

    rng = np.random.default_rng(0)
    src = tmp_path / "long"
    for i in range(40):
        write_image(src / f"{i:03d}.png", rng.integers(0, 256, (8, 12, 3), dtype=np.uint8))

    class Frame(np.ndarray):  # ndarray itself cannot be weakly referenced
        pass

    refs: list[weakref.ref] = []
    peak, reads = [0], [0]
    read = io.read_image

    def tracked(path: Path) -> np.ndarray:
        peak[0] = max(peak[0], sum(r() is not None for r in refs))
        reads[0] += 1
        frame = read(path).view(Frame)
        refs.append(weakref.ref(frame))
        return frame

    written = []  # frames read when each output frame was written

    monkeypatch.setattr(media, "read_image", tracked)
    monkeypatch.setattr(media, "write_image", lambda path, rgb: written.append(reads[0]))
    report = infer_video(build_arch({"which_model_G": "bicubic"}), src, tmp_path / "out", window=4, progress=False)
    assert report.input_frames == 40 and report.output_frames == 79 == len(written)
    assert 4 <= peak[0] <= 4 + 2
    assert written[:7] == [4] * 7  # the first window's outputs are written before the 5th frame is read


# ---------------------------------------------------------------------------------------------- errors


def test_clear_refusals(clip: Path, tiny_zsm: Path, tmp_path: Path, capsys) -> None:
    def error(*args: object) -> str:
        assert _run(*args) == 2
        return capsys.readouterr().err

    out = tmp_path / "out.mp4"
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    assert "cannot be read as a video" in error("-i", bad, "-o", out, "--model", "bicubic")
    assert "does not exist" in error("-i", tmp_path / "missing.mp4", "-o", out, "--model", "bicubic")
    (tmp_path / "empty").mkdir()
    assert "holds no images" in error("-i", tmp_path / "empty", "-o", out, "--model", "bicubic")
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert "cannot create folder" in error("-i", clip, "-o", blocker / "out.mp4", "--model", "bicubic")
    out.write_bytes(b"")
    assert "--overwrite" in error("-i", clip, "-o", out, "--model", "bicubic")
    # the tiny ZSM's checkpoint for the official ZSM (nf 64, 40 back RBs)
    ckpt = tiny_zsm.with_name("tiny.pth")
    assert "does not fit" in error("-i", clip, "-o", tmp_path / "o2.mp4", "--model", "LunaTokis", "--checkpoint", ckpt)
    assert "--time-factor 4" in error("-i", clip, "-o", tmp_path / "o3.mp4", "--model", "bicubic", "--time-factor", 4)
    assert "CUDA" in error("-i", clip, "-o", tmp_path / "o4.mp4", "--model", "bicubic", "--device", "cpu", "--fp16")
    assert "no checkpoint" in error("-i", clip, "-o", tmp_path / "o5.mp4", "--model", "zsm")
    one = tmp_path / "one"
    write_image(one / "a.png", np.zeros((8, 8, 3), np.uint8))
    assert "single frame" in error("-i", one, "-o", tmp_path / "o6.mp4", "--model", "bicubic")
    # nothing is left behind by a failed run: no output, no partial file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.mp4", "empty", "file", "one", "out.mp4"]


def test_options_file(tmp_path: Path, capsys) -> None:
    from stvsr.infer.cli import build_parser, resolve

    root = Path(__file__).resolve().parents[1]
    args = build_parser().parse_args(["-opt", str(root / "options/test/infer_zsm.yml"), "-i", "a.mp4", "-o", "b"])
    settings = resolve(args)
    assert settings["network"]["which_model_G"] == "LunaTokis" and settings["network"]["back_RBs"] == 40
    assert settings["window"] == 4 and settings["time_factor"] == 2 and settings["tile"] is None
    assert settings["checkpoint"].endswith("xiang2020zooming.pth")
    bad = tmp_path / "bad.yml"
    bad.write_text("network_G: {which_model_G: bicubic}\ninfer: {tile_overlp: 8}\n")
    assert _run("-opt", bad, "-i", "a.mp4", "-o", "b.mp4") == 2
    assert "tile_overlap" in capsys.readouterr().err


def test_frame_folder_natural_order(tmp_path: Path) -> None:
    """'Frame 2' comes before 'Frame 10' (Vid4 names): key frame k of the output is input frame k."""
    src = tmp_path / "vid4_names"
    for i in range(1, 12):
        write_image(src / f"Frame {i}.png", np.full((4, 4, 3), 20 * i, np.uint8))
    infer_video(build_arch({"which_model_G": "bicubic"}), src, tmp_path / "out", progress=False)
    out = [read_image(p) for p in list_images(tmp_path / "out")]
    assert len(out) == 21
    assert [int(f.mean().round()) for f in out] == [10 * k + 20 for k in range(21)]


def test_single_window_short_clip_and_errors_keep_no_partial(clip: Path, tmp_path: Path) -> None:
    """3 frames (shorter than the 4-frame window): one window of all of them, 5 outputs."""
    src = tmp_path / "three"
    for i, frame in enumerate(_decode(clip)[0][:3]):
        write_image(src / f"{i}.png", frame)
    report = infer_video(build_arch({"which_model_G": "bicubic"}), src, tmp_path / "o.mp4", progress=False)
    assert (report.input_frames, report.output_frames, report.windows) == (3, 5, 1)
    # frames carry no colour matrix: the output says which one converted them (BT.601, limited range)
    assert _decode(tmp_path / "o.mp4")[1]["color"] == {**BT709, "colorspace": 5, "color_primaries": 2, "color_trc": 2}
    with pytest.raises(InferError, match="tile-overlap"):
        infer_video(build_arch({"which_model_G": "bicubic"}), src, tmp_path / "p.mp4", tile=8, tile_overlap=8)
