"""DICOM series reading into ``(X, Y, Z)`` volumes with a RAS affine.

Geometry (DICOM PS3.3 C.7.6.2): a pixel at row ``r``, column ``c`` of a slice lies at
``ImagePositionPatient + c * PixelSpacing[1] * F_row + r * PixelSpacing[0] * F_col`` in LPS mm, where
``ImageOrientationPatient = F_row + F_col``. Our arrays index ``(x, y, z) = (column, row, slice)`` -- the
transpose of pydicom's ``pixel_array`` ``(rows, columns)`` -- with slices sorted along ``n = F_row x F_col``.
The affine is converted to RAS (first two rows negated), which is what nibabel reports for the same volume saved
as NIfTI by SimpleITK / dcm2niix.

Intensities are in modality units: ``stored * RescaleSlope + RescaleIntercept`` per slice (HU for CT; the
``Units`` tag, typically Bq/mL, for PET).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from ..errors import InputDataError

__all__ = ["DicomVolume", "lps_to_ras", "read_ct_hu", "read_dicom_series"]

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
_ORIENTATION_TOL = 1e-4  # direction cosines: equality between slices
_ORTHONORMAL_TOL = 1e-3  # direction cosines: unit length and orthogonality
_NOT_DICOM_NAMES = {"dicomdir"}


@dataclass
class DicomVolume:
    """A DICOM series as a volume.

    Attributes:
        array: float32 ``(X, Y, Z)`` in modality units (CT: HU; PET: ``units``; after :func:`read_pet_suv`: SUVbw).
        affine: float64 ``(4, 4)`` voxel -> RAS+ mm (NIfTI / nibabel convention).
        spacing: ``(sx, sy, sz)`` in mm (column spacing, row spacing, distance between slice centres).
        modality: DICOM ``Modality`` (``"CT"``, ``"PT"``, ...).
        units: intensity units: ``"HU"`` for CT, the ``Units`` tag for PET (e.g. ``"BQML"``), ``"SUVbw"`` after SUV
            conversion, else ``RescaleType`` or ``""``.
        datasets: the slice headers in the sorted order (pixel data not loaded).
        files: the slice files in the sorted order.
        suv_factor: SUVbw = value in ``Units`` x ``suv_factor`` (set by :func:`read_pet_suv`), else None.
    """

    array: np.ndarray = field(repr=False)
    affine: np.ndarray
    spacing: tuple[float, float, float]
    modality: str
    units: str
    datasets: list[Dataset] = field(repr=False)
    files: list[Path] = field(repr=False)
    suv_factor: float | None = None

    @property
    def series_instance_uid(self) -> str:
        """``SeriesInstanceUID`` of the series."""
        return str(self.datasets[0].get("SeriesInstanceUID", ""))

    @property
    def shape(self) -> tuple[int, ...]:
        """Array shape ``(X, Y, Z)``."""
        return tuple(self.array.shape)


def lps_to_ras(affine_lps: np.ndarray) -> np.ndarray:
    """Convert a 4x4 voxel -> LPS affine (DICOM / ITK) to voxel -> RAS (NIfTI) by negating its first two rows."""
    return _LPS_TO_RAS @ np.asarray(affine_lps, dtype=np.float64)


# ----------------------------------------------------------------------------------------------------- file reading


def _looks_like_raw_dataset(path: Path) -> bool:
    """True if a file without the 128-byte preamble + ``DICM`` starts like a DICOM data set (e.g. Siemens ``.IMA``).

    Checks that the first tag is in group 0x0002 or 0x0008 (little endian), as written by such scanners.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError:
        return False
    return len(head) == 4 and head[1] == 0 and head[0] in (0x02, 0x08)


