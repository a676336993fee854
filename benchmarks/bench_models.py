"""Speed and peak memory of the full models (official settings), per DCN backend.

    python benchmarks/bench_models.py [--models zsm stdan] [--backends ext torch] [--cases train fwd vid4]
                                      [--repeats 3] [--threads N] [--device cpu|cuda] [--json out.json]

Cases (the official sizes):
  train  one training step at B=2, 4x3x32x32 LR (-> 7x3x128x128): the model's ``training_objective`` with a
         Charbonnier (sum) criterion, backward, Adam step; the objective (forward and loss, grad enabled) alone
         is timed too (``fwd`` column). The pair models at their own training shapes: SAFA B=2, 2x3x32x32 (128x128 HR
         crops), STARnet B=1, 2x3x64x112 (a full Vimeo triplet)
  fwd    inference forward (eval, no grad) at the training shape
  vid4   inference forward at 1x4x3x144x180 (one Vid4 window); zero-padded bottom/right to the model's
         size_divisor first, as the evaluator does (STDAN: 144x184)

Every (model, backend, case) runs in its own subprocess with ``STVSR_DCN_BACKEND`` set, so that the peak
memory is that configuration's alone: on CPU the peak resident set size (VmHWM of /proc/self/status), with
the RSS after building the model given too (the difference is what the computation added); on CUDA
``torch.cuda.max_memory_allocated``. Times are medians over ``--repeats`` after one warm-up (oneDNN
primitive creation and the extension's first use are excluded). The load average before and after each
configuration is recorded (it counts the benchmark's own threads: about 2 with 2 threads means otherwise
idle): other processes on the machine distort the figures (with two OpenMP threads on a
2-core machine that another process keeps busy, 3-10x; ``--threads 1`` is then the steadier measure).

A benchmark, not a test: the figures depend on the machine. Reference figures: docs/models.md (the official ZSM
code with a grid_sample-based DCN is there too).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

# benchmark name -> the registered architecture, built with its official settings (StvsrArch.official_settings);
# TMNet runs in its 4 -> 7 mode without time stamps (stage 1 training, the Vid4 evaluation); RSTT-S / M / L
# (configs/RSTT-{S,M,L}.yml): no deformable convolution, exactly 4 LR frames in
OFFICIAL = {
    "zsm": "LunaTokis",
    "stdan": "STTrans2",
    "msitf": "MSITF",
    "tmnet": "TMNet",
    "safa": "SAFA",
    "starnet": "STARnet",
    "rstt_s": "RSTT-S",
    "rstt_m": "RSTT-M",
    "rstt_l": "RSTT-L",
}
CASES = {"train": (2, 4, 32, 32), "fwd": (2, 4, 32, 32), "vid4": (1, 4, 144, 180)}
# the pair models' own training shapes (B, N LR frames, h, w): SAFA 128x128 HR crops (6 per GPU officially),
# STARnet full Vimeo triplets (one per replica officially)
MODEL_CASES = {
    "safa": {"train": (2, 2, 32, 32), "fwd": (2, 2, 32, 32)},
    "starnet": {"train": (1, 2, 64, 112), "fwd": (1, 2, 64, 112)},
}
NO_DCN = {"safa", "starnet", "rstt_s", "rstt_m", "rstt_l"}  # no deformable convolution: one backend row is enough
OFFICIAL_ZSM_STEP_S = (7.4, 10.7)


CLOCKS = {"wall": time.perf_counter, "process": time.process_time}


def official_network(arch: str) -> dict:
    """The ``network_G`` of a registered architecture's official settings; ``RSTT-M`` names an RSTT variant."""
    from stvsr.archs import official_network as official
    from stvsr.archs.rstt import RSTT

    return RSTT.official_network(arch[len("RSTT-") :]) if arch.startswith("RSTT-") else official(arch)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def worker(model_name: str, case: str, repeats: int, device_name: str, threads: int | None, clock_name: str) -> dict:
    """One configuration, in this (fresh) process; returns the measurements."""
    import torch

    if threads:
        torch.set_num_threads(threads)

    from stvsr.archs import build_arch
    from stvsr.ops.backends import resolve
    from stvsr.runner import ModelFacts, pad_frames

    device = torch.device(device_name)
    clock = CLOCKS[clock_name]
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    model = build_arch(official_network(OFFICIAL[model_name])).to(device)
    b, n, h, w = MODEL_CASES.get(model_name, {}).get(case, CASES[case])
    x, _ = pad_frames(torch.rand(b, n, 3, h, w, device=device), ModelFacts.of(model).size_multiple)
    ph, pw = x.shape[-2:]
    record = {
        "model": model_name,
        "case": case,
        "backend": resolve(device),
        "device": device_name,
        "input": f"{b}x{n}x3x{ph}x{pw}",
        "threads": torch.get_num_threads(),
        "clock": clock_name,
    }
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        record["rss_model_mib"] = _status_kib("VmRSS") / 1024
    fwd_times, step_times = [], []
    if case == "train":
        model.train()
        gt = torch.rand(b, 2 * n - 1, 3, 4 * ph, 4 * pw, device=device)
        opt = torch.optim.Adam(model.parameters(), lr=4e-4, betas=(0.9, 0.99))

        def charbonnier(a, b):
            return torch.sqrt((a - b) ** 2 + 1e-6).sum()

        for i in range(repeats + 1):
            sync()
            start = clock()
            loss = model.training_objective(x, gt, charbonnier)
            sync()
            mid = clock()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sync()
            end = clock()
            del loss
            if i:  # the first iteration is the warm-up
                fwd_times.append(mid - start)
                step_times.append(end - start)
    else:
        model.eval()
        with torch.no_grad():
            for i in range(repeats + 1):
                sync()
                start = clock()
                out = model(x)[..., : 4 * h, : 4 * w]
                sync()
                if i:
                    fwd_times.append(clock() - start)
                del out
    record["fwd_s"] = statistics.median(fwd_times)
    record["fwd_all_s"] = fwd_times
    if step_times:
        record["step_s"] = statistics.median(step_times)
        record["step_all_s"] = step_times
    if device.type == "cuda":
        record["peak_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        record["peak_mib"] = _status_kib("VmHWM") / 1024
    return record


def run_one(model: str, case: str, backend: str, args: argparse.Namespace) -> dict:
    env = dict(os.environ, STVSR_DCN_BACKEND=backend)
    cmd = [sys.executable, __file__, "--worker", model, case, "--repeats", str(args.repeats), "--device", args.device]
    cmd += ["--clock", args.clock]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    try:
        proc = subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return {"model": model, "case": case, "backend": backend, "error": f"timeout after {args.timeout} s"}
    record: dict = {"model": model, "case": case, "backend": backend}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode or not lines:
        record["error"] = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
    else:
        record = json.loads(lines[-1])
        if record["backend"] != backend:
            record["error"] = f"asked for backend {backend}, ran {record['backend']}"
    record["load_before"], record["load_after"] = load_before, os.getloadavg()[0]
    record["wall_s"] = time.perf_counter() - started
    return record


def table(records: list[dict]) -> str:
    head = ("model", "backend", "case", "input", "threads", "fwd s", "fwd+bwd+step s", "peak MiB", "model MiB", "load")
    rows = [head]
    for r in records:
        if "error" in r:
            rows.append((r["model"], r["backend"], r["case"], "-", "", "error: " + r["error"][:60], "", "", "", ""))
            continue
        rows.append(
            (
                r["model"],
                r["backend"],
                r["case"],
                r["input"],
                str(r["threads"]),
                f"{r['fwd_s']:.2f}",
                f"{r['step_s']:.2f}" if "step_s" in r else "-",
                f"{r['peak_mib']:.0f}",
                f"{r['rss_model_mib']:.0f}" if "rss_model_mib" in r else "-",
                f"{r['load_before']:.1f}/{r['load_after']:.1f}",
            )
        )
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(wd) for c, wd in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * wd for wd in widths))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(OFFICIAL), choices=list(OFFICIAL))
    parser.add_argument("--backends", nargs="+", default=["ext", "torch"], choices=["ext", "torch", "torchvision"])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--repeats", type=int, default=3, help="timed iterations after one warm-up")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice, one per core)")
    parser.add_argument(
        "--clock",
        choices=list(CLOCKS),
        default="wall",
        help="process: CPU time of the worker process (with --threads 1), steady on a busy machine",
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per configuration")
    parser.add_argument("--json", help="write the records here")
    parser.add_argument("--worker", nargs=2, metavar=("MODEL", "CASE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.clock == "process" and (args.threads != 1 or args.device != "cpu"):
        parser.error("--clock process measures one CPU thread's work: use it with --threads 1 on the CPU")
    if args.worker:
        print(json.dumps(worker(*args.worker, args.repeats, args.device, args.threads, args.clock)), flush=True)
        return
    records = []
    for model in args.models:
        for backend in args.backends[:1] if model in NO_DCN else args.backends:
            for case in args.cases:
                record = run_one(model, case, backend, args)
                records.append(record)
                print(f"{model} {backend} {case}: " + (record.get("error") or f"{record['wall_s']:.0f} s"), flush=True)
    print()
    print(table(records))
    steps = [r["step_s"] for r in records if r.get("model") == "zsm" and "step_s" in r and r["backend"] == "ext"]
    if steps and args.clock == "wall":  # the official figure is wall time with both cores
        lo, hi = OFFICIAL_ZSM_STEP_S
        print(f"\nZSM training step (ext): {steps[0]:.2f} s; the official code takes {lo}-{hi} s on the project's CPU "
              f"-> {lo / steps[0]:.1f}-{hi / steps[0]:.1f}x faster (if this is that machine)")  # fmt: skip
    if args.json:
        meta = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()}
        try:
            import torch

            meta["torch"] = torch.__version__
        except ImportError:
            pass
        with open(args.json, "w") as handle:
            json.dump({"meta": meta, "records": records}, handle, indent=1)


if __name__ == "__main__":
    main()
