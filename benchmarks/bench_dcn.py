"""Speed of the deformable convolution backends against a dense convolution of the same shape.

    python benchmarks/bench_dcn.py [--json out.json] [--repeats 15] [--device cpu|cuda]

Prints forward and forward+backward medians (ms) for dense ``conv2d`` and each DCN backend that
works here, C=64 -> 64, 3x3, 8 deformable groups, at B=1 64x112, B=1 144x180 and B=4 32x32, and the
ratios the targets are stated in (ext / dense, torch / ext). A benchmark, not a test: the
figures depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from functools import partial

import torch
import torch.nn.functional as F

from stvsr.ops import available_backends, modulated_deform_conv2d

SHAPES = ((1, 64, 112), (1, 144, 180), (4, 32, 32))
CHANNELS, GROUPS = 64, 8


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn, device: torch.device, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def make_inputs(batch: int, height: int, width: int, device: torch.device, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    taps = 9
    tensors = {
        "input": torch.randn(batch, CHANNELS, height, width, generator=gen),
        "offset": 2.0 * torch.randn(batch, 2 * GROUPS * taps, height, width, generator=gen),
        "mask": torch.sigmoid(torch.randn(batch, GROUPS * taps, height, width, generator=gen)),
        "weight": torch.randn(CHANNELS, CHANNELS, 3, 3, generator=gen) / 24,
        "bias": torch.randn(CHANNELS, generator=gen),
    }
    return {k: v.to(device).requires_grad_() for k, v in tensors.items()}


def dense_step(t: dict, backward: bool) -> None:
    out = F.conv2d(t["input"], t["weight"], t["bias"], padding=1)
    if backward:
        out.backward(torch.ones_like(out))


def dcn_step(t: dict, backend: str, backward: bool) -> None:
    out = modulated_deform_conv2d(
        t["input"], t["offset"], t["mask"], t["weight"], t["bias"], 1, 1, 1, GROUPS, backend=backend
    )
    if backward:
        out.backward(torch.ones_like(out))


def run(device: torch.device, repeats: int, backends: list[str]) -> list[dict]:
    rows = []
    for batch, height, width in SHAPES:
        tensors = make_inputs(batch, height, width, device)
        row = {"shape": f"B={batch} {height}x{width}"}
        for mode, backward in (("fwd", False), ("fwd+bwd", True)):
            grad = torch.enable_grad() if backward else torch.no_grad()
            with grad:
                row[f"dense {mode}"] = median_ms(partial(dense_step, tensors, backward), device, repeats)
                for name in backends:
                    row[f"{name} {mode}"] = median_ms(partial(dcn_step, tensors, name, backward), device, repeats)
        rows.append(row)
        print_row(row, backends)
    return rows


def print_row(row: dict, backends: list[str]) -> None:
    cells = [f"{row['shape']:<14}"]
    for mode in ("fwd", "fwd+bwd"):
        dense = row[f"dense {mode}"]
        cells.append(f"dense {mode} {dense:8.2f}")
        for name in backends:
            t = row[f"{name} {mode}"]
            cells.append(f"{name} {t:8.2f} ({t / dense:4.2f}x dense)")
    if "ext" in backends and "torch" in backends:
        cells.append(f"torch/ext fwd+bwd {row['torch fwd+bwd'] / row['ext fwd+bwd']:4.2f}x")
    print(" | ".join(cells), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    parser.add_argument("--backends", nargs="*", default=None, help="default: every available backend")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    backends = args.backends or available_backends(device)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"device {device}; median of {args.repeats} runs, ms; C={CHANNELS}, dg={GROUPS}, 3x3"
    )
    rows = run(device, args.repeats, backends)
    if args.json:
        meta = {
            "torch": torch.__version__,
            "device": str(device),
            "threads": torch.get_num_threads(),
            "machine": platform.machine(),
            "repeats": args.repeats,
        }
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
