"""NIfTI reading and atomic writing.

Arrays are returned as stored by nibabel: spatial axes ``(X, Y, Z)`` (plus any extra axes the file has), with the
4x4 voxel-to-world affine in RAS+ millimetres (nibabel's convention: the sform if set, else the qform).
Input files are opened read-only and never modified; outputs are written to a temporary file in the destination
folder and moved into place with :func:`os.replace`, so a reader never sees a half-written file.
"""

from __future__ import annotations

import contextlib
import os
import zlib
from os import PathLike
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from ..errors import InputDataError
from .atomic import ensure_writable_dir, temp_path

__all__ = ["NIFTI_SUFFIXES", "load_nifti", "load_nifti_with_header", "nifti_suffix", "save_nifti"]

NIFTI_SUFFIXES = (".nii.gz", ".nii")

# Errors nibabel lets through for missing, truncated or corrupt files (gzip.BadGzipFile is an OSError).
_READ_ERRORS = (ImageFileError, OSError, EOFError, zlib.error, ValueError, TypeError, IndexError)


def nifti_suffix(path: str | PathLike) -> str:
    """Return ``".nii.gz"`` or ``".nii"`` for a NIfTI path, ``""`` for anything else (case-insensitive)."""
    name = Path(path).name.lower()
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return ""


def load_nifti_with_header(
    path: str | PathLike, *, check_finite: bool = False
) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Header | nib.Nifti2Header]:
    """Load a NIfTI-1/2 image.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        check_finite: if true, NaN / Inf voxels raise :class:`InputDataError`.

    Returns:
        ``(array, affine, header)``: ``array`` float32 of the stored shape (spatial ``(X, Y, Z)`` first), with the
        header's ``scl_slope`` / ``scl_inter`` applied; ``affine`` float64 ``(4, 4)`` voxel -> RAS+ mm; a copy of the
        header (usable as ``reference_header`` of :func:`save_nifti`).

    Raises:
        InputDataError: the file is missing, not a NIfTI image, truncated or corrupt (message names the file).
    """
    path = Path(path)
    if not path.exists():
        raise InputDataError(path, "file not found")
    if not path.is_file():
        raise InputDataError(path, "not a regular file (a NIfTI .nii / .nii.gz file is expected)")
    try:
        # mmap=False: read into memory so no handle / writable view on the input file remains.
        img = nib.load(str(path), mmap=False)
        if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
            raise InputDataError(path, f"not a NIfTI image (nibabel read it as {type(img).__name__})")
        array = np.array(img.get_fdata(dtype=np.float32), dtype=np.float32, copy=True)
        affine = np.array(img.affine, dtype=np.float64)
        header = img.header.copy()
    except InputDataError:
        raise
    except _READ_ERRORS as exc:
        raise InputDataError(
            path, f"cannot read NIfTI file (corrupt or truncated?): {type(exc).__name__}: {exc}"
        ) from exc
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise InputDataError(path, f"invalid affine in header: {affine.tolist()}")
    if check_finite and not np.all(np.isfinite(array)):
        n_bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise InputDataError(path, f"{n_bad} voxel(s) are NaN or Inf")
    return array, affine, header


def load_nifti(path: str | PathLike, *, check_finite: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Load a NIfTI image as ``(array, affine)``: float32 ``(X, Y, Z[, ...])`` and float64 ``(4, 4)`` RAS+ mm.

    See :func:`load_nifti_with_header` for details and errors.
    """
    array, affine, _ = load_nifti_with_header(path, check_finite=check_finite)
    return array, affine


def _cast(array: np.ndarray, dtype: np.dtype, path: Path) -> np.ndarray:
    """Cast ``array`` to ``dtype``; integer targets are rounded and must be finite and in range."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        if array.size and not np.all(np.isfinite(array)):
            raise InputDataError(path, f"cannot store NaN / Inf values as {dtype.name}")
        if np.issubdtype(array.dtype, np.floating):
            array = np.rint(array)
        info = np.iinfo(dtype)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise InputDataError(
                path, f"values [{array.min()}, {array.max()}] do not fit {dtype.name} [{info.min}, {info.max}]"
            )
    return np.asarray(array).astype(dtype, copy=False)


def save_nifti(
    array: np.ndarray,
    affine: np.ndarray,
    path: str | PathLike,
    *,
    dtype: np.dtype | type = np.float32,
    overwrite: bool = True,
    reference_header: nib.Nifti1Header | None = None,
) -> Path:
    """Write ``array`` with ``affine`` to ``path`` (``.nii`` or ``.nii.gz``) atomically.

    Args:
        array: ``(X, Y, Z[, ...])`` data, e.g. HU or SUV.
        affine: ``(4, 4)`` voxel -> RAS+ mm; stored in both sform and qform (code 1, scanner) so every reader agrees;
            the sform keeps it exactly up to float32 precision (the qform cannot hold shears).
        path: destination; parent folders are created.
        dtype: on-disk data type; integer types round and range-check the values.
        overwrite: if false, an existing ``path`` raises :class:`InputDataError`.
        reference_header: optional header (e.g. from :func:`load_nifti_with_header`) whose descriptive fields are
            kept; its dims, data type, scaling and transforms are replaced by those of ``array`` / ``affine``.

    Returns:
        The written path.
    """
    path = Path(path)
    suffix = nifti_suffix(path)
    if not suffix:
        raise InputDataError(path, f"output must end with one of {NIFTI_SUFFIXES}")
    if path.exists() and not overwrite:
        raise InputDataError(path, "output exists and overwrite=False")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise InputDataError(path, f"affine must be a finite 4x4 matrix, got shape {affine.shape}")
    array = np.asarray(array)
    if array.ndim < 1 or array.ndim > 7:
        raise InputDataError(path, f"NIfTI holds 1 to 7 dimensions, got array of shape {array.shape}")
    data = _cast(array, np.dtype(dtype), path)

    header = None if reference_header is None else reference_header.copy()
    img = nib.Nifti1Image(data, affine, header=header)
    img.set_data_dtype(data.dtype)
    img.header.set_slope_inter(1.0, 0.0)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    img.header.set_xyzt_units(xyz="mm", t="sec")

    ensure_writable_dir(path.parent)
    tmp = temp_path(path, suffix)
    try:
        nib.save(img, str(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path
