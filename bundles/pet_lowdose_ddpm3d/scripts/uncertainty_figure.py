"""Figure of a DDPM result: low dose | mean of the samples | voxel-wise std (uncertainty) | full dose (+ |error|).

    python bundles/pet_lowdose_ddpm3d/scripts/uncertainty_figure.py --low LOW.nii.gz --mean NAME_ddpm.nii.gz \
        --std NAME_ddpm_std.nii.gz [--full FULL.nii.gz] --out uncertainty.png [--suv-max 5]

Mid-coronal slice (the axis with the most body in a whole-body volume); SUV display window [0, --suv-max]; the std
and error panels share one colour scale so that the uncertainty can be compared with the actual error.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import nibabel as nib
import numpy as np


def _coronal(path: str) -> np.ndarray:
    vol = np.asarray(nib.load(path).get_fdata(), dtype=np.float32)
    if vol.ndim != 3:
        raise SystemExit(f"{path}: expected a 3D volume, got shape {vol.shape}")
    return vol[:, vol.shape[1] // 2, :].T  # rows = z, columns = x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--low", required=True)
    ap.add_argument("--mean", required=True)
    ap.add_argument("--std", required=True)
    ap.add_argument("--full")
    ap.add_argument("--out", required=True)
    ap.add_argument("--suv-max", type=float, default=5.0)
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    low, mean, std = _coronal(args.low), _coronal(args.mean), _coronal(args.std)
    panels = [
        (low, "low dose (SUV)", "gray"),
        (mean, "DDPM mean (SUV)", "gray"),
        (std, "std over samples (SUV)", "magma"),
    ]
    if args.full:
        full = _coronal(args.full)
        panels += [(full, "full dose (SUV)", "gray"), (np.abs(mean - full), "|mean - full dose| (SUV)", "magma")]
    emax = float(np.percentile(std, 99.5)) * 2 or 1.0
    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 3.6))
    for ax, (im, title, cmap) in zip(axes, panels, strict=True):
        vmax = args.suv_max if cmap == "gray" else emax
        h = ax.imshow(im, cmap=cmap, vmin=0, vmax=vmax, origin="lower")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
        if cmap != "gray":
            fig.colorbar(h, ax=ax, fraction=0.046)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, out)
    print(out)


if __name__ == "__main__":
    main()
