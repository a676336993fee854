"""stvsr.runner: window plans (equal to the three planners it replaced), padding round trip, self-ensemble, the
window forward, model facts."""

from __future__ import annotations

from collections import deque

import pytest
import torch

from stvsr.eval.protocol import Protocol, plan_windows
from stvsr.runner import (
    ModelFacts,
    crop_output,
    pad_frames,
    run_padded,
    self_ensemble,
    stream_windows,
    window_forward,
    window_starts,
)

# ------------------------------------------------------------------------------------------ window plans
# The three planners the runner replaced, transcribed: the expected values of the tests below.


def _video_folder_starts(length: int, size: int = 7, stride: int = 6) -> list[int]:
    if length < size:
        return []
    starts = list(range(0, length - size + 1, stride))
    if starts[-1] + size < length:
        starts.append(length - size)
    return starts


def _protocol_starts(length: int, size: int, stride: int, tail: str) -> list[int]:
    if length < size:
        return []
    starts = list(range(0, length - size + 1, stride))
    if tail == "all" and starts[-1] + size < length:
        starts.append(length - size)
    return starts


def _lr_windows(frames, window: int):
    buf: deque = deque(maxlen=window)
    start, covered, n = 0, -1, 0
    for i, frame in enumerate(frames):
        buf.append(frame)
        n = i + 1
        if i == start + window - 1:
            yield start, list(buf)
            covered, start = i, i
    if covered < n - 1:
        first = max(0, n - window)
        yield first, list(buf)[first - n :]


def test_window_starts_equal_the_dataset_and_protocol_plans() -> None:
    for length in range(60):
        for size, stride in ((7, 6), (7, 3), (5, 4), (3, 1), (3, 2)):
            assert window_starts(length, size, stride) == _video_folder_starts(length, size, stride)
            for tail in ("all", "official_zsm"):
                expected = _protocol_starts(length, size, stride, tail)
                assert window_starts(length, size, stride, cover_tail=tail == "all") == expected
        if length >= 7:
            for tail in ("all", "official_zsm"):
                got = [w.start for w in plan_windows(length, Protocol(tail=tail))]
                assert got == _protocol_starts(length, 7, 6, tail)
    with pytest.raises(ValueError, match="stride"):
        window_starts(10, 7, 0)


@pytest.mark.parametrize("window", [2, 3, 4, 5, 7])
def test_stream_windows_equal_the_inference_plan(window: int) -> None:
    for n in range(40):
        assert list(stream_windows(iter(range(n)), window)) == list(_lr_windows(range(n), window)), n
    assert list(stream_windows(range(10), 4, 2)) == [
        (0, [0, 1, 2, 3]),
        (2, [2, 3, 4, 5]),
        (4, [4, 5, 6, 7]),
        (6, [6, 7, 8, 9]),
    ]
    with pytest.raises(ValueError, match="stride"):
        list(stream_windows(range(5), 4, 4))


# ------------------------------------------------------------------------------------------ padding


def test_padding_and_crop() -> None:
    x = torch.rand(1, 4, 3, 144, 180)
    padded, size = pad_frames(x, 8)
    assert padded.shape[-2:] == (144, 184) and size == (144, 180)
    assert torch.equal(padded[..., :180], x) and not padded[..., 180:].any()
    rep, _ = pad_frames(x, 8, "replicate")
    assert torch.equal(rep[..., 180:], x[..., 179:180].expand(-1, -1, -1, -1, 4))
    same, _ = pad_frames(x, 4)
    assert same is x
    y = torch.rand(1, 7, 3, 576, 736)
    assert crop_output(y, size, 4).shape[-2:] == (576, 720)
    with pytest.raises(ValueError, match="pad mode"):
        pad_frames(x, 8, "reflect")