def _read_header(path: Path, *, strict: bool) -> Dataset | None:
    """Read a DICOM header (no pixel data). Returns ``None`` for non-DICOM files unless ``strict``."""
    if path.name.lower() in _NOT_DICOM_NAMES and not strict:
        return None
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except InvalidDicomError:
        pass  # no preamble: maybe a raw data set (.IMA files)
    except Exception as exc:  # noqa: BLE001 - any parser failure means a corrupt file
        raise InputDataError(path, f"corrupt DICOM file: {type(exc).__name__}: {exc}") from exc
    if not _looks_like_raw_dataset(path):
        if strict:
            raise InputDataError(path, "not a DICOM file (no 'DICM' preamble and no DICOM data set at the start)")
        return None
    try:
        return pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception as exc:  # noqa: BLE001
        raise InputDataError(path, f"corrupt DICOM file (no preamble): {type(exc).__name__}: {exc}") from exc


def _is_image(ds: Dataset) -> bool:
    """True for data sets that hold a single-frame image (not DICOMDIR, SR, RTSTRUCT, ...)."""
    sop_class = str(ds.get("SOPClassUID", getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "")))
    return sop_class != _DICOMDIR_SOP_CLASS and "Rows" in ds and "Columns" in ds


def _list_source(source: str | PathLike | Iterable[str | PathLike]) -> tuple[list[Path], bool]:
    """Files to consider and whether non-DICOM files are errors (explicit list) or skipped (folder)."""
    if isinstance(source, str | PathLike):
        folder = Path(source)
        if not folder.exists():
            raise InputDataError(folder, "DICOM folder or file not found")
        if folder.is_file():
            return [folder], True
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        if not files:
            raise InputDataError(folder, "folder contains no files")
        return files, False
    files = [Path(p) for p in source]
    if not files:
        raise InputDataError(None, "empty list of DICOM files")
    for path in files:
        if not path.is_file():
            raise InputDataError(path, "DICOM file not found")
    return files, True


def _select_series(
    headers: list[tuple[Path, Dataset]], series_uid: str | None, source_name: str
) -> list[tuple[Path, Dataset]]:
    """Keep the slices of one SeriesInstanceUID (required when several are present)."""
    by_uid: dict[str, list[tuple[Path, Dataset]]] = {}
    for path, ds in headers:
        uid = ds.get("SeriesInstanceUID")
        if uid is None:
            raise InputDataError(path, "missing DICOM tag SeriesInstanceUID (0020,000E)")
        by_uid.setdefault(str(uid), []).append((path, ds))

    def describe() -> str:
        lines = []
        for uid, items in by_uid.items():
            ds = items[0][1]
            desc = ds.get("SeriesDescription", "")
            lines.append(f"  {uid}: Modality={ds.get('Modality', '?')}, {len(items)} file(s), description={desc!r}")
        return "\n".join(lines)

    if series_uid is not None:
        if series_uid not in by_uid:
            raise InputDataError(source_name, f"series_uid {series_uid!r} not found; series present:\n{describe()}")
        return by_uid[series_uid]
    if len(by_uid) > 1:
        raise InputDataError(
            source_name,
            f"{len(by_uid)} DICOM series (SeriesInstanceUID) found; pass series_uid=... to choose one:\n{describe()}",
        )
    return next(iter(by_uid.values()))


# ------------------------------------------------------------------------------------------------------ geometry


def _float_list(ds: Dataset, keyword: str, count: int, path: Path) -> np.ndarray:
    value = ds.get(keyword)
    if value is None:
        raise InputDataError(path, f"missing DICOM tag {keyword}")
    try:
        values = np.array([float(v) for v in (value if isinstance(value, Sequence | np.ndarray) else [value])])
    except (TypeError, ValueError) as exc:
        raise InputDataError(path, f"DICOM tag {keyword} is not numeric: {value!r}") from exc
    if values.shape != (count,) or not np.all(np.isfinite(values)):
        raise InputDataError(path, f"DICOM tag {keyword} must hold {count} finite numbers, got {value!r}")
    return values


