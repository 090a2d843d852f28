"""Quantitative SUV fidelity of the bundle's outputs: lesion SUVmax, liver SUVmean and the hottest voxels.

    python bundles/pet_lowdose_ddpm3d/scripts/suv_fidelity.py --datalist DATALIST.json --eval_dir EVAL_DIR \
        [--split test] [--postfix ddpm] [--hot 16]

For every item of the split that has an output ``<eval_dir>/<low-dose file stem>_<postfix>.nii.gz`` (written by the
inference / evaluate configs), against the item's full-dose reference: the SUVmax bias (percent) of each lesion
(``lesions`` file, one label per lesion), the SUVmean bias in the liver (``labels`` file), and the mean bias of the
voxels whose reference SUV is at least ``--hot`` (bladder, kidneys, hot lesions; the former normalisation clipped
everything above SUV 16). The same figures for the low-dose input are printed beside them. One row per DRF, means
over items (lesions pooled).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from common.datalist import select_items
from common.io import load_nifti, restored_nifti_path
from common.phantoms.pet import PET_BRAIN_LABELS, PET_TORSO_LABELS


def item_figures(low: np.ndarray, out: np.ndarray, ref: np.ndarray, lesions: np.ndarray | None,
                 liver: np.ndarray | None, hot: float) -> dict[str, list[float]]:  # fmt: skip
    """Per-item figures (percent) for ``input`` and ``output``; volumes ``(X, Y, Z)`` in SUV."""
    figures: dict[str, list[float]] = defaultdict(list)
    for tag, img in (("input", low), ("output", out)):
        if lesions is not None:
            for index in np.unique(lesions[lesions > 0]):
                m = lesions == index
                figures[f"lesion_suvmax_{tag}"].append(100.0 * (img[m].max() - ref[m].max()) / ref[m].max())
        if liver is not None and liver.any():
            figures[f"liver_suvmean_{tag}"].append(100.0 * (img[liver].mean() - ref[liver].mean()) / ref[liver].mean())
        if (ref >= hot).any():
            m = ref >= hot
            figures[f"hot_mean_{tag}"].append(100.0 * (img[m].mean() - ref[m].mean()) / ref[m].mean())
            figures[f"hot_max_{tag}"].append(float(img[m].max()))
    if (ref >= hot).any():
        figures["hot_max_reference"].append(float(ref.max()))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datalist", required=True)
    parser.add_argument("--eval_dir", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--postfix", default="ddpm")
    parser.add_argument("--hot", type=float, default=16.0)
    args = parser.parse_args()

    datalist = Path(args.datalist)
    items = select_items(json.loads(datalist.read_text())[args.split], "drf", None)
    rows: dict[float, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for item in items:
        low_path = datalist.parent / item["image"]
        out_path = restored_nifti_path(args.eval_dir, low_path, args.postfix)
        if not out_path.is_file():
            continue
        low, out = load_nifti(low_path)[0], load_nifti(out_path)[0]
        ref = load_nifti(datalist.parent / item["label"])[0]
        lesions = load_nifti(datalist.parent / item["lesions"])[0] if item.get("lesions") else None
        liver = None
        if item.get("labels"):
            table = PET_TORSO_LABELS if item.get("anatomy") == "torso" else PET_BRAIN_LABELS
            if "liver" in table:
                liver = load_nifti(datalist.parent / item["labels"])[0] == table["liver"]
        for key, values in item_figures(low, out, ref, lesions, liver, args.hot).items():
            rows[float(item["drf"])][key].extend(values)
    keys = ["lesion_suvmax", "liver_suvmean", "hot_mean"]
    print(f"| DRF | {' | '.join(f'{k} input / output (%)' for k in keys)} | SUV >= {args.hot:g}: max ref / output |")
    print(f"|---|{'---|' * (len(keys) + 1)}")
    for drf in sorted(rows):
        r = rows[drf]
        cells = [
            f"{np.mean(r[f'{k}_input']):+.1f} / {np.mean(r[f'{k}_output']):+.1f}" if r[f"{k}_input"] else "-"
            for k in keys
        ]
        hot = f"{max(r['hot_max_reference']):.1f} / {max(r['hot_max_output']):.1f}" if r["hot_max_reference"] else "-"
        print(f"| {drf:g} | {' | '.join(cells)} | {hot} |")


if __name__ == "__main__":
    main()
