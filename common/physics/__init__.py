"""Low-dose physics: parallel-beam projector, low-dose CT, low-count PET and thick-slice CT simulation.

Array conventions follow :mod:`common`: volumes are ``(X, Y, Z)`` with z the axial slice index; the 2D projector works
on ``(B, N, N)`` slices and ``(B, A, N)`` sinograms. See each module's docstring for the physical model and units.
"""

from __future__ import annotations

from .ct import (
    CTAcquisition,
    CTLowDoseSimulator,
    check_dose,
    hu_to_mu,
    mu_to_hu,
    simulate_low_dose_ct,
)
from .pet import (
    MEASURED_OSEM_REL_NOISE,
    PETScanner,
    calibrate_count_scale,
    check_drf,
    gaussian_kernel_1d,
    noise_std_reduction,
    simulate_low_count_pet_fast,
    simulate_low_count_pet_fast_torch,
    simulate_low_count_pet_sinogram,
)
from .projector import (
    FILTERS,
    ParallelBeamProjector,
    backproject,
    fbp,
    fourier_filter,
    pad_to_square,
    radon,
    square_canvas_size,
    system_matrix,
    uniform_angles_deg,
)
from .slices import (
    FWHM_PER_SIGMA,
    fwhm_to_sigma,
    interpolate_z,
    simulate_thick_slices,
    slice_profile_sigma_vox,
    thick_slice_affine,
    thick_slice_indices,
    thin_positions,
    thin_slice_affine,
)

__all__ = [
    "CTAcquisition",
    "CTLowDoseSimulator",
    "FILTERS",
    "FWHM_PER_SIGMA",
    "MEASURED_OSEM_REL_NOISE",
    "PETScanner",
    "ParallelBeamProjector",
    "backproject",
    "calibrate_count_scale",
    "check_dose",
    "check_drf",
    "fbp",
    "fourier_filter",
    "fwhm_to_sigma",
    "gaussian_kernel_1d",
    "hu_to_mu",
    "interpolate_z",
    "mu_to_hu",
    "noise_std_reduction",
    "pad_to_square",
    "radon",
    "simulate_low_count_pet_fast",
    "simulate_low_count_pet_fast_torch",
    "simulate_low_count_pet_sinogram",
    "simulate_low_dose_ct",
    "simulate_thick_slices",
    "slice_profile_sigma_vox",
    "square_canvas_size",
    "system_matrix",
    "thick_slice_affine",
    "thick_slice_indices",
    "thin_positions",
    "thin_slice_affine",
    "uniform_angles_deg",
]