def _check_slices_consistent(items: list[tuple[Path, Dataset]]) -> tuple[np.ndarray, np.ndarray]:
    """Check Rows/Columns/orientation/spacing/modality agree; return (orientation (6,), pixel spacing (2,))."""
    path0, ds0 = items[0]
    orientation = _float_list(ds0, "ImageOrientationPatient", 6, path0)
    f_row, f_col = orientation[:3], orientation[3:]
    if (
        abs(np.linalg.norm(f_row) - 1) > _ORTHONORMAL_TOL
        or abs(np.linalg.norm(f_col) - 1) > _ORTHONORMAL_TOL
        or abs(float(f_row @ f_col)) > _ORTHONORMAL_TOL
    ):
        raise InputDataError(path0, f"ImageOrientationPatient is not two orthonormal vectors: {orientation.tolist()}")
    pixel_spacing = _float_list(ds0, "PixelSpacing", 2, path0)
    if np.any(pixel_spacing <= 0):
        raise InputDataError(path0, f"PixelSpacing must be positive, got {pixel_spacing.tolist()}")
    for path, ds in items:
        if int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise InputDataError(path, "multi-frame (enhanced) DICOM is not supported: NumberOfFrames > 1")
        if int(ds.get("SamplesPerPixel", 1)) != 1:
            raise InputDataError(path, f"SamplesPerPixel={ds.SamplesPerPixel}: only greyscale images are supported")
        for keyword in ("Rows", "Columns", "Modality"):
            if ds.get(keyword) != ds0.get(keyword):
                raise InputDataError(
                    path, f"{keyword}={ds.get(keyword)!r} differs from {keyword}={ds0.get(keyword)!r} of {path0}"
                )
        if path is path0:
            continue
        if not np.allclose(_float_list(ds, "ImageOrientationPatient", 6, path), orientation, atol=_ORIENTATION_TOL):
            raise InputDataError(
                path, f"ImageOrientationPatient {list(ds.ImageOrientationPatient)} differs from that of {path0}"
            )
        if not np.allclose(_float_list(ds, "PixelSpacing", 2, path), pixel_spacing, rtol=1e-4, atol=1e-5):
            raise InputDataError(
                path, f"PixelSpacing {list(ds.PixelSpacing)} differs from {pixel_spacing.tolist()} of {path0}"
            )
    return orientation, pixel_spacing


def _sort_and_step(
    items: list[tuple[Path, Dataset]],
    normal: np.ndarray,
    *,
    spacing_rtol: float,
    spacing_atol_mm: float,
    allow_tilt: bool,
) -> tuple[list[tuple[Path, Dataset]], np.ndarray]:
    """Sort slices along ``normal``; check uniform spacing; return sorted items and the LPS step between slices."""
    positions = {id(ds): _float_list(ds, "ImagePositionPatient", 3, path) for path, ds in items}
    order = sorted(
        items, key=lambda it: (float(normal @ positions[id(it[1])]), int(it[1].get("InstanceNumber", 0) or 0))
    )
    ipp = np.stack([positions[id(ds)] for _, ds in order])
    if len(order) == 1:
        ds = order[0][1]
        thickness = float(ds.get("SpacingBetweenSlices", 0) or ds.get("SliceThickness", 0) or 1.0)
        return order, normal * thickness

    along = ipp @ normal
    gaps = np.diff(along)
    median = float(np.median(gaps))
    tol = max(spacing_atol_mm, spacing_rtol * abs(median))
    for k, gap in enumerate(gaps):
        if gap <= tol:
            raise InputDataError(
                order[k + 1][0],
                f"same slice position as {order[k][0]} (gap {gap:.4g} mm along the slice normal): several "
                "acquisitions / echoes / time points in one series? Pass the files of one volume explicitly",
            )
    bad = np.flatnonzero(np.abs(gaps - median) > tol)
    if bad.size:
        k = int(bad[0])
        raise InputDataError(
            order[k + 1][0],
            f"non-uniform slice spacing: {gaps[k]:.4g} mm from {order[k][0].name} while the median is {median:.4g} mm "
            f"(tolerance {tol:.3g} mm); missing slice?",
        )
    step = (ipp[-1] - ipp[0]) / (len(order) - 1)
    residual = ipp - (ipp[0] + np.outer(np.arange(len(order)), step))
    worst = int(np.argmax(np.linalg.norm(residual, axis=1)))
    if np.linalg.norm(residual[worst]) > tol:
        raise InputDataError(
            order[worst][0], "ImagePositionPatient not on the line through the first and last slices (jittered stack)"
        )
    in_plane = step - (step @ normal) * normal
    tilt_deg = float(np.degrees(np.arctan2(np.linalg.norm(in_plane), step @ normal)))
    if np.linalg.norm(in_plane) > tol and not allow_tilt:
        raise InputDataError(
            order[0][0],
            f"slices are sheared by {tilt_deg:.2f} deg (gantry tilt); pass allow_tilt=True for a sheared affine",
        )
    return order, step


