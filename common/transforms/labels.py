"""HU-band pseudo-labels for training an anatomical network without manual segmentations.

Classes (HU bounds are the defaults, chosen against the tissue tables of :mod:`common.phantoms.ct` and standard CT
values): 0 air / lung (< -300), 1 fat [-300, -30), 2 water / CSF / fluid [-30, 18), 3 soft tissue / brain / muscle
[18, 120), 4 contrast-enhanced blood / kidney [120, 300), 5 bone (>= 300). The image is optionally smoothed first
(Gaussian, sigma in pixels) so that noise in a real normal-dose scan does not flip the labels voxel by voxel.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import GaussianSmooth, MapTransform

__all__ = ["HU_BAND_CLASSES", "HU_BAND_EDGES", "HUBandLabeld", "hu_band_labels"]

HU_BAND_CLASSES = ("air", "fat", "water_csf", "soft_tissue_brain", "contrast_blood", "bone")
HU_BAND_EDGES = (-300.0, -30.0, 18.0, 120.0, 300.0)


def hu_band_labels(hu: torch.Tensor, edges: Sequence[float] = HU_BAND_EDGES, sigma_px: float = 0.0) -> torch.Tensor:
    """Class index per voxel (int64, same shape as ``hu``) from increasing HU ``edges`` (``len(edges) + 1`` classes).

    ``hu``: ``(C, *spatial)`` HU tensor; ``sigma_px`` > 0 smooths each channel first (in-plane and through-plane
    alike, in voxels).
    """
    e = [float(v) for v in edges]
    if any(b <= a for a, b in zip(e, e[1:], strict=False)):
        raise ValueError(f"HU band edges must increase strictly, got {edges!r}")
    x = torch.as_tensor(hu, dtype=torch.float32)
    if sigma_px > 0:
        x = GaussianSmooth(sigma=float(sigma_px))(x)
    return torch.bucketize(x.contiguous(), torch.tensor(e, dtype=x.dtype), right=True).to(torch.int64)


class HUBandLabeld(MapTransform):
    """Write ``output_key`` = :func:`hu_band_labels` of ``d[key]`` (an HU image ``(C, *spatial)``).

    Args:
        keys: the HU image key (one key).
        output_key: where the label map goes (int64, same shape and meta as the image).
        edges: HU class boundaries (default :data:`HU_BAND_EDGES`).
        sigma_px: Gaussian pre-smoothing in voxels (0: none).
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_key: str = "label",
        edges: Sequence[float] = HU_BAND_EDGES,
        sigma_px: float = 1.0,
    ) -> None:
        super().__init__(keys)
        if len(self.keys) != 1:
            raise ValueError(f"HUBandLabeld takes one image key, got {self.keys}")
        self.output_key = output_key
        self.edges = tuple(float(v) for v in edges)
        self.sigma_px = float(sigma_px)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = d[self.keys[0]]
        labels = hu_band_labels(image, self.edges, self.sigma_px)
        if hasattr(image, "copy_meta_from"):  # MetaTensor: keep the affine for saving / spatial transforms
            labels = type(image)(labels, meta=image.meta)
        d[self.output_key] = labels
        return d
