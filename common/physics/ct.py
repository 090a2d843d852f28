"""Projection-domain low-dose CT simulation (parallel beam, per axial slice).

Model (docs/physics.md), for every axial slice of an ``(X, Y)`` or ``(X, Y, Z)`` HU array:

1. ``mu = mu_water * (1 + HU / 1000)`` in 1/mm, clipped at 0 (air / padding below -1000 HU has no attenuation);
2. clean line integrals ``p = pixel_mm * R mu`` (dimensionless), computed ONCE per simulator and reused for every
   dose and seed;
3. ``counts ~ Poisson(I0 * dose * exp(-p)) + N(0, electronic_noise_std^2)``;
4. ``p' = -log(max(counts, 1) / (I0 * dose))``;
5. filtered back-projection (ramp filter, scaled like scikit-image's ``iradon``), divided by ``pixel_mm``, back to HU.

``reference()`` is step 5 applied to the noise-free ``p``: it carries exactly the same discretisation blur as the
noisy images, so ``simulate(dose) - reference()`` is pure noise (plus the small log-bias of low counts).
Noise is non-stationary and streaky as in real CT; image-domain white noise is not an equivalent.

Non-square slices (and objects reaching into the corners) are zero-padded into a square canvas whose inscribed circle
contains every pixel with ``mu > 0`` (see :func:`common.physics.projector.square_canvas_size`) and cropped back.
Detector bins have the pixel size, views are evenly spaced over 180 degrees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputDataError
from .projector import (
    FILTERS,
    ParallelBeamProjector,
    fbp,
    pad_to_square,
    radon,
    square_canvas_size,
    uniform_angles_deg,
)

__all__ = ["CTAcquisition", "CTLowDoseSimulator", "hu_to_mu", "mu_to_hu", "simulate_low_dose_ct", "check_dose"]

# Bound on sinogram elements handled at once during reconstruction (FFT buffers are complex and padded 2x+).
_SINO_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class CTAcquisition:
    """Scanner / protocol parameters of the simulated full-dose acquisition.

    Attributes:
        i0: unattenuated photons per detector bin and view at full dose (1e5 is the usual "clinical" figure in
            simulation studies, e.g. the TIGRE toolbox ``addCTnoise`` defaults).
        n_views: projection angles evenly spaced over 180 degrees (parallel beam).
        electronic_noise_std: standard deviation of the additive Gaussian detector noise, in counts. The default
            4 counts gives the dose-noise curve of docs/physics.md (``benchmarks/noise_calibration.py``: 20 cm water,
            0.7 mm, 720 views: 35.5 / 50.9 / 72.8 / 117.0 HU at 100 / 50 / 25 / 10 %, 4.2 % above 1/sqrt(dose) at
            10 %). The
            TIGRE toolbox demo uses 10 counts with I0 = 1e5, which puts the 10 % noise ~18 % above 1/sqrt(dose)
            (~215 photons reach the detector behind 20 cm of water at 10 % dose).
        mu_water_per_mm: linear attenuation of water (1/mm) at the effective energy (~70 keV).
        fbp_filter: FBP filter name, one of ``common.physics.projector.FILTERS``.
    """

    i0: float = 1e5
    n_views: int = 720
    electronic_noise_std: float = 4.0
    mu_water_per_mm: float = 0.0192
    fbp_filter: str = "ramp"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.i0) and self.i0 > 0):
            raise ValueError(f"CTAcquisition.i0 must be a positive photon count, got {self.i0}")
        if int(self.n_views) != self.n_views or self.n_views < 2:
            raise ValueError(f"CTAcquisition.n_views must be an integer >= 2, got {self.n_views}")
        if not (math.isfinite(self.electronic_noise_std) and self.electronic_noise_std >= 0):
            raise ValueError(f"CTAcquisition.electronic_noise_std must be >= 0, got {self.electronic_noise_std}")
        if not (math.isfinite(self.mu_water_per_mm) and self.mu_water_per_mm > 0):
            raise ValueError(f"CTAcquisition.mu_water_per_mm must be > 0 (1/mm), got {self.mu_water_per_mm}")
        if self.fbp_filter not in FILTERS:
            raise ValueError(f"CTAcquisition.fbp_filter must be one of {FILTERS}, got {self.fbp_filter!r}")


def hu_to_mu(hu: np.ndarray | torch.Tensor | float, mu_water: float) -> np.ndarray | torch.Tensor | float:
    """Hounsfield units -> linear attenuation in the unit of ``mu_water`` (e.g. 1/mm): ``mu_w * (1 + HU/1000)``."""
    return mu_water * (1.0 + hu / 1000.0)


def mu_to_hu(mu: np.ndarray | torch.Tensor | float, mu_water: float) -> np.ndarray | torch.Tensor | float:
    """Linear attenuation (same unit as ``mu_water``) -> Hounsfield units: ``1000 * (mu / mu_w - 1)``."""
    return 1000.0 * (mu / mu_water - 1.0)


def check_dose(dose: float) -> float:
    """Return ``dose`` as a float if it is a dose fraction in (0, 1], else raise ValueError."""
    try:
        value = float(dose)
    except (TypeError, ValueError):
        raise ValueError(f"dose must be a number in (0, 1] (fraction of the full dose), got {dose!r}") from None
    if not (math.isfinite(value) and 0.0 < value <= 1.0):
        raise ValueError(f"dose must be in (0, 1] (fraction of the full dose, e.g. 0.25 for 25 %), got {dose!r}")
    return value


class CTLowDoseSimulator:
    """Low-dose CT simulator for one HU slice / volume; clean sinograms are computed once in ``__init__``.

    Args:
        hu: ``(X, Y)`` or ``(X, Y, Z)`` array in HU (z = axial slice index). Not modified.
        pixel_mm: in-plane pixel size in mm (square pixels assumed; detector bins have the same width).
        acquisition: full-dose acquisition parameters.

    Memory: the clean sinograms are kept as float32, ``Z * n_views * N`` values (N = padded square side).
    """

    def __init__(self, hu: np.ndarray, pixel_mm: float, acquisition: CTAcquisition = CTAcquisition()) -> None:
        hu = np.asarray(hu)
        if hu.ndim not in (2, 3):
            raise InputDataError("hu", f"expected an (X, Y) or (X, Y, Z) HU array, got shape {hu.shape}")
        if hu.size == 0 or min(hu.shape[:2]) < 2:
            raise InputDataError("hu", f"slices must be at least 2x2 pixels, got shape {hu.shape}")
        if not np.issubdtype(hu.dtype, np.number) or not np.isfinite(hu).all():
            raise InputDataError("hu", "contains NaN/Inf or non-numeric values")
        if not (math.isfinite(pixel_mm) and pixel_mm > 0):
            raise ValueError(f"pixel_mm must be a positive size in mm, got {pixel_mm}")
        self.shape = hu.shape
        self.pixel_mm = float(pixel_mm)
        self.acquisition = acquisition
        volume = hu if hu.ndim == 3 else hu[..., None]
        mu = np.clip(hu_to_mu(volume.astype(np.float32), acquisition.mu_water_per_mm), 0.0, None)
        mu_slices = torch.from_numpy(np.ascontiguousarray(np.moveaxis(mu, -1, 0)))  # (Z, X, Y) in 1/mm
        self.n = square_canvas_size((mu > 0).any(axis=-1))
        self.angles_deg = uniform_angles_deg(acquisition.n_views)
        n_slices = mu_slices.shape[0]
        self._sinograms = torch.empty((n_slices, acquisition.n_views, self.n), dtype=torch.float32)
        self._offset = ((self.n - hu.shape[0]) // 2, (self.n - hu.shape[1]) // 2)  # as pad_to_square places it
        step = self._slice_chunk()
        for z0 in range(0, n_slices, step):
            canvas, _ = pad_to_square(mu_slices[z0 : z0 + step], self.n)
            self._sinograms[z0 : z0 + step] = radon(canvas, self.angles_deg) * self.pixel_mm
        self._reference: np.ndarray | None = None

    # ------------------------------------------------------------------------------------------ helpers
    def _slice_chunk(self) -> int:
        padded = max(64, 1 << math.ceil(math.log2(2 * self.n)))
        return max(1, _SINO_CHUNK_ELEMENTS // (self.acquisition.n_views * padded))

    def _reconstruct(self, line_integrals: torch.Tensor) -> torch.Tensor:
        """FBP of ``(b, A, N)`` line integrals -> cropped ``(b, X, Y)`` HU."""
        mu = fbp(line_integrals, self.angles_deg, self.n, filter=self.acquisition.fbp_filter) / self.pixel_mm
        ox, oy = self._offset
        x_size, y_size = self.shape[:2]
        return mu_to_hu(mu[:, ox : ox + x_size, oy : oy + y_size], self.acquisition.mu_water_per_mm)

    def _to_output(self, slices: torch.Tensor) -> np.ndarray:
        out = np.moveaxis(slices.numpy(), 0, -1).astype(np.float32, copy=False)
        return out if len(self.shape) == 3 else out[..., 0]

    # -------------------------------------------------------------------------------------------- API
    @property
    def clean_sinograms(self) -> np.ndarray:
        """Noise-free line integrals ``(Z, n_views, N)`` (dimensionless), a copy."""
        return self._sinograms.numpy().copy()

    def reference(self) -> np.ndarray:
        """FBP of the noise-free sinograms, HU float32, same shape as the input (cached)."""
        if self._reference is None:
            out = torch.empty((self._sinograms.shape[0], *self.shape[:2]), dtype=torch.float32)
            step = self._slice_chunk()
            for z0 in range(0, out.shape[0], step):
                out[z0 : z0 + step] = self._reconstruct(self._sinograms[z0 : z0 + step])
            self._reference = self._to_output(out)
        return self._reference.copy()

    def _noisy_line_integrals(self, clean: torch.Tensor, dose: float, rng: np.random.Generator) -> torch.Tensor:
        """``(b, A, N)`` clean line integrals -> one noisy realisation at ``dose`` (steps 3-4 of the model)."""
        acq = self.acquisition
        blank = acq.i0 * dose
        counts = rng.poisson(blank * np.exp(-clean.numpy().astype(np.float64))).astype(np.float64)
        if acq.electronic_noise_std > 0:
            counts += rng.normal(0.0, acq.electronic_noise_std, size=counts.shape)
        return torch.from_numpy((-np.log(np.maximum(counts, 1.0) / blank)).astype(np.float32))

    def simulate(self, dose: float, seed: int) -> np.ndarray:
        """Low-dose image at ``dose`` (fraction of the full dose in (0, 1]), HU float32, same shape as the input.

        Deterministic for a given ``seed`` (numpy ``Generator``); dose 1 gives the noisy full-dose image.
        """
        dose = check_dose(dose)
        rng = np.random.default_rng(seed)
        out = torch.empty((self._sinograms.shape[0], *self.shape[:2]), dtype=torch.float32)
        step = self._slice_chunk()
        for z0 in range(0, out.shape[0], step):
            noisy = self._noisy_line_integrals(self._sinograms[z0 : z0 + step], dose, rng)
            out[z0 : z0 + step] = self._reconstruct(noisy)
        return self._to_output(out)

    def simulate_patch(
        self, dose: float, rng: np.random.Generator, z: int, corner: tuple[int, int], size: tuple[int, int]
    ) -> np.ndarray:
        """A fresh low-dose realisation of one patch: HU float32 ``size = (h, w)`` at ``(x0, y0) = corner`` of slice
        ``z`` (requires a 3D input; a 2D input is slice 0).

        Noise is drawn on the whole sinogram of the slice (it is non-local in the image), and only the patch's
        pixels are back-projected (``h * w / N**2`` of the cost of :meth:`simulate`). The values equal those
        ``simulate`` reconstructs for the same sinogram noise: only the random stream differs.
        """
        dose = check_dose(dose)
        x0, y0 = (int(v) for v in corner)
        height, width = (int(v) for v in size)
        if not (0 <= z < self._sinograms.shape[0]):
            raise IndexError(f"slice {z} outside the {self._sinograms.shape[0]} simulated slices")
        if x0 < 0 or y0 < 0 or x0 + height > self.shape[0] or y0 + width > self.shape[1]:
            raise ValueError(f"patch {size} at {corner} does not fit the {self.shape[:2]} slice")
        noisy = self._noisy_line_integrals(self._sinograms[z : z + 1], dose, rng)
        ox, oy = self._offset
        projector = ParallelBeamProjector(self.n, self.angles_deg)
        mu = projector.fbp(noisy, self.acquisition.fbp_filter, region=(ox + x0, oy + y0, height, width))
        hu = mu_to_hu(mu[0] / self.pixel_mm, self.acquisition.mu_water_per_mm)
        return hu.numpy().astype(np.float32, copy=False)


def simulate_low_dose_ct(
    hu: np.ndarray, pixel_mm: float, dose: float, seed: int, acquisition: CTAcquisition = CTAcquisition()
) -> np.ndarray:
    """One-shot :class:`CTLowDoseSimulator` ``(hu, pixel_mm, acquisition).simulate(dose, seed)``.

    Build the simulator yourself to draw several doses / seeds from one clean sinogram.
    """
    check_dose(dose)
    return CTLowDoseSimulator(hu, pixel_mm, acquisition).simulate(dose, seed)
