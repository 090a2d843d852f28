"""Input validation at the point where data enters a pipeline.

Each check raises :class:`common.errors.InputDataError` whose message starts with the file the data came from
(``MetaTensor.meta["filename_or_obj"]``), so a user with hundreds of volumes knows which one to fix.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from ..errors import InputDataError

__all__ = ["CheckPaird", "ValidateImaged", "source_of", "validate_image"]

_KINDS = ("ct", "pet", "any")

# Plausible ranges of the units the bundles expect (overridable with ``allow_implausible``).
SUV_PLAUSIBLE_MAX = 500.0  # body-weight SUV: tissue 0.3-10, lesions / bladder up to ~100; Bq/mL images reach 1e4-1e6
SUV_PLAUSIBLE_PEAK = 0.2  # an SUV image peaks well above this (background tissue alone is ~0.3-1)
HU_AIR_CEILING = -200.0  # a CT image holds air (-1000 HU) outside the body or in the lungs
HU_RANGE = (-3000.0, 40000.0)
_OVERRIDE = "set allow_implausible (--allow_implausible true) to run anyway"


def source_of(x: Any, fallback: str | None = None) -> str:
    """The file name a (Meta)Tensor was loaded from, or ``fallback``."""
    meta = getattr(x, "meta", None)
    if isinstance(meta, Mapping):
        name = meta.get("filename_or_obj")
        if name:
            return str(name)
    return fallback or "<in-memory data>"


def _spacing(x: Any) -> np.ndarray | None:
    pixdim = getattr(x, "pixdim", None)
    if pixdim is None:
        return None
    return np.asarray(torch.as_tensor(pixdim).cpu(), dtype=float).ravel()


def validate_image(
    x: torch.Tensor | np.ndarray,
    source: str,
    *,
    kind: str = "any",
    spatial_dims: int = 3,
    channel_first: bool = True,
    min_size: int | Sequence[int] = 4,
    spacing_range_mm: tuple[float, float] = (0.05, 30.0),
    negative_tolerance: float = 0.1,
    allow_implausible: bool = False,
    allow_constant: bool = False,
) -> None:
    """Check one image and raise :class:`InputDataError` naming ``source`` on the first problem.

    Args:
        x: ``(C, *spatial)`` if ``channel_first`` else ``(*spatial)``.
        kind: ``"ct"`` (values must look like HU, not a [0, 1] normalisation), ``"pet"`` (activity must not be
            substantially negative) or ``"any"``.
        spatial_dims: expected number of spatial dimensions (3 for volumes).
        min_size: smallest allowed size of each spatial dimension, in voxels (one number for all, or one per axis,
            e.g. ``(4, 4, 1)`` for a slice-wise network that accepts a single slice).
        spacing_range_mm: plausible voxel spacing (checked when the tensor carries MONAI spacing metadata).
        negative_tolerance: PET only: the minimum may not be below ``-negative_tolerance * max`` (reconstructions
            may have slightly negative voxels; a strongly negative image is corrupt or not activity).
        allow_implausible: skip the unit plausibility checks (CT: air below ``HU_AIR_CEILING``; PET: a peak between
            ``SUV_PLAUSIBLE_PEAK`` and ``SUV_PLAUSIBLE_MAX``), for data the user knows to be right. Structural checks
            (shape, NaN/Inf, constant, normalised [0, 1] CT, impossible HU, negative activity) always apply.
        allow_constant: accept a constant image (a uniform phantom is a valid input of the simulators, not of a
            denoiser).
    """
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {_KINDS}, got {kind!r}")
    t = torch.as_tensor(np.asarray(x) if isinstance(x, np.ndarray) else x)
    shape = tuple(t.shape[1:] if channel_first else t.shape)
    if len(shape) != spatial_dims:
        raise InputDataError(
            source, f"expected a {spatial_dims}D image (X, Y{', Z' if spatial_dims == 3 else ''}), got shape {shape}"
        )
    minimum = (int(min_size),) * len(shape) if isinstance(min_size, int | float) else tuple(int(m) for m in min_size)
    if len(minimum) != len(shape):
        raise ValueError(f"min_size {min_size} does not match the {len(shape)} spatial dimensions")
    if any(n < m for n, m in zip(shape, minimum, strict=True)):
        raise InputDataError(
            source, f"image shape {shape} has a dimension smaller than the network's minimum {minimum}"
        )
    if not torch.is_floating_point(t):
        t = t.float()
    finite = torch.isfinite(t)
    if not bool(finite.all()):
        n_bad = int((~finite).sum())
        raise InputDataError(source, f"image contains {n_bad} NaN/Inf voxel(s)")
    lo, hi = float(t.min()), float(t.max())
    if hi == lo and not allow_constant:
        raise InputDataError(source, f"image is empty/constant (all voxels = {lo})")
    spacing = _spacing(x)
    if spacing is not None and spacing.size:
        sp = spacing[:spatial_dims]
        if np.any(~np.isfinite(sp)) or np.any(sp < spacing_range_mm[0]) or np.any(sp > spacing_range_mm[1]):
            shown = tuple(round(float(v), 4) for v in sp)
            raise InputDataError(source, f"implausible voxel spacing {shown} mm (expected {spacing_range_mm} mm)")
    if kind == "ct":
        if lo >= -2.0 and hi <= 2.0:
            raise InputDataError(
                source,
                f"values lie in [{lo:.3g}, {hi:.3g}]: this looks like a normalised image, not Hounsfield units "
                "(expected air near -1000 HU and soft tissue near 40 HU)",
            )
        if lo < HU_RANGE[0] or hi > HU_RANGE[1]:
            raise InputDataError(source, f"values [{lo:.4g}, {hi:.4g}] are outside any plausible HU range")
        if lo > HU_AIR_CEILING and not allow_implausible:
            raise InputDataError(
                source,
                f"no voxel below {HU_AIR_CEILING:g} HU (values [{lo:.4g}, {hi:.4g}]): a CT in Hounsfield units holds "
                "air near -1000 HU; stored values without the -1024 rescale intercept? Convert to HU (restorezoo "
                f"dicom2nifti does), or {_OVERRIDE}",
            )
    if kind == "pet":
        if hi <= 0:
            raise InputDataError(source, f"no positive activity (maximum {hi:.4g})")
        if lo < -negative_tolerance * hi:
            raise InputDataError(
                source, f"negative activity: minimum {lo:.4g} is below -{negative_tolerance:g} x maximum ({hi:.4g})"
            )
        if hi > SUV_PLAUSIBLE_MAX and not allow_implausible:
            raise InputDataError(
                source,
                f"maximum {hi:.4g} is not a body-weight SUV (expected at most {SUV_PLAUSIBLE_MAX:g}): this looks like "
                f"Bq/mL or counts; convert to SUV (restorezoo dicom2nifti does, from the DICOM tags), or {_OVERRIDE}",
            )
        if hi < SUV_PLAUSIBLE_PEAK and not allow_implausible:
            raise InputDataError(
                source,
                f"maximum {hi:.4g} is too low for a body-weight SUV image (tissue is 0.3-10 SUV): MBq/mL or a "
                f"normalised image? Convert to SUV, or {_OVERRIDE}",
            )


class ValidateImaged(MapTransform):
    """Validate the images under ``keys`` (see :func:`validate_image`); data pass through unchanged."""

    def __init__(
        self,
        keys: KeysCollection,
        kind: str = "any",
        spatial_dims: int = 3,
        min_size: int | Sequence[int] = 4,
        spacing_range_mm: Sequence[float] = (0.05, 30.0),
        negative_tolerance: float = 0.1,
        allow_implausible: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.kwargs = dict(
            kind=kind,
            spatial_dims=spatial_dims,
            min_size=min_size,
            spacing_range_mm=tuple(float(s) for s in spacing_range_mm),
            negative_tolerance=negative_tolerance,
            allow_implausible=bool(allow_implausible),
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            validate_image(d[key], source_of(d[key], f"item key '{key}'"), **self.kwargs)
        return d


class CheckPaird(MapTransform):
    """Check that paired images (e.g. low-dose ``image`` and full-dose ``label``) have the same spatial shape and,
    when both carry affines, the same geometry (within ``atol_mm``)."""

    def __init__(self, keys: KeysCollection, atol_mm: float = 1e-2, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.atol_mm = float(atol_mm)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        keys = list(self.key_iterator(d))
        if len(keys) < 2:
            return d
        ref_key = keys[0]
        ref = d[ref_key]
        for key in keys[1:]:
            other = d[key]
            pair = f"{source_of(ref, ref_key)} <-> {source_of(other, key)}"
            if tuple(ref.shape[1:]) != tuple(other.shape[1:]):
                raise InputDataError(
                    pair, f"mismatched pair: shapes {tuple(ref.shape[1:])} and {tuple(other.shape[1:])} differ"
                )
            a1, a2 = getattr(ref, "affine", None), getattr(other, "affine", None)
            if a1 is not None and a2 is not None:
                diff = float((torch.as_tensor(a1).double() - torch.as_tensor(a2).double()).abs().max())
                if diff > self.atol_mm:
                    raise InputDataError(pair, f"mismatched pair: affines differ by up to {diff:.4g} mm")
        return d
