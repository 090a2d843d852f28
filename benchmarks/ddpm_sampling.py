"""pet_lowdose_ddpm3d sampling cost: seconds per denoising step vs volume size, peak memory, and whole-sampling time.

Each volume size runs in a fresh subprocess (so its peak RSS is its own): the bundle's network (inference.yaml
``network_def``, random weights: the cost does not depend on them) and its ``inferer`` (Gaussian-blended sliding
windows over the whole volume at every step). One warm-up step, then ``--repeats`` timed steps; with ``--full-steps``
a complete DDIM sampling of that many steps is timed as well.

    python benchmarks/ddpm_sampling.py [--sizes 64x64x64 96x64x96 128x128x96] [--full-steps 10 20] [--threads 2]

Prints a Markdown table: size, voxels, s / step, voxels / s, full sampling times, peak RSS (MB).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _measure(size: tuple[int, int, int], threads: int, repeats: int, full_steps: list[int]) -> dict:
    import torch
    from monai.bundle import ConfigParser

    torch.set_num_threads(threads)
    parser = ConfigParser()
    parser.read_config(str(ROOT / "bundles" / "pet_lowdose_ddpm3d" / "configs" / "inference.yaml"))
    net = parser.get_parsed_content("network_def").eval()
    inferer = parser.get_parsed_content("inferer")
    cond = torch.rand(1, 1, *size) * 2 - 1
    x = torch.randn_like(cond)
    with torch.no_grad():
        inferer._predict(net, x, cond, 999)  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            inferer._predict(net, x, cond, 500)
            times.append(time.perf_counter() - t0)
        full = {}
        for n in full_steps:
            inferer.num_steps = n
            t0 = time.perf_counter()
            inferer.sample(cond, net, seed=0)
            full[str(n)] = time.perf_counter() - t0
    step = min(times)
    return {
        "size": list(size),
        "voxels": cond.numel(),
        "s_per_step": step,
        "voxels_per_s": cond.numel() / step,
        "full_sampling_s": full,
        "peak_rss_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["64x64x64", "96x64x96", "128x128x96"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--full-steps", type=int, nargs="*", default=[], help="also time complete DDIM samplings")
    ap.add_argument("--full-size", default="128x128x96", help="the size the complete samplings run on")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        size = tuple(int(v) for v in args.child.split("x"))
        steps = args.full_steps if args.child == args.full_size else []
        print(json.dumps(_measure(size, args.threads, args.repeats, steps)))
        return
    rows = []
    for size in args.sizes:
        cmd = [
            sys.executable,
            __file__,
            "--child",
            size,
            "--threads",
            str(args.threads),
            "--repeats",
            str(args.repeats),
        ]
        cmd += ["--full-size", args.full_size, "--full-steps", *[str(n) for n in args.full_steps]]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"pet_lowdose_ddpm3d network, the bundle's sliding-window inferer, {args.threads} threads")
    print("| volume | voxels | s / step | voxels / s | complete DDIM sampling | peak RSS (MB) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        full = ", ".join(f"{n} steps {s:.0f} s" for n, s in r["full_sampling_s"].items()) or "-"
        print(
            f"| {'x'.join(map(str, r['size']))} | {r['voxels']:,} | {r['s_per_step']:.2f} | {r['voxels_per_s']:.3g} | "
            f"{full} | {r['peak_rss_MB']:.0f} |"
        )


if __name__ == "__main__":
    main()
