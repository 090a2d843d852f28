"""Figure of a result on a lesion slice: low dose | FiLM U-Net | DDPM mean | DDPM std | |DDPM mean - full dose| |
full dose.

    python bundles/pet_lowdose_ddpm3d/scripts/uncertainty_figure.py --low LOW.nii.gz --film NAME_denoised.nii.gz \
        --mean NAME_ddpm.nii.gz --std NAME_ddpm_std.nii.gz --full FULL.nii.gz [--lesions LESIONS.nii.gz] \
        --out uncertainty.png [--suv-max 5]

The coronal slice through the centre of the largest lesion (``--lesions``, one label per lesion), else the middle
coronal slice. SUV display window [0, --suv-max]; the std and error panels share one colour scale, so the uncertainty
reads against the actual error. ``--film`` is optional (the regression output the diffusion refines).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from common.io.nifti import load_nifti


def lesion_slice(lesions: np.ndarray | None, shape: tuple[int, ...]) -> int:
    """Index along axis 1 (coronal) through the centre of the largest lesion; the middle without lesions."""
    if lesions is None or not (lesions > 0).any():
        return shape[1] // 2
    labels, counts = np.unique(lesions[lesions > 0], return_counts=True)
    largest = labels[np.argmax(counts)]
    return int(round(np.argwhere(lesions == largest)[:, 1].mean()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--low", required=True)
    ap.add_argument("--film")
    ap.add_argument("--mean", required=True)
    ap.add_argument("--std", required=True)
    ap.add_argument("--full", required=True)
    ap.add_argument("--lesions")
    ap.add_argument("--out", required=True)
    ap.add_argument("--suv-max", type=float, default=5.0)
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vols = {k: load_nifti(getattr(args, k))[0] for k in ("low", "mean", "std", "full")}
    if vols["low"].ndim != 3:
        raise SystemExit(f"{args.low}: expected a 3D volume, got shape {vols['low'].shape}")
    if args.film:
        vols["film"] = load_nifti(args.film)[0]
    y = lesion_slice(load_nifti(args.lesions)[0] if args.lesions else None, vols["low"].shape)
    cut = {k: v[:, y, :].T for k, v in vols.items()}  # rows = z, columns = x
    err = np.abs(cut["mean"] - cut["full"])
    panels = [(cut["low"], "low dose", "gray")]
    if args.film:
        panels.append((cut["film"], "FiLM U-Net", "gray"))
    panels += [(cut["mean"], "DDPM mean", "gray"), (cut["std"], "DDPM std", "magma"),
               (err, "|DDPM mean - full dose|", "magma"), (cut["full"], "full dose", "gray")]  # fmt: skip
    emax = float(np.percentile(np.concatenate([cut["std"].ravel(), err.ravel()]), 99.5)) or 1.0
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.6))
    for ax, (im, title, cmap) in zip(axes, panels, strict=True):
        vmax = args.suv_max if cmap == "gray" else emax
        h = ax.imshow(im, cmap=cmap, vmin=0, vmax=vmax, origin="lower")
        ax.set_title(f"{title} (SUV)", fontsize=9)
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