# ------------------------------------------------------------------------------------------------------ pixel data


def _rescale(ds: Dataset, path: Path, require: bool) -> tuple[float, float]:
    if "ModalityLUTSequence" in ds:
        raise InputDataError(path, "ModalityLUTSequence is not supported (only RescaleSlope / RescaleIntercept)")
    if "RescaleSlope" not in ds or "RescaleIntercept" not in ds:
        if require:
            missing = "RescaleSlope" if "RescaleSlope" not in ds else "RescaleIntercept"
            raise InputDataError(path, f"missing DICOM tag {missing}: cannot convert stored values to modality units")
        return 1.0, 0.0
    try:
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    except (TypeError, ValueError) as exc:
        raise InputDataError(path, f"RescaleSlope / RescaleIntercept not numeric: {exc}") from exc
    if not (np.isfinite(slope) and np.isfinite(intercept)) or slope == 0:
        raise InputDataError(path, f"invalid RescaleSlope={slope} / RescaleIntercept={intercept}")
    return slope, intercept


def _set_transfer_syntax(ds: Dataset) -> None:
    """Files without file meta (raw ``.IMA`` data sets) lack the Transfer Syntax UID pydicom needs to decode pixels:
    derive it from the encoding the data set was parsed with (uncompressed by definition)."""
    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    implicit_vr, little_endian = getattr(ds, "original_encoding", (True, True))
    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    if implicit_vr:
        meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian if little_endian else ExplicitVRBigEndian


def _read_pixels(path: Path, expected: tuple[int, int]) -> np.ndarray:
    """Stored pixel values ``(Rows, Columns)`` of one file (no rescale)."""
    try:
        try:
            ds = pydicom.dcmread(path)
        except InvalidDicomError:
            ds = pydicom.dcmread(path, force=True)
            _set_transfer_syntax(ds)
        pixels = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - decoding failures (truncated data, missing codec) are input errors
        raise InputDataError(path, f"cannot decode pixel data: {type(exc).__name__}: {exc}") from exc
    if pixels.shape != expected:
        raise InputDataError(path, f"pixel data shape {pixels.shape} differs from (Rows, Columns) = {expected}")
    return pixels


def _units(ds: Dataset) -> str:
    modality = str(ds.get("Modality", ""))
    if modality == "CT":
        return "HU"
    if modality == "PT":
        return str(ds.get("Units", ""))
    return str(ds.get("RescaleType", ""))


