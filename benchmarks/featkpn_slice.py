"""Feat-KPN cost on one 512 x 512 slice: parameters, GMACs, time per slice and peak memory, with the shift-and-
accumulate kernel application (``common.networks.pixel_kernels.apply_pixel_kernels``, the bundle's) side by side
with the plain unfold reference (``apply_pixel_kernels_unfold``).

Each measurement runs in a fresh subprocess so its peak RSS is its own; the model and input are created before the
baseline RSS is read, so "peak extra" is the memory the forward (or forward + backward) pass adds.

    python benchmarks/featkpn_slice.py [--threads 2] [--repeats 3] [--size 512]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def _peak_rss_mb() -> float:
    """Peak RSS of this process image (``VmHWM``; unlike ``ru_maxrss`` it does not inherit the parent's peak)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("VmHWM not found in /proc/self/status")


def _measure(impl: str, mode: str, size: int, threads: int, repeats: int) -> dict:
    import torch

    import common.networks.featkpn as featkpn_module
    from common.networks import FeatKPN, apply_pixel_kernels_unfold

    torch.set_num_threads(threads)
    if impl == "unfold":
        featkpn_module.apply_pixel_kernels = apply_pixel_kernels_unfold  # the network calls it by this name
    torch.manual_seed(0)
    net = FeatKPN()
    net.train(mode == "train")
    x = torch.rand(1, 1, size, size)
    rss0 = _peak_rss_mb()
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        if mode == "train":
            net.zero_grad(set_to_none=True)
            net(x).abs().mean().backward()
        else:
            with torch.no_grad():
                net(x)
        times.append(time.perf_counter() - t0)
    peak = _peak_rss_mb()
    return {"impl": impl, "mode": mode, "s_per_slice": min(times[1:]), "peak_extra_MB": peak - rss0}


def _flops(size: int) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from common.networks import FeatKPN

    net = FeatKPN().eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.rand(1, 1, size, size))
    conv_macs = counter.get_total_flops() / 2  # FlopCounterMode counts 2 FLOPs per multiply-add
    k2 = net.kernel_size**2
    nk = net.proj0[0].out_channels
    kernel_macs = sum(nk * 2**lvl * k2 * (size // 2**lvl) ** 2 for lvl in range(3))  # per-pixel kernel taps
    return {
        "params": sum(p.numel() for p in net.parameters()),
        "conv_GMAC": conv_macs / 1e9,
        "kernel_GMAC": kernel_macs / 1e9,
        "total_GMAC": (conv_macs + kernel_macs) / 1e9,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--_child", nargs=2, metavar=("IMPL", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._child:
        print(json.dumps(_measure(*args._child, args.size, args.threads, args.repeats)))
        return
    info = _flops(args.size)
    print(
        f"Feat-KPN: {info['params']:,} parameters; {info['total_GMAC']:.2f} GMAC per {args.size}^2 slice "
        f"(convolutions {info['conv_GMAC']:.2f}, per-pixel kernels {info['kernel_GMAC']:.2f}); {args.threads} threads"
    )
    print("| kernel application | pass | s / slice | Mpixel/s | peak extra memory (MB) |")
    print("|---|---|---|---|---|")
    for mode in ("infer", "train"):
        for impl in ("shift-accumulate", "unfold"):
            cmd = [sys.executable, __file__, "--_child", impl, mode, "--size", str(args.size),
                   "--threads", str(args.threads), "--repeats", str(args.repeats)]  # fmt: skip
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
            r = json.loads(out)
            mpix = args.size**2 / r["s_per_slice"] / 1e6
            label = "forward + backward" if mode == "train" else "forward (no grad)"
            print(f"| {impl} | {label} | {r['s_per_slice']:.3f} | {mpix:.2f} | {r['peak_extra_MB']:.0f} |")


if __name__ == "__main__":
    main()
