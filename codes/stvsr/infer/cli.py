"""``stvsr-infer`` / ``codes/infer.py``: upsample a video (or a folder of frames) with a model.

    stvsr-infer --input in.mp4 --output out.mp4 --model LunaTokis --checkpoint ckpt.pth
    stvsr-infer -opt options/test/infer_zsm.yml --input in.mp4 --output out.mp4 --tile 64
    stvsr-infer --input frames/ --fps 24 --output out_frames/ --model bicubic

Options come from flags, from a YAML file (``-opt``: an inference YAML such as ``options/test/infer_zsm.yml``,
whose ``infer:`` section holds the flags below with underscores, or a test YAML, of which ``network_G``,
``path.pretrain_model_G`` and ``device`` are used), or both (flags win). The model is built and its checkpoint
checked exactly as ``codes/test.py`` does (:func:`stvsr.model.choose.build_model`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from stvsr.archs import time_factor_models
from stvsr.device import resolve_device
from stvsr.errors import StvsrError
from stvsr.model.choose import NONE, OPT_STR, TEST_SCHEMA, build_model, load_yaml, model_help, model_settings
from stvsr.runner import DEFAULT_OVERLAP
from stvsr.schema import Key, with_flags
from stvsr.signals import raise_on_stop_signals, stop_exit_code, stop_name

from .engine import DEFAULT_WINDOW, PRECISIONS, InferStopped, infer_video
from .media import InferError, check_writable, open_source

logger = logging.getLogger("stvsr.infer")

# the ``infer:`` section of an -opt YAML: the flags of the same names, with their defaults
INFER_OPTIONS: dict[str, Key] = {
    "input": Key(OPT_STR, path=True, help="a video file or a folder of frames"),
    "output": Key(OPT_STR, path=True, help="a video file or a folder for PNG frames"),
    "window": Key(int, DEFAULT_WINDOW, help="LR frames per model call"),
    "time_factor": Key(int, 2),
    "keep_frame_rate": Key(bool, False),
    "tile": Key((int, NONE)),
    "tile_overlap": Key(int, DEFAULT_OVERLAP),
    "precision": Key(str, "fp32", choices=PRECISIONS),
    "fps": Key((float, NONE)),
    "codec": Key(OPT_STR),
    "crf": Key((int, NONE), 18),
    "pix_fmt": Key(str, "yuv420p"),
    "audio": Key(bool, True),
    "overwrite": Key(bool, False),
}
INFER_DEFAULTS: dict[str, Any] = {key: spec.default for key, spec in INFER_OPTIONS.items()}
INFER_SCHEMA: dict[str, Any] = {**TEST_SCHEMA, "infer": INFER_OPTIONS}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stvsr-infer",
        description="Space-time super-resolution of a video file or a folder of frames (x4 space, x2 time).",
    )
    p.add_argument(
        "-opt",
        "--opt",
        help="YAML options (options/test/infer_*.yml), or a test or training YAML, or experiments/<name>/options.yml, "
        "for its model",
    )
    p.add_argument("-i", "--input", help="input video file, or folder of frames (naturally sorted)")
    p.add_argument("-o", "--output", help="output video file (.mp4, .mkv, .mov, .webm, .avi) or folder of PNGs")
    p.add_argument("--model", help=model_help())
    p.add_argument(
        "--checkpoint", help="weights (.pth), any official or framework format; one of codes/train.py names its model"
    )
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when available)")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument("--fp16", action="store_const", const="fp16", dest="precision", help="float16 (CUDA)")
    precision.add_argument("--bf16", action="store_const", const="bf16", dest="precision", help="bfloat16 (CUDA)")
    p.add_argument("--tile", type=int, help="run on overlapping LR tiles of this size (bounds memory)")
    p.add_argument("--tile-overlap", type=int, help="tile overlap in LR pixels (default 16)")
    p.add_argument("--window", type=int, help=f"LR frames per model call (default {DEFAULT_WINDOW})")

    p.add_argument(
        "--time-factor",
        type=int,
        help="output frames per input interval: 2 (every model), or any k >= 2 with a model that has "
        f"forward_times ({', '.join(time_factor_models())}); frames at t = 1/k .. (k-1)/k",
    )
    p.add_argument(
        "--keep-frame-rate", action="store_true", default=None, help="output at the input rate (slow motion)"
    )
    p.add_argument("--fps", type=float, help="input frame rate (folders: default 25; overrides a video's)")
    p.add_argument("--codec", help="video encoder (default libx264; libvpx-vp9 for .webm)")
    p.add_argument("--crf", type=int, help="quality for x264/x265/vp9/av1 (default 18; lower is better)")
    p.add_argument("--pix-fmt", help="encoded pixel format (default yuv420p)")
    p.add_argument("--no-audio", action="store_false", default=None, dest="audio", help="do not copy audio")
    p.add_argument("-y", "--overwrite", action="store_true", default=None, help="replace an existing output")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    """Merge the YAML (if any) and the flags into one settings dict."""
    opt = load_yaml(args.opt, INFER_SCHEMA) if args.opt else {}
    model = model_settings(opt, args.model, args.checkpoint)
    settings = with_flags({**INFER_DEFAULTS, **(opt.get("infer") or {})}, args, list(INFER_DEFAULTS))
    for key in ("input", "output"):
        if not settings[key]:
            raise InferError(f"no {key}: give --{key} (a video file or a folder of frames)")
    if settings["precision"] not in PRECISIONS:
        raise InferError(f"infer.precision {settings['precision']!r}: use one of {', '.join(PRECISIONS)}")
    device = resolve_device(args.device or opt.get("device"), "--device" if args.device else "device")
    settings.update(
        **model,
        device=device,
        progress=not args.no_progress,
    )
    return settings


def main(argv: Sequence[str] | None = None) -> int:
    """Run the inference; SIGINT (Ctrl-C), SIGTERM and SIGHUP alike stop it: the partial video is removed (frames
    written to a folder are kept), and the exit code is 128 + the signal's number."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    with raise_on_stop_signals():
        try:
            settings = resolve(args)
            open_source(settings["input"]).close()  # an unreadable input is reported before the model is built
            check_writable(settings["output"], settings["overwrite"])  # so is an output that cannot be written
            model = build_model(settings)
            kwargs = {k: settings[k] for k in INFER_DEFAULTS if k not in ("input", "output", "device")}
            report = infer_video(model, settings["input"], settings["output"], device=settings["device"],
                                 progress=settings["progress"], **kwargs)  # fmt: skip
        except StvsrError as exc:
            print(f"stvsr-infer: error: {exc}", file=sys.stderr)
            return 2
        except InferStopped as exc:
            print(f"stvsr-infer: {exc.describe()}", file=sys.stderr)
            return exc.exit_code
        except KeyboardInterrupt as exc:
            print(f"stvsr-infer: stopped by {stop_name(exc)} before any output was written", file=sys.stderr)
            return stop_exit_code(exc)
    print(report.describe())
    return 0