@pytest.mark.parametrize("mode", ["zero", "replicate"])
@pytest.mark.parametrize(("h", "w", "multiple"), [(10, 13, 8), (16, 16, 8), (7, 5, 4), (9, 11, 1)])
def test_padding_round_trip_crops_exactly(mode: str, h: int, w: int, multiple: int) -> None:
    """A model that sees only multiples of ``multiple`` and upscales by nearest x``scale``: the runner's output is
    exactly the nearest upscaling of the unpadded input (cropping removes every padded pixel and no other)."""
    x = torch.rand(2, 3, 3, h, w, dtype=torch.float64)
    seen = []

    def model(v: torch.Tensor) -> torch.Tensor:
        seen.append(tuple(v.shape[-2:]))
        assert v.shape[-2] % multiple == 0 and v.shape[-1] % multiple == 0
        return v.repeat_interleave(3, -1).repeat_interleave(3, -2)

    out = run_padded(model, x, multiple, 3, mode)
    assert torch.equal(out, x.repeat_interleave(3, -1).repeat_interleave(3, -2))
    assert seen == [(-(-h // multiple) * multiple, -(-w // multiple) * multiple)]


def _nearest_x4(x: torch.Tensor) -> torch.Tensor:
    """A stand-in model with size multiple 8: nearest x4 per frame, intermediate = left neighbour."""
    if x.shape[-1] % 8 or x.shape[-2] % 8:
        raise ValueError("not padded")
    up = x.repeat_interleave(4, -1).repeat_interleave(4, -2)
    return torch.stack([up[:, i // 2] for i in range(2 * x.shape[1] - 1)], 1)


def test_run_padded_and_self_ensemble_of_an_equivariant_model() -> None:
    x = torch.rand(1, 4, 3, 10, 13)
    out = run_padded(_nearest_x4, x, 8, 4)
    assert out.shape == (1, 7, 3, 40, 52)
    torch.testing.assert_close(out[:, 0, :, ::4, ::4], x[:, 0])
    # an equivariant model is unchanged by the x8 self-ensemble (which pads each orientation itself)
    torch.testing.assert_close(self_ensemble(lambda v: run_padded(_nearest_x4, v, 8, 4), x), out)


def test_self_ensemble_equals_the_mean_of_the_eight_orientations() -> None:
    """A model that is not equivariant (it weighs pixels by their position): the ensemble is the mean of its
    outputs on the 8 flipped/transposed inputs, each mapped back by hand."""
    x = torch.rand(1, 2, 3, 6, 6, dtype=torch.float64)
    ramp = torch.arange(36, dtype=torch.float64).view(6, 6) / 36

    def model(v: torch.Tensor) -> torch.Tensor:
        return v * ramp + v.roll(1, -1)

    flips = [
        (lambda v: v, lambda y: y),
        (lambda v: v.flip(-1), lambda y: y.flip(-1)),
        (lambda v: v.flip(-2), lambda y: y.flip(-2)),
        (lambda v: v.flip(-1).flip(-2), lambda y: y.flip(-2).flip(-1)),
        (lambda v: v.transpose(-1, -2), lambda y: y.transpose(-1, -2)),
        (lambda v: v.flip(-1).transpose(-1, -2), lambda y: y.transpose(-1, -2).flip(-1)),
        (lambda v: v.flip(-2).transpose(-1, -2), lambda y: y.transpose(-1, -2).flip(-2)),
        (lambda v: v.flip(-1).flip(-2).transpose(-1, -2), lambda y: y.transpose(-1, -2).flip(-2).flip(-1)),
    ]
    manual = sum(back(model(go(x))) for go, back in flips) / 8
    torch.testing.assert_close(self_ensemble(model, x), manual, rtol=0, atol=1e-12)
    assert not torch.allclose(model(x), manual)  # the model is not equivariant: the check above can fail


def test_window_forward_pads_tiles_and_ensembles() -> None:
    x = torch.rand(1, 4, 3, 20, 26)
    plain = window_forward(_nearest_x4, 4, multiple=8, model_multiple=8)
    torch.testing.assert_close(plain(x), run_padded(_nearest_x4, x, 8, 4))
    tiled = window_forward(_nearest_x4, 4, multiple=8, model_multiple=8, tile=12, tile_overlap=4)
    torch.testing.assert_close(tiled(x), plain(x))  # a context-free model: tiles blend back exactly
    ensembled = window_forward(_nearest_x4, 4, multiple=16, model_multiple=8, ensemble=True)
    torch.testing.assert_close(ensembled(x), plain(x))
    with pytest.raises(ValueError, match="not a multiple of the model's size multiple 8"):
        window_forward(_nearest_x4, 4, multiple=4, model_multiple=8)


def test_model_facts_defaults_and_declared() -> None:
    from stvsr.archs import build_arch

    assert ModelFacts.of(_nearest_x4) == ModelFacts()
    rstt = build_arch(
        {
            "which_model_G": "RSTT",
            "embed_dim": 16,
            "depths": [1, 1],
            "num_heads": [2, 2],
            "window_sizes": [[4, 4], [4, 4]],
            "back_RBs": 0,
        }
    )
    assert ModelFacts.of(rstt) == ModelFacts(size_multiple=1, upscale=4, input_frames=4)
    bicubic = build_arch({"which_model_G": "bicubic", "scale": 2})
    assert ModelFacts.of(bicubic) == ModelFacts(size_multiple=1, upscale=2, takes_time=True)
