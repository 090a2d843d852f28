"""Phantoms and embedded datasets: determinism, physiological values, lesions, datalists, cache, noise vs dose."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.data import load_decathlon_datalist
from scipy import ndimage

from common.phantoms import (
    HEAD_LABELS,
    TORSO_LABELS,
    build_ct_dataset,
    build_ct_sr_dataset,
    build_pet_dataset,
    ct_body_phantom,
    ct_head_phantom,
    ct_pelvis_phantom,
    default_data_dir,
    pet_brain_phantom,
    pet_torso_phantom,
)
from common.phantoms.shapes import Grid, sphere_volume_mm3

SPLITS = ("training", "validation", "test")


def interior_median(values: np.ndarray, labels: np.ndarray, label: int) -> float:
    """Median of ``values`` over the label eroded by one voxel (no partial-volume edge voxels)."""
    mask = ndimage.binary_erosion(labels == label)
    assert mask.sum() > 5, f"label {label} has no interior voxels"
    return float(np.median(values[mask]))


@pytest.fixture(scope="module")
def torso() -> dict[str, np.ndarray]:
    return pet_torso_phantom(5)


# ----------------------------------------------------------------------------------------------------- phantoms
SMALL = {
    pet_torso_phantom: ((48, 32, 48), (8.0, 8.0, 8.0), "activity"),
    pet_brain_phantom: ((32, 32, 24), (6.0, 6.0, 6.0), "activity"),
    ct_head_phantom: ((64, 64, 12), (3.0, 3.0, 6.0), "hu"),
    ct_body_phantom: ((64, 64, 12), (5.0, 5.0, 6.0), "hu"),
    ct_pelvis_phantom: ((64, 64, 4), (5.6, 5.6, 6.0), "hu"),
}


@pytest.mark.parametrize("function", list(SMALL), ids=lambda f: f.__name__)
def test_phantoms_are_deterministic_and_vary_with_seed(function):
    shape, spacing, key = SMALL[function]
    a, b, c = function(11, shape, spacing), function(11, shape, spacing), function(12, shape, spacing)
    assert set(a) == set(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert a[key].shape == shape and a[key].dtype == np.float32 and a["labels"].dtype == np.int16
    # another seed: another patient (labels move, values change)
    assert np.mean(a["labels"] != c["labels"]) > 0.01
    assert not np.allclose(a[key], c[key])


def test_phantom_rejects_bad_seed():
    with pytest.raises(ValueError, match="seed"):
        pet_brain_phantom(-1, (16, 16, 8), (8.0, 8.0, 8.0))


def test_torso_organ_values_in_documented_ranges(torso):
    act, mu, lab = torso["activity"], torso["mu_map"], torso["labels"]
    expected = {  # SUV ranges of the module docstring (texture adds a few % around the organ value)
        "soft_tissue": (0.5, 1.0),
        "lung": (0.22, 0.45),
        "liver": (1.9, 2.6),
        "spleen": (1.5, 2.2),
        "kidney_cortex": (2.8, 5.3),
        "blood": (1.4, 2.1),
        "bladder": (9.5, 31.0),
    }
    for name, (lo, hi) in expected.items():
        assert lo <= interior_median(act, lab, TORSO_LABELS[name]) <= hi, name
    myocardium = act[lab == TORSO_LABELS["myocardium"]]
    assert 2.8 <= np.percentile(myocardium, 90) <= 6.6  # thin wall: its core, not the partial-volume rim
    assert interior_median(mu, lab, TORSO_LABELS["soft_tissue"]) == pytest.approx(0.0097, abs=0.0003)
    assert 0.0019 <= interior_median(mu, lab, TORSO_LABELS["lung"]) <= 0.0031
    assert 0.0125 <= interior_median(mu, lab, TORSO_LABELS["marrow"]) <= 0.0135
    assert 0.0150 <= mu[lab == TORSO_LABELS["bone"]].max() <= 0.0170
    air = ndimage.binary_erosion(lab == 0)  # air outside the body (edge voxels carry partial volume)
    assert mu[air].max() < 1e-4 and act[air].max() < 0.01
    assert act.min() >= 0.0 and np.isfinite(act).all()


def test_torso_lesions_sizes_contrast_and_hosts(torso):
    diam, centers = torso["lesion_diameters_mm"], torso["lesion_centers_mm"]
    lesions, act = torso["lesions"], torso["activity"]
    assert len(diam) >= 4 and diam.min() <= 8.0 and diam.max() >= 20.0 and diam.min() >= 6.0 and diam.max() <= 25.0
    assert set(np.unique(lesions)) == set(range(len(diam) + 1))
    grid = Grid(act.shape, (4.0, 4.0, 4.0))
    voxel = 4.0**3
    for i, d in enumerate(diam):
        count = int((lesions == i + 1).sum())
        if d >= 12.0:  # >= 3 voxels across: the voxelised sphere matches its volume
            assert 0.6 <= count * voxel / sphere_volume_mm3(d) <= 1.5, (d, count)
        else:
            assert count >= 1
        centre_value = act[grid.voxel_index(centers[i])]
        assert 2.0 <= centre_value / torso["lesion_background"][i] <= 8.0
    assert np.all((torso["labels"] == TORSO_LABELS["lesion"]) == (lesions > 0))
    hosts = set(torso["lesion_host_label"].tolist())
    assert TORSO_LABELS["liver"] in hosts and TORSO_LABELS["lung"] in hosts
    assert hosts & {TORSO_LABELS["soft_tissue"], TORSO_LABELS["fat"]}


def test_whole_body_fov_puts_brain_at_the_top():
    d = pet_torso_phantom(2, (40, 28, 128), (9.0, 9.0, 9.0))  # 1152 mm FOV: whole body
    lab = d["labels"]
    brain, bladder = lab == TORSO_LABELS["brain"], lab == TORSO_LABELS["bladder"]
    assert brain.any() and bladder.any()
    assert 5.8 <= interior_median(d["activity"], lab, TORSO_LABELS["brain"]) <= 8.2
    z = np.arange(lab.shape[2])
    assert (brain.sum(axis=(0, 1)) * z).sum() / brain.sum() > (bladder.sum(axis=(0, 1)) * z).sum() / bladder.sum()


def test_brain_grey_white_ratio_and_skull():
    d = pet_brain_phantom(4)
    act, lab = d["activity"], d["labels"]
    grey = interior_median(act, lab, HEAD_LABELS["grey"])
    white = interior_median(act, lab, HEAD_LABELS["white"])
    assert 3.5 <= grey / white <= 4.5
    assert interior_median(act, lab, HEAD_LABELS["csf"]) < 0.3
    skull_mu = d["mu_map"][lab == HEAD_LABELS["skull"]]
    assert 0.0150 <= skull_mu.max() <= 0.0172 and np.median(skull_mu) > 0.012
    assert interior_median(d["mu_map"], lab, HEAD_LABELS["white"]) == pytest.approx(0.0097, abs=0.0003)


def test_ct_head_hu_ranges():
    d = ct_head_phantom(1)
    hu, lab = d["hu"], d["labels"]
    assert 37.0 <= interior_median(hu, lab, HEAD_LABELS["grey"]) <= 43.0
    assert 22.0 <= interior_median(hu, lab, HEAD_LABELS["white"]) <= 29.0
    assert 4.0 <= interior_median(hu, lab, HEAD_LABELS["csf"]) <= 13.0
    skull = hu[lab == HEAD_LABELS["skull"]]
    assert 700.0 <= np.median(skull) <= 1500.0 and skull.max() >= 1100.0
    assert interior_median(hu, lab, HEAD_LABELS["sinus"]) == pytest.approx(-1000.0)
    assert np.all(hu[lab == 0] >= -1000.0) and np.median(hu[lab == 0]) == -1000.0
    assert len(d["lesion_delta_hu"]) >= 1 and np.all(
        (np.abs(d["lesion_delta_hu"]) >= 5) & (np.abs(d["lesion_delta_hu"]) <= 15)
    )


def test_ct_body_hu_ranges_and_fits_scan_circle():
    d = ct_body_phantom(3)
    hu, lab = d["hu"], d["labels"]
    ranges = {"lung": (-870, -830), "fat": (-110, -80), "liver": (55, 65), "blood": (150, 250), "soft_tissue": (40, 60)}
    for name, (lo, hi) in ranges.items():
        assert lo - 3 <= interior_median(hu, lab, TORSO_LABELS[name]) <= hi + 3, name
    assert 300 - 30 <= interior_median(hu, lab, TORSO_LABELS["marrow"]) <= 400 + 30
    assert hu[lab == TORSO_LABELS["bone"]].max() >= 900
    assert (lab == TORSO_LABELS["lung_vessel"]).sum() > 50
    nodules = d["lesion_host_label"] == TORSO_LABELS["lung"]
    assert nodules.sum() >= 2 and np.all(np.abs(d["lesion_background"][~nodules] - 60) < 15)
    # everything that is not air lies inside the scan circle (radius = half the in-plane FOV)
    grid = Grid(hu.shape, (2.5, 2.5, 3.0))
    x, y, _ = grid.coords()
    radius = np.broadcast_to(np.sqrt(x**2 + y**2), hu.shape)
    assert radius[lab > 0].max() < 160.0


def test_ct_pelvis_is_a_region_and_texture_the_training_phantoms_never_show():
    """The held-out anatomy: pelvic bones, bladder or femoral heads and no lung, at 0.7 mm by default, with marrow and
    fat texture finer than the training body phantom's (more of its variance between neighbouring pixels)."""
    d = ct_pelvis_phantom(4, (256, 256, 4), (1.4, 1.4, 3.0))
    hu, lab = d["hu"], d["labels"]
    assert not (lab == TORSO_LABELS["lung"]).any() and not (lab == TORSO_LABELS["myocardium"]).any()
    assert (lab == TORSO_LABELS["bone"]).sum() > 500 and (lab == TORSO_LABELS["marrow"]).sum() > 200
    assert (lab == TORSO_LABELS["bladder"]).any() or (lab == TORSO_LABELS["marrow"]).sum() > 2000  # femoral heads
    assert 20 <= interior_median(hu, lab, TORSO_LABELS["soft_tissue"]) <= 80
    body = ct_body_phantom(4, (256, 256, 4), (1.4, 1.4, 3.0))

    def roughness(phantom: dict, name: str) -> float:  # std of the in-plane neighbour difference inside the tissue
        inside = ndimage.binary_erosion(phantom["labels"] == TORSO_LABELS[name], np.ones((3, 3, 1)), iterations=2)
        return float(np.diff(phantom["hu"], axis=0)[inside[1:]].std())

    assert roughness(d, "fat") > 1.8 * roughness(body, "fat")
    assert roughness(d, "marrow") > 3.0 * roughness(body, "marrow")
    grid = Grid(hu.shape, (1.4, 1.4, 3.0))
    x, y, _ = grid.coords()
    radius = np.broadcast_to(np.sqrt(x**2 + y**2), hu.shape)
    assert radius[lab > 0].max() < 179.2  # inside the scan circle


