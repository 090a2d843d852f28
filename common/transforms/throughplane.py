"""Through-plane super-resolution transforms: thick/thin training pairs (supervised and self-supervised), classical
z-interpolation baselines, and the thin output grid's affine.

Grid convention (:mod:`common.physics.slices`): thick slice ``k`` lies on thin slice ``k * factor`` of the output
grid, whose affine is ``thin_slice_affine(thick_affine, factor)``. Volumes are channel-first ``(C, X, Y, Z)``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandomizableTransform, SpatialCrop
from monai.utils import convert_to_dst_type
from scipy import ndimage

from ..errors import InputDataError
from ..physics.slices import (
    fwhm_to_sigma,
    interpolate_z,
    simulate_thick_slices,
    thick_slice_affine,
    thin_slice_affine,
)
from .validation import source_of

__all__ = [
    "ZEdgeWeightd",
    "CheckFactord",
    "InPlaneAsZd",
    "InterpolateZd",
    "ThickFromThind",
    "ThinGridd",
    "thick_margin",
]


def thick_margin(factor: int, fwhm_vox: float | None = None) -> int:
    """Thin slices needed on each side of a patch so that its simulated thick slices see the whole slice profile
    (4 sigma, the Gaussian's truncation in :func:`common.physics.simulate_thick_slices`)."""
    fwhm = float(factor if fwhm_vox is None else fwhm_vox)
    return int(math.ceil(4.0 * fwhm_to_sigma(fwhm)))


def _channels(x: Any) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim != 4:
        raise InputDataError(source_of(x, "<volume>"), f"expected a (C, X, Y, Z) volume, got shape {arr.shape}")
    return arr


def _affine(x: Any) -> np.ndarray | None:
    return np.asarray(x.affine, dtype=np.float64) if isinstance(x, MetaTensor) else None


def _with_affine(array: np.ndarray, like: Any, affine: np.ndarray | None) -> Any:
    out = convert_to_dst_type(array, like, dtype=torch.float32)[0] if isinstance(like, torch.Tensor) else array
    if isinstance(out, MetaTensor):
        out = out.clone()
        if affine is not None:
            out.affine = torch.as_tensor(affine, dtype=torch.float64)
    return out


class ThickFromThind(MapTransform):
    """Simulate a thick-slice input ``image_key`` from the thin volume ``source_key`` (slice profile: Gaussian of
    FWHM ``fwhm_vox`` thin slices, default ``factor``, then every ``factor``-th slice) and crop ``keys`` to the thin
    slices the output grid covers.

    With ``margin`` thin slices on each side (:func:`thick_margin`), the first thick slice is centred on thin slice
    ``margin`` and every thick slice sees real neighbours instead of the edge padding; ``n = (Z - 2 margin) // factor``
    thick slices are kept and ``keys`` are cropped to thin slices ``[margin, margin + n * factor)``, so thick slice
    ``k`` lies on cropped thin slice ``k * factor``. ``margin = 0`` on a whole volume reproduces the embedded
    dataset's thick volumes (edge padding at both ends). Input ``(C, X, Y, Z)``; the image is ``(C, X, Y, n)`` with
    the thick affine when the source is a ``MetaTensor``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        factor: int,
        source_key: str = "label",
        image_key: str = "image",
        fwhm_vox: float | None = None,
        margin: int = 0,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if isinstance(factor, bool) or int(factor) != factor or factor < 1:
            raise ValueError(f"factor must be an integer >= 1, got {factor!r}")
        self.factor = int(factor)
        self.source_key, self.image_key = source_key, image_key
        self.fwhm_vox = float(self.factor if fwhm_vox is None else fwhm_vox)
        self.margin = int(margin)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        src = d[self.source_key]
        arr = _channels(src)
        z = arr.shape[-1]
        n = (z - 2 * self.margin) // self.factor
        if n < 1:
            raise InputDataError(
                source_of(src, self.source_key),
                f"{z} thin slices are too few for factor {self.factor} with a margin of {self.margin} on each side",
            )
        thick = np.stack(
            [
                simulate_thick_slices(c, 1.0, self.factor, self.fwhm_vox, self.margin)[..., :n]
                for c in arr.astype(np.float32, copy=False)
            ]
        )
        crop = SpatialCrop(
            roi_start=(0, 0, self.margin), roi_end=(arr.shape[1], arr.shape[2], self.margin + n * self.factor)
        )
        for key in self.key_iterator(d):
            d[key] = crop(d[key])
        aff = _affine(d[self.source_key])
        d[self.image_key] = _with_affine(thick, src, None if aff is None else thick_slice_affine(aff, self.factor))
        return d


class ZEdgeWeightd(MapTransform):
    """Patch-sampling weights for ``RandWeightedCropd``: ``|d/dz|`` of ``keys[0]`` (HU per slice, forward difference,
    smoothed over 3 voxels along every axis) plus ``floor`` times its mean, written to ``weight_key``.

    Through-plane errors live where the volume changes along z (organ and bone boundaries crossing slices); inside
    homogeneous tissue every interpolation is already right. Drawing patch centres in proportion to this weight
    spends the training steps where there is something to learn, and ``floor`` keeps every region possible.
    Shape: ``(C, X, Y, Z)`` in, ``(1, X, Y, Z)`` float32 out.
    """

    def __init__(self, keys: KeysCollection, weight_key: str = "weight", floor: float = 0.2) -> None:
        super().__init__(keys)
        self.weight_key, self.floor = weight_key, float(floor)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            vol = _channels(d[key])[0].astype(np.float32, copy=False)
            grad = np.abs(np.diff(vol, axis=2, append=vol[..., -1:]))
            grad = ndimage.uniform_filter(grad, size=3, mode="nearest")
            d[self.weight_key] = torch.from_numpy((grad + self.floor * float(grad.mean()) + 1e-6)[None])
            break
        return d


class InPlaneAsZd(RandomizableTransform, MapTransform):
    """Self-supervised (SMORE-style) pairs from a thick-slice volume: move one in-plane axis, chosen at random, to the
    last (through-plane) position, so that :class:`ThickFromThind` degrades a high-resolution axis.

    ``(C, X, Y, Zt)`` -> ``(C, Y, Zt, X)`` (axis 0) or ``(C, X, Zt, Y)`` (axis 1), written to ``output_key``
    (default: in place). The result is a plain tensor: its axes no longer match the affine.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_key: str | None = None,
        axes: tuple[int, ...] = (0, 1),
        allow_missing_keys: bool = False,
    ) -> None:
        RandomizableTransform.__init__(self, prob=1.0)
        MapTransform.__init__(self, keys, allow_missing_keys)
        if not axes or any(a not in (0, 1) for a in axes):
            raise ValueError(f"axes must be a non-empty subset of (0, 1), got {axes!r}")
        self.output_key = output_key
        self.axes = tuple(axes)
        self._axis = self.axes[0]

    def randomize(self, data: Any = None) -> None:
        self._axis = int(self.R.choice(self.axes))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        order = (0, 2, 3, 1) if self._axis == 0 else (0, 1, 3, 2)
        for key in self.key_iterator(d):
            x = d[key]
            x = x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x)
            d[self.output_key or key] = x.permute(*order).contiguous()
        return d


