"""Input validation, dose encoding, pair checks and the PET augmentation, on real files where data enter."""

import hashlib
import math

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged

from common.errors import InputDataError
from common.physics import calibrate_count_scale
from common.transforms import (
    CheckPaird,
    CTSimulatord,
    EncodeDosed,
    RandCTLowDosePatchesd,
    RandPETCountReductiond,
    ValidateImaged,
    hu_window,
    suv_scale,
)


def _write(path, array, spacing=(2.0, 2.0, 2.0)):
    nib.save(nib.Nifti1Image(np.asarray(array, np.float32), np.diag([*spacing, 1.0])), str(path))
    return str(path)


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _input_error(excinfo) -> InputDataError:
    """MONAI's Compose wraps transform errors in RuntimeError('applying transform ...') from the original: return
    the InputDataError in the cause chain (its message is what the user reads in the traceback)."""
    err = excinfo.value
    while err is not None and not isinstance(err, InputDataError):
        err = err.__cause__
    assert err is not None, f"no InputDataError in the chain of {excinfo.value!r}"
    return err


def _load_validate(path, kind, key="image"):
    t = Compose([LoadImaged(key, image_only=True), EnsureChannelFirstd(key), ValidateImaged(key, kind=kind)])
    return t({key: path})


def _pet(shape=(16, 16, 12), seed=0):
    return np.random.default_rng(seed).uniform(0.5, 3.0, shape)


def _ct(shape=(16, 16, 12)):
    a = np.full(shape, -1000.0)
    a[4:12, 4:12] = 40.0
    return a


@pytest.mark.parametrize(
    "kind,array,spacing,message",
    [
        ("pet", np.where(np.arange(16)[:, None, None] == 3, np.nan, _pet()), (2, 2, 2), "NaN/Inf"),
        ("pet", np.where(np.arange(16)[:, None, None] == 3, np.inf, _pet()), (2, 2, 2), "NaN/Inf"),
        ("pet", np.zeros((16, 16, 12)), (2, 2, 2), "empty/constant"),
        ("pet", _pet() - 2.5, (2, 2, 2), "negative activity"),
        ("pet", _pet(), (2, 2, 900), "implausible voxel spacing"),
        ("ct", _ct() / 4096 + 0.25, (1, 1, 1), "normalised image, not Hounsfield"),
        ("ct", _ct() * 100, (1, 1, 1), "plausible HU"),
        ("pet", _pet((16, 16, 1)), (2, 2, 2), "smaller than"),
    ],
)
def test_bad_input_gives_clear_error_and_file_is_unchanged(tmp_path, kind, array, spacing, message):
    path = _write(tmp_path / "bad.nii.gz", array, spacing)
    before = _sha(path)
    with pytest.raises(Exception) as excinfo:
        _load_validate(path, kind)
    err = _input_error(excinfo)
    assert message in str(err) and "bad.nii.gz" in str(err)
    assert _sha(path) == before


def test_2d_image_where_3d_expected(tmp_path):
    path = tmp_path / "slice.nii.gz"
    nib.save(nib.Nifti1Image(_pet((16, 16)).astype(np.float32), np.eye(4)), str(path))
    with pytest.raises(Exception) as excinfo:
        _load_validate(str(path), "pet")
    err = _input_error(excinfo)
    assert "expected a 3D image" in str(err) and "slice.nii.gz" in str(err)


def test_valid_inputs_pass(tmp_path):
    assert _load_validate(_write(tmp_path / "pet.nii.gz", _pet()), "pet")["image"].shape == (1, 16, 16, 12)
    assert _load_validate(_write(tmp_path / "ct.nii.gz", _ct(), (0.7, 0.7, 3)), "ct")["image"].shape[0] == 1


def test_mismatched_pair_names_both_files(tmp_path):
    a = _write(tmp_path / "low.nii.gz", _pet())
    b = _write(tmp_path / "full.nii.gz", _pet((16, 16, 10)))
    load = Compose([LoadImaged(["image", "label"], image_only=True), EnsureChannelFirstd(["image", "label"])])
    with pytest.raises(InputDataError, match="mismatched pair") as err:
        CheckPaird(["image", "label"])(load({"image": a, "label": b}))
    assert "low.nii.gz" in str(err.value) and "full.nii.gz" in str(err.value)
    c = _write(tmp_path / "shifted.nii.gz", _pet(), (2.0, 2.0, 2.5))
    with pytest.raises(InputDataError, match="affines differ"):
        CheckPaird(["image", "label"])(load({"image": a, "label": c}))