# ----------------------------------------------------------------------------------------------------- datasets
PET_SMALL = {"torso_grid": ((48, 32, 48), (8.0, 8.0, 8.0)), "brain_grid": ((32, 32, 24), (6.0, 6.0, 6.0))}


def _load_splits(datalist: Path) -> dict[str, list[dict]]:
    return {s: load_decathlon_datalist(datalist, data_list_key=s, base_dir=datalist.parent) for s in SPLITS}


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def pet_dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pet")
    return build_pet_dataset(out, n_train=4, n_val=1, n_test=1, drfs=(4, 50), val_drfs=(20,), seed=3, **PET_SMALL)


def test_pet_datalist_readable_split_by_volume_with_provenance(pet_dataset):
    raw = json.loads(pet_dataset.read_text())
    for key in ("name", "description", "modality", "generator", "params_hash", *SPLITS):
        assert key in raw
    assert raw["generator"]["seed"] == 3 and raw["generator"]["drfs"] == [4.0, 50.0]
    splits = _load_splits(pet_dataset)
    assert [len(splits[s]) for s in SPLITS] == [8, 1, 2]  # volumes x DRFs of the split
    volumes = {s: {item["volume_id"] for item in splits[s]} for s in SPLITS}
    assert not (volumes["training"] & volumes["validation"] or volumes["training"] & volumes["test"])
    assert not volumes["validation"] & volumes["test"]
    anatomies = {item["anatomy"] for s in SPLITS for item in splits[s]}
    assert anatomies == {"torso", "brain"}
    seeds = set()
    for split in SPLITS:
        for item in splits[split]:
            for key in ("image", "label", "labels", "lesions", "mu"):
                assert Path(item[key]).is_absolute() and Path(item[key]).is_file(), item[key]
            assert item["source"] == "phantom" and isinstance(item["drf"], float)
            sim = item["simulation"]
            assert sim["kind"] == "pet_fast" and sim["drf"] == item["drf"]
            assert sim["count_scale"] > 0 and sim["sigma_vox"] == 1.0 and isinstance(sim["seed"], int)
            seeds.add((item["volume_id"], sim["seed"]))
            assert split != "validation" or item["drf"] == 20.0
    assert len({s for _, s in seeds}) == len(seeds)  # one noise seed per (volume, DRF)
    item = splits["training"][0]
    img = nib.load(item["label"])
    shape, spacing = PET_SMALL[f"{item['anatomy']}_grid"]
    np.testing.assert_allclose(img.affine, Grid(shape, spacing).affine())
    assert np.allclose(img.affine @ [(shape[0] - 1) / 2, (shape[1] - 1) / 2, (shape[2] - 1) / 2, 1], [0, 0, 0, 1])