class InterpolateZd(MapTransform):
    """Classical baseline: thick ``keys`` interpolated onto the thin grid along z into ``output_key``
    (:func:`common.physics.interpolate_z`, order 1 = linear, 3 = cubic B-spline);
    ``(C, X, Y, Zt) -> (C, X, Y, Zt * factor)``, with the thin affine when the input is a ``MetaTensor``."""

    def __init__(
        self, keys: KeysCollection, factor: int, order: int, output_key: str, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.factor, self.order, self.output_key = int(factor), int(order), output_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            x = d[key]
            out = np.stack([interpolate_z(c, self.factor, self.order) for c in _channels(x)])
            aff = _affine(x)
            d[self.output_key] = _with_affine(out, x, None if aff is None else thin_slice_affine(aff, self.factor))
        return d


class ThinGridd(MapTransform):
    """Put ``keys`` (network outputs on the thin grid) on the right world grid: affine =
    ``thin_slice_affine(affine of ref_key, factor)`` (z spacing divided by ``factor``, origin on thick slice 0), and,
    when ``length_key`` is present (a thin reference), crop z to its number of slices (``Zt * factor`` can exceed it
    by up to ``factor - 1`` slices)."""

    def __init__(
        self,
        keys: KeysCollection,
        factor: int,
        ref_key: str = "image",
        length_key: str | None = "label",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.factor, self.ref_key, self.length_key = int(factor), ref_key, length_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        ref = d[self.ref_key]
        aff = _affine(ref)
        ref_thin = d.get(self.length_key) if self.length_key else None  # evaluators output label=None without one
        length = ref_thin.shape[-1] if ref_thin is not None else None
        for key in self.key_iterator(d):
            x = d[key]
            if x.shape[-1] != ref.shape[-1] * self.factor:
                raise ValueError(f"'{key}' has {x.shape[-1]} slices, expected {ref.shape[-1]} x {self.factor}")
            if length is not None:
                if length > x.shape[-1]:
                    raise InputDataError(
                        source_of(d[self.length_key], self.length_key),
                        f"reference has {length} thin slices, more than {x.shape[-1]} = thick slices x {self.factor}",
                    )
                x = x[..., :length]
            if isinstance(x, MetaTensor) and aff is not None:
                x = x.clone()
                x.affine = torch.as_tensor(thin_slice_affine(aff, self.factor), dtype=torch.float64)
                # writers that take the affine from a meta dict (MONAI Label's) see the thin grid too
                d[f"{key}_meta_dict"] = {"affine": x.affine.numpy().copy()}
            d[key] = x
        return d


class CheckFactord(MapTransform):
    """Refuse an item whose ``factor`` (e.g. from the datalist) differs from the model's: a x4 network applied to x2
    data would silently produce a wrong grid. Items without the key pass."""

    def __init__(self, factor: int, key: str = "factor", source_key: str = "image") -> None:
        super().__init__([key], allow_missing_keys=True)
        self.factor, self.key, self.source_key = int(factor), key, source_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if self.key in d and int(round(float(torch.as_tensor(d[self.key]).reshape(-1)[0]))) != self.factor:
            raise InputDataError(
                source_of(d.get(self.source_key), self.source_key),
                f"item has {self.key} = {d[self.key]} but the model up-samples by {self.factor} (set --factor)",
            )
        return d
