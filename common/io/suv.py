"""Body-weight standardised uptake value (SUVbw) for PET.

``SUV = C * weight_g / D(t_ref)`` with ``C`` the activity concentration in Bq/mL (tissue density 1 g/mL assumed),
``weight_g`` the patient weight in grams and ``D(t_ref)`` the injected activity in Bq decayed to the time the image
values refer to. For DICOM ``DecayCorrection = START`` the image is decay-corrected to the series reference time, so
``D = dose * 2 ** (-dt / half_life)`` with ``dt = t_series - t_injection`` in seconds.

Choices (stated because vendors differ):

- Reference time: ``SeriesDate`` + ``SeriesTime``. DICOM PS3.3 C.8.9.1.1 defines the series date/time as the
  reference for all temporally related PET attributes, while ``AcquisitionTime`` changes per bed position and
  would give a different factor per slice. ``AcquisitionDate/Time`` is only a fallback when the series tags are
  absent (the earliest one over the series in :func:`read_pet_suv`). When the series time is *later* than the
  earliest acquisition time the series was probably re-processed (e.g. GE) and its time no longer marks the
  acquisition start: :func:`read_pet_suv` refuses it rather than under-estimating SUV.
- Injection time: ``RadiopharmaceuticalStartDateTime`` if present (full date + time, so crossing midnight works);
  otherwise ``RadiopharmaceuticalStartTime`` on the series date. Without a date no midnight crossing is assumed:
  an injection "after" the scan is an error.
- ``DecayCorrection``: ``START`` decays the dose to the reference time; ``ADMIN`` (image already corrected to the
  injection time) uses the dose as is; ``NONE`` is refused (each frame would need its own decay to its acquisition
  time, and the stored values are not comparable across bed positions).
- ``Units``: ``BQML`` is converted; ``GML`` means the values are already SUVbw (factor 1); ``CNTS`` (Philips
  counts, needs a private activity scale factor) and any other unit are refused.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from os import PathLike
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from ..errors import InputDataError
from .dicom import DicomVolume, read_dicom_series
from .nifti import load_nifti

__all__ = [
    "CSV_COLUMNS",
    "F18_HALF_LIFE_S",
    "load_pet_suv_nifti",
    "pet_reference_datetime",
    "read_pet_suv",
    "suv_factor",
    "suv_factor_from_csv_row",
    "suv_factor_from_dicom",
]

F18_HALF_LIFE_S = 6586.2
"""Half-life of fluorine-18 in seconds (109.77 min), for reference; never used as a silent default."""

CSV_COLUMNS = {
    "weight_kg": "patient weight in kilograms",
    "injected_activity_bq": "injected activity in becquerel (or injected_activity_mbq in MBq)",
    "time_delta_s": "seconds from injection to the time the image is decay-corrected to (scan start)",
    "half_life_s": "radionuclide half-life in seconds (F-18: 6586.2)",
}
"""Columns read by :func:`suv_factor_from_csv_row` and their units."""

_MAX_WEIGHT_KG = 500.0


# ---------------------------------------------------------------------------------------------------- the formula


def suv_factor(weight_kg: float, dose_bq: float, half_life_s: float, delay_s: float, *, decay: bool = True) -> float:
    """Factor ``f`` so that ``SUVbw = C[Bq/mL] * f`` = ``weight_g / (dose_bq * 2 ** (-delay_s / half_life_s))``.

    With ``decay=False`` (image decay-corrected to the injection time) the dose is not decayed.
    Arguments are assumed validated by the callers (positive, finite).
    """
    decayed = dose_bq * 2.0 ** (-delay_s / half_life_s) if decay else dose_bq
    return weight_kg * 1000.0 / decayed


# ----------------------------------------------------------------------------------------------- DICOM date/time


_TM = re.compile(r"^(\d{2})(?::?(\d{2})(?::?(\d{2})(?:\.(\d{1,6}))?)?)?$")
_DT = re.compile(r"^(\d{8})(\d{2}(?:\d{2}(?:\d{2}(?:\.\d{1,6})?)?)?)?([+-]\d{4})?$")


def _parse_date(value: str, path: str | PathLike, keyword: str) -> tuple[int, int, int]:
    text = value.strip().replace(".", "").replace("-", "")
    if not re.fullmatch(r"\d{8}", text):
        raise InputDataError(path, f"DICOM tag {keyword} is not a date YYYYMMDD: {value!r}")
    return int(text[:4]), int(text[4:6]), int(text[6:8])


def _parse_time(value: str, path: str | PathLike, keyword: str) -> tuple[int, int, int, int]:
    """``HHMMSS.FFFFFF`` (also ``HHMM``, ``HH``, legacy ``HH:MM:SS``) -> (h, m, s, microseconds)."""
    match = _TM.match(value.strip())
    if not match:
        raise InputDataError(path, f"DICOM tag {keyword} is not a time HHMMSS.FFFFFF: {value!r}")
    hour, minute, second, frac = match.groups()
    micro = int((frac or "0").ljust(6, "0"))
    h, m, s = int(hour), int(minute or 0), int(second or 0)
    if h > 23 or m > 59 or s > 60:
        raise InputDataError(path, f"DICOM tag {keyword} is not a valid time: {value!r}")
    return h, m, min(s, 59), micro


def _combine(date_value: str, time_value: str, path: str | PathLike, date_kw: str, time_kw: str) -> datetime:
    year, month, day = _parse_date(date_value, path, date_kw)
    h, m, s, micro = _parse_time(time_value, path, time_kw)
    try:
        return datetime(year, month, day, h, m, s, micro)
    except ValueError as exc:
        raise InputDataError(path, f"DICOM tags {date_kw}/{time_kw} are not a valid date/time: {exc}") from exc


def _parse_datetime(value: str, path: str | PathLike, keyword: str) -> datetime:
    """DICOM DT ``YYYYMMDDHHMMSS.FFFFFF&ZZXX`` (time parts optional) -> datetime (aware if an offset is given)."""
    match = _DT.match(value.strip())
    if not match:
        raise InputDataError(path, f"DICOM tag {keyword} is not a date-time YYYYMMDDHHMMSS.FFFFFF: {value!r}")
    date_part, time_part, offset = match.groups()
    result = _combine(date_part, time_part or "00", path, keyword, keyword)
    if offset:
        sign = 1 if offset[0] == "+" else -1
        delta = timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5]))
        result = result.replace(tzinfo=timezone(sign * delta))
    return result


def _text(ds: Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def pet_reference_datetime(ds: Dataset, source: str | PathLike) -> tuple[datetime, str]:
    """Time the PET values refer to: ``SeriesDate/SeriesTime``, else ``AcquisitionDate/AcquisitionTime``.

    Returns ``(datetime, "SeriesTime" | "AcquisitionTime")``; raises :class:`InputDataError` if neither is usable.
    """
    for date_kw, time_kw in (("SeriesDate", "SeriesTime"), ("AcquisitionDate", "AcquisitionTime")):
        date_value, time_value = _text(ds, date_kw), _text(ds, time_kw)
        if date_value and time_value:
            return _combine(date_value, time_value, source, date_kw, time_kw), time_kw
    if _text(ds, "AcquisitionDateTime"):
        return _parse_datetime(_text(ds, "AcquisitionDateTime"), source, "AcquisitionDateTime"), "AcquisitionDateTime"
    missing = "SeriesDate" if not _text(ds, "SeriesDate") else "SeriesTime"
    raise InputDataError(source, f"missing DICOM tag {missing} (and no AcquisitionDate/AcquisitionTime fallback)")


def _injection_datetime(info: Dataset, source: str | PathLike, reference: datetime) -> datetime:
    start_dt = _text(info, "RadiopharmaceuticalStartDateTime")
    if start_dt:
        return _parse_datetime(start_dt, source, "RadiopharmaceuticalStartDateTime")
    start_tm = _text(info, "RadiopharmaceuticalStartTime")
    if not start_tm:
        raise InputDataError(
            source, "missing DICOM tag RadiopharmaceuticalStartDateTime / RadiopharmaceuticalStartTime (injection time)"
        )
    h, m, s, micro = _parse_time(start_tm, source, "RadiopharmaceuticalStartTime")
    # No date: assume the injection happened on the reference (series) date; midnight crossing cannot be known.
    return datetime(reference.year, reference.month, reference.day, h, m, s, micro, tzinfo=reference.tzinfo)


def _seconds_between(later: datetime, earlier: datetime) -> float:
    if (later.tzinfo is None) != (earlier.tzinfo is None):  # one zone unknown: assume both are scanner-local time
        later, earlier = later.replace(tzinfo=None), earlier.replace(tzinfo=None)
    return (later - earlier).total_seconds()


def _positive(value: object, source: str | PathLike, keyword: str, unit: str) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InputDataError(source, f"missing DICOM tag {keyword} ({unit})")
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise InputDataError(source, f"DICOM tag {keyword} is not numeric: {value!r}") from exc
    if not math.isfinite(number) or number <= 0:
        raise InputDataError(source, f"DICOM tag {keyword} must be positive ({unit}), got {number}")
    return number


# ------------------------------------------------------------------------------------------------------ DICOM route


def suv_factor_from_dicom(ds: Dataset, source: str | PathLike, *, reference_datetime: datetime | None = None) -> float:
    """Factor so that ``SUVbw = value_in_Bq_per_mL * factor`` for a PET slice header.

    Args:
        ds: PET image header (``Modality`` PT) with PatientWeight [kg], Units, DecayCorrection and
            RadiopharmaceuticalInformationSequence[0] (RadionuclideTotalDose [Bq], RadionuclideHalfLife [s],
            RadiopharmaceuticalStartDateTime or RadiopharmaceuticalStartTime).
        source: the file, used in error messages.
        reference_datetime: overrides the reference (series) time, see :func:`pet_reference_datetime`.

    Returns:
        ``weight_g / (dose_Bq * 2 ** (-dt / half_life_s))`` (``START``), ``weight_g / dose_Bq`` (``ADMIN``), or 1.0
        for ``Units`` GML (values already SUVbw); in g/Bq, i.e. SUV per Bq/mL with tissue density 1 g/mL.

    Raises:
        InputDataError: naming ``source`` and the DICOM keyword of any missing or inconsistent tag.
    """
    units = _text(ds, "Units")
    if units is None:
        raise InputDataError(source, "missing DICOM tag Units (0054,1001): cannot tell Bq/mL from counts")
    units = units.upper()
    if units == "GML":
        return 1.0
    if units == "CNTS":
        raise InputDataError(
            source, "DICOM tag Units is CNTS (counts): needs the vendor's private activity scale factor, not supported"
        )
    if units != "BQML":
        raise InputDataError(source, f"DICOM tag Units is {units!r}: only BQML (Bq/mL) or GML (SUVbw) are supported")

    weight_kg = _positive(ds.get("PatientWeight"), source, "PatientWeight", "kg")
    if weight_kg > _MAX_WEIGHT_KG:
        raise InputDataError(source, f"DICOM tag PatientWeight is {weight_kg} kg: implausible (grams instead of kg?)")
    sequence = ds.get("RadiopharmaceuticalInformationSequence")
    if not sequence:
        raise InputDataError(source, "missing DICOM tag RadiopharmaceuticalInformationSequence")
    info = sequence[0]
    dose_bq = _positive(info.get("RadionuclideTotalDose"), source, "RadionuclideTotalDose", "Bq")
    half_life_s = _positive(info.get("RadionuclideHalfLife"), source, "RadionuclideHalfLife", "s")

    decay_correction = (_text(ds, "DecayCorrection") or "").upper()
    if decay_correction == "ADMIN":
        return suv_factor(weight_kg, dose_bq, half_life_s, 0.0, decay=False)
    if decay_correction == "NONE":
        raise InputDataError(
            source, "DICOM tag DecayCorrection is NONE: images not decay-corrected; per-frame correction not supported"
        )
    if decay_correction != "START":
        raise InputDataError(
            source, f"DICOM tag DecayCorrection is {decay_correction or 'missing'!r}: expected START or ADMIN"
        )

    if reference_datetime is None:
        reference_datetime, reference_kw = pet_reference_datetime(ds, source)
    else:
        reference_kw = "reference time (SeriesTime or earliest AcquisitionTime)"
    injection = _injection_datetime(info, source, reference_datetime)
    delay_s = _seconds_between(reference_datetime, injection)
    if delay_s < 0:
        start_kw = (
            "RadiopharmaceuticalStartDateTime"
            if _text(info, "RadiopharmaceuticalStartDateTime")
            else "RadiopharmaceuticalStartTime"
        )
        raise InputDataError(
            source,
            f"DICOM tag {start_kw} ({injection.isoformat()}) is {-delay_s:.1f} s after the scan start {reference_kw} "
            f"({reference_datetime.isoformat()})",
        )
    return suv_factor(weight_kg, dose_bq, half_life_s, delay_s)


def _earliest_acquisition(volume: DicomVolume) -> tuple[datetime, Path] | None:
    earliest: tuple[datetime, Path] | None = None
    for path, ds in zip(volume.files, volume.datasets, strict=True):
        date_value, time_value = _text(ds, "AcquisitionDate"), _text(ds, "AcquisitionTime")
        if not (date_value and time_value):
            continue
        when = _combine(date_value, time_value, path, "AcquisitionDate", "AcquisitionTime")
        if earliest is None or when < earliest[0]:
            earliest = (when, path)
    return earliest


def read_pet_suv(
    source: str | PathLike | list[str | PathLike], *, series_uid: str | None = None, tolerance_s: float = 1.0
) -> DicomVolume:
    """Read a PET series (``Modality`` PT) and convert it to body-weight SUV.

    Returns:
        :class:`DicomVolume` with ``array`` float32 ``(X, Y, Z)`` in SUVbw and ``units == "SUVbw"``.

    Raises:
        InputDataError: see :func:`suv_factor_from_dicom`; also when slices disagree on the SUV factor, or when
            ``SeriesTime`` is later than the earliest ``AcquisitionTime`` by more than ``tolerance_s`` (re-processed
            series: the series time is then not the decay-correction reference).
    """
    volume = read_dicom_series(source, series_uid=series_uid, require_rescale=True)
    for path, ds in zip(volume.files, volume.datasets, strict=True):
        if ds.get("Modality") != "PT":
            raise InputDataError(path, f"DICOM tag Modality is {ds.get('Modality')!r}, expected 'PT'")

    first_path, first = volume.files[0], volume.datasets[0]
    reference: datetime | None = None
    if (_text(first, "Units") or "").upper() == "BQML" and (_text(first, "DecayCorrection") or "").upper() == "START":
        earliest = _earliest_acquisition(volume)
        if _text(first, "SeriesDate") and _text(first, "SeriesTime"):
            reference, _ = pet_reference_datetime(first, first_path)
            if earliest is not None and (reference - earliest[0]).total_seconds() > tolerance_s:
                raise InputDataError(
                    first_path,
                    f"DICOM tag SeriesTime ({reference.time()}) is later than AcquisitionTime ({earliest[0].time()}) "
                    f"of {earliest[1].name}: series re-processed? Its time is not the decay-correction reference",
                )
        elif earliest is not None:
            reference = earliest[0]

    factors = [
        suv_factor_from_dicom(ds, path, reference_datetime=reference)
        for path, ds in zip(volume.files, volume.datasets, strict=True)
    ]
    for path, factor in zip(volume.files, factors, strict=True):
        if not math.isclose(factor, factors[0], rel_tol=1e-6):
            raise InputDataError(path, f"SUV factor {factor:.6g} differs from {factors[0]:.6g} of {first_path}")
    volume.array = (volume.array.astype(np.float64) * factors[0]).astype(np.float32)
    volume.units = "SUVbw"
    volume.suv_factor = float(factors[0])
    return volume


# ------------------------------------------------------------------------------------------------ NIfTI + CSV route


def _csv_number(row: Mapping[str, object], column: str, source: str | PathLike) -> float:
    if column not in row:
        raise InputDataError(source, f"missing column {column!r} ({CSV_COLUMNS.get(column, '')})")
    value = row[column]
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise InputDataError(source, f"column {column!r}: not a number: {value!r}") from exc
    if not math.isfinite(number):
        raise InputDataError(source, f"column {column!r}: not finite: {value!r}")
    return number


def suv_factor_from_csv_row(row: Mapping[str, object], source: str | PathLike) -> float:
    """SUV factor from a metadata row (see :data:`CSV_COLUMNS`), image assumed in Bq/mL decay-corrected to scan start.

    Columns: ``weight_kg`` [kg] > 0; ``injected_activity_bq`` [Bq] or ``injected_activity_mbq`` [MBq] > 0 (if both
    are given they must agree within 0.1 %); ``time_delta_s`` [s] >= 0 from injection to scan start;
    ``half_life_s`` [s] > 0 (no default: a missing column is an error).

    Returns:
        ``weight_kg * 1000 / (activity_bq * 2 ** (-time_delta_s / half_life_s))``.
    """
    weight_kg = _csv_number(row, "weight_kg", source)
    if "injected_activity_bq" in row:
        dose_bq = _csv_number(row, "injected_activity_bq", source)
        if "injected_activity_mbq" in row:
            dose_mbq = _csv_number(row, "injected_activity_mbq", source)
            if not math.isclose(dose_mbq * 1e6, dose_bq, rel_tol=1e-3):
                raise InputDataError(
                    source,
                    f"columns 'injected_activity_bq' ({dose_bq}) and 'injected_activity_mbq' ({dose_mbq}) differ",
                )
    elif "injected_activity_mbq" in row:
        dose_bq = _csv_number(row, "injected_activity_mbq", source) * 1e6
    else:
        raise InputDataError(source, "missing column 'injected_activity_bq' (or 'injected_activity_mbq')")
    delay_s = _csv_number(row, "time_delta_s", source)
    half_life_s = _csv_number(row, "half_life_s", source)
    for column, value in (("weight_kg", weight_kg), ("injected_activity", dose_bq), ("half_life_s", half_life_s)):
        if value <= 0:
            raise InputDataError(source, f"column {column!r} must be positive, got {value}")
    if weight_kg > _MAX_WEIGHT_KG:
        raise InputDataError(source, f"column 'weight_kg' is {weight_kg}: implausible (grams instead of kg?)")
    if delay_s < 0:
        raise InputDataError(source, f"column 'time_delta_s' must be >= 0 (injection before scan), got {delay_s}")
    return suv_factor(weight_kg, dose_bq, half_life_s, delay_s)


def _nifti_stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def load_pet_suv_nifti(
    nifti_path: str | PathLike,
    csv_path: str | PathLike,
    subject_id: str | None = None,
    id_column: str = "subject",
) -> tuple[np.ndarray, np.ndarray]:
    """Load a PET NIfTI in Bq/mL and convert it to SUVbw with the subject's row of a metadata CSV.

    Args:
        nifti_path: PET image, Bq/mL, decay-corrected to scan start.
        csv_path: comma-separated file with a header row holding ``id_column`` and the :data:`CSV_COLUMNS`.
        subject_id: value of ``id_column`` to use; default: the NIfTI file name without ``.nii`` / ``.nii.gz``.
        id_column: name of the subject id column.

    Returns:
        ``(suv, affine)``: float32 ``(X, Y, Z)`` SUVbw and the ``(4, 4)`` RAS affine.

    Raises:
        InputDataError: naming the CSV file and column (missing column / subject / non-numeric value) or the NIfTI.
    """
    nifti_path, csv_path = Path(nifti_path), Path(csv_path)
    if not csv_path.is_file():
        raise InputDataError(csv_path, "metadata CSV not found")
    subject = subject_id if subject_id is not None else _nifti_stem(nifti_path)
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            fieldnames = [name.strip() for name in reader.fieldnames or []]
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputDataError(csv_path, f"cannot read CSV: {exc}") from exc
    if id_column not in fieldnames:
        raise InputDataError(csv_path, f"missing column {id_column!r} (subject id); columns are {fieldnames}")
    matches = [row for row in rows if row.get(id_column) == subject]
    if not matches:
        ids = [row.get(id_column) for row in rows]
        shown = ", ".join(map(str, ids[:10])) + (" ..." if len(ids) > 10 else "")
        raise InputDataError(csv_path, f"no row with {id_column}={subject!r} (ids: {shown})")
    if len(matches) > 1:
        raise InputDataError(csv_path, f"{len(matches)} rows with {id_column}={subject!r}")
    factor = suv_factor_from_csv_row(matches[0], f"{csv_path} ({id_column}={subject})")
    array, affine = load_nifti(nifti_path, check_finite=True)
    return (array.astype(np.float64) * factor).astype(np.float32), affine
