"""Standard deviation of the diffused residual by full-dose activity band, with and without ``residual_norm: sqrt``.

    python bundles/pet_lowdose_ddpm3d/scripts/residual_by_activity.py --datalist DATALIST.json [--split training] \
        [--drfs 4 20 100]

Why: the count noise that the residual chain has to generate grows with the activity (variance ~ SUV), but the
``DiffusionModelUNet``'s output passes a GroupNorm, so its amplitude cannot follow the activity of each window.
Dividing the residual by ``common.diffusion.residual_std_map`` of the low dose makes its amplitude about equal in
every band. Per DRF the script prints the residual's std in each band (SUV of the full dose: [0, 0.05) background,
[0.05, 1), [1, 3), [3, 8), >= 8), in network units, for the plain ``k (full - low)`` and the normalised residual, and
the ratio of the largest to the smallest body band (bands >= 0.05). ``k``, ``suv_max`` and the floor come from
train.yaml.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from monai.bundle import ConfigParser

from common.datalist import select_items
from common.diffusion import image_to_residual, suv_to_network
from common.io.nifti import load_nifti

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "train.yaml"
BANDS = ((0.0, 0.05), (0.05, 1.0), (1.0, 3.0), (3.0, 8.0), (8.0, np.inf))


def band_stds(
    low_suv: np.ndarray, full_suv: np.ndarray, k: float, suv_max: float, floor: float
) -> dict[str, list[float]]:
    """Residual std per band of ``full_suv`` (``BANDS``; nan for an empty band) for ``plain`` and ``sqrt``; volumes
    ``(X, Y, Z)`` in SUV."""
    low, full = suv_to_network(low_suv, suv_max), suv_to_network(full_suv, suv_max)
    masks = [(full_suv >= lo) & (full_suv < hi) for lo, hi in BANDS]
    out = {}
    for norm in (None, "sqrt"):
        r = image_to_residual(full, low, k, norm, floor).numpy()
        out[norm or "plain"] = [float(r[m].std()) if m.any() else np.nan for m in masks]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datalist", required=True, type=Path)
    ap.add_argument("--split", default="training")
    ap.add_argument("--drfs", type=float, nargs="+", default=[4, 20, 100])
    a = ap.parse_args()
    parser = ConfigParser()
    parser.read_config(str(CONFIG))
    k, suv_max, floor = float(parser["residual_scale"]), float(parser["suv_max"]), float(parser["residual_floor"])
    items = json.loads(a.datalist.read_text())[a.split]
    names = [f"{lo:g}-{hi:g}" for lo, hi in BANDS]
    print("| DRF | residual | " + " | ".join(f"SUV {n}" for n in names) + " | max / min (body) |")
    print("|---|---|" + "---|" * len(BANDS) + "---|")
    for drf in a.drfs:
        rows = []
        for it in select_items(items, "drf", [drf], str(a.datalist)):
            low, full = (
                load_nifti(a.datalist.parent / it[key], check_finite=True)[0].astype(np.float64)
                for key in ("image", "label")
            )
            rows.append(band_stds(low, full, k, suv_max, floor))
        for norm in ("plain", "sqrt"):
            s = np.nanmean([r[norm] for r in rows], axis=0)
            body = s[1:]
            print(
                f"| {drf:g} | {norm} | "
                + " | ".join(f"{v:.3f}" for v in s)
                + f" | {np.nanmax(body) / np.nanmin(body):.2f} |"
            )


if __name__ == "__main__":
    main()
