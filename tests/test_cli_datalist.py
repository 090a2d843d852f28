"""The restorezoo command and user-data datalists (folder naming rule, split by volume, clear errors)."""

from __future__ import annotations

import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from conftest import run_cli
from monai.data import load_decathlon_datalist

from common.datalist import datalist_from_folder, resolve_datalist
from common.errors import InputDataError


def _nii(path, data, affine=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(
        nib.Nifti1Image(np.asarray(data, np.float32), np.diag([2.0, 2.0, 3.0, 1.0]) if affine is None else affine),
        str(path),
    )
    return path


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "restorezoo.cli", *args], capture_output=True, text=True, timeout=300)


def test_folder_datalist_splits_by_volume(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(6):
        _nii(tmp_path / "data" / "fulldose" / f"pat{i}.nii.gz", rng.random((8, 8, 4)))
        for drf in (4, 20):
            _nii(tmp_path / "data" / "lowdose" / f"pat{i}_drf{drf}.nii.gz", rng.random((8, 8, 4)))
    (tmp_path / "data" / "lowdose" / "notes.txt").write_text("ignored")
    path = datalist_from_folder(tmp_path / "data", tmp_path / "work" / "dl.json", val_fraction=0.34)
    splits = {s: load_decathlon_datalist(path, True, s) for s in ("training", "validation")}
    ids = {s: {item["volume_id"] for item in items} for s, items in splits.items()}
    assert ids["training"].isdisjoint(ids["validation"]) and len(ids["validation"]) == 2
    assert sum(len(v) for v in splits.values()) == 12
    assert all(item["drf"] in (4.0, 20.0) for item in splits["training"])
    assert not (tmp_path / "data" / "datalist_user.json").exists()  # nothing written into the user's folder
    assert resolve_datalist(str(tmp_path / "data"), lambda: "unused", tmp_path / "work").endswith("datalist_user.json")


def test_folder_datalist_errors_name_the_file(tmp_path):
    _nii(tmp_path / "d" / "fulldose" / "a.nii.gz", np.ones((4, 4, 4)))
    _nii(tmp_path / "d" / "lowdose" / "b_drf10.nii.gz", np.ones((4, 4, 4)))
    with pytest.raises(InputDataError, match="b_drf10.nii.gz: no matching reference"):
        datalist_from_folder(tmp_path / "d", tmp_path / "dl.json")
    _nii(tmp_path / "e" / "fulldose" / "a.nii.gz", np.ones((4, 4, 4)))
    _nii(tmp_path / "e" / "lowdose" / "a_quarter.nii.gz", np.ones((4, 4, 4)))
    with pytest.raises(InputDataError, match="a_quarter.nii.gz: low-dose file name must end"):
        datalist_from_folder(tmp_path / "e", tmp_path / "dl.json")
    with pytest.raises(InputDataError, match="does not exist"):
        resolve_datalist(str(tmp_path / "missing"), lambda: "unused", tmp_path)


def test_cli_simulate_pet_and_thick(tmp_path, capsys):
    act = np.full((24, 24, 20), 2.0)
    affine = np.array([[2.0, 0, 0, -5], [0, 2.0, 0, 3], [0, 0, 3.0, 40], [0, 0, 0, 1]])
    src = _nii(tmp_path / "full.nii.gz", act, affine)
    before = src.read_bytes()
    code, line = run_cli(["simulate-pet", str(src), str(tmp_path / "low.nii.gz"), "--drf", "20", "--seed", "1"], capsys)
    assert code == 0, line
    low = nib.load(str(tmp_path / "low.nii.gz"))
    np.testing.assert_allclose(low.affine, affine, atol=1e-5)
    rel = low.get_fdata().std() / 2.0
    assert 0.05 < rel < 0.2  # ~10 % at DRF 20 (calibration target 10.1 %, docs/physics.md)
    code, line = run_cli(["simulate-thick", str(src), str(tmp_path / "thick.nii.gz"), "--factor", "4"], capsys)
    assert code == 0, line
    thick = nib.load(str(tmp_path / "thick.nii.gz"))
    assert thick.shape == (24, 24, 5)
    np.testing.assert_allclose(thick.affine[:3, 2], affine[:3, 2] * 4)
    assert src.read_bytes() == before


def test_cli_simulate_ct_and_refuses_to_overwrite_input(tmp_path, capsys):
    """In-process (conftest.run_cli); the console command itself runs in test_cli_validate_reports_a_valid_bundle."""
    hu = np.full((32, 32, 2), -1000.0)
    yy, xx = np.mgrid[:32, :32]
    hu[(yy - 15.5) ** 2 + (xx - 15.5) ** 2 < 12**2] = 0.0
    src = _nii(tmp_path / "ct.nii.gz", hu, np.diag([1.0, 1.0, 3.0, 1.0]))
    low = str(tmp_path / "ct_low.nii.gz")
    code, line = run_cli(["simulate-ct", str(src), low, "--dose", "0.25", "--n_views", "90"], capsys)
    assert code == 0, line
    out = nib.load(low).get_fdata()
    assert out.shape == hu.shape and abs(out[12:20, 12:20].mean()) < 50
    before = src.read_bytes()
    code, line = run_cli(["simulate-ct", str(src), str(src), "--dose", "0.5"], capsys)
    assert code != 0 and "refusing to overwrite the input" in line
    assert src.read_bytes() == before
    code, line = run_cli(
        ["simulate-ct", str(tmp_path / "nope.nii.gz"), str(tmp_path / "x.nii.gz"), "--dose", "0.5"], capsys
    )
    assert code != 0 and "nope.nii.gz: file or folder not found" in line


@pytest.mark.slow
def test_cli_validate_reports_a_valid_bundle(tmp_path, data_cache):
    from conftest import ROOT, smoke_overlays

    bundle = ROOT / "bundles" / "pet_lowdose_film_unet"
    overlays = ",".join(str(p) for p in smoke_overlays(bundle, tmp_path, data_cache))  # not the full-size phantoms
    proc = _cli("validate", str(bundle), "--overlays", overlays)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "valid" in proc.stdout
