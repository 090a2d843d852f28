"""Medical image I/O: NIfTI (atomic writes), DICOM series in (CT in HU, PET in Bq/mL or SUVbw) and out (derived
series), SUV conversion.

All volumes are ``(X, Y, Z)`` float32 arrays with a 4x4 voxel -> RAS+ mm affine (nibabel convention).
Bad input raises :class:`common.errors.InputDataError` naming the file (and DICOM tag / CSV column).
"""

from __future__ import annotations

from .atomic import ensure_writable_dir
from .dicom import DicomVolume, lps_to_ras, read_ct_hu, read_dicom_series
from .dicom_write import write_dicom_series
from .monai_reader import CTDicomSeriesReader, DicomSeriesReader, LoadVolumed, load_volume
from .monai_save import AtomicSaveImaged, SaveDicomSeriesd, SaveRestoredd, restored_nifti_path
from .nifti import NIFTI_SUFFIXES, load_nifti, load_nifti_with_header, nifti_suffix, save_nifti
from .suv import (
    CSV_COLUMNS,
    F18_HALF_LIFE_S,
    load_pet_suv_nifti,
    pet_reference_datetime,
    read_pet_suv,
    suv_factor,
    suv_factor_from_csv_row,
    suv_factor_from_dicom,
)

__all__ = [
    "AtomicSaveImaged",
    "CSV_COLUMNS",
    "CTDicomSeriesReader",
    "DicomSeriesReader",
    "DicomVolume",
    "F18_HALF_LIFE_S",
    "NIFTI_SUFFIXES",
    "LoadVolumed",
    "ensure_writable_dir",
    "load_nifti",
    "load_nifti_with_header",
    "load_pet_suv_nifti",
    "load_volume",
    "lps_to_ras",
    "nifti_suffix",
    "pet_reference_datetime",
    "read_ct_hu",
    "read_dicom_series",
    "read_pet_suv",
    "restored_nifti_path",
    "SaveDicomSeriesd",
    "SaveRestoredd",
    "save_nifti",
    "suv_factor",
    "suv_factor_from_csv_row",
    "suv_factor_from_dicom",
    "write_dicom_series",
]
