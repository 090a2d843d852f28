"""``restorezoo denoise``: a scan in, a restored scan of the same kind out, with the bundles' shipped weights and
their own inference configs; what the bundle would refuse, an option it does not take, an existing output and a
missing input are refused in one line, and nothing is written for them."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from conftest import ROOT, run_cli
from dicom_factory import PET_TAGS, write_series

from common.io import read_dicom_series
from common.phantoms.ct import ct_body_phantom
from common.physics import CTLowDoseSimulator
from restorezoo.denoise import DEFAULT_BUNDLES, bundle_options, choose_bundle

BUNDLES_DIR = ROOT / "bundles"


@pytest.fixture(scope="module")
def ct_pair(tmp_path_factory) -> tuple[Path, np.ndarray, np.ndarray]:
    """A chest CT phantom (2 slices, 128 x 128 at 2.5 mm, HU): its 25 % dose simulation as NIfTI, that volume and the
    full-dose reference."""
    folder = tmp_path_factory.mktemp("ct_scan")
    simulator = CTLowDoseSimulator(ct_body_phantom(seed=123, shape=(128, 128, 2))["hu"], 2.5)
    low = simulator.simulate(0.25, seed=7)
    path = folder / "chest_low.nii.gz"
    nib.save(nib.Nifti1Image(low, np.diag([2.5, 2.5, 3.0, 1.0])), path)
    return path, low, simulator.reference()  # the full-dose reconstruction: what the bundle restores towards


def test_bundle_choice_and_options():
    assert bundle_options(BUNDLES_DIR / "ct_lowdose_featkpn") == {}
    assert set(bundle_options(BUNDLES_DIR / "pet_lowdose_film_unet")) == {"drf"}
    assert set(bundle_options(BUNDLES_DIR / "ct_lowdose_anatomy_distill")) == {"dose"}
    assert bundle_options(BUNDLES_DIR / "ct_throughplane_sr") == {"factor": 4}
    assert choose_bundle(Path("x.nii.gz"), "pet_lowdose_ddpm3d", None) == "pet_lowdose_ddpm3d"
    assert choose_bundle(Path("x.nii.gz"), None, 4) == DEFAULT_BUNDLES["SR"]


def test_ct_nifti_restored_with_the_shipped_weights(ct_pair, tmp_path, capsys, monkeypatch):
    path, low, hu = ct_pair
    monkeypatch.chdir(tmp_path)
    code, text = run_cli(["denoise", str(path)], capsys)
    assert code == 0, text
    out = tmp_path / "chest_low_denoised.nii.gz"  # default name, in the current folder
    assert text.startswith("ct_lowdose_featkpn: chest_low.nii.gz:") and "passes" in text  # the progress bar
    img = nib.load(out)
    np.testing.assert_allclose(img.affine, nib.load(path).affine)
    restored = np.asarray(img.dataobj, dtype=np.float32)
    assert restored.shape == low.shape
    body = hu > -500
    rmse = lambda a: float(np.sqrt(np.mean((a[body] - hu[body]) ** 2)))  # noqa: E731
    assert rmse(restored) < 0.93 * rmse(low), (rmse(restored), rmse(low))  # the shipped model denoises (0.89 measured)
    assert list(tmp_path.iterdir()) == [out]  # no work folder left behind

    code, text = run_cli(["denoise", str(path)], capsys)  # the output exists: refused, not overwritten
    assert code == 1 and text == f"error: {out}: exists: choose another --out or pass --overwrite"
    code, text = run_cli(["denoise", str(path), "--dose", "0.25"], capsys)
    assert code == 1 and "ct_lowdose_featkpn takes no --dose" in text


def test_refusals_write_nothing(ct_pair, tmp_path, capsys, monkeypatch):
    path, _, _ = ct_pair
    monkeypatch.chdir(tmp_path)
    cases = [
        (["denoise", str(tmp_path / "missing.nii.gz")], "no such file or DICOM series folder"),
        (["denoise", str(path), "--bundle", "pet_lowdose_film_unet", "--drf", "20"], "network's minimum"),  # bundle
        (["denoise", str(path), "--bundle", "nope"], "no such bundle"),
        (["denoise", str(path), "--weights", str(tmp_path / "none.pt")], "missing weights"),
        (["denoise", str(path), "--out", str(path)], "output path is the input path"),
        (["denoise", str(path), "--factor", "2"], "weights do not fit the configured network"),  # x4 weights
    ]
    for args, expected in cases:
        code, text = run_cli(args, capsys)
        assert code == 1 and text.startswith("error: ") and expected in text, (args, text)
    assert list(tmp_path.iterdir()) == []


def test_an_unrecognisable_nifti_is_refused(tmp_path, capsys, monkeypatch):
    """No air below -200 HU and values far above the SUV range: a CT without its rescale intercept or a PET in
    Bq/mL; the command does not guess."""
    monkeypatch.chdir(tmp_path)
    stored = np.random.default_rng(0).integers(0, 3000, size=(32, 32, 8)).astype(np.float32)
    nib.save(nib.Nifti1Image(stored, np.eye(4)), tmp_path / "raw.nii.gz")
    code, text = run_cli(["denoise", str(tmp_path / "raw.nii.gz")], capsys)
    assert code == 1 and "cannot tell CT from PET" in text and "pass --bundle" in text, text
    assert [p.name for p in tmp_path.iterdir()] == ["raw.nii.gz"]


def test_pet_dicom_series_in_derived_series_out(tmp_path, capsys):
    rng = np.random.default_rng(1)
    stored = (rng.gamma(2.0, 2000.0, size=(16, 24, 28))).astype(np.int16)
    src = tmp_path / "pet_series"
    write_series(src, stored, modality="PT", slope=0.37, intercept=0.0, pixel_spacing=(4.0, 4.0), slice_step=4.0,
                 tags={**PET_TAGS, "SeriesDescription": "PET 10 s"})  # fmt: skip
    before = sorted((p.name, p.read_bytes()) for p in src.iterdir())
    out = tmp_path / "restored"
    code, text = run_cli(["denoise", str(src), "--drf", "20", "--out", str(out)], capsys)
    assert code == 0, text
    assert text.startswith("pet_lowdose_film_unet: pet_series:")  # chosen from the series' Modality
    assert sorted((p.name, p.read_bytes()) for p in src.iterdir()) == before  # input untouched
    back, source = read_dicom_series(out), read_dicom_series(src)
    assert back.shape == source.shape and back.modality == "PT"
    np.testing.assert_allclose(back.affine, source.affine, atol=1e-4)
    ds = pydicom.dcmread(sorted(out.glob("*.dcm"))[0], stop_before_pixels=True)
    assert (
        "DERIVED" in list(ds.ImageType)
        and ds.SeriesInstanceUID
        != pydicom.dcmread(sorted(src.glob("*.dcm"))[0], stop_before_pixels=True).SeriesInstanceUID
    )
