"""Speed of the deformable convolution backends against a dense convolution of the same shape.

    python benchmarks/bench_dcn.py [--json out.json] [--repeats 15] [--device cpu|cuda] [--ops conv sample]

Prints forward and forward+backward medians (ms) for dense ``conv2d`` and each DCN backend that
works here, C=64 -> 64, 3x3, 8 deformable groups, at B=1 64x112, B=1 144x180 and B=4 32x32, and the
ratios the targets are stated in (time / dense conv of the same shape and mode). ``sample`` rows time
``deform_sample`` (STDAN's sampling without the contraction) on the same inputs, also against the
dense convolution. The configurations of one shape and mode are timed round-robin, one call each per
round, so that a change of load on a shared machine affects them alike. A benchmark, not a test: the
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

from stvsr.ops import available_backends, deform_sample, modulated_deform_conv2d

SHAPES = ((1, 64, 112), (1, 144, 180), (4, 32, 32))
CHANNELS, GROUPS = 64, 8


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def round_robin_ms(
    fns: dict, device: torch.device, repeats: int, warmup: int = 2, clock=time.perf_counter
) -> dict[str, float]:
    """Median time (ms) of each function, timed in turns: one call of each per round."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            start = clock()
            fn()
            _sync(device)
            times[name].append((clock() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


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
    tensors = {k: v.to(device).requires_grad_() for k, v in tensors.items()}
    # upstream gradients, made once: a fresh 60 MB tensor per call would be timed with the sampling op
    tensors["grad conv"] = torch.ones(batch, CHANNELS, height, width, device=device)
    tensors["grad sample"] = torch.ones(batch, CHANNELS, taps, height * width, device=device)
    return tensors


def dense_step(t: dict, backward: bool) -> None:
    out = F.conv2d(t["input"], t["weight"], t["bias"], padding=1)
    if backward:
        out.backward(t["grad conv"])


def dcn_step(t: dict, backend: str, backward: bool) -> None:
    out = modulated_deform_conv2d(
        t["input"], t["offset"], t["mask"], t["weight"], t["bias"], 1, 1, 1, GROUPS, backend=backend
    )
    if backward:
        out.backward(t["grad conv"])


def sample_step(t: dict, backend: str, backward: bool) -> None:
    out = deform_sample(t["input"], t["offset"], t["mask"], 3, 1, 1, 1, GROUPS, backend=backend)
    if backward:
        out.backward(t["grad sample"])


STEPS = {"conv": dcn_step, "sample": sample_step}


def run(device: torch.device, repeats: int, backends: list[str], ops: list[str], clock=time.perf_counter) -> list[dict]:
    rows = []
    for batch, height, width in SHAPES:
        tensors = make_inputs(batch, height, width, device)
        row = {"shape": f"B={batch} {height}x{width}"}
        for mode, backward in (("fwd", False), ("fwd+bwd", True)):
            fns = {f"dense {mode}": partial(dense_step, tensors, backward)}
            for op in ops:
                for name in backends:
                    if op == "sample" and name == "torchvision":
                        continue  # torchvision has no sampling op (the torch backend stands in for it)
                    fns[f"{op} {name} {mode}"] = partial(STEPS[op], tensors, name, backward)
            with torch.enable_grad() if backward else torch.no_grad():
                row.update(round_robin_ms(fns, device, repeats, clock=clock))
        rows.append(row)
        print_row(row)
    return rows


def print_row(row: dict) -> None:
    cells = [f"{row['shape']:<14}"]
    for mode in ("fwd", "fwd+bwd"):
        dense = row[f"dense {mode}"]
        cells.append(f"dense {mode} {dense:8.2f}")
        for key, t in row.items():
            if key.endswith(f" {mode}") and not key.startswith("dense"):
                cells.append(f"{key.removesuffix(' ' + mode)} {t:8.2f} ({t / dense:4.2f}x)")
    print(" | ".join(cells), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    parser.add_argument("--backends", nargs="*", default=None, help="default: every available backend")
    parser.add_argument("--ops", nargs="*", default=["conv", "sample"], choices=sorted(STEPS))
    parser.add_argument(
        "--clock",
        choices=("wall", "thread"),
        default="wall",
        help="thread: CPU time of the calling thread (with --threads 1 only), steady on a busy machine",
    )
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.clock == "thread" and (torch.get_num_threads() != 1 or device.type != "cpu"):
        parser.error("--clock thread measures one CPU thread: use it with --threads 1 on the CPU")
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    backends = args.backends or available_backends(device)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"device {device}; {args.clock} clock, median of {args.repeats} round-robin runs, ms "
        f"(x: / dense conv); C={CHANNELS}, dg={GROUPS}, 3x3"
    )
    rows = run(device, args.repeats, backends, args.ops, clock)
    if args.json:
        meta = {
            "torch": torch.__version__,
            "device": str(device),
            "threads": torch.get_num_threads(),
            "machine": platform.machine(),
            "repeats": args.repeats,
            "clock": args.clock,
        }
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
