"""MONAI ``ImageReader`` s for DICOM series folders, so ``LoadImaged`` accepts NIfTI files and DICOM series folders
alike (``LoadImaged(keys, reader=DicomSeriesReader())``: MONAI tries this reader first for folders and falls back to
its own readers for files).

Reading is :func:`common.io.read_ct_hu` (CT -> HU) or :func:`common.io.read_pet_suv` (PET -> SUVbw): slices sorted along
the slice normal, geometry checked, affine in RAS+ mm (the nibabel convention of NIfTI volumes), errors naming the
file and tag. The meta data keep what :class:`common.io.SaveDicomSeriesd` needs to write a derived series back
(modality, units, SUV factor, series UID).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import ImageReader
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

from common.errors import InputDataError
from common.io.dicom import DicomVolume, read_ct_hu, read_dicom_series
from common.io.suv import read_pet_suv

__all__ = ["CTDicomSeriesReader", "DicomSeriesReader"]

_READERS = {"CT": read_ct_hu, "PT": read_pet_suv}


class DicomSeriesReader(ImageReader):
    """Read one DICOM series folder per file name as an ``(X, Y, Z)`` float32 array with a RAS affine: CT in HU,
    PET in body-weight SUV.

    Args:
        modality: the DICOM ``Modality`` the bundle accepts (``"CT"`` or ``"PT"``); another modality is an error
            naming the folder. ``None``: CT or PT.
        series_uid: which series to read when a folder holds several (else the folder must hold exactly one).
    """

    def __init__(self, modality: str | None = None, series_uid: str | None = None) -> None:
        super().__init__()
        if modality is not None and modality not in _READERS:
            raise ValueError(f"modality must be one of {sorted(_READERS)} or None, got {modality!r}")
        self.modality = modality
        self.series_uid = series_uid

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        """Folders only (a DICOM series); files go to MONAI's readers."""
        return all(Path(f).is_dir() for f in ensure_tuple(filename))

    def _read_one(self, folder: str | os.PathLike) -> DicomVolume:
        modality = self.modality
        if modality is None:  # read once to learn the modality (the modality's reader then reads with its checks)
            modality = read_dicom_series(folder, series_uid=self.series_uid).modality
            if modality not in _READERS:
                raise InputDataError(folder, f"DICOM Modality is {modality!r}; this reader handles CT or PT")
        return _READERS[modality](folder, series_uid=self.series_uid)

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> list[DicomVolume]:
        """Read every folder in ``data`` (one series each)."""
        return [self._read_one(f) for f in ensure_tuple(data)]

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


class CTDicomSeriesReader(DicomSeriesReader):
    """:class:`DicomSeriesReader` for CT only (HU)."""

    def __init__(self, series_uid: str | None = None) -> None:
        super().__init__(modality="CT", series_uid=series_uid)