def test_encode_dose_values_and_errors(tmp_path):
    out = EncodeDosed("drf", "log_drf")({"image": torch.zeros(1), "drf": 20})
    assert out["meta"].shape == (1,) and float(out["meta"]) == pytest.approx(math.log(20) / 10)
    out = EncodeDosed("dose", "fraction")({"image": torch.zeros(1), "dose": "0.25"})
    assert float(out["meta"]) == pytest.approx(0.25) and out["dose"] == 0.25
    assert float(EncodeDosed("drf", default=4.0)({"image": torch.zeros(1)})["meta"]) == pytest.approx(math.log(4) / 10)
    path = _write(tmp_path / "nodose.nii.gz", _pet())
    item = LoadImaged("image", image_only=True)({"image": path})
    with pytest.raises(InputDataError, match="missing dose metadata 'drf'") as err:
        EncodeDosed("drf")(item)
    assert "nodose.nii.gz" in str(err.value)
    for bad, key, enc in [(0.5, "drf", "log_drf"), (1.5, "dose", "fraction"), (float("nan"), "drf", "log_drf")]:
        with pytest.raises(InputDataError):
            EncodeDosed(key, enc)({"image": torch.zeros(1), key: bad})


def test_intensity_windows_roundtrip():
    x = {"image": torch.tensor([[-1024.0, 0.0, 3072.0, 5000.0]])}
    y = hu_window("image", -1024, 3072)(x)
    torch.testing.assert_close(y["image"], torch.tensor([[0.0, 0.25, 1.0, 1.0]]))
    back = hu_window("image", -1024, 3072, inverse=True)(y)
    torch.testing.assert_close(back["image"][0, :3], x["image"][0, :3])
    s = suv_scale("image", 10.0)({"image": torch.tensor([[0.0, 25.0]])})
    torch.testing.assert_close(s["image"], torch.tensor([[0.0, 2.5]]))  # no clipping of hot voxels


def test_rand_pet_count_reduction_noise_grows_with_drf():
    label = torch.full((1, 24, 24, 24), 2.0)
    c = calibrate_count_scale(2.0)
    stds = {}
    for drf in (4, 100):
        t = RandPETCountReductiond(drfs=[drf], count_scale=c, prob=1.0)
        t.set_random_state(0)
        out = t({"label": label, "image": label.clone(), "drf": 1.0})
        assert out["drf"] == drf
        assert float(out["image"].mean()) == pytest.approx(2.0, rel=0.02)
        stds[drf] = float(out["image"].std())
    assert stds[100] / stds[4] == pytest.approx(5.0, rel=0.15)  # sqrt(100/4)
    skip = RandPETCountReductiond(count_scale=c, prob=0.0)({"label": label, "image": label + 1, "drf": 7.0})
    assert skip["drf"] == 7.0 and torch.equal(skip["image"], label + 1)


def _ct_phantom_item(tmp_path, shape=(40, 40, 3)):
    """A water disc with a bone insert, its FBP reference as label and one stored low-dose image, as the embedded CT
    datasets record them."""
    from common.physics import CTAcquisition, CTLowDoseSimulator

    rows, cols = np.mgrid[: shape[0], : shape[1]] - shape[0] // 2
    hu = np.where(rows**2 + cols**2 < 15**2, 0.0, -1000.0)
    hu[(rows - 4) ** 2 + cols**2 < 9] = 1000.0
    hu = np.repeat(hu[..., None], shape[2], axis=2).astype(np.float32)
    acquisition = CTAcquisition(n_views=90)
    sim = CTLowDoseSimulator(hu, 2.0, acquisition)
    record = {"kind": "ct_projection", "pixel_mm": 2.0, "dose": 0.25, "seed": 1, **acquisition.__dict__}
    item = {
        "image": torch.from_numpy(sim.simulate(0.25, 1))[None],
        "label": torch.from_numpy(sim.reference())[None],
        "phantom_hu": _write(tmp_path / "phantom.nii.gz", hu),
        "simulation": record,
        "dose": 0.25,
    }
    return item, sim


