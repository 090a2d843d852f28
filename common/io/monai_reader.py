"""``CTDicomSeriesReader``: a MONAI ``ImageReader`` for a CT DICOM series folder, so ``LoadImaged`` accepts NIfTI files
and DICOM series folders alike (``LoadImaged(keys, reader=CTDicomSeriesReader())``: MONAI tries this reader first
for folders and falls back to its own readers for files).

Reading is :func:`common.io.read_ct_hu`: slices sorted along the slice normal, geometry checked, HU from
RescaleSlope/Intercept, affine in RAS+ mm (the nibabel convention of NIfTI volumes), errors naming the file and tag.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import ImageReader
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

from common.io.dicom import DicomVolume, read_ct_hu

__all__ = ["CTDicomSeriesReader"]


class CTDicomSeriesReader(ImageReader):
    """Read one CT DICOM series folder per file name as an ``(X, Y, Z)`` float32 HU array with a RAS affine.

    Args:
        series_uid: which series to read when a folder holds several (else the folder must hold exactly one).
    """

    def __init__(self, series_uid: str | None = None) -> None:
        super().__init__()
        self.series_uid = series_uid

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        """Folders only (a DICOM series); files go to MONAI's readers."""
        return all(Path(f).is_dir() for f in ensure_tuple(filename))

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> list[DicomVolume]:
        """Read every folder in ``data`` (one series each)."""
        return [read_ct_hu(f, series_uid=self.series_uid) for f in ensure_tuple(data)]

    def get_data(self, img: DicomVolume | list[DicomVolume]) -> tuple[np.ndarray, dict]:
        """``(X, Y, Z)`` array (stacked on a new first axis for several series) and MONAI meta data."""
        vols = ensure_tuple(img)
        arrays = [np.asarray(v.array, dtype=np.float32) for v in vols]
        first = vols[0]
        meta = {
            MetaKeys.AFFINE: np.asarray(first.affine, dtype=np.float64),
            MetaKeys.ORIGINAL_AFFINE: np.asarray(first.affine, dtype=np.float64),
            MetaKeys.SPATIAL_SHAPE: np.asarray(first.shape),
            MetaKeys.SPACE: SpaceKeys.RAS,
            MetaKeys.ORIGINAL_CHANNEL_DIM: float("nan") if len(arrays) == 1 else 0,
            "pixdim": np.asarray([1.0, *first.spacing, 1.0, 1.0, 1.0, 1.0]),
            "modality": first.modality,
            "units": first.units,
            "series_instance_uid": first.series_instance_uid,
        }
        return (arrays[0] if len(arrays) == 1 else np.stack(arrays)), meta
