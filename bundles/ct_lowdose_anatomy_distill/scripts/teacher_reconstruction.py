"""How well the teacher autoencoder reconstructs NORMAL-dose CT: PSNR over a split, and RMS error in HU outside the
body / at edges in the body / in the rest of the body (the regions of ``error_by_region.py``).

    python bundles/ct_lowdose_anatomy_distill/scripts/teacher_reconstruction.py --datalist DATALIST.json \
        [--checkpoint bundles/ct_lowdose_anatomy_distill/models/teacher/model.pt] [--split validation]

Without ``--checkpoint`` it measures the untrained default initialisation (``NAFAutoencoder()``: the identity start
with the tanh compensation), i.e. where teacher training starts. The network is the default size (width 32, 8 blocks,
512 latent channels). Intensities: HU clipped to [-1000, 1000] -> [-1, 1]; PSNR with peak 2 on that range (equal to
the PSNR on [0, 1]-normalised HU of evaluate.yaml), over all voxels of the split's distinct references.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from common.bundle_utils import load_weights
from common.datalist import reference_items
from common.io.nifti import load_nifti
from common.networks.nafnet import NAFAutoencoder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from error_by_region import REGIONS, regions  # noqa: E402


@torch.no_grad()
def reconstruct(net: NAFAutoencoder, reference_hu: np.ndarray, slices: int = 8) -> np.ndarray:
    """Axial slice-wise reconstruction of a volume ``(X, Y, Z)`` in HU (X, Y multiples of 8) -> HU, same shape."""
    x = torch.from_numpy(np.clip(reference_hu, -1000, 1000).astype(np.float32) / 1000.0).permute(2, 0, 1)[:, None]
    y = torch.cat([net(x[i : i + slices]) for i in range(0, x.shape[0], slices)])
    return y[:, 0].permute(1, 2, 0).double().numpy() * 1000.0


def summarise(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """``pairs`` of (reconstruction, reference) in HU -> ``{"psnr": dB, "<region>_rms_hu": HU, ...}`` over all."""
    se, n = {r: 0.0 for r in REGIONS}, {r: 0 for r in REGIONS}
    for rec, ref in pairs:
        ref = np.clip(ref, -1000, 1000)
        err = (np.clip(rec, -1000, 1000) - ref) ** 2
        for name, mask in regions(ref).items():
            se[name] += float(err[mask].sum())
            n[name] += int(mask.sum())
    mse = sum(se.values()) / sum(n.values()) / 2000.0**2
    out = {"psnr": float(10 * np.log10(1.0 / mse))}
    out.update({f"{r}_rms_hu": float(np.sqrt(se[r] / max(n[r], 1))) for r in REGIONS})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datalist", required=True, type=Path)
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--split", default="validation")
    a = ap.parse_args()
    torch.manual_seed(0)
    net = NAFAutoencoder().eval()
    if a.checkpoint is not None:
        load_weights(net, str(a.checkpoint), "teacher weights")
    pairs = []
    for item in reference_items(json.loads(a.datalist.read_text())[a.split]):
        ref = load_nifti(a.datalist.parent / item["image"], check_finite=True)[0].astype(np.float64)
        pairs.append((reconstruct(net, ref), ref))
    res = summarise(pairs)
    what = a.checkpoint or "untrained default initialisation"
    print(
        f"{what}, {a.split} ({len(pairs)} volumes): PSNR {res['psnr']:.2f} dB; RMS HU "
        + ", ".join(f"{r} {res[f'{r}_rms_hu']:.1f}" for r in REGIONS)
    )


if __name__ == "__main__":
    main()
