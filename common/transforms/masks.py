"""Body mask of a CT volume, computed on HU (before any intensity normalisation, so it is never all true)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type
from scipy import ndimage

__all__ = ["BodyMaskd", "body_mask"]

BODY_THRESHOLD_HU = -500.0


def body_mask(hu: np.ndarray | torch.Tensor, threshold_hu: float = BODY_THRESHOLD_HU) -> np.ndarray:
    """Boolean body mask of a CT volume in HU.

    ``hu > threshold_hu`` (air/lung boundary at -500 HU by default), holes filled per axial slice (lungs, airways and
    bowel gas inside the body count as body), then the largest 3D connected component (drops the table and
    detached noise). ``hu``: ``(X, Y, Z)`` or ``(C, X, Y, Z)`` (the mask of channel 0, shaped like the input).
    """
    arr = hu.detach().cpu().numpy() if isinstance(hu, torch.Tensor) else np.asarray(hu)
    vol = arr[0] if arr.ndim == 4 else arr
    if vol.ndim != 3:
        raise ValueError(f"body_mask expects an (X, Y, Z) or (C, X, Y, Z) volume, got shape {arr.shape}")
    mask = vol > threshold_hu
    for z in range(mask.shape[2]):
        mask[:, :, z] = ndimage.binary_fill_holes(mask[:, :, z])
    labels, n = ndimage.label(mask)
    if n > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        mask = labels == int(np.argmax(sizes))
    return mask[None] if arr.ndim == 4 else mask


class BodyMaskd(MapTransform):
    """Add ``mask_key`` = :func:`body_mask` of ``keys[0]`` (a ``(C, X, Y, Z)`` CT volume in HU), float32 0/1, with
    the same meta data (affine) when the source is a ``MetaTensor``."""

    def __init__(
        self,
        keys: KeysCollection,
        mask_key: str = "mask",
        threshold_hu: float = BODY_THRESHOLD_HU,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.mask_key = mask_key
        self.threshold_hu = float(threshold_hu)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            src = d[key]
            mask = body_mask(src, self.threshold_hu).astype(np.float32)
            d[self.mask_key] = convert_to_dst_type(mask, src, dtype=torch.float32)[0]
            break
        return d
