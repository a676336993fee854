"""Loading speed of ``Vimeo7`` on the demo set: LMDB and folder backends, 0 and 2 DataLoader workers.

    python benchmarks/bench_data.py [--root datasets/vimeo_demo] [--samples 400] [--threads N] [--json out.json]

Builds the demo set first if ``--root`` has none (``stvsr.data.demo.ensure_demo_data``, a few seconds).
Each configuration reads ``--samples`` training samples (random clip, crop, flips, reversal; LR
``lq-size`` squared, GT 4x that) through a ``DataLoader`` with batch 16, after one warm-up batch (worker
start-up is not counted), and reports samples per second. Target: the LMDB backend keeps up with a training
step, at least 50 samples/s in one process for 32x32 LR crops. A benchmark, not a test: the figures depend
on the machine and on what else runs on it (the load average is printed with them): on a busy 2-core
machine the batching of ``workers 0`` (``torch.stack`` on torch's intra-op threads) can cost far more than
reading the samples; ``--threads 1`` shows that.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time

import torch

from stvsr.data import Vimeo7
from stvsr.data.demo import ensure_demo_data

BATCH = 16


def dataset(root, backend: str, lq_size: int) -> Vimeo7:
    if backend == "lmdb":
        gt, lq = root / "vimeo7_train_GT.lmdb", root / "vimeo7_train_LR7.lmdb"
    else:
        gt, lq = root / "sequences", root / "sequences_LR"
    opt = {
        "mode": "Vimeo7",
        "dataroot_GT": str(gt),
        "dataroot_LQ": str(lq),
        "GT_size": 4 * lq_size,
        "LQ_size": lq_size,
        "list_file": str(root / "sep_trainlist.txt"),
    }
    return Vimeo7(opt)


def samples_per_second(ds: Vimeo7, workers: int, samples: int) -> float:
    """Samples/s through a shuffling DataLoader (batch 16), the first batch excluded."""
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=BATCH,
        shuffle=True,
        num_workers=workers,
        sampler=None,
        drop_last=True,
        persistent_workers=workers > 0,
    )
    done, start = 0, None
    while done < samples:
        for batch in loader:
            if start is None:  # warm-up batch: worker start-up, LMDB open, page cache
                start = time.perf_counter()
                continue
            done += batch["LQs"].shape[0]
            if done >= samples:
                break
    return done / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default="datasets/vimeo_demo", help="demo set (built there if absent)")
    p.add_argument("--samples", type=int, default=400, help="samples timed per configuration")
    p.add_argument("--lq-size", type=int, default=32, help="LR crop size (GT is 4x)")
    p.add_argument("--workers", default="0,2", help="comma-separated DataLoader worker counts")
    p.add_argument("--threads", type=int, help="torch intra-op threads of the main process (default: torch's)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(0)
    torch.manual_seed(0)
    root = ensure_demo_data(args.root)
    rows = []
    for backend in ("lmdb", "img"):
        ds = dataset(root, backend, args.lq_size)
        rates = {}
        for workers in args.workers.split(","):
            rates[workers] = samples_per_second(ds, int(workers), args.samples)
        for workers, rate in rates.items():
            rows.append(
                {
                    "backend": backend,
                    "workers": workers,
                    "samples_per_s": round(rate, 1),
                    "ms_per_sample": round(1e3 / rate, 2),
                }
            )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_avg_1min": round(load, 2),
        "lq_size": args.lq_size,
        "gt_size": 4 * args.lq_size,
        "batch": BATCH,
        "samples": args.samples,
    }
    print(
        f"Vimeo7 on the demo set ({root}), LR {args.lq_size}x{args.lq_size} / GT {4 * args.lq_size}x"
        f"{4 * args.lq_size}, batch {BATCH}; {env['cpus']} CPUs, {env['torch_threads']} torch threads, "
        f"load average {env['load_avg_1min']}"
    )
    print(f"{'backend':<8} {'workers':>7} {'samples/s':>10} {'ms/sample':>10}")
    for r in rows:
        print(f"{r['backend']:<8} {r['workers']:>7} {r['samples_per_s']:>10.1f} {r['ms_per_sample']:>10.2f}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"environment": env, "results": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
