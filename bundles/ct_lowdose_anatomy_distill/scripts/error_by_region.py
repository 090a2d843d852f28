"""Where the error of a CT denoiser is: squared error split into outside the body / edges in the body / rest of the
body, for the input and the output of every test item of a dose.

    python bundles/ct_lowdose_anatomy_distill/scripts/error_by_region.py --datalist DATALIST.json \
        --outputs bundles/ct_lowdose_anatomy_distill/eval [--split test] [--doses 0.1 0.25 0.7]

Outputs are read as ``<outputs>/<volume_id>_dose<percent>_denoised.nii.gz`` (the inference config's naming).
Intensities: HU clipped to [-1000, 1000], errors on [0, 1]-normalised HU (HU / 2000), as in evaluate.yaml. Regions
(from the normal-dose reference): body = ``common.transforms.body_mask`` (reference > -500 HU, holes filled per
slice, largest component); edge = in-plane reference gradient > 100 HU per pixel. Each region's sum of squared errors
is divided by the number of ALL voxels, so the three columns add up to the MSE (printed x 1e-6).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from common.datalist import select_items
from common.io.nifti import load_nifti
from common.transforms import body_mask

REGIONS = ("outside", "edge", "inside")


def regions(reference_hu: np.ndarray) -> dict[str, np.ndarray]:
    """Masks of a reference volume ``(X, Y, Z)`` in HU: outside the body, body edges, rest of the body."""
    body = body_mask(reference_hu)
    edge = np.hypot(*np.gradient(reference_hu, axis=(0, 1))) > 100
    return {"outside": ~body, "edge": body & edge, "inside": body & ~edge}


def split_error(pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, dict[str, float]]:
    """``pairs`` of (input, output, reference) volumes in HU -> ``{region: {"fraction", "input", "output"}}``: the
    region's voxel fraction and its squared error (on HU / 2000, window [-1000, 1000]) summed and divided by all
    voxels."""
    sums = {r: {"fraction": 0.0, "input": 0.0, "output": 0.0} for r in REGIONS}
    total = 0
    for inp, out, ref in pairs:
        if not inp.shape == out.shape == ref.shape:
            raise ValueError(f"shapes differ: input {inp.shape}, output {out.shape}, reference {ref.shape}")
        ref = np.clip(ref, -1000, 1000)
        for name, mask in regions(ref).items():
            sums[name]["fraction"] += mask.sum()
            for key, vol in (("input", inp), ("output", out)):
                sums[name][key] += float((((np.clip(vol, -1000, 1000) - ref) / 2000.0)[mask] ** 2).sum())
        total += ref.size
    return {r: {k: v / total for k, v in d.items()} for r, d in sums.items()}


def _load(path: Path) -> np.ndarray:
    """A volume in HU as float64; a missing, corrupt or non-finite file is an error naming it."""
    return load_nifti(path, check_finite=True)[0].astype(np.float64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datalist", required=True, type=Path)
    ap.add_argument("--outputs", required=True, type=Path)
    ap.add_argument("--split", default="test")
    ap.add_argument("--doses", nargs="+", type=float, default=[0.1, 0.25, 0.7])
    a = ap.parse_args()
    root = a.datalist.parent
    items = json.loads(a.datalist.read_text())[a.split]
    print("| dose | " + " | ".join(f"{r}: fraction, input -> output (x 1e-6)" for r in REGIONS) + " |")
    print("|---|" + "---|" * len(REGIONS))
    for dose in a.doses:
        chosen = select_items(items, "dose", [dose], str(a.datalist))
        pairs = [
            (
                _load(root / it["image"]),
                _load(a.outputs / f"{it['volume_id']}_dose{round(dose * 100)}_denoised.nii.gz"),
                _load(root / it["label"]),
            )
            for it in chosen
        ]
        res = split_error(pairs)
        cells = [
            f"{res[r]['fraction']:.2f}, {res[r]['input'] * 1e6:.1f} -> {res[r]['output'] * 1e6:.1f}" for r in REGIONS
        ]
        print(f"| {dose:g} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
