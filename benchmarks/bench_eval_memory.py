"""Peak memory (RSS) and time of one Vid4 window (or --size H W) (1x4x3x144x180 -> 1x7x3x576x720) through the
evaluator's inference path, untiled and tiled, one subprocess per configuration (peak RSS is per process).

    python benchmarks/bench_eval_memory.py [--model zsm] [--tiles 0 64 48] [--overlap 16] [--threads 2]
                                           [--json out.json]

Random weights with the official settings (memory and time do not depend on the values).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

NETWORKS = {"zsm": "LunaTokis", "stdan": "STTrans2"}  # built with their official settings


def child(model: str, tile: int, overlap: int, threads: int, height: int = 144, width: int = 180) -> None:
    import torch

    from stvsr.archs import build_arch, official_network
    from stvsr.ops.backends import resolve
    from stvsr.runner import ModelFacts, window_forward

    torch.set_num_threads(threads)
    net = build_arch(official_network(NETWORKS[model])).eval()
    x = torch.rand(1, 4, 3, height, width)
    facts = ModelFacts.of(net)
    run = window_forward(
        net, facts.upscale, facts.size_multiple, facts.size_multiple, tile=tile or None, tile_overlap=overlap
    )

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with torch.no_grad():
        y = run(x)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"model": model, "tile": tile, "overlap": overlap if tile else 0, "seconds": round(seconds, 2),
                      "lr": [height, width], "peak_rss_mib": round(peak / 1024), "rss_before_mib": round(base / 1024),
                      "backend": resolve(torch.device("cpu")), "out": list(y.shape)}))  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="zsm", choices=sorted(NETWORKS))
    p.add_argument("--tiles", type=int, nargs="+", default=[0, 64], help="LR tile sizes; 0 = untiled")
    p.add_argument("--overlap", type=int, default=16)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--size", type=int, nargs=2, default=[144, 180], metavar=("H", "W"), help="LR size (Vid4)")
    p.add_argument("--json")
    p.add_argument("--child", nargs=6, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child[0], *(int(v) for v in args.child[1:]))
        return
    rows = []
    for tile in args.tiles:
        cmd = [sys.executable, __file__, "--child", args.model, str(tile), str(args.overlap), str(args.threads)]
        cmd += [str(v) for v in args.size]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        rows.append(json.loads(out))
    print(f"LR input 1x4x3x{args.size[0]}x{args.size[1]}, {args.threads} thread(s)")
    print(f"{'model':<6} {'tile':>5} {'overlap':>7} {'seconds':>8} {'peak RSS MiB':>12}  backend")
    for r in rows:
        print(
            f"{r['model']:<6} {r['tile'] or '-':>5} {r['overlap']:>7} {r['seconds']:>8} {r['peak_rss_mib']:>12}  "
            f"{r['backend']}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
