"""stvsr-infer speed and memory: frames/s of ZSM (official size, random weights) on a 180x144 video, untiled and
tiled, and the peak memory (RSS) for a long input against a short one (it must not grow with length).

    python benchmarks/bench_infer.py [--frames 7] [--tile 64] [--lengths 30 100 300] [--long-model bicubic]
                                     [--threads 1] [--skip-speed] [--rss-every K] [--json out.json]

Each case runs ``stvsr.infer.infer_video`` (decode -> windows -> encode, H.264 MP4 out) in its own subprocess, so
that its peak RSS is its own. The input is a synthetic 180x144 clip (a textured image panning and a moving square,
24 fps) written as an H.264 MP4 into a temporary folder. ``--long-model`` picks the model of the memory cases (one per
length in ``--lengths``): ``bicubic`` (default: fast, so 300 frames take about a minute) or ``zsm-small`` (ZSM with
nf 16, 1+1 RBs; about 25 s per window on a busy 2-core CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from stvsr.archs import official_network

ZSM = official_network("LunaTokis")
NETWORKS = {
    "zsm": ZSM,
    "zsm-small": {**ZSM, "nf": 16, "front_RBs": 1, "back_RBs": 1},
    "bicubic": {"which_model_G": "bicubic"},
}
WIDTH, HEIGHT = 180, 144


def make_clip(path: Path, frames: int, width: int = WIDTH, height: int = HEIGHT) -> None:
    """A deterministic moving scene: a smooth random texture panning right and down, and a bright square."""
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    big = rng.integers(0, 256, (height // 4 + 40, width // 4 + 80, 3), dtype=np.uint8)
    big = np.kron(big, np.ones((4, 4, 1), np.uint8))  # 4x4 blocks ...
    big = np.clip(big.astype(np.float32), 0, 255)
    import cv2

    big = cv2.GaussianBlur(big, (0, 0), 3).astype(np.uint8)  # ... smoothed: a texture with real gradients
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "10"}
        for i in range(frames):
            x0, y0 = (i * 2) % 300, (i // 2) % 150
            img = big[y0 % (big.shape[0] - height) :, x0 % (big.shape[1] - width) :][:height, :width].copy()
            sx = 10 + (i * 3) % (width - 30)
            img[60:80, sx : sx + 20] = 255
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def current_rss_mib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 2**20


def trace_rss(every: int) -> None:
    """Print the current and peak RSS after every ``every``-th window (wraps the engine's window counter)."""
    from stvsr.infer import engine

    run = engine._Counter.__call__

    def traced(self, frames):
        out = run(self, frames)
        if self.calls % every == 0:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
            print(f"    window {self.calls}: RSS {current_rss_mib()} MiB, peak {peak} MiB", file=sys.stderr)
        return out

    engine._Counter.__call__ = traced


def child(model: str, clip: str, tile: int, threads: int, rss_every: int = 0) -> None:
    import torch

    from stvsr.archs import build_arch
    from stvsr.infer import infer_video
    from stvsr.ops.backends import resolve

    if rss_every:
        trace_rss(rss_every)

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = build_arch(NETWORKS[model]).eval()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with tempfile.TemporaryDirectory() as tmp:
        report = infer_video(net, clip, Path(tmp) / "out.mp4", tile=tile or None, progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({
        "model": model, "tile": tile, "input_frames": report.input_frames, "output_frames": report.output_frames,
        "windows": report.windows, "seconds": round(report.seconds, 2),
        "out_fps": round(report.output_frames / report.seconds, 3),
        "in_fps": round(report.input_frames / report.seconds, 3),
        "peak_rss_mib": round(peak / 1024), "rss_before_mib": round(base / 1024),
        "backend": resolve(torch.device("cpu")) if model != "bicubic" else "-",
    }))  # fmt: skip


def run_case(model: str, clip: Path, tile: int, threads: int, rss_every: int = 0) -> dict:
    cmd = [sys.executable, __file__, "--child", model, str(clip), str(tile), str(threads), str(rss_every)]
    done = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"case {model} tile={tile} on {clip.name} failed:\n{done.stderr[-3000:]}")
    if rss_every:
        print("\n".join(line for line in done.stderr.splitlines() if line.startswith("    window ")))
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=7, help="input frames of the ZSM speed cases (7: 2 windows)")
    p.add_argument("--tile", type=int, default=64, help="LR tile of the tiled case (overlap 16)")
    p.add_argument("--lengths", type=int, nargs="+", default=[30, 100, 300], help="input frames, memory cases")
    p.add_argument("--long-model", default="bicubic", choices=["bicubic", "zsm-small", "zsm"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip-speed", action="store_true", help="only the memory pair")
    p.add_argument("--json")
    p.add_argument("--rss-every", type=int, default=0, help="memory cases: print RSS every K windows")
    p.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]), int(args.child[3]), int(args.child[4]))
        return
    rows = []
    print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}; {args.threads} torch thread(s)")
    with tempfile.TemporaryDirectory() as tmp:
        lengths = {*args.lengths} | (set() if args.skip_speed else {args.frames})
        clips = {n: Path(tmp) / f"clip{n}.mp4" for n in lengths}
        for n, path in clips.items():
            make_clip(path, n)
        cases = [] if args.skip_speed else [("zsm", args.frames, 0), ("zsm", args.frames, args.tile)]
        cases += [(args.long_model, n, 0) for n in args.lengths]
        for i, (model, n, tile) in enumerate(cases):
            memory_case = i >= len(cases) - len(args.lengths)
            row = run_case(model, clips[n], tile, args.threads, args.rss_every if memory_case else 0)
            rows.append(row)
            print(f"  {model} tile={tile or '-'} {n} frames: {row['seconds']} s, peak {row['peak_rss_mib']} MiB")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"\nLR {WIDTH}x{HEIGHT} H.264 in -> {4 * WIDTH}x{4 * HEIGHT} H.264 out (libx264 crf 18)")
    head = f"{'model':<10} {'tile':>5} {'in':>5} {'out':>5} {'windows':>7} {'seconds':>8} {'out fr/s':>9} "
    head += f"{'in fr/s':>8} {'peak RSS MiB':>12}  DCN"
    print(head)
    for r in rows:
        print(
            f"{r['model']:<10} {r['tile'] or '-':>5} {r['input_frames']:>5} {r['output_frames']:>5} {r['windows']:>7} "
            f"{r['seconds']:>8} {r['out_fps']:>9} {r['in_fps']:>8} {r['peak_rss_mib']:>12}  {r['backend']}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
