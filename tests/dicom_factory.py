"""Synthetic DICOM series for tests (pydicom only, no real patient data).

``write_series(folder, stored_zyx, ...)`` writes one file per slice from stored values ``(Z, Rows, Columns)``;
``PET_TAGS`` holds a complete set of SUV-relevant PET tags that tests can override or delete.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
PET_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.128"

PET_TAGS: dict[str, object] = {
    "Units": "BQML",
    "DecayCorrection": "START",
    "CorrectedImage": ["DECY", "ATTN"],
    "PatientWeight": 70.0,
    "SeriesDate": "20240102",
    "SeriesTime": "110000",
    "AcquisitionDate": "20240102",
    "AcquisitionTime": "110000",
    "RadiopharmaceuticalStartTime": "100000",  # in the sequence item
    "RadionuclideTotalDose": 370e6,  # in the sequence item
    "RadionuclideHalfLife": 6586.2,  # in the sequence item
}
_SEQUENCE_KEYWORDS = ("RadiopharmaceuticalStartTime", "RadiopharmaceuticalStartDateTime", "RadionuclideTotalDose")
_SEQUENCE_KEYWORDS += ("RadionuclideHalfLife",)


def make_slice(
    stored: np.ndarray,
    *,
    position: Sequence[float],
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    pixel_spacing: Sequence[float] = (0.8, 0.7),
    modality: str = "CT",
    series_uid: str,
    study_uid: str,
    instance: int,
    slope: float | None = 1.0,
    intercept: float | None = 0.0,
    tags: dict[str, object] | None = None,
) -> Dataset:
    """One single-frame slice from stored int16 values ``(Rows, Columns)``; ``tags`` (PET_TAGS style) are added."""
    sop_class = PET_IMAGE_STORAGE if modality == "PT" else CT_IMAGE_STORAGE
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = generate_uid()
    ds.PatientID = "SYNTHETIC"
    ds.PatientName = "Synthetic^Phantom"
    ds.Modality = modality
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = [float(v) for v in pixel_spacing]
    ds.SliceThickness = 2.5
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    if slope is not None:
        ds.RescaleSlope = slope
    if intercept is not None:
        ds.RescaleIntercept = intercept
    ds.PixelData = np.ascontiguousarray(stored, dtype="<i2").tobytes()
    tags = dict(tags or {})
    item = Dataset()
    for keyword in _SEQUENCE_KEYWORDS:
        if keyword in tags:
            setattr(item, keyword, tags.pop(keyword))
    if len(item):
        ds.RadiopharmaceuticalInformationSequence = [item]
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    return ds


def write_series(
    folder: Path,
    stored_zyx: np.ndarray,
    *,
    origin: Sequence[float] = (-10.0, 20.0, 30.0),
    slice_step: float = 2.5,
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    pixel_spacing: Sequence[float] = (0.8, 0.7),
    modality: str = "CT",
    slope: float | None = 1.0,
    intercept: float | None = 0.0,
    tags: dict[str, object] | None = None,
    series_uid: str | None = None,
    names: Sequence[str] | None = None,
    write_order: Sequence[int] | None = None,
    raw_names: Sequence[str] = (),
) -> list[Path]:
    """Write slices ``k`` at ``origin + k * slice_step * (F_row x F_col)``; return the paths indexed by ``k``.

    ``names[k]`` is the file name (default ``slice{k}.dcm``); files are written in ``write_order``; names listed
    in ``raw_names`` are written without preamble / file meta, implicit VR (like old Siemens ``.IMA`` files).
    """
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = generate_uid()
    orientation = np.asarray(orientation, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    n_slices = stored_zyx.shape[0]
    names = list(names) if names is not None else [f"slice{k}.dcm" for k in range(n_slices)]
    paths = [folder / name for name in names]
    for k in write_order if write_order is not None else range(n_slices):
        ds = make_slice(
            stored_zyx[k],
            position=np.asarray(origin, dtype=float) + k * slice_step * normal,
            orientation=orientation,
            pixel_spacing=pixel_spacing,
            modality=modality,
            series_uid=series_uid,
            study_uid=study_uid,
            instance=k + 1,
            slope=slope,
            intercept=intercept,
            tags=tags,
        )
        if names[k] in raw_names:
            del ds.file_meta
            pydicom.dcmwrite(paths[k], ds, implicit_vr=True, little_endian=True)
        else:
            ds.save_as(paths[k], enforce_file_format=True)
    return paths
