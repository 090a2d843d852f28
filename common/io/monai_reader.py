"""Loading bundle inputs: :class:`LoadVolumed` reads a NIfTI file or a DICOM series folder, each with exactly one
reader, and refuses anything else in one line naming the file.

MONAI's ``LoadImaged(reader=...)`` is not used for inputs: when the configured reader refuses a folder it logs
"unable to load" and silently falls back to MONAI's own DICOM readers (a PET series then arrives in Bq/mL instead of
SUV), and it tries that reader on every NIfTI file first (the same log line, twice per item).

Reading is :func:`common.io.read_ct_hu` (CT -> HU) or :func:`common.io.read_pet_suv` (PET -> SUVbw): slices sorted along
the slice normal, geometry checked, affine in RAS+ mm (the nibabel convention of NIfTI volumes), errors naming the
file and tag. The meta data keep what :class:`common.io.SaveDicomSeriesd` needs to write a derived series back
(modality, units, SUV factor, series UID).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.data import ImageReader, MetaTensor, NibabelReader
from monai.transforms import LoadImage, MapTransform
from monai.utils import MetaKeys, SpaceKeys, ensure_tuple

from ..errors import InputDataError, UserError
from .dicom import DicomVolume, read_ct_hu, read_dicom_series
from .nifti import nifti_suffix
from .suv import read_pet_suv

__all__ = ["CTDicomSeriesReader", "DicomSeriesReader", "LoadVolumed", "load_volume"]

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


_DICOM_FILE_SUFFIXES = (".dcm", ".ima", ".dicom")
SINGLE_DICOM_FILE = "a single DICOM file: pass the folder that holds the whole series"


def _is_dicom_file(path: Path) -> bool:
    if path.suffix.lower() in _DICOM_FILE_SUFFIXES:
        return True
    try:
        with open(path, "rb") as handle:
            return handle.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def load_volume(path: str | os.PathLike, modality: str | None = None, loader: LoadImage | None = None) -> MetaTensor:
    """Read one input volume as a MONAI ``MetaTensor`` ``(X, Y, Z)`` (float32, affine and ``filename_or_obj`` in
    its meta data): a NIfTI file with nibabel, or a DICOM series folder with :class:`DicomSeriesReader`
    (``modality``: ``"CT"`` in HU, ``"PT"`` in SUVbw, ``None``: either).

    Raises:
        InputDataError: missing path, unsupported file type, a single DICOM file instead of its folder, a corrupt or
            truncated NIfTI, an image with more than one volume (4D), or any refusal of the DICOM reader; the
            message names the file.
    """
    loader = loader or LoadImage(image_only=True)
    p = Path(path).expanduser()
    if not p.exists():
        raise InputDataError(p, "file or folder not found")
    if p.is_dir():
        return loader(str(p), reader=DicomSeriesReader(modality=modality))
    if not nifti_suffix(p):
        if _is_dicom_file(p):
            raise InputDataError(p, SINGLE_DICOM_FILE)
        raise InputDataError(p, "unsupported input: expected a NIfTI file (.nii, .nii.gz) or a DICOM series folder")
    try:
        img = loader(str(p), reader=NibabelReader())
    except UserError:
        raise
    except Exception as exc:  # nibabel / gzip / zlib errors of a corrupt or truncated file
        problem = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise InputDataError(p, f"cannot read NIfTI file (corrupt or truncated?): {problem}") from exc
    extra = tuple(int(n) for n in img.shape[3:])
    if img.ndim > 3 and any(n > 1 for n in extra):
        shape = "x".join(str(int(n)) for n in img.shape)
        raise InputDataError(p, f"{img.ndim}D image {shape}; expected one 3D volume")
    if img.ndim > 3:  # trailing singleton dimensions (X, Y, Z, 1): one volume
        while img.ndim > 3:
            img = img.squeeze(-1)
        img.meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = float("nan")
    return img


class LoadVolumed(MapTransform):
    """Load the input volume under each key with :func:`load_volume`: a drop-in for ``LoadImaged(keys,
    image_only=True)`` (``EnsureChannelFirstd`` follows) that accepts only NIfTI files and DICOM series folders, each
    with one reader. Values that are already loaded (tensors / arrays) pass through unchanged.

    Args:
        keys: the items' keys holding file or folder paths.
        modality: DICOM modality the bundle accepts for series folders (``"CT"``, ``"PT"``; ``None``: either).
    """

    def __init__(self, keys: KeysCollection, modality: str | None = None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if modality is not None and modality not in _READERS:
            raise ValueError(f"modality must be one of {sorted(_READERS)} or None, got {modality!r}")
        self.modality = modality
        self._loader = LoadImage(image_only=True)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            if isinstance(d[key], str | os.PathLike):
                d[key] = load_volume(d[key], self.modality, self._loader)
        return d
