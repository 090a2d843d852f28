"""Tests of common.physics: projector vs scikit-image, low-dose CT noise law, PET count reduction, thick slices."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.transform import iradon as sk_iradon
from skimage.transform import radon as sk_radon

import common.physics.ct as ct_module
from common.errors import InputDataError
from common.physics import (
    CTAcquisition,
    CTLowDoseSimulator,
    ParallelBeamProjector,
    PETScanner,
    backproject,
    calibrate_count_scale,
    fbp,
    fwhm_to_sigma,
    noise_std_reduction,
    radon,
    simulate_low_count_pet_fast,
    simulate_low_count_pet_fast_torch,
    simulate_low_count_pet_sinogram,
    simulate_low_dose_ct,
    simulate_thick_slices,
    square_canvas_size,
    system_matrix,
    thick_slice_affine,
    thick_slice_indices,
    thin_slice_affine,
    uniform_angles_deg,
)


# ------------------------------------------------------------------------------------------------ projector
def _disc_phantom(n: int) -> np.ndarray:
    """Discs and an ellipse inside the inscribed circle, float64 (N, N)."""
    rows, cols = np.mgrid[:n, :n] - n // 2
    img = np.zeros((n, n))
    img[rows**2 + cols**2 < (0.38 * n) ** 2] = 1.0
    img[(rows - 0.12 * n) ** 2 + (cols + 0.08 * n) ** 2 < (0.1 * n) ** 2] = 2.0
    img[((cols + 0.15 * n) / (0.15 * n)) ** 2 + ((rows - 0.1 * n) / (0.06 * n)) ** 2 < 1] = 0.3
    return img


@pytest.mark.parametrize("n", [64, 63])
def test_projector_matches_skimage(n: int) -> None:
    img = _disc_phantom(n)
    angles = np.arange(0.0, 180.0, 3.0) + 0.7  # include non-trivial angles
    ours = radon(torch.from_numpy(img)[None], torch.from_numpy(angles))[0].numpy()  # (A, N)
    ref = sk_radon(img, angles, circle=True).T
    assert ours.shape == (angles.size, n)
    assert np.linalg.norm(ours - ref) / np.linalg.norm(ref) < 1e-6

    sino = torch.from_numpy(np.ascontiguousarray(ref))[None]
    rec = fbp(sino, torch.from_numpy(angles), n)[0].numpy()
    rec_sk = sk_iradon(ref.T, angles, circle=True, filter_name="ramp")
    rows, cols = np.mgrid[:n, :n] - n // 2
    inside = rows**2 + cols**2 < (n // 2 - 1) ** 2
    assert np.linalg.norm((rec - rec_sk)[inside]) / np.linalg.norm(rec_sk[inside]) < 1e-6
    # and it is a reconstruction of the phantom (60 views of a sharp phantom: streaks and edge blur remain)
    assert np.linalg.norm((rec - img)[inside]) / np.linalg.norm(img[inside]) < 0.15

    # float32 path agrees with float64
    ours32 = radon(torch.from_numpy(img).float()[None], torch.from_numpy(angles))[0].numpy()
    assert np.abs(ours32 - ours).max() < 1e-4 * np.abs(ours).max()


def test_backprojection_is_adjoint_and_system_matrix_matches_radon() -> None:
    n, angles = 48, uniform_angles_deg(40)
    gen = torch.Generator().manual_seed(0)
    rows, cols = np.mgrid[:n, :n] - n // 2
    circle = torch.from_numpy(rows**2 + cols**2 < (n // 2 - 2) ** 2)
    x = torch.rand(2, n, n, dtype=torch.float64, generator=gen) * circle
    y = torch.rand(2, 40, n, dtype=torch.float64, generator=gen)
    lhs = float((radon(x, angles) * y).sum())
    rhs = float((x * backproject(y, angles, n)).sum())
    assert abs(lhs - rhs) / abs(lhs) < 0.02  # pixel-driven back-projection ~ adjoint of the ray-driven projector
    zero_view = radon(x, torch.tensor([0.0]))[:, 0]
    torch.testing.assert_close(zero_view, x.sum(dim=-2))  # theta = 0 sums over rows (documented geometry)
    cached = ParallelBeamProjector(n, angles, dtype=torch.float64, cache_grids=True)
    torch.testing.assert_close(cached.forward(x), radon(x, angles))
    torch.testing.assert_close(cached.forward(x), radon(x, angles))  # second call uses the cached grids
    matrix = system_matrix(n, angles)
    via_matrix = (matrix @ x.numpy().reshape(2, -1).T).T.reshape(2, 40, n)
    assert np.abs(via_matrix - radon(x, angles).numpy()).max() < 1e-4 * float(radon(x, angles).abs().max())


def test_square_canvas_contains_corners() -> None:
    support = np.ones((30, 50), dtype=bool)
    n = square_canvas_size(support)
    rows, cols = np.nonzero(support)
    rows, cols = rows + (n - 30) // 2 - n // 2, cols + (n - 50) // 2 - n // 2
    assert n % 2 == 0 and np.sqrt(rows**2 + cols**2).max() <= n // 2 - 2
    assert n <= math.ceil(math.hypot(30, 50)) + 8  # not wastefully large


# ------------------------------------------------------------------------------------------------- CT
PIXEL_MM = 1.8  # 128 px * 1.8 mm = 230 mm field of view around a 200 mm water cylinder
N_VIEWS = 360  # half the default: the dose law does not depend on it and the tests run twice as fast


def _water_cylinder(n: int = 128, n_slices: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.mgrid[:n, :n] - (n - 1) / 2
    radius_mm = np.hypot(rows, cols) * PIXEL_MM
    hu = np.where(radius_mm < 100.0, 0.0, -1000.0).astype(np.float32)
    return np.repeat(hu[..., None], n_slices, axis=2), radius_mm < 50.0


@pytest.fixture(scope="module")
def poisson_only_sim() -> tuple[CTLowDoseSimulator, np.ndarray]:
    hu, centre = _water_cylinder()
    return CTLowDoseSimulator(hu, PIXEL_MM, CTAcquisition(n_views=N_VIEWS, electronic_noise_std=0.0)), centre


@pytest.fixture(scope="module")
def default_sim() -> tuple[CTLowDoseSimulator, np.ndarray]:
    hu, centre = _water_cylinder()
    return CTLowDoseSimulator(hu, PIXEL_MM, CTAcquisition(n_views=N_VIEWS)), centre  # default electronic noise


def test_ct_noise_follows_inverse_sqrt_dose_and_is_unbiased(default_sim) -> None:
    sim, centre = default_sim
    ref = sim.reference()
    assert ref.shape == sim.shape and ref.dtype == np.float32
    assert abs(float(ref[centre].mean())) < 5.0  # water reads 0 HU: mu, pixel size and HU conversions agree
    stds, biases = {}, {}
    for dose in (1.0, 0.5, 0.25, 0.1):
        diff = sim.simulate(dose, seed=11) - ref
        stds[dose] = float(diff[centre].std())
        biases[dose] = float(diff[centre].mean())
    for dose in (0.5, 0.25, 0.1):
        assert stds[dose] / stds[1.0] == pytest.approx(1.0 / math.sqrt(dose), rel=0.10)
    assert max(abs(b) for b in biases.values()) < 5.0
    assert 5.0 < stds[1.0] < 50.0  # a plausible full-dose noise level in HU


def test_ct_electronic_noise_matters_at_low_dose_only(poisson_only_sim) -> None:
    sim, centre = poisson_only_sim
    hu, _ = _water_cylinder(n_slices=1)
    with_e = CTLowDoseSimulator(hu[..., 0], PIXEL_MM, CTAcquisition(n_views=N_VIEWS, electronic_noise_std=10.0))
    ref = with_e.reference()
    base = sim.reference()[..., 0]
    assert np.abs(ref - base).max() < 1e-3
    ratio = {}
    for dose in (1.0, 0.1):
        noisy_e = float((with_e.simulate(dose, 5) - ref)[centre].std())
        noisy_0 = float((sim.simulate(dose, 5)[..., 0] - base)[centre].std())
        ratio[dose] = noisy_e / noisy_0
    # ~215 photons per central ray at 10 % dose: sigma_e^2 = 100 adds a lot; ~2150 at full dose: ~5 %
    assert ratio[0.1] > 1.08
    assert ratio[1.0] < 1.06


def test_ct_seeded_deterministic_and_clean_sinogram_computed_once(monkeypatch) -> None:
    calls = {"n": 0}
    real_radon = ct_module.radon

    def counting_radon(*args, **kwargs):
        calls["n"] += 1
        return real_radon(*args, **kwargs)

    monkeypatch.setattr(ct_module, "radon", counting_radon)
    hu, centre = _water_cylinder(n=64, n_slices=2)
    acq = CTAcquisition(n_views=90)
    sim = CTLowDoseSimulator(hu, 3.6, acq)
    after_init = calls["n"]
    assert after_init >= 1
    a = sim.simulate(0.25, seed=3)
    b = sim.simulate(0.25, seed=3)
    c = sim.simulate(0.25, seed=4)
    sim.simulate(0.5, seed=3)
    sim.reference()
    assert calls["n"] == after_init  # doses / seeds / reference reuse the clean sinograms
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c)[centre].mean() > 1.0
    one_shot = simulate_low_dose_ct(hu, 3.6, 0.25, seed=3, acquisition=acq)
    np.testing.assert_allclose(one_shot, a, atol=1e-3)
    assert calls["n"] > after_init  # the convenience function builds its own simulator


@pytest.mark.parametrize("dose", [0.0, -0.1, 1.5, float("nan")])
def test_ct_rejects_bad_dose(dose: float) -> None:
    sim = CTLowDoseSimulator(np.zeros((16, 16), dtype=np.float32) - 1000.0, 1.0, CTAcquisition(n_views=8))
    with pytest.raises(ValueError, match=r"dose must be in \(0, 1\]"):
        sim.simulate(dose, seed=0)


def test_ct_non_square_slab_filling_the_corners() -> None:
    hu = np.zeros((40, 70), dtype=np.float32)  # water everywhere, corners included
    sim = CTLowDoseSimulator(hu, 2.0, CTAcquisition(n_views=180))
    assert sim.n > 70  # padded beyond the slice so the corners lie inside the reconstruction circle
    ref = sim.reference()
    assert ref.shape == (40, 70)
    assert abs(float(ref[8:-8, 8:-8].mean())) < 5.0
    assert float(np.abs(ref[8:-8, 8:-8]).max()) < 30.0
    noisy = sim.simulate(0.5, seed=1)
    assert noisy.shape == (40, 70) and np.isfinite(noisy).all()
    with pytest.raises(InputDataError, match="hu"):
        CTLowDoseSimulator(np.full((8, 8), np.nan), 1.0)


# ------------------------------------------------------------------------------------------------- PET
def _uniform_cube(activity: float = 3.0, size: int = 48) -> tuple[np.ndarray, tuple[slice, slice, slice]]:
    inner = (slice(6, size - 6),) * 3
    return np.full((size, size, size), activity, dtype=np.float32), inner


def test_noise_reduction_factor_matches_continuous_gaussian() -> None:
    sigma = 2.0
    assert noise_std_reduction(sigma) == pytest.approx(1.0 / math.sqrt(8 * math.pi**1.5 * sigma**3), rel=0.02)
    assert noise_std_reduction(0.0) == 1.0


def test_pet_fast_noise_calibrated_and_grows_like_sqrt_drf() -> None:
    cube, inner = _uniform_cube()
    c = calibrate_count_scale(3.0, rel_noise_at_drf1=0.023, sigma_vox=1.0)
    rel = {}
    for drf in (1, 4, 20, 100):
        out = simulate_low_count_pet_fast(cube, drf, seed=drf, count_scale=c, sigma_vox=1.0)
        assert out.shape == cube.shape and out.dtype == np.float32
        region = out[inner]
        assert float(region.mean()) == pytest.approx(3.0, rel=0.03)  # unbiased
        rel[drf] = float(region.std() / region.mean())
    assert rel[1] == pytest.approx(0.023, rel=0.10)
    for drf in (4, 20, 100):
        assert rel[drf] / rel[1] == pytest.approx(math.sqrt(drf), rel=0.15)


def test_pet_fast_deterministic_zero_stays_zero_and_rejects_bad_drf() -> None:
    cube, _ = _uniform_cube(size=16)
    c = calibrate_count_scale(3.0)
    a = simulate_low_count_pet_fast(cube, 10, seed=1, count_scale=c)
    np.testing.assert_array_equal(a, simulate_low_count_pet_fast(cube, 10, seed=1, count_scale=c))
    assert not np.array_equal(a, simulate_low_count_pet_fast(cube, 10, seed=2, count_scale=c))
    zero = np.zeros((12, 12, 12), dtype=np.float32)
    assert np.array_equal(simulate_low_count_pet_fast(zero, 50, seed=0, count_scale=c), zero)
    with pytest.raises(ValueError, match="drf"):
        simulate_low_count_pet_fast(cube, 0.5, seed=0, count_scale=c)


def test_pet_fast_torch_matches_numpy_statistics() -> None:
    cube, inner = _uniform_cube()
    c = calibrate_count_scale(3.0)
    drf = 10
    ref = simulate_low_count_pet_fast(cube, drf, seed=0, count_scale=c)[inner]
    gen = torch.Generator().manual_seed(0)
    out = simulate_low_count_pet_fast_torch(torch.from_numpy(cube)[None], drf, gen, count_scale=c, sigma_vox=1.0)
    assert out.shape == (1, *cube.shape) and out.dtype == torch.float32
    region = out[0].numpy()[inner]
    assert float(region.mean()) == pytest.approx(3.0, rel=0.03)
    assert float(region.std()) == pytest.approx(float(ref.std()), rel=0.10)
    again = simulate_low_count_pet_fast_torch(
        torch.from_numpy(cube)[None], drf, torch.Generator().manual_seed(0), count_scale=c
    )
    assert torch.equal(out, again)


def test_pet_sinogram_route_noise_grows_with_drf_and_mean_is_unbiased() -> None:
    n, n_slices, voxel_mm = 64, 4, 3.0
    rows, cols = np.mgrid[:n, :n] - (n - 1) / 2
    radius = np.hypot(rows, cols)
    body = radius < 26
    activity = np.repeat(np.where(body, 2.0, 0.0)[..., None], n_slices, axis=2).astype(np.float32)
    mu = np.repeat(np.where(body, 0.0096, 0.0)[..., None], n_slices, axis=2).astype(np.float32)
    centre = np.repeat((radius < 12)[..., None], n_slices, axis=2)
    scanner = PETScanner(n_views=48, osem_subsets=6)
    stds = {}
    for drf in (1, 4, 20):
        out = simulate_low_count_pet_sinogram(activity, mu, voxel_mm, drf, seed=7, scanner=scanner)
        assert out.shape == activity.shape and out.dtype == np.float32 and out.min() >= 0
        assert float(out[centre].mean()) == pytest.approx(2.0, rel=0.03)
        stds[drf] = float(out[centre].std())
    assert stds[20] > stds[4] > stds[1]
    assert stds[20] / stds[1] > 2.5  # ~sqrt(20) = 4.5 expected; a loose but meaningful bound
    again = simulate_low_count_pet_sinogram(activity, mu, voxel_mm, 20, seed=7, scanner=scanner)
    assert float(again[centre].std()) == stds[20]


# ------------------------------------------------------------------------------------------- thick slices
def _fwhm(profile: np.ndarray) -> float:
    """Full width at half maximum of a single-peaked 1D profile, linear interpolation between samples."""
    peak = int(np.argmax(profile))
    half = profile[peak] / 2.0
    left = peak - int(np.argmax(profile[peak::-1] < half))
    right = peak + int(np.argmax(profile[peak:] < half))
    x_left = left + (half - profile[left]) / (profile[left + 1] - profile[left])
    x_right = right - 1 + (profile[right - 1] - half) / (profile[right - 1] - profile[right])
    return x_right - x_left


@pytest.mark.parametrize(("thickness_mm", "spacing_mm"), [(5.0, 1.0), (3.0, 0.5), (10.0, 1.25)])
def test_thick_slice_profile_fwhm_equals_thickness(thickness_mm: float, spacing_mm: float) -> None:
    plate = np.zeros((3, 3, 101), dtype=np.float32)
    plate[:, :, 50] = 1.0
    blurred = simulate_thick_slices(plate, spacing_mm, factor=1, thickness_mm=thickness_mm)
    assert blurred.shape == plate.shape
    fwhm_mm = _fwhm(blurred[1, 1].astype(np.float64)) * spacing_mm
    assert fwhm_mm == pytest.approx(thickness_mm, rel=0.05)
    assert float(blurred[1, 1].sum()) == pytest.approx(1.0, rel=1e-5)  # profile normalised


@pytest.mark.parametrize(("factor", "offset"), [(3, 1), (4, 0), (5, 2)])
def test_thick_slice_grid_correspondence(factor: int, offset: int) -> None:
    n_thin = 61
    ramp = np.broadcast_to(np.arange(n_thin, dtype=np.float64), (2, 3, n_thin)).copy()
    thick = simulate_thick_slices(ramp, 1.0, factor, offset=offset)
    expected_idx = thick_slice_indices(n_thin, factor, offset)
    assert thick.shape == (2, 3, math.ceil((n_thin - offset) / factor)) == (2, 3, expected_idx.size)
    np.testing.assert_array_equal(expected_idx, offset + factor * np.arange(expected_idx.size))
    margin = int(4 * fwhm_to_sigma(factor) + 1)  # 'nearest' edges bend the ramp within the kernel radius
    interior = (expected_idx >= margin) & (expected_idx < n_thin - margin)
    assert interior.sum() >= 5
    np.testing.assert_allclose(thick[0, 0, interior], expected_idx[interior], atol=1e-9)

    theta = 0.3
    affine = np.array(
        [
            [0.8 * math.cos(theta), -0.8 * math.sin(theta), 0.1, -120.0],
            [0.8 * math.sin(theta), 0.8 * math.cos(theta), 0.05, 35.0],
            [0.0, 0.0, 1.25, -60.0],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    thick_affine = thick_slice_affine(affine, factor, offset)
    for i, j, k in [(0, 0, 0), (5, 7, 3), (11, 2, 9)]:
        world_thick = thick_affine @ np.array([i, j, k, 1.0])
        world_thin = affine @ np.array([i, j, offset + k * factor, 1.0])
        np.testing.assert_allclose(world_thick, world_thin, atol=1e-9)
    np.testing.assert_allclose(thin_slice_affine(thick_affine, factor, offset), affine, atol=1e-12)


def test_thick_slice_input_validation() -> None:
    with pytest.raises(ValueError, match="factor"):
        simulate_thick_slices(np.zeros((2, 2, 8)), 1.0, factor=0)
    with pytest.raises(ValueError, match="offset"):
        thick_slice_indices(8, 2, offset=8)
    with pytest.raises(InputDataError, match="volume"):
        simulate_thick_slices(np.zeros((2, 8)), 1.0, factor=2)
    assert fwhm_to_sigma(2.0 * math.sqrt(2.0 * math.log(2.0))) == pytest.approx(1.0)


def test_region_back_projection_equals_the_crop_of_the_full_one() -> None:
    gen = torch.Generator().manual_seed(3)
    sino = torch.rand((2, 40, 48), generator=gen, dtype=torch.float64)
    projector = ParallelBeamProjector(48, uniform_angles_deg(40), dtype=torch.float64)
    full = projector.fbp(sino, "ramp")
    region = projector.fbp(sino, "ramp", region=(5, 17, 20, 13))
    assert region.shape == (2, 20, 13)
    assert torch.allclose(region, full[:, 5:25, 17:30], atol=1e-10)
    with pytest.raises(ValueError, match="inside the 48x48 canvas"):
        projector.backward(sino, region=(40, 0, 10, 10))


def test_ct_fresh_patch_has_the_stored_noise_statistics_and_is_reproducible(default_sim) -> None:
    sim, _ = default_sim
    ref, size = sim.reference(), (24, 24)
    x0 = y0 = sim.shape[0] // 2 - 12  # a patch inside the water disc
    stored = (sim.simulate(0.25, seed=4) - ref)[x0 : x0 + 24, y0 : y0 + 24]
    rng = np.random.default_rng(9)
    fresh = np.stack([sim.simulate_patch(0.25, rng, z, (x0, y0), size) for z in range(sim.shape[2])], axis=-1)
    fresh -= ref[x0 : x0 + 24, y0 : y0 + 24]
    assert fresh.dtype == np.float32
    assert float(fresh.std()) == pytest.approx(float(stored.std()), rel=0.12)
    assert abs(float(fresh.mean())) < 5.0
    again = sim.simulate_patch(0.25, np.random.default_rng(9), 0, (x0, y0), size)
    assert np.allclose(again, fresh[..., 0] + ref[x0 : x0 + 24, y0 : y0 + 24, 0], atol=1e-3)
    assert not np.array_equal(sim.simulate_patch(0.25, np.random.default_rng(10), 0, (x0, y0), size), again)
    with pytest.raises(ValueError, match="does not fit"):
        sim.simulate_patch(0.25, rng, 0, (sim.shape[0] - 10, 0), size)