def test_pet_lowdose_noise_grows_with_drf(pet_dataset):
    items = [i for i in _load_splits(pet_dataset)["training"] if i["anatomy"] == "torso"]
    vid = items[0]["volume_id"]
    noise = {}
    for item in (i for i in items if i["volume_id"] == vid):
        low, ref = nib.load(item["image"]).get_fdata(), nib.load(item["label"]).get_fdata()
        body = nib.load(item["labels"]).get_fdata() > 0
        noise[item["drf"]] = float(np.std((low - ref)[body]))
        assert abs(float(np.mean((low - ref)[body]))) < 0.05 * float(np.mean(ref[body]))  # counts preserve the mean
    assert noise[50.0] > 2.5 * noise[4.0]  # ~sqrt(50 / 4) = 3.5


def test_pet_cache_hit_keeps_files_and_change_regenerates(pet_dataset, caplog):
    out = pet_dataset.parent
    user_files = [out / "my_notes.txt", out / "lowdose" / "user_volume.nii.gz"]
    for f in user_files:
        f.write_text("not the generator's")
    before = _mtimes(out)
    kwargs = dict(n_train=4, n_val=1, n_test=1, drfs=(4, 50), val_drfs=(20,), seed=3, **PET_SMALL)
    with caplog.at_level(logging.INFO, logger="common.phantoms.datasets"):
        again = build_pet_dataset(out, **kwargs)
    assert again == pet_dataset and _mtimes(out) == before
    assert any("cached" in r.getMessage() for r in caplog.records)

    old = json.loads(pet_dataset.read_text())
    changed = build_pet_dataset(out, **{**kwargs, "val_drfs": (10,)})
    new = json.loads(changed.read_text())
    assert new["params_hash"] != old["params_hash"]
    assert {i["drf"] for i in new["validation"]} == {10.0}
    stale = set(old["files"]) - set(new["files"])
    assert stale and not any((out / f).exists() for f in stale)  # our replaced files are gone ...
    assert all(f.read_text() == "not the generator's" for f in user_files)  # ... the user's are untouched
    assert all((out / f).is_file() for f in new["files"])
    assert not list(out.glob(".build-*"))
    # a deleted file invalidates the cache
    (out / new["files"][0]).unlink()
    rebuilt = build_pet_dataset(out, **{**kwargs, "val_drfs": (10,)})
    assert (out / new["files"][0]).is_file() and json.loads(rebuilt.read_text())["params_hash"] == new["params_hash"]