def read_dicom_series(
    source: str | PathLike | Iterable[str | PathLike],
    *,
    series_uid: str | None = None,
    require_rescale: bool = False,
    spacing_rtol: float = 0.01,
    spacing_atol_mm: float = 0.01,
    allow_tilt: bool = False,
) -> DicomVolume:
    """Read one single-frame DICOM series into a volume.

    Args:
        source: a folder (every DICOM file in it, any name: ``.dcm``, ``.IMA``, no extension; non-DICOM files such
            as ``DICOMDIR`` or ``.txt`` and non-image objects are skipped) or a list of files (all must be images).
        series_uid: the ``SeriesInstanceUID`` to read when the folder holds several series (required then).
        require_rescale: if true, a slice without ``RescaleSlope`` / ``RescaleIntercept`` is an error; otherwise
            slope 1 and intercept 0 are assumed.
        spacing_rtol, spacing_atol_mm: allowed deviation of a slice gap from the median gap:
            ``max(spacing_atol_mm, spacing_rtol * median)`` mm.
        allow_tilt: accept stacks whose slice step is not along the slice normal (gantry tilt); the affine is then
            sheared. Rejected by default.

    Returns:
        :class:`DicomVolume` with ``array`` float32 ``(X, Y, Z)`` = ``(Columns, Rows, slices)`` in modality units.

    Raises:
        InputDataError: naming the file (and tag) for corrupt files, several series without ``series_uid``,
            inconsistent Rows/Columns/orientation/spacing, duplicate or non-uniform slice positions, missing tags.
    """
    files, strict = _list_source(source)
    source_name = str(source) if isinstance(source, str | PathLike) else f"{len(files)} DICOM files"
    headers: list[tuple[Path, Dataset]] = []
    for path in files:
        ds = _read_header(path, strict=strict)
        if ds is None:
            continue
        if not _is_image(ds):
            if strict:
                raise InputDataError(path, "DICOM object without image (no Rows / Columns, or a DICOMDIR)")
            continue
        headers.append((path, ds))
    if not headers:
        raise InputDataError(source_name, "no DICOM image files found")

    items = _select_series(headers, series_uid, source_name)
    orientation, pixel_spacing = _check_slices_consistent(items)
    f_row, f_col = orientation[:3], orientation[3:]
    normal = np.cross(f_row, f_col)
    normal /= np.linalg.norm(normal)
    items, step = _sort_and_step(
        items, normal, spacing_rtol=spacing_rtol, spacing_atol_mm=spacing_atol_mm, allow_tilt=allow_tilt
    )

    rows, cols = int(items[0][1].Rows), int(items[0][1].Columns)
    array = np.empty((cols, rows, len(items)), dtype=np.float32)
    for k, (path, ds) in enumerate(items):
        slope, intercept = _rescale(ds, path, require_rescale)
        stored = _read_pixels(path, (rows, cols)).astype(np.float64)
        array[:, :, k] = (stored * slope + intercept).T

    first_ipp = _float_list(items[0][1], "ImagePositionPatient", 3, items[0][0])
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = f_row * pixel_spacing[1]  # x = column index, steps along F_row by the column spacing
    affine_lps[:3, 1] = f_col * pixel_spacing[0]  # y = row index, steps along F_col by the row spacing
    affine_lps[:3, 2] = step
    affine_lps[:3, 3] = first_ipp
    ds0 = items[0][1]
    return DicomVolume(
        array=array,
        affine=lps_to_ras(affine_lps),
        spacing=(float(pixel_spacing[1]), float(pixel_spacing[0]), float(np.linalg.norm(step))),
        modality=str(ds0.get("Modality", "")),
        units=_units(ds0),
        datasets=[ds for _, ds in items],
        files=[path for path, _ in items],
    )


def read_ct_hu(source: str | PathLike | Iterable[str | PathLike], *, series_uid: str | None = None) -> DicomVolume:
    """Read a CT series in Hounsfield units (``stored * RescaleSlope + RescaleIntercept``, per slice).

    Raises:
        InputDataError: ``Modality`` is not ``CT`` or a slice lacks ``RescaleSlope`` / ``RescaleIntercept``
            (naming the file and tag), plus all errors of :func:`read_dicom_series`.
    """
    volume = read_dicom_series(source, series_uid=series_uid, require_rescale=True)
    for path, ds in zip(volume.files, volume.datasets, strict=True):
        if ds.get("Modality") != "CT":
            raise InputDataError(path, f"DICOM tag Modality is {ds.get('Modality')!r}, expected 'CT'")
    rescale_type = str(volume.datasets[0].get("RescaleType", "HU") or "HU")
    if rescale_type.upper() not in ("HU", "US"):
        raise InputDataError(volume.files[0], f"DICOM tag RescaleType is {rescale_type!r}, expected 'HU'")
    volume.units = "HU"
    return volume
