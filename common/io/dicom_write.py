"""Write a restored volume back as a DICOM series derived from the series it was computed from.

What the new series keeps and changes (DICOM PS3.3):

- kept from the source series (each output slice copies the header of the source slice nearest to it): patient,
  study, frame of reference, equipment and acquisition tags; for PET the ``Units``, ``DecayCorrection`` and
  radiopharmaceutical tags, so a viewer computes the same SUV from the new series as from the source;
- new: ``SeriesInstanceUID``, every ``SOPInstanceUID``, ``SeriesNumber`` (+ ``series_number_offset``),
  ``SeriesDescription`` (+ ``description_suffix``), ``ImageType`` ``DERIVED\\SECONDARY``, ``DerivationDescription``,
  ``SourceImageSequence`` (the source slice of each slice when the grids coincide), content date / time;
- geometry from the volume's affine (RAS, nibabel convention -> LPS): ``ImagePositionPatient``,
  ``ImageOrientationPatient``, ``PixelSpacing``, ``SliceThickness`` / ``SpacingBetweenSlices`` (the source's
  thickness when the slice spacing is unchanged; the new spacing for a through-plane super-resolved series);
- pixels: signed 16-bit (``PixelRepresentation`` 1). CT: HU rounded to integers, ``RescaleSlope`` 1,
  ``RescaleIntercept`` 0 (quantisation <= 0.5 HU). Other modalities: a slope per slice = max |value| / 32767,
  intercept 0 (quantisation <= slope / 2).

PET volumes in SUVbw (``read_pet_suv``) are converted back to the source's ``Units`` (e.g. Bq/mL) with the SUV factor
of the source, so the tag and the values stay consistent.
"""

from __future__ import annotations

import copy
import datetime as _dt
import os
import shutil
from os import PathLike
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

from .atomic import ensure_writable_dir, remove_stale_temporaries, temp_path
from .dicom import DicomVolume

__all__ = ["quantise", "write_dicom_series"]

_INT16_MAX = 32767
_STRIP = (  # tags that describe the source pixel data and would be wrong for the new values
    "SmallestImagePixelValue",
    "LargestImagePixelValue",
    "PixelPaddingValue",
    "PixelPaddingRangeLimit",
    "LossyImageCompression",
    "LossyImageCompressionRatio",
    "LossyImageCompressionMethod",
    "IconImageSequence",
    "PlanarConfiguration",
    "ModalityLUTSequence",
    "SourceImageSequence",
    "DerivationCodeSequence",
    "PixelData",
)


def quantise(values: np.ndarray, modality: str) -> tuple[np.ndarray, float, float]:
    """``values`` (Rows, Columns) in modality units -> (int16 stored values, RescaleSlope, RescaleIntercept)."""
    v = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(v)):
        raise ValueError("cannot write NaN / Inf values to DICOM")
    if modality == "CT" and v.min() >= -32768 and v.max() <= _INT16_MAX:
        return np.rint(v).astype(np.int16), 1.0, 0.0
    peak = float(np.abs(v).max())
    slope = peak / _INT16_MAX if peak > 0 else 1.0
    slope = float(f"{slope:.10g}")  # DS holds at most 16 characters
    return np.clip(np.rint(v / slope), -32768, _INT16_MAX).astype(np.int16), slope, 0.0


