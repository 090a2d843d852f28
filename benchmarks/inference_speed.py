"""Inference speed and peak memory of a bundle's network on a 128 x 128 x 96 volume, side by side with a reference.

Each model runs in a fresh subprocess (so peak RSS is its own): sliding-window inference with the bundle's settings
(ROI, overlap, Gaussian blending), ``repeats`` timed runs after one warm-up. The reference is MONAI
``UNet(3, 1, 1, (16, 32, 64, 128), (2, 2, 2))`` with the same inferer settings.

    python benchmarks/inference_speed.py --bundle pet_lowdose_film_unet [--threads 2] [--repeats 2]
    python benchmarks/inference_speed.py --bundle ct_throughplane_sr --bundle-inferer --input-shape 128 128 24

``--bundle-inferer`` runs the inferer of the bundle's inference.yaml as configured (its ROI, blending, ensembles,
output scale) instead of a plain sliding window; ``--input-shape`` sets the bundle's input (e.g. thick slices for
super-resolution: 24 slices x 4 = a 128 x 128 x 96 output). voxels/s counts OUTPUT voxels; the reference always
processes a 128 x 128 x 96 volume.

Prints voxels/s, seconds per volume, peak RSS and the throughput ratio to the reference.
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
SHAPE = (128, 128, 96)


def _measure(
    kind: str,
    bundle: str,
    threads: int,
    repeats: int,
    roi: int,
    overlap: float,
    bundle_inferer: bool = False,
    input_shape: tuple[int, ...] = SHAPE,
) -> dict:
    import torch
    from monai.bundle import ConfigParser
    from monai.networks.nets import UNet

    from common.bundle_check import extra_forward_args
    from common.inferers import PaddedSlidingWindowInferer

    torch.set_num_threads(threads)
    configs = ROOT / "bundles" / bundle / "configs"
    meta = json.loads((configs / "metadata.json").read_text())
    if kind == "bundle":
        parser = ConfigParser()
        parser.read_config(str(configs / "inference.yaml"))
        net = parser.get_parsed_content("network_def")
        extra = extra_forward_args(meta)
    else:
        net = UNet(3, 1, 1, (16, 32, 64, 128), (2, 2, 2))
        extra = {}
    net.eval()
    params = sum(p.numel() for p in net.parameters())
    if kind == "bundle" and bundle_inferer:
        inferer = parser.get_parsed_content("inferer")
    else:
        inferer = PaddedSlidingWindowInferer(roi_size=roi, sw_batch_size=1, overlap=overlap, mode="gaussian")
    x = torch.rand(1, 1, *(input_shape if kind == "bundle" else SHAPE))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with torch.no_grad():
        out = inferer(x, net, *extra.values())  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            inferer(x, net, *extra.values())
            times.append(time.perf_counter() - t0)
    seconds = min(times)
    return {
        "model": bundle if kind == "bundle" else "MONAI UNet (16,32,64,128) reference",
        "params_M": params / 1e6,
        "seconds": seconds,
        "voxels_per_s": out.numel() / seconds,
        "input_shape": list(x.shape[2:]),
        "output_shape": list(out.shape[2:]),
        "peak_rss_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_inference_MB": rss_before,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default="pet_lowdose_film_unet")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--roi", type=int, default=64)
    ap.add_argument("--overlap", type=float, default=0.5)
    ap.add_argument("--bundle-inferer", action="store_true", help="use the inferer of the bundle's inference.yaml")
    ap.add_argument("--input-shape", type=int, nargs=3, default=list(SHAPE), help="the bundle's input X Y Z")
    ap.add_argument("--child", choices=["bundle", "reference"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        row = _measure(
            args.child,
            args.bundle,
            args.threads,
            args.repeats,
            args.roi,
            args.overlap,
            args.bundle_inferer,
            tuple(args.input_shape),
        )
        print(json.dumps(row))
        return
    rows = []
    for kind in ("reference", "bundle"):
        cmd = [
            sys.executable,
            __file__,
            "--child",
            kind,
            "--bundle",
            args.bundle,
            "--threads",
            str(args.threads),
            "--repeats",
            str(args.repeats),
            "--roi",
            str(args.roi),
            "--overlap",
            str(args.overlap),
            "--input-shape",
            *[str(v) for v in args.input_shape],
        ] + (["--bundle-inferer"] if args.bundle_inferer else [])
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    ref = rows[0]["voxels_per_s"]
    inferer = (
        "the bundle's inference.yaml inferer" if args.bundle_inferer else f"ROI {args.roi}^3, overlap {args.overlap}"
    )
    print(f"reference volume {SHAPE}; bundle input {tuple(args.input_shape)}; {inferer}; {args.threads} threads")
    print("| model | params (M) | input | output | s / volume | output voxels/s | x reference | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        shape_in, shape_out = "x".join(map(str, r["input_shape"])), "x".join(map(str, r["output_shape"]))
        print(
            f"| {r['model']} | {r['params_M']:.2f} | {shape_in} | {shape_out} | {r['seconds']:.2f} | "
            f"{r['voxels_per_s']:.3g} | {r['voxels_per_s'] / ref:.2f} | {r['peak_rss_MB']:.0f} |"
        )


if __name__ == "__main__":
    main()
