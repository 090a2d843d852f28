"""Geometry on a millimetre grid for the phantoms: signed-distance shapes, partial-volume painting, smooth texture.

A :class:`Grid` places voxel ``(i, j, k)`` at ``x = (i - (nx - 1) / 2) * sx`` mm (same for y, z): the volume centre is
the origin and the axes are ``(X, Y, Z)`` as everywhere in :mod:`common`, oriented RAS+ (+x towards the patient's
right, +y anterior, +z superior: the head is at the top of z). :meth:`Grid.affine` is the matching NIfTI affine
``diag(spacing)`` with a centring origin, so phantom millimetres are world millimetres.

Shapes return an *approximate signed distance* in mm (negative inside, first-order accurate near the surface), which
gives three things cheaply: boolean masks (``sdf <= 0``), set operations (min / max) and anti-aliased partial-volume
occupancy ``clip(0.5 - sdf / w, 0, 1)`` with ``w`` the voxel size, so organ edges are not stair-cased. Every shape
knows its bounding box; :class:`Canvas` evaluates a shape only inside that box, which keeps a phantom with a hundred
structures fast.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

Vec3 = tuple[float, float, float]
Bounds = tuple[np.ndarray, np.ndarray]  # (lo_mm, hi_mm), each shape (3,); may hold +-inf
Region = tuple[slice, slice, slice]


@dataclass(frozen=True)
class Grid:
    """A voxel grid in millimetres, centred on the origin.

    Attributes:
        shape: number of voxels ``(nx, ny, nz)``.
        spacing_mm: voxel size ``(sx, sy, sz)`` in mm.
    """

    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or any(int(n) != n or n < 1 for n in self.shape):
            raise ValueError(f"Grid shape must be three positive integers, got {self.shape!r}")
        if len(self.spacing_mm) != 3 or any(not math.isfinite(s) or s <= 0 for s in self.spacing_mm):
            raise ValueError(f"Grid spacing must be three positive finite mm values, got {self.spacing_mm!r}")
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        object.__setattr__(self, "spacing_mm", tuple(float(s) for s in self.spacing_mm))

    def axis(self, dim: int) -> np.ndarray:
        """Voxel-centre coordinates (mm, float32) along axis ``dim``."""
        n, s = self.shape[dim], self.spacing_mm[dim]
        return ((np.arange(n, dtype=np.float32) - (n - 1) / 2.0) * s).astype(np.float32)

    @property
    def half_extent_mm(self) -> np.ndarray:
        """Half of the field of view (mm) along each axis, measured to the outer voxel edges."""
        return np.asarray(self.shape, float) * np.asarray(self.spacing_mm) / 2.0

    @property
    def soft_width_mm(self) -> float:
        """Width (mm) of the partial-volume transition: the geometric mean voxel size."""
        return float(np.prod(self.spacing_mm) ** (1.0 / 3.0))

    def affine(self) -> np.ndarray:
        """4x4 NIfTI affine mapping voxel indices to these phantom millimetres (``diag(spacing)``, centred)."""
        aff = np.eye(4)
        for d in range(3):
            aff[d, d] = self.spacing_mm[d]
            aff[d, 3] = -(self.shape[d] - 1) / 2.0 * self.spacing_mm[d]
        return aff

    def region(self, lo_mm: np.ndarray, hi_mm: np.ndarray) -> Region | None:
        """Voxel slices whose centres lie in the box ``[lo_mm, hi_mm]``; ``None`` if the box misses the grid."""
        slices = []
        for d in range(3):
            n, s = self.shape[d], self.spacing_mm[d]
            lo = float(np.clip(lo_mm[d] / s + (n - 1) / 2.0, -1.0, n + 1.0))
            hi = float(np.clip(hi_mm[d] / s + (n - 1) / 2.0, -1.0, n + 1.0))
            i0, i1 = max(math.ceil(lo), 0), min(math.floor(hi) + 1, n)
            if i1 <= i0:
                return None
            slices.append(slice(i0, i1))
        return tuple(slices)  # type: ignore[return-value]

    def voxel_index(self, point_mm: Sequence[float]) -> tuple[int, int, int]:
        """Index of the voxel whose centre is nearest to ``point_mm`` (clipped to the grid)."""
        return tuple(
            int(np.clip(round(p / s + (n - 1) / 2.0), 0, n - 1))
            for p, s, n in zip(point_mm, self.spacing_mm, self.shape, strict=True)
        )  # type: ignore[return-value]

    def coords(self, region: Region | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Open-grid coordinates (mm) of ``region``: arrays of shapes (n,1,1), (1,m,1), (1,1,k) that broadcast."""
        region = region or (slice(None), slice(None), slice(None))
        x, y, z = (self.axis(d)[region[d]] for d in range(3))
        return x[:, None, None], y[None, :, None], z[None, None, :]

    def region_of(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> Region:
        """Inverse of :meth:`coords`: the voxel slices that open-grid coordinate arrays came from."""
        out = []
        for d, c in enumerate((x, y, z)):
            n, s = self.shape[d], self.spacing_mm[d]
            i0 = int(round(float(c.flat[0]) / s + (n - 1) / 2.0))
            out.append(slice(i0, i0 + c.size))
        return tuple(out)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------------------------
# Shapes: approximate signed distance (mm, < 0 inside) and bounding box.


class Shape(ABC):
    """A solid described by an approximate signed distance function (mm, negative inside)."""

    @abstractmethod
    def sdf(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Signed distance (mm) at broadcastable coordinate arrays ``x, y, z`` (mm)."""

    @abstractmethod
    def bounds(self) -> Bounds:
        """Axis-aligned bounding box ``(lo, hi)`` in mm (``+-inf`` where unbounded)."""


def _rotate_xy(x: np.ndarray, y: np.ndarray, cx: float, cy: float, angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates of (x, y) in a frame centred on (cx, cy) and rotated by ``angle_deg`` about +z."""
    dx, dy = x - cx, y - cy
    if angle_deg == 0.0:
        return dx, dy
    c, s = math.cos(math.radians(angle_deg)), math.sin(math.radians(angle_deg))
    return c * dx + s * dy, -s * dx + c * dy


def _rotated_half_extent(a: float, b: float, angle_deg: float) -> tuple[float, float]:
    c, s = abs(math.cos(math.radians(angle_deg))), abs(math.sin(math.radians(angle_deg)))
    return math.hypot(a * c, b * s), math.hypot(a * s, b * c)


@dataclass(frozen=True)
class Sphere(Shape):
    """Ball of ``radius`` mm at ``center`` (mm); exact signed distance."""

    center: Vec3
    radius: float

    def sdf(self, x, y, z):
        cx, cy, cz = self.center
        return np.sqrt((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) - self.radius

    def bounds(self) -> Bounds:
        c = np.asarray(self.center, float)
        return c - self.radius, c + self.radius


@dataclass(frozen=True)
class Ellipsoid(Shape):
    """Ellipsoid with semi-axes ``radii`` (mm), rotated by ``angle_deg`` about the z axis through ``center``."""

    center: Vec3
    radii: Vec3
    angle_deg: float = 0.0

    def sdf(self, x, y, z):
        u, v = _rotate_xy(x, y, self.center[0], self.center[1], self.angle_deg)
        w = z - self.center[2]
        a, b, c = self.radii
        r = np.sqrt((u / a) ** 2 + (v / b) ** 2 + (w / c) ** 2)
        g = np.sqrt((u / a**2) ** 2 + (v / b**2) ** 2 + (w / c**2) ** 2)
        # first-order distance (r - 1) / |grad r| with |grad r| = g / r; the centre is min(radii) deep
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.where(g > 1e-12, (r - 1.0) * r / np.maximum(g, 1e-12), -min(self.radii))
        return d

    def bounds(self) -> Bounds:
        hx, hy = _rotated_half_extent(self.radii[0], self.radii[1], self.angle_deg)
        c = np.asarray(self.center, float)
        h = np.array([hx, hy, self.radii[2]])
        return c - h, c + h


def _ellipse_sdf(u: np.ndarray, v: np.ndarray, a, b, p: float = 2.0) -> np.ndarray:
    """First-order signed distance (mm) to the superellipse ``|u/a|^p + |v/b|^p = 1`` (p = 2: ellipse)."""
    au, av = np.abs(u) / a, np.abs(v) / b
    if p == 2.0:
        r = np.sqrt(au**2 + av**2)
        g = np.sqrt((au / a) ** 2 + (av / b) ** 2)  # = r * |grad r|
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(g > 1e-12, (r - 1.0) * r / np.maximum(g, 1e-12), -np.minimum(a, b))
    r = (au**p + av**p) ** (1.0 / p)
    with np.errstate(divide="ignore", invalid="ignore"):
        gu, gv = au ** (p - 1) / a, av ** (p - 1) / b
        grad = r ** (1.0 - p) * np.sqrt(gu**2 + gv**2)
        return np.where(r > 1e-9, (r - 1.0) / np.maximum(grad, 1e-12), -np.minimum(a, b))


@dataclass(frozen=True)
class EllipticCylinder(Shape):
    """Cylinder along z: ellipse ``radii_xy`` (mm) at ``center_xy`` rotated by ``angle_deg``, z in ``z_range`` mm."""

    center_xy: tuple[float, float]
    radii_xy: tuple[float, float]
    z_range: tuple[float, float] = (-math.inf, math.inf)
    angle_deg: float = 0.0

    def sdf(self, x, y, z):
        u, v = _rotate_xy(x, y, self.center_xy[0], self.center_xy[1], self.angle_deg)
        d = _ellipse_sdf(u, v, *self.radii_xy)
        z0, z1 = self.z_range
        if math.isfinite(z0) or math.isfinite(z1):
            d = np.maximum(d, np.maximum(z0 - z, z - z1))
        return d

    def bounds(self) -> Bounds:
        hx, hy = _rotated_half_extent(*self.radii_xy, self.angle_deg)
        cx, cy = self.center_xy
        return np.array([cx - hx, cy - hy, self.z_range[0]]), np.array([cx + hx, cy + hy, self.z_range[1]])


@dataclass(frozen=True)
class ProfiledCylinder(Shape):
    """Body-outline-like cylinder along z whose cross-section is a superellipse with z-dependent semi-axes.

    The semi-axes are linearly interpolated from knots ``z_knots`` (mm, increasing): ``a_knots`` (x), ``b_ant_knots``
    (anterior, y > 0) and ``b_post_knots`` (posterior, y < 0), so the back can be flatter than the front. ``exponent``
    2 is an ellipse, larger is boxier. Outside ``[z_knots[0], z_knots[-1]]`` the shape is empty.
    """

    center_xy: tuple[float, float]
    z_knots: tuple[float, ...]
    a_knots: tuple[float, ...]
    b_ant_knots: tuple[float, ...]
    b_post_knots: tuple[float, ...]
    exponent: float = 2.0

    def sdf(self, x, y, z):
        zk = np.asarray(self.z_knots)
        zz = z.reshape(-1)
        a = np.interp(zz, zk, self.a_knots).reshape(z.shape)
        ba = np.interp(zz, zk, self.b_ant_knots).reshape(z.shape)
        bp = np.interp(zz, zk, self.b_post_knots).reshape(z.shape)
        u, v = x - self.center_xy[0], y - self.center_xy[1]
        b = np.where(v >= 0, ba, bp)
        d = _ellipse_sdf(u, v, a, b, self.exponent)
        return np.maximum(d, np.maximum(zk[0] - z, z - zk[-1]))

    def bounds(self) -> Bounds:
        a, b = max(self.a_knots), max(max(self.b_ant_knots), max(self.b_post_knots))
        cx, cy = self.center_xy
        return np.array([cx - a, cy - b, self.z_knots[0]]), np.array([cx + a, cy + b, self.z_knots[-1]])


@dataclass(frozen=True)
class Capsule(Shape):
    """Tube of ``radius`` mm around the segment ``p0``-``p1`` (mm) with round caps; exact signed distance."""

    p0: Vec3
    p1: Vec3
    radius: float

    def sdf(self, x, y, z):
        a = np.asarray(self.p0, float)
        ab = np.asarray(self.p1, float) - a
        denom = float(ab @ ab) or 1.0
        px, py, pz = x - a[0], y - a[1], z - a[2]
        t = np.clip((px * ab[0] + py * ab[1] + pz * ab[2]) / denom, 0.0, 1.0)
        return np.sqrt((px - t * ab[0]) ** 2 + (py - t * ab[1]) ** 2 + (pz - t * ab[2]) ** 2) - self.radius

    def bounds(self) -> Bounds:
        a, b = np.asarray(self.p0, float), np.asarray(self.p1, float)
        return np.minimum(a, b) - self.radius, np.maximum(a, b) + self.radius


@dataclass(frozen=True)
class Box(Shape):
    """Axis-aligned box with ``half_sizes`` (mm) at ``center``; exact signed distance."""

    center: Vec3
    half_sizes: Vec3

    def sdf(self, x, y, z):
        qx = np.abs(x - self.center[0]) - self.half_sizes[0]
        qy = np.abs(y - self.center[1]) - self.half_sizes[1]
        qz = np.abs(z - self.center[2]) - self.half_sizes[2]
        outside = np.sqrt(np.maximum(qx, 0) ** 2 + np.maximum(qy, 0) ** 2 + np.maximum(qz, 0) ** 2)
        return outside + np.minimum(np.maximum(np.maximum(qx, qy), qz), 0.0)

    def bounds(self) -> Bounds:
        c, h = np.asarray(self.center, float), np.asarray(self.half_sizes, float)
        return c - h, c + h


@dataclass(frozen=True)
class Union(Shape):
    """Union of shapes (min of distances)."""

    parts: tuple[Shape, ...]

    def sdf(self, x, y, z):
        out = self.parts[0].sdf(x, y, z)
        for p in self.parts[1:]:
            out = np.minimum(out, p.sdf(x, y, z))
        return out

    def bounds(self) -> Bounds:
        los, his = zip(*(p.bounds() for p in self.parts), strict=True)
        return np.min(los, axis=0), np.max(his, axis=0)


@dataclass(frozen=True)
class Intersection(Shape):
    """Intersection of shapes (max of distances)."""

    parts: tuple[Shape, ...]

    def sdf(self, x, y, z):
        out = self.parts[0].sdf(x, y, z)
        for p in self.parts[1:]:
            out = np.maximum(out, p.sdf(x, y, z))
        return out

    def bounds(self) -> Bounds:
        los, his = zip(*(p.bounds() for p in self.parts), strict=True)
        return np.max(los, axis=0), np.min(his, axis=0)


@dataclass(frozen=True)
class Difference(Shape):
    """``base`` minus ``cut``."""

    base: Shape
    cut: Shape

    def sdf(self, x, y, z):
        return np.maximum(self.base.sdf(x, y, z), -self.cut.sdf(x, y, z))

    def bounds(self) -> Bounds:
        return self.base.bounds()


@dataclass(frozen=True)
class Offset(Shape):
    """``shape`` grown by ``distance_mm`` (negative: shrunk), e.g. the inner surface of a skull of given thickness."""

    shape: Shape
    distance_mm: float

    def sdf(self, x, y, z):
        return self.shape.sdf(x, y, z) - self.distance_mm

    def bounds(self) -> Bounds:
        lo, hi = self.shape.bounds()
        grow = max(self.distance_mm, 0.0)
        return lo - grow, hi + grow


@dataclass(frozen=True)
class HalfSpace(Shape):
    """Points with ``dot(normal, p) <= offset_mm`` (``normal`` is normalised); exact signed distance."""

    normal: Vec3
    offset_mm: float

    def sdf(self, x, y, z):
        n = np.asarray(self.normal, float)
        n = n / np.linalg.norm(n)
        return n[0] * x + n[1] * y + n[2] * z - self.offset_mm

    def bounds(self) -> Bounds:
        n = np.asarray(self.normal, float)
        n = n / np.linalg.norm(n)
        lo, hi = np.full(3, -np.inf), np.full(3, np.inf)
        axis = np.flatnonzero(np.abs(n) > 1 - 1e-9)
        if axis.size == 1:  # axis-aligned: one side is bounded
            d = int(axis[0])
            if n[d] > 0:
                hi[d] = self.offset_mm
            else:
                lo[d] = -self.offset_mm
        return lo, hi


@dataclass(frozen=True)
class PeriodicZ(Shape):
    """``shape`` cut into slabs along z: gaps of ``gap_mm`` centred every ``period_mm`` from ``phase_mm``.

    Models stacked vertebrae separated by discs.
    """

    shape: Shape
    period_mm: float
    gap_mm: float
    phase_mm: float = 0.0

    def sdf(self, x, y, z):
        zm = np.mod(z - self.phase_mm, self.period_mm)
        dz = np.minimum(zm, self.period_mm - zm)  # distance to the nearest gap centre plane
        return np.maximum(self.shape.sdf(x, y, z), self.gap_mm / 2.0 - dz)

    def bounds(self) -> Bounds:
        return self.shape.bounds()


@dataclass(frozen=True)
class Field:
    """A full-grid scalar field (e.g. :func:`smooth_noise`) sampled at open-grid coordinates from ``grid.coords``."""

    grid: Grid
    values: np.ndarray

    def sample(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        return self.values[self.grid.region_of(x, y, z)]


@dataclass(frozen=True)
class FunctionShape(Shape):
    """Escape hatch: a shape from a signed-distance callable and explicit bounds."""

    function: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
    lo: Vec3
    hi: Vec3

    def sdf(self, x, y, z):
        return self.function(x, y, z)

    def bounds(self) -> Bounds:
        return np.asarray(self.lo, float), np.asarray(self.hi, float)


# --------------------------------------------------------------------------------------------------------------------
# Painting


class Canvas:
    """Label map plus continuous layers (activity, mu, HU, ...) painted shape by shape in anatomical order.

    Each :meth:`paint` alpha-blends the layer values with the shape's partial-volume occupancy (anti-aliased edges)
    and writes the label where the shape covers at least half of a voxel (``sdf <= 0``). Later shapes win.
    """

    def __init__(self, grid: Grid, layers: Mapping[str, float], label_dtype: type = np.int16) -> None:
        self.grid = grid
        self.layers = {name: np.full(grid.shape, fill, dtype=np.float32) for name, fill in layers.items()}
        self.labels = np.zeros(grid.shape, dtype=label_dtype)

    def paint(
        self,
        shape: Shape,
        label: int,
        values: Mapping[str, float | np.ndarray],
        within: Collection[int] | None = None,
    ) -> tuple[Region, np.ndarray] | None:
        """Paint ``shape`` with ``label`` and per-layer ``values`` (scalars or full-grid arrays, e.g. textures).

        Args:
            within: if given, only voxels whose current label is in this set are touched (e.g. lesions inside their
                host organ, vessels inside the lungs).

        Returns:
            ``(region, occupancy)``: the bounding-box slices and the painted partial-volume fraction (float32 in
            [0, 1]) inside them, or ``None`` if the shape misses the grid.
        """
        w = self.grid.soft_width_mm
        lo, hi = shape.bounds()
        region = self.grid.region(lo - w, hi + w)
        if region is None:
            return None
        d = shape.sdf(*self.grid.coords(region))
        d = np.broadcast_to(d, tuple(s.stop - s.start for s in region))
        occ = np.clip(0.5 - d / w, 0.0, 1.0).astype(np.float32)
        inside = d <= 0
        if within is not None:
            allowed = np.isin(self.labels[region], np.fromiter(within, dtype=np.int64))
            occ *= allowed
            inside = inside & allowed
        for name, value in values.items():
            layer = self.layers[name]
            target = layer[region]
            v = value[region] if isinstance(value, np.ndarray) else np.float32(value)
            target += occ * (v - target)
        self.labels[region][inside] = label
        return region, occ


# --------------------------------------------------------------------------------------------------------------------
# Texture and placement


def smooth_noise(grid: Grid, rng: np.random.Generator, correlation_mm: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian random field (float32, ``grid.shape``) with correlation length ``correlation_mm``.

    White noise is generated on a coarse grid (about three samples per correlation length), low-pass filtered there and
    trilinearly upsampled, which is ~10x cheaper than filtering at full resolution and indistinguishable for texture.
    """
    spacing = np.asarray(grid.spacing_mm)
    shape = np.asarray(grid.shape)
    step = np.maximum(1, np.floor(correlation_mm / 3.0 / spacing)).astype(int)  # coarse-grid decimation per axis
    coarse_shape = np.ceil(shape / step).astype(int) + 2
    white = rng.standard_normal(tuple(coarse_shape)).astype(np.float32)
    sigma = correlation_mm / (spacing * step) / 2.0
    coarse = ndimage.gaussian_filter(white, sigma=sigma, mode="wrap")
    if np.any(step > 1):
        coords = [(np.arange(n) + 0.5) / s - 0.5 + 1.0 for n, s in zip(shape, step, strict=True)]
        mesh = np.meshgrid(*coords, indexing="ij", sparse=True)
        field = ndimage.map_coordinates(coarse, np.broadcast_arrays(*mesh), order=1, mode="nearest")
    else:
        field = coarse[1 : shape[0] + 1, 1 : shape[1] + 1, 1 : shape[2] + 1]
    field = field.astype(np.float32)
    field -= field.mean()
    std = float(field.std())
    return field / std if std > 0 else field


def sample_sphere_center(
    rng: np.random.Generator,
    grid: Grid,
    host_distance_mm: np.ndarray,
    radius_mm: float,
    avoid: Sequence[tuple[Vec3, float]] = (),
    margin_mm: float = 1.0,
    max_tries: int = 200,
) -> Vec3 | None:
    """Random centre (mm) of a sphere of ``radius_mm`` lying wholly inside a host region.

    Args:
        host_distance_mm: distance (mm) from each voxel to the nearest non-host voxel (see :func:`host_distance`).
        avoid: ``(centre, radius)`` of spheres already placed; the new one keeps ``margin_mm`` away from them.

    Returns:
        The centre, or ``None`` if no position fits.
    """
    candidates = np.flatnonzero(host_distance_mm.ravel() >= radius_mm + margin_mm)
    if candidates.size == 0:
        return None
    axes = [grid.axis(d) for d in range(3)]
    for _ in range(max_tries):
        i, j, k = np.unravel_index(int(rng.choice(candidates)), grid.shape)
        c = (float(axes[0][i]), float(axes[1][j]), float(axes[2][k]))
        if all(math.dist(c, c2) >= radius_mm + r2 + margin_mm for c2, r2 in avoid):
            return c
    return None


def host_distance(mask: np.ndarray, grid: Grid) -> np.ndarray:
    """Euclidean distance (mm) from each voxel of ``mask`` to the nearest voxel outside it (the FOV edge counts)."""
    padded = np.pad(mask, 1, constant_values=False)
    dist = ndimage.distance_transform_edt(padded, sampling=grid.spacing_mm)
    return dist[1:-1, 1:-1, 1:-1].astype(np.float32)


def sphere_volume_mm3(diameter_mm: float) -> float:
    """Volume (mm^3) of a sphere of the given diameter."""
    return math.pi / 6.0 * diameter_mm**3


def spread_diameters(rng: np.random.Generator, n: int, d_min: float, d_max: float) -> list[float]:
    """``n`` lesion diameters (mm) spanning ``[d_min, d_max]``: the smallest and largest always present, the rest
    log-uniform in between, each jittered by +-5 % (clipped to the range)."""
    if n < 1:
        return []
    if n == 1:
        return [float(rng.uniform(d_min, d_max))]
    base = np.geomspace(d_min, d_max, n)
    jitter = rng.uniform(0.95, 1.05, n)
    jitter[0], jitter[-1] = rng.uniform(1.0, 1.08), rng.uniform(0.93, 1.0)
    return [float(v) for v in np.clip(base * jitter, d_min, d_max)]