def _ds(value: float) -> str:
    """A decimal string (DS, <= 16 characters) for ``value``."""
    for digits in range(12, 4, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    return f"{value:.4e}"


def _geometry(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """(LPS affine, unit normal, (sx, sy, sz)) from a voxel -> RAS affine."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, dtype=np.float64)
    sx, sy, sz = (float(np.linalg.norm(lps[:3, i])) for i in range(3))
    normal = np.cross(lps[:3, 0] / sx, lps[:3, 1] / sy)
    return lps, normal, (sx, sy, sz)


def _save(ds: Dataset, path: Path) -> None:
    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(path, enforce_file_format=True)
    else:  # pragma: no cover - pydicom 2.x
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)


def write_dicom_series(
    array: np.ndarray,
    affine: np.ndarray,
    source: DicomVolume,
    out_dir: str | PathLike,
    *,
    description_suffix: str = " restored",
    derivation: str = "restored by a MONAI restoration bundle",
    series_number_offset: int = 1000,
) -> list[Path]:
    """Write ``array`` ``(X, Y, Z)`` on the grid ``affine`` (voxel -> RAS mm) as a DICOM series in ``out_dir``,
    derived from ``source`` (the series read with :func:`common.io.read_ct_hu` / :func:`read_pet_suv` /
    :func:`read_dicom_series`). ``array`` is in ``source.units`` (HU, SUVbw, or the PET ``Units``).

    The folder appears atomically (written under a temporary name, then renamed; an existing folder of that name is
    replaced). Returns the slice files, ``slice k`` -> ``IM{k+1:05d}.dcm``.
    """
    vol = np.asarray(array)
    if vol.ndim != 3:
        raise ValueError(f"expected a 3D (X, Y, Z) volume, got shape {vol.shape}")
    if not source.datasets:
        raise ValueError("the source series has no slices")
    modality = str(source.datasets[0].get("Modality", ""))
    to_tag_units = 1.0
    if source.units == "SUVbw":
        if not source.suv_factor:
            raise ValueError("SUVbw source without an SUV factor: read it with common.io.read_pet_suv")
        to_tag_units = 1.0 / float(source.suv_factor)
    lps, normal, (sx, sy, sz) = _geometry(affine)
    src_lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(source.affine, dtype=np.float64)
    src_inv = np.linalg.inv(src_lps)
    same_spacing = bool(np.isclose(sz, source.spacing[2], rtol=1e-3, atol=1e-3))
    series_uid = generate_uid()
    now = _dt.datetime.now()
    out = Path(out_dir).expanduser()
    ensure_writable_dir(out.parent)
    remove_stale_temporaries(out.parent)
    stage = temp_path(out)
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    paths: list[Path] = []
    try:
        for k in range(vol.shape[2]):
            position = lps @ np.array([0.0, 0.0, float(k), 1.0])
            src_k = (src_inv @ position)[2]
            nearest = int(np.clip(np.rint(src_k), 0, len(source.datasets) - 1))
            template = source.datasets[nearest]
            ds = copy.deepcopy(template)
            for keyword in _STRIP:
                if keyword in ds:
                    delattr(ds, keyword)
            stored, slope, intercept = quantise(vol[:, :, k].T * to_tag_units, modality)
            ds.SOPInstanceUID = generate_uid()
            ds.SeriesInstanceUID = series_uid
            ds.SeriesNumber = int(template.get("SeriesNumber", 0) or 0) + series_number_offset
            ds.SeriesDescription = (str(template.get("SeriesDescription", "")) + description_suffix)[:64]
            old_type = list(template.get("ImageType", []))
            ds.ImageType = ["DERIVED", "SECONDARY", *old_type[2:]]
            ds.DerivationDescription = derivation[:1024]
            ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
            ds.InstanceNumber = k + 1
            ds.ImagePositionPatient = [_ds(v) for v in position[:3]]
            ds.ImageOrientationPatient = [_ds(v) for v in (*(lps[:3, 0] / sx), *(lps[:3, 1] / sy))]
            ds.PixelSpacing = [_ds(sy), _ds(sx)]
            if not same_spacing or "SliceThickness" not in ds:
                ds.SliceThickness = _ds(sz)
            ds.SpacingBetweenSlices = _ds(sz)
            ds.SliceLocation = _ds(float(position[:3] @ normal))
            if modality == "PT":
                ds.ImageIndex = k + 1
                ds.NumberOfSlices = vol.shape[2]
            if same_spacing and abs(src_k - nearest) < 1e-3 and "SOPInstanceUID" in template:
                ref = Dataset()
                ref.ReferencedSOPClassUID = template.SOPClassUID
                ref.ReferencedSOPInstanceUID = template.SOPInstanceUID
                ds.SourceImageSequence = Sequence([ref])
            ds.Rows, ds.Columns = stored.shape
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
            ds.RescaleSlope, ds.RescaleIntercept = _ds(slope), _ds(intercept)
            ds.PixelData = stored.astype("<i2").tobytes()
            ds["PixelData"].VR = "OW"
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = ds.SOPClassUID
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
            ds.file_meta = meta
            ds.preamble = b"\0" * 128
            name = f"IM{k + 1:05d}.dcm"
            _save(ds, stage / name)
            paths.append(out / name)
        backup = None
        if out.exists():
            backup = temp_path(out, ".old")
            os.replace(out, backup)
        os.replace(stage, out)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return paths
