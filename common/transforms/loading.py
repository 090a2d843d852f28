"""The bundles' first transform: read the volumes a bundle accepts, or refuse them in one line."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import Compose, EnsureChannelFirstd, EnsureTyped, MapTransform

from ..io.monai_reader import LoadVolumed
from .validation import CheckPaird, ValidateImaged

__all__ = ["LoadCheckedd"]

_KIND = {"CT": "ct", "PT": "pet"}


class LoadCheckedd(MapTransform):
    """Load ``keys`` as checked ``(1, X, Y, Z)`` float32 volumes: HU for ``modality="CT"``, SUV (body weight) for
    ``modality="PT"``.

    In order: :class:`common.io.LoadVolumed` (a NIfTI file or a DICOM series folder, nothing else), channel first,
    :class:`ValidateImaged` (finite values, at least ``min_size`` voxels per axis, plausible HU / SUV unless
    ``allow_implausible``), :class:`CheckPaird` (every key on the same grid, when ``check_pair``), then float32
    (plain tensors when ``track_meta`` is false). Deterministic, so a ``CacheDataset`` caches its output.

    Example (a config item)::

        - _target_: common.transforms.LoadCheckedd
          keys: [image, label]
          modality: PT
          allow_implausible: "@allow_implausible"
    """

    def __init__(
        self,
        keys: KeysCollection,
        modality: str,
        allow_implausible: bool = False,
        min_size: int | Sequence[int] = 4,
        check_pair: bool = True,
        track_meta: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if modality not in _KIND:
            raise ValueError(f"modality must be one of {sorted(_KIND)}, got {modality!r}")
        steps: list[Any] = [
            LoadVolumed(keys, modality=modality, allow_missing_keys=allow_missing_keys),
            EnsureChannelFirstd(keys, allow_missing_keys=allow_missing_keys),
            ValidateImaged(
                keys,
                kind=_KIND[modality],
                min_size=min_size,
                allow_implausible=allow_implausible,
                allow_missing_keys=allow_missing_keys,
            ),
        ]
        if check_pair:
            steps.append(CheckPaird(keys, allow_missing_keys=allow_missing_keys))
        steps.append(
            EnsureTyped(keys, dtype=torch.float32, track_meta=track_meta, allow_missing_keys=allow_missing_keys)
        )
        self.steps = Compose(steps)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        return self.steps(dict(data))
