"""Does a very hot lesion survive the bundle? Insert a sphere of SUV ``--suv`` into a phantom, simulate its low dose,
run the bundle's inference config on it and compare the lesion's SUVmax.

    python bundles/pet_lowdose_ddpm3d/scripts/hot_lesion_check.py --datalist DATALIST.json --volume torso_015 \
        [--drf 20] [--suv 40] [--diameter_mm 16] [--ckpt_path P] [--out /tmp/hot_lesion] [--seed 0]

The sphere is centred in the volume's liver (partial-volume edges from a Gaussian of the dataset's resolution), the
low dose comes from the same calibrated count-reduction model and count scale as the datalist item at that DRF, and
inference is ``configs/inference.yaml`` as users run it (default samples and steps; the trained weights, else the
shipped ones, unless ``--ckpt_path``). Prints SUVmax in the
lesion of the reference, the low-dose input and the output, and their biases.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter

from common.datalist import select_items
from common.io.nifti import load_nifti, save_nifti
from common.phantoms.pet import PET_TORSO_LABELS
from common.physics import simulate_low_count_pet_fast

BUNDLE = Path(__file__).resolve().parents[1]


def insert_sphere(full: np.ndarray, centre: np.ndarray, radius_vox: float, suv: float, blur_vox: float) -> np.ndarray:
    """``full`` with a sphere of activity ``suv`` (partial-volume edges: the sphere's indicator blurred by
    ``blur_vox``) replacing what was there; ``(X, Y, Z)`` SUV."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in full.shape], indexing="ij"), -1)
    inside = (np.linalg.norm(grid - centre, axis=-1) <= radius_vox).astype(np.float32)
    weight = gaussian_filter(inside, blur_vox) if blur_vox > 0 else inside
    return (1 - weight) * full + weight * suv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datalist", required=True)
    parser.add_argument("--volume", default="torso_015")
    parser.add_argument("--drf", type=float, default=20.0)
    parser.add_argument("--suv", type=float, default=40.0)
    parser.add_argument("--diameter_mm", type=float, default=16.0)
    parser.add_argument("--ckpt_path", default=None, help="weights (default: the inference config's choice)")
    parser.add_argument("--out", default="/tmp/hot_lesion")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from monai.bundle import ConfigWorkflow

    datalist = Path(args.datalist)
    data = json.loads(datalist.read_text())
    items = [i for split in ("training", "validation", "test") for i in data.get(split, [])]
    item = select_items([i for i in items if i["volume_id"] == args.volume], "drf", [args.drf])[0]
    full, affine = load_nifti(datalist.parent / item["label"])
    labels = load_nifti(datalist.parent / item["labels"])[0]
    spacing = float(np.linalg.norm(affine[:3, 0]))
    centre = np.argwhere(labels == PET_TORSO_LABELS["liver"]).mean(axis=0)
    fwhm_mm = float(item["simulation"].get("psf_fwhm_mm", 6.0))
    ref = insert_sphere(full, centre, args.diameter_mm / 2 / spacing, args.suv, fwhm_mm / 2.355 / spacing)
    sim = item["simulation"]
    low = simulate_low_count_pet_fast(ref, args.drf, args.seed, float(sim["count_scale"]), float(sim["sigma_vox"]))
    out = Path(args.out)
    low_path = save_nifti(low.astype(np.float32), affine, out / "hot_lesion_low.nii.gz", overwrite=True)
    workflow = ConfigWorkflow(
        config_file=str(BUNDLE / "configs" / "inference.yaml"),
        workflow_type=None,
        input_file=str(low_path),
        output_dir=str(out),
        drf=args.drf,
        **({"ckpt_path": args.ckpt_path} if args.ckpt_path else {}),
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    pred = load_nifti(out / "hot_lesion_low_ddpm.nii.gz")[0]
    lesion = np.linalg.norm(np.stack(np.meshgrid(*[np.arange(n) for n in ref.shape], indexing="ij"), -1) - centre,
                            axis=-1) <= args.diameter_mm / 2 / spacing  # fmt: skip
    ref_max = float(ref[lesion].max())
    print(f"{args.volume} DRF {args.drf:g}: lesion of SUV {args.suv:g}, {args.diameter_mm:g} mm, in the liver")
    for name, img in (("reference", ref), ("low-dose input", low), ("output", pred)):
        value = float(img[lesion].max())
        print(f"  {name:15s} SUVmax {value:6.2f}  ({100 * (value - ref_max) / ref_max:+.1f} %)")


if __name__ == "__main__":
    main()
