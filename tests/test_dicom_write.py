"""DICOM out: derived series written from a restored volume (common.io.write_dicom_series / SaveDicomSeriesd), on
series written here with pydicom and on the real CT slice shipped with pydicom, and every bundle's inference on a
DICOM series folder (NIfTI + DICOM series out, the two agreeing within quantisation)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from conftest import BUNDLES, run_workflow
from dicom_factory import PET_TAGS, write_series
from monai.data import MetaTensor
from pydicom.data import get_testdata_file

from common.io import SaveDicomSeriesd, read_ct_hu, read_dicom_series, read_pet_suv, write_dicom_series

IDS = [b.name for b in BUNDLES]


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def _ct_series(folder: Path, nz: int = 6, ny: int = 20, nx: int = 24) -> Path:
    rng = np.random.default_rng(0)
    stored = rng.integers(-1000, 1500, size=(nz, ny, nx)).astype(np.int16)
    write_series(
        folder, stored, slope=1.0, intercept=-24.0, tags={"SeriesDescription": "CT low dose", "SeriesNumber": 3}
    )
    return folder


def _pet_series(folder: Path, nz: int = 16, ny: int = 24, nx: int = 28) -> Path:
    rng = np.random.default_rng(1)
    stored = rng.integers(0, 30000, size=(nz, ny, nx)).astype(np.int16)
    write_series(
        folder,
        stored,
        modality="PT",
        slope=0.37,
        intercept=0.0,
        pixel_spacing=(4.0, 4.0),
        slice_step=4.0,
        tags={**PET_TAGS, "SeriesDescription": "PET 10 s"},
    )
    return folder


def _headers(folder: Path) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in sorted(folder.glob("*.dcm"))]


def test_ct_roundtrip_geometry_tags_and_quantisation(tmp_path):
    src_dir = _ct_series(tmp_path / "src")
    before = _digest(src_dir)
    src = read_ct_hu(src_dir)
    out_values = src.array + 0.3 * np.sin(np.arange(src.array.size)).reshape(src.array.shape).astype(np.float32)
    files = write_dicom_series(out_values, src.affine, src, tmp_path / "out", description_suffix=" [denoised]")
    assert len(files) == src.shape[2] and all(f.is_file() for f in files)
    back = read_ct_hu(tmp_path / "out")
    np.testing.assert_allclose(back.affine, src.affine, atol=1e-4)
    assert np.abs(back.array - out_values).max() <= 0.5 + 1e-4  # HU integers, slope 1
    old, new = _headers(src_dir), _headers(tmp_path / "out")
    assert {d.SeriesInstanceUID for d in new} != {old[0].SeriesInstanceUID} and len(
        {d.SeriesInstanceUID for d in new}
    ) == 1
    sops = {d.SOPInstanceUID for d in new}
    assert len(sops) == len(new) and not sops & {d.SOPInstanceUID for d in old}
    for d in new:
        assert d.PatientID == old[0].PatientID and d.PatientName == old[0].PatientName
        assert d.StudyInstanceUID == old[0].StudyInstanceUID and d.Modality == "CT"
        assert d.SeriesDescription == "CT low dose [denoised]" and d.SeriesNumber == 1003
        assert list(d.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert d.PixelRepresentation == 1 and float(d.RescaleSlope) == 1.0 and float(d.RescaleIntercept) == 0.0
        assert d.file_meta.MediaStorageSOPInstanceUID == d.SOPInstanceUID
    by_position = {tuple(np.round(np.asarray(d.ImagePositionPatient, float), 3)): d for d in old}
    for d in new:  # each slice points to the source slice at the same position
        srcd = by_position[tuple(np.round(np.asarray(d.ImagePositionPatient, float), 3))]
        assert d.SourceImageSequence[0].ReferencedSOPInstanceUID == srcd.SOPInstanceUID
    assert _digest(src_dir) == before, "the source series was modified"


def test_pet_units_stay_consistent(tmp_path):
    src_dir = _pet_series(tmp_path / "src")
    src = read_pet_suv(src_dir)
    assert src.units == "SUVbw" and src.suv_factor
    restored = 0.8 * src.array
    write_dicom_series(restored, src.affine, src, tmp_path / "out")
    raw = read_dicom_series(tmp_path / "out")
    assert raw.units == "BQML"  # the tag of the source, and values in it
    np.testing.assert_allclose(raw.array, restored / src.suv_factor, rtol=0, atol=float(raw.array.max()) / 32767)
    suv = read_pet_suv(tmp_path / "out")  # a viewer computing SUV from the tags gets our SUV values back
    step = np.asarray([float(d.RescaleSlope) for d in _headers(tmp_path / "out")]).max() * src.suv_factor
    assert np.abs(suv.array - restored).max() <= step / 2 + 1e-6
    np.testing.assert_allclose(suv.affine, src.affine, atol=1e-4)
    new = _headers(tmp_path / "out")
    assert [d.ImageIndex for d in new] == list(range(1, len(new) + 1))
    assert all(d.NumberOfSlices == len(new) and d.Units == "BQML" for d in new)


def test_real_pydicom_ct_slice_roundtrip(tmp_path):
    folder = tmp_path / "ct_small"
    folder.mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), folder / "CT_small.dcm")
    src = read_ct_hu(folder)
    assert src.shape[2] == 1
    write_dicom_series(src.array - 10.0, src.affine, src, tmp_path / "out")
    back = read_ct_hu(tmp_path / "out")
    np.testing.assert_allclose(back.affine, src.affine, atol=1e-4)
    np.testing.assert_allclose(back.array, src.array - 10.0, atol=0.5)
    old, new = _headers(folder)[0], _headers(tmp_path / "out")[0]
    assert new.PatientName == old.PatientName and new.StudyInstanceUID == old.StudyInstanceUID
    assert new.SeriesInstanceUID != old.SeriesInstanceUID and new.SliceThickness == old.SliceThickness


def test_more_slices_get_the_new_grid(tmp_path):
    """Through-plane SR: 4x the slices on a thin affine; thickness = the new spacing; no SourceImageSequence."""
    src = read_ct_hu(_ct_series(tmp_path / "src", nz=3))
    thin = src.affine.copy()
    thin[:3, 2] /= 4
    vol = np.repeat(src.array, 4, axis=2)
    write_dicom_series(vol, thin, src, tmp_path / "out")
    back = read_ct_hu(tmp_path / "out")
    assert back.shape == vol.shape
    np.testing.assert_allclose(back.affine, thin, atol=1e-4)
    new = _headers(tmp_path / "out")
    assert all(float(d.SliceThickness) == pytest.approx(src.spacing[2] / 4) for d in new)
    assert not any("SourceImageSequence" in d for d in new)


def test_bad_values_and_existing_output(tmp_path):
    src = read_ct_hu(_ct_series(tmp_path / "src", nz=2))
    bad = src.array.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        write_dicom_series(bad, src.affine, src, tmp_path / "out")
    assert not (tmp_path / "out").exists(), "a failed write must leave no folder"
    write_dicom_series(src.array, src.affine, src, tmp_path / "out")
    first = {p.name for p in (tmp_path / "out").iterdir()}
    write_dicom_series(src.array + 1, src.affine, src, tmp_path / "out")  # replaced as a whole, atomically
    assert {p.name for p in (tmp_path / "out").iterdir()} == first
    assert np.allclose(read_ct_hu(tmp_path / "out").array, src.array + 1, atol=0.5)


def test_save_transform_skips_nifti_inputs(tmp_path):
    img = MetaTensor(torch.zeros(1, 4, 4, 2), meta={"filename_or_obj": str(tmp_path / "x.nii.gz")})
    SaveDicomSeriesd(keys="pred", output_dir=tmp_path / "out")({"image": img, "pred": img.clone()})
    assert not (tmp_path / "out").exists()


def _series_for(bundle: Path, folder: Path) -> Path:
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    modality = meta["network_data_format"]["inputs"]["image"]["modality"]
    return _pet_series(folder) if modality in ("PT", "PET") else _ct_series(folder, nz=8, ny=32, nx=32)


@pytest.mark.slow
@pytest.mark.parametrize("bundle", BUNDLES, ids=IDS)
def test_bundle_dicom_in_dicom_out(bundle, export_of, tmp_path):
    _, work, _, _, _ = export_of(bundle)  # perturbed weights and the tiny run-time settings
    series = _series_for(bundle, tmp_path / "series")
    before = _digest(series)
    config = (bundle / "configs" / "inference.yaml").read_text()
    dose = {k: v for k, v in (("drf", 20), ("dose", 0.25)) if f"\n{k}:" in config}
    out = tmp_path / "out"
    refusal = run_workflow(  # in-process, the workflow `python -m monai.bundle run` builds (conftest.run_workflow)
        [bundle / "configs" / "inference.yaml", work / "runtime.yaml"],
        ckpt_path=str(work / "weights.pt"),
        input_file=str(series),
        output_dir=str(out),
        **dose,
    )
    assert refusal is None, refusal
    assert _digest(series) == before
    niftis = [p for p in out.glob("*.nii.gz") if "_std" not in p.name]
    folders = [p for p in out.iterdir() if p.is_dir() and not p.name.endswith("_std")]
    assert len(niftis) == 1 and len(folders) == 1, (niftis, folders)
    nifti = nib.load(niftis[0])
    reader = read_pet_suv if "pet" in bundle.name else read_ct_hu
    back = reader(folders[0])
    np.testing.assert_allclose(back.affine, nifti.affine, atol=1e-4)
    values = np.asarray(nifti.dataobj, dtype=np.float32)
    assert back.array.shape == values.shape
    headers = _headers(folders[0])
    step = max(float(d.RescaleSlope) for d in headers) * (back.suv_factor or 1.0)
    assert np.abs(back.array - values).max() <= step / 2 + 1e-3
    assert all(list(d.ImageType)[:2] == ["DERIVED", "SECONDARY"] for d in headers)
    assert headers[0].SeriesInstanceUID != _headers(series)[0].SeriesInstanceUID