def test_pet_sinogram_route_records_scanner_and_keeps_mean(tmp_path):
    from common.physics import PETScanner

    scanner = PETScanner(n_views=32, osem_iterations=2, osem_subsets=4)
    path = build_pet_dataset(
        tmp_path, n_train=1, n_val=0, n_test=1, drfs=(10,), route="sinogram", scanner=scanner, n_brain=0, **PET_SMALL
    )
    items = [i for s in SPLITS for i in _load_splits(path)[s]]
    assert len(items) == 2 and all(i["anatomy"] == "torso" for i in items)
    for item in items:
        sim = item["simulation"]
        assert sim["kind"] == "pet_sinogram" and sim["drf"] == item["drf"] == 10.0
        assert sim["n_views"] == 32 and sim["osem_iterations"] == 2 and "randoms_fraction" in sim
        low, ref = nib.load(item["image"]).get_fdata(), nib.load(item["label"]).get_fdata()
        body = nib.load(item["labels"]).get_fdata() > 0
        assert np.mean(low[body]) == pytest.approx(np.mean(ref[body]), rel=0.1)


def test_ct_dataset_pairs_noise_grows_as_dose_falls(tmp_path):
    from common.physics import CTAcquisition

    grids = {"head": ((48, 48, 3), (4.0, 4.0, 8.0)), "body": ((48, 48, 3), (6.5, 6.5, 8.0))}
    path = build_ct_dataset(
        tmp_path, n_train=1, n_val=0, n_test=1, doses=(0.1, 0.5), acquisition=CTAcquisition(n_views=64), grids=grids
    )
    splits = _load_splits(path)
    assert {i["anatomy"] for i in splits["training"]} == {"head"}
    assert {i["anatomy"] for i in splits["test"]} == {"body"}
    assert splits["validation"] == []  # (monai 1.6.1 cannot read an empty "test" list: IndexError)
    for split in ("training", "test"):
        noise = {}
        for item in splits[split]:
            assert item["source"] == "phantom" and item["dose"] in (0.1, 0.5)
            sim = item["simulation"]
            assert sim["kind"] == "ct_projection" and sim["n_views"] == 64 and sim["i0"] == 1e5
            assert "electronic_noise_std" in sim and sim["dose"] == item["dose"]
            assert Path(item["phantom_hu"]).is_file() and Path(item["labels"]).is_file()
            low, ref = nib.load(item["image"]).get_fdata(), nib.load(item["label"]).get_fdata()
            inside = nib.load(item["labels"]).get_fdata() > 0
            noise[item["dose"]] = float(np.std((low - ref)[inside]))
        assert noise[0.1] > 1.5 * noise[0.5]  # ~sqrt(5)


