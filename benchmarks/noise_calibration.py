"""The noise the project's low-dose simulators produce, measured the way their defaults were calibrated.

CT (``common.physics.CTLowDoseSimulator``, default ``CTAcquisition``): a 20 cm water cylinder in air on a 512 x 512
grid of 0.7 mm pixels, 720 views; per dose the std of ``simulate(dose) - reference()`` in HU inside a central disc
(radius 40 mm) and in a ring near the cylinder's edge (radius 80-95 mm), the mean bias in the central disc, and the
ratio of the central std to ``std(100 %) / sqrt(dose)``.

PET (fast image-domain route, ``common.physics.simulate_low_count_pet_fast``, the count scale the default datasets
use: ``calibrate_count_scale(2.0, 0.023, 1.0)``): a uniform cube of SUV 2; per DRF the relative noise std in its
centre, next to the target table ``common.physics.MEASURED_OSEM_REL_NOISE`` it is calibrated to.

Stored CT datasets (``--datalists``): per volume the std of ``image - label`` in HU inside the body of the label
(> -500 HU) at one dose (``--dose``), the per-pixel noise a model trained or tested on that data sees.

    python benchmarks/noise_calibration.py [--ct_doses 1 0.5 0.25 0.1] [--size 512]
    python benchmarks/noise_calibration.py --datalists ~/.cache/restorezoo/ct/datalist.json ... [--dose 0.25]
"""

from __future__ import annotations

import argparse

import numpy as np


def ct_table(doses: list[float], size: int, pixel_mm: float = 0.7, seed: int = 0) -> list[dict[str, float]]:
    from common.physics import CTAcquisition, CTLowDoseSimulator

    r = (np.arange(size) - (size - 1) / 2) * pixel_mm
    radius = np.hypot(*np.meshgrid(r, r, indexing="ij"))
    hu = np.where(radius < 100.0, 0.0, -1000.0).astype(np.float32)
    sim = CTLowDoseSimulator(hu, pixel_mm, CTAcquisition(n_views=720))
    ref = sim.reference()
    centre, edge = radius < 40.0, (radius > 80.0) & (radius < 95.0)
    rows = []
    for dose in doses:
        noise = sim.simulate(dose, seed) - ref
        rows.append(
            {
                "dose": dose,
                "std_centre": float(noise[centre].std()),
                "std_edge": float(noise[edge].std()),
                "bias_centre": float(noise[centre].mean()),
            }  # fmt: skip
        )
    full = next((row["std_centre"] for row in rows if row["dose"] == 1.0), None)
    for row in rows:
        row["vs_inverse_sqrt"] = row["std_centre"] / (full / np.sqrt(row["dose"])) if full else float("nan")
    return rows


def dataset_table(datalist: str, dose: float) -> list[dict[str, object]]:
    """Body noise std (HU) of every stored pair of ``datalist`` (every split) at ``dose``."""
    import json
    from pathlib import Path

    import nibabel as nib

    root = Path(datalist).expanduser().parent
    content = json.loads(Path(datalist).expanduser().read_text())
    rows = []
    for split in ("training", "validation", "test"):
        for item in content.get(split, []):
            if abs(float(item["dose"]) - dose) > 1e-6:
                continue
            image = nib.load(root / item["image"]).get_fdata(dtype=np.float32)
            label = nib.load(root / item["label"]).get_fdata(dtype=np.float32)
            body = label > -500.0
            pixel = item.get("simulation", {}).get("pixel_mm")
            rows.append({"split": split, "volume": item["volume_id"], "pixel_mm": pixel, "shape": image.shape,
                         "std_body": float((image - label)[body].std())})  # fmt: skip
    return rows


def pet_table(seed: int = 0) -> list[dict[str, float]]:
    from common.physics import MEASURED_OSEM_REL_NOISE, calibrate_count_scale, simulate_low_count_pet_fast

    c = calibrate_count_scale(2.0, 0.023, 1.0)
    cube = np.full((64, 64, 64), 2.0, np.float32)
    inner = (slice(8, -8),) * 3
    rows = []
    for drf, target in MEASURED_OSEM_REL_NOISE.items():
        low = simulate_low_count_pet_fast(cube, float(drf), seed, c, 1.0)
        rows.append({"drf": drf, "rel_noise": float(low[inner].std() / 2.0), "target": target})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ct_doses", type=float, nargs="+", default=[1.0, 0.5, 0.25, 0.1])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--datalists", nargs="+", default=None, help="stored CT datasets: their noise table only")
    parser.add_argument("--dose", type=float, default=0.25)
    args = parser.parse_args()
    if args.datalists:
        print(f"| datalist | split | volume | pixel (mm) | shape | noise std in the body at dose {args.dose:g} (HU) |")
        print("|---|---|---|---|---|---|")
        for path in args.datalists:
            for row in dataset_table(path, args.dose):
                shape = " x ".join(str(n) for n in row["shape"])
                cells = [path, row["split"], row["volume"], row["pixel_mm"], shape, f"{row['std_body']:.1f}"]
                print("| " + " | ".join(str(c) for c in cells) + " |")
        return
    head = ["CT dose", "noise std centre (HU)", "noise std edge (HU)", "edge / centre", "bias centre (HU)"]
    print("| " + " | ".join([*head, "std x sqrt(dose) / std(100 %)"]) + " |")
    print("|---|---|---|---|---|---|")
    for row in ct_table(args.ct_doses, args.size):
        print(
            f"| {row['dose']:g} | {row['std_centre']:.1f} | {row['std_edge']:.1f} | "
            f"{row['std_edge'] / row['std_centre']:.2f} | {row['bias_centre']:+.2f} | {row['vs_inverse_sqrt']:.3f} |"
        )
    print()
    print("| PET DRF | relative noise (fast route) | calibration target |")
    print("|---|---|---|")
    for row in pet_table():
        print(f"| {row['drf']} | {100 * row['rel_noise']:.1f} % | {100 * row['target']:.1f} % |")


if __name__ == "__main__":
    main()
