"""Calibration of the bundle's uncertainty map: does +-2 std cover the actual error, and does std rank the error?

    python bundles/pet_lowdose_ddpm3d/scripts/calibrate_uncertainty.py --datalist DATALIST.json --eval_dir EVAL_DIR \
        [--split test] [--postfix ddpm] [--k 2] [--fit 0.95]

For every item of the split with outputs ``<eval_dir>/<low-dose file stem>_<postfix>.nii.gz`` (mean) and
``..._<postfix>_std.nii.gz`` (std), written by the inference / evaluate configs, against the item's full-dose
reference, over the body (reference > 0.1 SUV, holes filled): the fraction of voxels whose error lies within
``+-k std`` and the Spearman rank correlation between std and |error|; one row per DRF (voxels pooled over items).
``--fit P``: from std maps written with ``--std_calibration 1.0`` (the raw, smoothed sample std) on the validation
split, the factor that makes the coverage P at each DRF, the power law ``c = a DRF^b`` fitted to them (least squares
in log-log; one factor when the split has one DRF), to be written as the inference config's
``std_calibration: [a, b]``, and the table with that calibration applied.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from common.datalist import select_items
from common.io import load_nifti, restored_nifti_path
from common.transforms.masks import body_mask
from common.uncertainty import calibration_stats, fit_std_calibration


def collect(datalist: Path, eval_dir: Path, split: str, postfix: str) -> dict[float, list[tuple]]:
    """``{DRF: [(mean, std, ref, body), ...]}`` for the items of ``split`` that have both outputs."""
    items = select_items(json.loads(datalist.read_text())[split], "drf", None)
    found: dict[float, list[tuple]] = defaultdict(list)
    for item in items:
        low_path = datalist.parent / item["image"]
        mean_path = restored_nifti_path(eval_dir, low_path, postfix)
        std_path = restored_nifti_path(eval_dir, low_path, f"{postfix}_std")
        if not (mean_path.is_file() and std_path.is_file()):
            continue
        ref = load_nifti(datalist.parent / item["label"])[0]
        found[float(item["drf"])].append(
            (load_nifti(mean_path)[0], load_nifti(std_path)[0], ref, body_mask(ref, threshold_hu=0.1))
        )
    return found


def table(found: dict[float, list[tuple]], k: float) -> list[str]:
    head = f"| DRF | items | body voxels | within +-{k:g} std | Spearman(std, abs err) | mean std (SUV) | RMSE (SUV) |"
    lines = [head, "|---|---|---|---|---|---|---|"]
    for drf in sorted(found):
        vols = found[drf]
        pred = np.concatenate([v[0][v[3]] for v in vols])
        std = np.concatenate([v[1][v[3]] for v in vols])
        ref = np.concatenate([v[2][v[3]] for v in vols])
        s = calibration_stats(pred, std, ref, k=k)
        lines.append(f"| {drf:g} | {len(vols)} | {s['n']} | {100 * s['coverage']:.1f} % | {s['spearman']:.3f} | "
                     f"{s['mean_std']:.4f} | {s['rmse']:.4f} |")  # fmt: skip
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datalist", required=True)
    ap.add_argument("--eval_dir", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--postfix", default="ddpm")
    ap.add_argument("--k", type=float, default=2.0)
    ap.add_argument("--fit", type=float, default=None, help="target coverage: fit the std factor (validation split)")
    args = ap.parse_args()
    found = collect(Path(args.datalist), Path(args.eval_dir), args.split, args.postfix)
    if not found:
        what = f"'<name>_{args.postfix}.nii.gz' + '_std' outputs of the {args.split} split"
        raise SystemExit(f"{args.eval_dir}: no {what}")
    print("\n".join(table(found, args.k)))
    if args.fit is not None:
        factors = {}
        for drf, vols in sorted(found.items()):
            err = np.concatenate([np.abs(v[0][v[3]] - v[2][v[3]]) for v in vols])
            std = np.concatenate([v[1][v[3]] for v in vols])
            factors[drf] = fit_std_calibration(err, std, args.fit, args.k)
        print(
            f"\nfactor for {100 * args.fit:g} % coverage: "
            + ", ".join(f"DRF {d:g} {c:.4f}" for d, c in factors.items())
        )
        if len(factors) > 1:
            b, log_a = np.polyfit(np.log(list(factors)), np.log(list(factors.values())), 1)
            a = float(np.exp(log_a))
            print(f"std_calibration: [{a:.4f}, {b:.4f}]   (c = a DRF^b)")
            found = {d: [(v[0], v[1] * a * d**b, v[2], v[3]) for v in vols] for d, vols in found.items()}
        else:
            (c,) = factors.values()
            print(f"std_calibration: {c:.4f}")
            found = {d: [(v[0], v[1] * c, v[2], v[3]) for v in vols] for d, vols in found.items()}
        print("\n".join(table(found, args.k)))


if __name__ == "__main__":
    main()