def test_ct_sr_dataset_thick_affine_and_shapes(tmp_path):
    grids = {"head": ((32, 32, 16), (6.0, 6.0, 1.5)), "body": ((32, 32, 16), (10.0, 10.0, 1.5))}
    path = build_ct_sr_dataset(tmp_path, n_train=1, n_val=1, n_test=1, factors=(2, 4), grids=grids, seed=1)
    splits = _load_splits(path)
    assert sum(len(v) for v in splits.values()) == 6
    for item in (i for s in SPLITS for i in splits[s]):
        thin, thick = nib.load(item["label"]), nib.load(item["image"])
        f = item["factor"]
        assert thick.shape == (32, 32, math.ceil(16 / f))
        assert thick.header.get_zooms()[2] == pytest.approx(1.5 * f)
        # thick slice k is centred on thin slice k * f (offset 0): same world position
        np.testing.assert_allclose(thick.affine @ [3, 4, 2, 1], thin.affine @ [3, 4, 2 * f, 1], atol=1e-4)
        sim = item["simulation"]
        assert sim == {**sim, "kind": "thick_slice", "factor": f, "thickness_mm": 1.5 * f, "offset": 0}
    volumes = {s: {i["volume_id"] for i in splits[s]} for s in SPLITS}
    assert sum(len(v) for v in volumes.values()) == len(set().union(*volumes.values())) == 3


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("RESTOREZOO_DATA", str(tmp_path))
    assert default_data_dir("pet") == tmp_path / "pet"
    monkeypatch.delenv("RESTOREZOO_DATA")
    assert default_data_dir("ct") == Path.home() / ".cache" / "restorezoo" / "ct"
    with pytest.raises(ValueError):
        default_data_dir("../x")


def test_builders_reject_bad_parameters(tmp_path):
    with pytest.raises(ValueError, match="drf"):
        build_pet_dataset(tmp_path, drfs=(0.5,), **PET_SMALL)
    with pytest.raises(ValueError, match="route"):
        build_pet_dataset(tmp_path, route="osem", **PET_SMALL)
    with pytest.raises(ValueError, match="doses"):
        build_ct_dataset(tmp_path, doses=(1.5,))
    with pytest.raises(ValueError, match="factors"):
        build_ct_sr_dataset(tmp_path, factors=(1.5,))
    assert not os.listdir(tmp_path)  # nothing written on bad input
