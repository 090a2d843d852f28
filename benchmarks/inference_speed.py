"""Inference speed and peak memory of one bundle's network next to the MONAI UNet reference (a thin command line
over ``common.speed``, which ``restorezoo benchmark`` uses too; each model runs in a fresh subprocess).

    python benchmarks/inference_speed.py --bundle pet_lowdose_film_unet --roi 48 --overlap 0.5
    python benchmarks/inference_speed.py --bundle ct_throughplane_sr --bundle-inferer --input-shape 128 128 24

Without ``--bundle-inferer`` both networks run through the same plain Gaussian sliding window (``--roi``,
``--overlap``): network against network, without the bundle's ensembles. With it the bundle runs its own
``inference.yaml`` inferer (ROI, blending, ensembles, output scale) and the reference keeps ROI 64, overlap 0.5.
``--input-shape`` is the bundle's input (thick slices for super-resolution: 24 x 4 = 96 output slices); voxels/s
counts OUTPUT voxels; the reference always processes a 128 x 128 x 96 volume.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common.speed import SHAPE, speed_rows

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default="pet_lowdose_film_unet")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--roi", type=int, default=64)
    ap.add_argument("--overlap", type=float, default=0.5)
    ap.add_argument("--bundle-inferer", action="store_true", help="use the inferer of the bundle's inference.yaml")
    ap.add_argument("--input-shape", type=int, nargs=3, default=list(SHAPE), help="the bundle's input X Y Z")
    args = ap.parse_args()
    window = None if args.bundle_inferer else {"roi": args.roi, "overlap": args.overlap}
    bundle = ROOT / "bundles" / args.bundle
    rows = speed_rows(bundle, args.threads, args.repeats, tuple(args.input_shape), window=window)
    how = "the bundle's inference.yaml inferer" if args.bundle_inferer else f"ROI {args.roi}^3, overlap {args.overlap}"
    print(f"reference volume {SHAPE}; bundle input {tuple(args.input_shape)}; {how}; {args.threads} threads")
    print("| model | params (M) | input | output | s / volume | output voxels/s | x reference | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        shape_in, shape_out = "x".join(map(str, r["input_shape"])), "x".join(map(str, r["output_shape"]))
        print(
            f"| {r['model']} | {r['params'] / 1e6:.2f} | {shape_in} | {shape_out} | {r['seconds_per_volume']:.2f} | "
            f"{r['voxels_per_s']:.3g} | {r['x_reference']:.2f} | {r['peak_rss_MB']:.0f} |"
        )


if __name__ == "__main__":
    main()
