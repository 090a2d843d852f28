"""Tests of common.io: NIfTI round trip / atomic writes, DICOM series geometry against SimpleITK, SUV conversion."""

from __future__ import annotations

import csv
import gzip
import hashlib
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_factory import PET_TAGS, write_series

from common.errors import InputDataError
from common.io import (
    load_nifti,
    load_nifti_with_header,
    load_pet_suv_nifti,
    read_ct_hu,
    read_dicom_series,
    read_pet_suv,
    save_nifti,
    suv_factor_from_csv_row,
    suv_factor_from_dicom,
)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: _sha256(p) for p in sorted(folder.iterdir()) if p.is_file()}


def _asymmetric_stored(n_z: int = 4, rows: int = 6, cols: int = 8) -> np.ndarray:
    """Stored values (Z, Rows, Columns): every voxel distinct, so any flip / transpose changes the array."""
    z, r, c = np.meshgrid(np.arange(n_z), np.arange(rows), np.arange(cols), indexing="ij")
    return (100 * z + 10 * r + c).astype(np.int16)


def _sitk_ras_affine(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """SimpleITK/GDCM reading of the folder: (RAS affine, (X, Y, Z) array in modality units)."""
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    direction = np.array(image.GetDirection()).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction @ np.diag(image.GetSpacing())
    lps[:3, 3] = image.GetOrigin()
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
    return ras, sitk.GetArrayFromImage(image).transpose(2, 1, 0)


# ------------------------------------------------------------------------------------------------------------ NIfTI


def test_nifti_round_trip_preserves_values_and_affine(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(size=(5, 4, 3)).astype(np.float32) * 1000
    affine = np.array([[-0.7, 0.1, 0, 12.5], [0.05, 0.8, 0, -20.25], [0, 0, 2.5, 33.0], [0, 0, 0, 1]])
    out = save_nifti(data, affine, tmp_path / "sub" / "img.nii.gz")
    assert out == tmp_path / "sub" / "img.nii.gz"
    assert sorted(p.name for p in out.parent.iterdir()) == ["img.nii.gz"]  # no temp file left behind

    array, loaded_affine = load_nifti(out)
    assert array.dtype == np.float32 and array.shape == (5, 4, 3)
    np.testing.assert_array_equal(array, data)
    np.testing.assert_allclose(loaded_affine, affine, atol=1e-5)
    img = nib.load(str(out))
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    np.testing.assert_allclose(img.header.get_sform(), affine, atol=1e-5)

    # integer output is rounded; reference header is reused without its scaling
    _, _, header = load_nifti_with_header(out)
    labels = save_nifti(data.clip(-3, 3) + 3.4, affine, tmp_path / "lab.nii", dtype=np.uint8, reference_header=header)
    assert nib.load(str(labels)).get_data_dtype() == np.uint8
    np.testing.assert_array_equal(load_nifti(labels)[0], np.rint(data.clip(-3, 3) + 3.4))


def test_save_nifti_refuses_overwrite_and_bad_suffix(tmp_path: Path) -> None:
    target = tmp_path / "x.nii"
    save_nifti(np.zeros((2, 2, 2)), np.eye(4), target)
    before = _sha256(target)
    with pytest.raises(InputDataError, match="overwrite=False") as info:
        save_nifti(np.ones((2, 2, 2)), np.eye(4), target, overwrite=False)
    assert str(target) in str(info.value)
    assert _sha256(target) == before
    with pytest.raises(InputDataError, match=r"\.nii"):
        save_nifti(np.ones((2, 2, 2)), np.eye(4), tmp_path / "x.png")
    with pytest.raises(InputDataError, match="do not fit"):
        save_nifti(np.full((2, 2, 2), 300.0), np.eye(4), tmp_path / "y.nii", dtype=np.uint8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.nii"]  # failed writes leave nothing behind


def test_load_nifti_errors_name_the_file_and_do_not_touch_input(tmp_path: Path) -> None:
    missing = tmp_path / "missing.nii.gz"
    with pytest.raises(InputDataError, match="not found") as info:
        load_nifti(missing)
    assert str(missing) in str(info.value)

    good = save_nifti(np.arange(4000, dtype=np.float32).reshape(20, 20, 10), np.eye(4), tmp_path / "good.nii.gz")
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    digest = _sha256(truncated)
    with pytest.raises(InputDataError) as info:
        load_nifti(truncated)
    assert str(truncated) in str(info.value)
    assert _sha256(truncated) == digest

    garbage = tmp_path / "garbage.nii.gz"
    garbage.write_bytes(gzip.compress(b"not a nifti header" * 3))
    with pytest.raises(InputDataError) as info:
        load_nifti(garbage)
    assert str(garbage) in str(info.value)

    digest = _sha256(good)
    array, _ = load_nifti(good)
    array[:] = -1  # the returned array is a copy, not a view on the file
    assert _sha256(good) == digest
    assert load_nifti(good)[0][1, 0, 0] == 200.0  # C-order arange: x stride 20 * 10


# ------------------------------------------------------------------------------------------------------------- CT


def test_ct_series_hu_orientation_and_affine_match_simpleitk(tmp_path: Path) -> None:
    stored = _asymmetric_stored()
    folder = tmp_path / "ct"
    write_series(
        folder,
        stored,
        slope=2.0,
        intercept=-1024.0,
        names=["a.dcm", "b.IMA", "c", "d.dcm"],
        write_order=[2, 0, 3, 1],
        raw_names=["b.IMA"],  # Siemens style: no preamble, implicit VR
    )
    (folder / "notes.txt").write_text("not dicom")
    (folder / "DICOMDIR").write_bytes(b"\0" * 200)
    before = _hashes(folder)

    volume = read_ct_hu(folder)

    assert volume.array.shape == (8, 6, 4)  # (X = Columns, Y = Rows, Z = slices)
    expected = (2.0 * stored.astype(np.float64) - 1024.0).transpose(2, 1, 0)
    np.testing.assert_array_equal(volume.array, expected.astype(np.float32))
    assert volume.array[3, 2, 1] == 2 * (100 * 1 + 10 * 2 + 3) - 1024  # x = column 3, y = row 2, slice 1
    assert volume.units == "HU" and volume.modality == "CT"
    assert volume.spacing == pytest.approx((0.7, 0.8, 2.5))
    assert [p.name for p in volume.files] == ["a.dcm", "b.IMA", "c", "d.dcm"]
    assert all("PixelData" not in ds for ds in volume.datasets)

    ras, sitk_array = _sitk_ras_affine(folder)
    np.testing.assert_allclose(volume.affine, ras, atol=1e-6)
    np.testing.assert_array_equal(volume.array, sitk_array.astype(np.float32))
    # RAS: x (columns) runs to patient right -> negative R; origin (-10, 20, 30) LPS -> (10, -20, 30) RAS
    np.testing.assert_allclose(volume.affine[:3, 3], [10.0, -20.0, 30.0])
    assert _hashes(folder) == before


def test_oblique_series_affine_matches_simpleitk_nifti(tmp_path: Path) -> None:
    angle = math.radians(30)
    orientation = (math.cos(angle), math.sin(angle), 0.0, 0.0, 0.0, -1.0)  # rotated coronal, descending z
    folder = tmp_path / "obl"
    write_series(folder, _asymmetric_stored(3, 5, 7), orientation=orientation, slice_step=-3.0, write_order=[1, 2, 0])
    volume = read_dicom_series(folder)

    ras, sitk_array = _sitk_ras_affine(folder)
    np.testing.assert_allclose(volume.affine, ras, atol=1e-6)
    np.testing.assert_array_equal(volume.array, sitk_array.astype(np.float32))
    # and what nibabel reads from SimpleITK's NIfTI conversion of the same series
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    sitk.WriteImage(reader.Execute(), str(tmp_path / "obl.nii.gz"))
    nib_array, nib_affine = load_nifti(tmp_path / "obl.nii.gz")
    np.testing.assert_allclose(volume.affine, nib_affine, atol=1e-4)
    np.testing.assert_array_equal(volume.array, nib_array)
    assert volume.spacing == pytest.approx((0.7, 0.8, 3.0))


def test_mixed_series_requires_series_uid(tmp_path: Path) -> None:
    stored = _asymmetric_stored(2, 4, 4)
    write_series(tmp_path, stored, series_uid="1.2.3.4", names=["a1", "a2"])
    write_series(tmp_path, stored + 5, series_uid="1.2.3.5", names=["b1", "b2"])
    with pytest.raises(InputDataError, match="series_uid") as info:
        read_dicom_series(tmp_path)
    assert "1.2.3.4" in str(info.value) and "1.2.3.5" in str(info.value) and str(tmp_path) in str(info.value)
    volume = read_dicom_series(tmp_path, series_uid="1.2.3.5")
    np.testing.assert_array_equal(volume.array, (stored + 5).transpose(2, 1, 0))
    with pytest.raises(InputDataError, match="not found"):
        read_dicom_series(tmp_path, series_uid="9.9")


def test_inconsistent_rows_named(tmp_path: Path) -> None:
    write_series(tmp_path, _asymmetric_stored(3, 6, 8), names=["s0", "s1", "s2"])
    write_series(tmp_path, _asymmetric_stored(1, 5, 8), names=["odd"], origin=(-10.0, 20.0, 37.5))
    # same series: rewrite odd's SeriesInstanceUID
    uid = pydicom.dcmread(tmp_path / "s0").SeriesInstanceUID
    ds = pydicom.dcmread(tmp_path / "odd")
    ds.SeriesInstanceUID = uid
    ds.save_as(tmp_path / "odd", enforce_file_format=True)
    with pytest.raises(InputDataError, match="Rows") as info:
        read_dicom_series(tmp_path)
    assert str(tmp_path / "odd") in str(info.value)


def test_geometry_and_file_errors(tmp_path: Path) -> None:
    stored = _asymmetric_stored(4, 4, 4)
    gap = tmp_path / "gap"
    paths = write_series(gap, stored)
    paths[2].unlink()  # missing slice -> non-uniform spacing
    with pytest.raises(InputDataError, match="non-uniform slice spacing"):
        read_dicom_series(gap)

    corrupt = tmp_path / "corrupt"
    paths = write_series(corrupt, stored)
    paths[1].write_bytes(paths[1].read_bytes()[:-10])  # truncated pixel data
    with pytest.raises(InputDataError) as info:
        read_dicom_series(corrupt)
    assert str(paths[1]) in str(info.value)

    no_slope = tmp_path / "noslope"
    write_series(no_slope, stored, slope=None)
    with pytest.raises(InputDataError, match="RescaleSlope") as info:
        read_ct_hu(no_slope)
    assert "slice0.dcm" in str(info.value)

    mr = tmp_path / "mr"
    write_series(mr, stored, modality="MR")
    with pytest.raises(InputDataError, match="Modality"):
        read_ct_hu(mr)

    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(InputDataError, match="not a DICOM file") as info:
        read_dicom_series([text])
    assert str(text) in str(info.value)


# ------------------------------------------------------------------------------------------------------------ PET


def _pet_series(folder: Path, stored: np.ndarray, slope: float = 10.0, **overrides: object) -> list[Path]:
    tags = {**PET_TAGS, **overrides}
    tags = {k: v for k, v in tags.items() if v is not None}
    return write_series(folder, stored, modality="PT", slope=slope, intercept=0.0, tags=tags)


def test_pet_suv_matches_hand_computation(tmp_path: Path) -> None:
    stored = _asymmetric_stored(3, 4, 5)
    _pet_series(tmp_path, stored)  # 70 kg, 370 MBq, F-18, injected 10:00:00, series 11:00:00, stored * 10 Bq/mL
    volume = read_pet_suv(tmp_path)

    # by hand: 370e6 Bq * 2^(-3600 / 6586.2) = 370e6 * 0.684633 = 253.314e6 Bq; 70000 g / 253.314e6 Bq
    factor = 70.0 * 1000.0 / (370e6 * 2.0 ** (-3600.0 / 6586.2))
    assert factor == pytest.approx(2.7634e-4, rel=1e-4)
    expected = stored.astype(np.float64).transpose(2, 1, 0) * 10.0 * factor
    np.testing.assert_allclose(volume.array, expected, rtol=1e-6)
    assert volume.units == "SUVbw"
    assert volume.array[2, 1, 1] == pytest.approx((100 + 10 + 2) * 10.0 * 2.7634e-4, rel=1e-4)


def test_suv_factor_variants(tmp_path: Path) -> None:
    src = tmp_path / "pet"
    paths = _pet_series(src, _asymmetric_stored(1, 2, 2))
    ds = pydicom.dcmread(paths[0])
    # midnight crossing with full date-times and fractional seconds: 23:59:30.5 -> 00:59:30.5 next day = 3600 s
    ds.SeriesDate, ds.SeriesTime = "20240102", "005930.5"
    info = ds.RadiopharmaceuticalInformationSequence[0]
    del info.RadiopharmaceuticalStartTime
    info.RadiopharmaceuticalStartDateTime = "20240101235930.5"
    expected = 70000.0 / (370e6 * 2.0 ** (-3600.0 / 6586.2))
    assert suv_factor_from_dicom(ds, paths[0]) == pytest.approx(expected, rel=1e-9)

    ds.DecayCorrection = "ADMIN"
    assert suv_factor_from_dicom(ds, paths[0]) == pytest.approx(70000.0 / 370e6, rel=1e-12)
    ds.Units = "GML"
    assert suv_factor_from_dicom(ds, paths[0]) == 1.0
    ds.Units = "CNTS"
    with pytest.raises(InputDataError, match="Units"):
        suv_factor_from_dicom(ds, paths[0])
    ds.Units, ds.DecayCorrection = "BQML", "NONE"
    with pytest.raises(InputDataError, match="DecayCorrection"):
        suv_factor_from_dicom(ds, paths[0])


@pytest.mark.parametrize(
    ("overrides", "keyword"),
    [
        ({"PatientWeight": None}, "PatientWeight"),
        ({"RadionuclideTotalDose": None}, "RadionuclideTotalDose"),
        ({"PatientWeight": 0.0}, "PatientWeight"),
        ({"RadionuclideHalfLife": None}, "RadionuclideHalfLife"),
        ({"RadiopharmaceuticalStartTime": "113000"}, "RadiopharmaceuticalStartTime"),  # injected after scan start
        ({"Units": None}, "Units"),
        ({"SeriesTime": "113000"}, "SeriesTime"),  # series time after the acquisition: re-processed series
    ],
)
def test_pet_missing_or_inconsistent_tag_is_named(tmp_path: Path, overrides: dict, keyword: str) -> None:
    paths = _pet_series(tmp_path, _asymmetric_stored(2, 2, 3), **overrides)
    with pytest.raises(InputDataError, match=keyword) as info:
        read_pet_suv(tmp_path)
    assert str(paths[0]) in str(info.value)


# ------------------------------------------------------------------------------------------------------------ CSV


def _write_csv(path: Path, rows: list[dict[str, object]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_pet_suv_from_nifti_and_csv(tmp_path: Path) -> None:
    bqml = np.linspace(0, 20000, 24, dtype=np.float32).reshape(4, 3, 2)
    affine = np.diag([1.65, 1.65, 1.65, 1.0])
    nifti = save_nifti(bqml, affine, tmp_path / "subj01.nii.gz")
    rows = [
        {"subject": "subj00", "weight_kg": 50, "injected_activity_mbq": 200, "time_delta_s": 0, "half_life_s": 6586.2},
        {
            "subject": "subj01",
            "weight_kg": 70,
            "injected_activity_mbq": 370,
            "time_delta_s": 3600,
            "half_life_s": 6586.2,
        },
    ]
    table = _write_csv(tmp_path / "meta.csv", rows)

    suv, loaded_affine = load_pet_suv_nifti(nifti, table)  # subject id from the file name
    np.testing.assert_allclose(suv, bqml * 2.7634e-4, rtol=1e-4)
    np.testing.assert_allclose(loaded_affine, affine, atol=1e-6)
    suv0, _ = load_pet_suv_nifti(nifti, table, subject_id="subj00")  # no decay: 50000 g / 200e6 Bq
    np.testing.assert_allclose(suv0, bqml * 2.5e-4, rtol=1e-6)

    row = {"weight_kg": "70", "injected_activity_bq": "3.7e8", "time_delta_s": "3600", "half_life_s": "6586.2"}
    assert suv_factor_from_csv_row(row, "row") == pytest.approx(2.7634e-4, rel=1e-4)

    for column in ("half_life_s", "weight_kg", "time_delta_s"):
        broken = _write_csv(tmp_path / f"no_{column}.csv", [{k: v for k, v in r.items() if k != column} for r in rows])
        with pytest.raises(InputDataError, match=column) as info:
            load_pet_suv_nifti(nifti, broken)
        assert str(broken) in str(info.value)
    text = _write_csv(tmp_path / "text.csv", [{**rows[1], "weight_kg": "seventy"}])
    with pytest.raises(InputDataError, match="weight_kg") as info:
        load_pet_suv_nifti(nifti, text)
    assert str(text) in str(info.value)
    with pytest.raises(InputDataError, match="subj99") as info:
        load_pet_suv_nifti(nifti, table, subject_id="subj99")
    assert str(table) in str(info.value)


def test_save_restored_refuses_a_non_finite_output(tmp_path):
    """A network output with NaN / Inf (broken weights) is refused in one line naming the input; nothing is written."""
    import torch
    from monai.data import MetaTensor

    from common.errors import OutputError
    from common.io import SaveRestoredd

    pred = MetaTensor(torch.zeros(1, 4, 4, 4), meta={"filename_or_obj": str(tmp_path / "scan.nii.gz")})
    pred[0, 1, 1, 1] = float("nan")
    with pytest.raises(OutputError, match=r"scan\.nii\.gz: the restored 'pred' holds NaN or Inf values"):
        SaveRestoredd("pred", output_dir=tmp_path / "out", output_postfix="denoised")({"pred": pred})
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_restored_nifti_path_names_outputs_as_the_savers_do(tmp_path):
    """The path scripts and `restorezoo denoise` expect equals the file SaveRestoredd writes."""
    import torch
    from monai.data import MetaTensor

    from common.io import SaveRestoredd, restored_nifti_path

    src = tmp_path / "scan_drf20.nii.gz"
    img = MetaTensor(torch.zeros(1, 4, 4, 4), affine=torch.eye(4), meta={"filename_or_obj": str(src)})
    SaveRestoredd("pred", output_dir=tmp_path / "out", output_postfix="ddpm")({"pred": img})
    assert restored_nifti_path(tmp_path / "out", src, "ddpm").is_file()
    assert restored_nifti_path("o", "a/scan.nii", "x") == Path("o") / "scan_x.nii.gz"
    assert restored_nifti_path("o", "a/scan.mha", "x") == Path("o") / "scan_x.nii.gz"