def test_fresh_ct_noise_patches(tmp_path):
    item, sim = _ct_phantom_item(tmp_path)
    loaded = CTSimulatord()(item)
    assert np.array_equal(loaded["ct_simulator"].reference(), sim.reference())
    sampler = RandCTLowDosePatchesd(patch_size=16, num_samples=6, prob=1.0)
    sampler.set_random_state(0)
    patches = sampler(loaded)
    assert len(patches) == 6 and all("ct_simulator" not in p for p in patches)
    stored = item["image"][0]
    for p in patches:
        assert p["image"].shape == p["label"].shape == (1, 16, 16)
        # the label is a crop of the reference; the input a new realisation, never the stored one
        hits = [
            (x, y, z)
            for x in range(25)
            for y in range(25)
            for z in range(3)
            if torch.equal(item["label"][0, x : x + 16, y : y + 16, z], p["label"][0])
        ]
        assert hits
        assert not any(torch.equal(stored[x : x + 16, y : y + 16, z], p["image"][0]) for x, y, z in hits)
    sampler.set_random_state(0)
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(patches, sampler(loaded), strict=True))
    # prob 0, or a user's pair without a phantom: the stored patches, as RandSpatialCropSamplesd gives
    plain = {k: v for k, v in item.items() if k not in ("phantom_hu", "simulation")}
    for data, prob in ((loaded, 0.0), (CTSimulatord()(plain), 1.0)):
        for p in RandCTLowDosePatchesd(patch_size=16, num_samples=4, prob=prob)(data):
            assert any(
                torch.equal(stored[x : x + 16, y : y + 16, z], p["image"][0])
                and torch.equal(item["label"][0, x : x + 16, y : y + 16, z], p["label"][0])
                for x in range(25)
                for y in range(25)
                for z in range(3)
            )
    # a dose range: each fresh patch carries the dose it was drawn at
    ranged = RandCTLowDosePatchesd(patch_size=16, num_samples=8, dose_range=(0.1, 0.5))(loaded)
    assert all(0.1 <= p["dose"] <= 0.5 for p in ranged) and len({p["dose"] for p in ranged}) == 8


def test_ct_patches_with_neighbouring_slices(tmp_path):
    # stored pairs: every voxel of the image holds its own (x, y, z) code, so a patch tells where it came from
    shape = (20, 20, 4)
    code = torch.arange(np.prod(shape), dtype=torch.float32).reshape(shape)[None]
    sampler = RandCTLowDosePatchesd(patch_size=8, num_samples=20, prob=0.0, context=1)
    sampler.set_random_state(1)
    ends = set()
    for p in sampler({"image": code, "label": code + 0.5}):
        assert p["image"].shape == (3, 8, 8) and p["label"].shape == (1, 8, 8)
        x, y, z = np.unravel_index(int(p["image"][1, 0, 0]), shape)
        assert torch.equal(p["label"][0], code[0, x : x + 8, y : y + 8, z] + 0.5)  # the label: the centre slice
        for j, zj in enumerate((max(z - 1, 0), z, min(z + 1, 3))):  # the ends repeated
            assert torch.equal(p["image"][j], code[0, x : x + 8, y : y + 8, zj])
        ends.add(int(z) in (0, 3))
    assert ends == {True, False}
    # fresh noise: every slice of the stack its own realisation around its reference
    item, _ = _ct_phantom_item(tmp_path)
    loaded = CTSimulatord()(item)
    fresh = RandCTLowDosePatchesd(patch_size=16, num_samples=4, prob=1.0, context=1)
    fresh.set_random_state(0)
    patches = fresh(loaded)
    for p in patches:
        assert p["image"].shape == (3, 16, 16) and p["label"].shape == (1, 16, 16)
        for a, b in ((0, 1), (1, 2), (0, 2)):
            assert not torch.equal(p["image"][a], p["image"][b])
        # the phantom's slices are identical: each channel is the label plus noise (tens of HU), not another crop
        assert float((p["image"] - p["label"]).abs().mean()) < 60.0
    fresh.set_random_state(0)
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(patches, fresh(loaded), strict=True))
    with pytest.raises(ValueError, match="context must be >= 0"):
        RandCTLowDosePatchesd(context=-1)


def test_fresh_ct_noise_refuses_a_phantom_that_does_not_match_the_label(tmp_path):
    item, _ = _ct_phantom_item(tmp_path)
    item["phantom_hu"] = _write(tmp_path / "other.nii.gz", np.zeros((30, 30, 3)))
    with pytest.raises(InputDataError, match="other.nii.gz.*differs from the label"):
        CTSimulatord()(item)
    with pytest.raises(InputDataError, match="smaller than the 64x64 training patch"):
        RandCTLowDosePatchesd(patch_size=64)(dict(item, ct_simulator=None))
