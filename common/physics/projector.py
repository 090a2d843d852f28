"""Batched 2D parallel-beam projector in torch (rotate-and-sum with ``grid_sample``).

Geometry (identical to ``skimage.transform.radon`` / ``iradon`` with ``circle=True``):

- an image is a square ``(N, N)`` array indexed ``[row, col]``; the rotation centre is the pixel ``(N // 2, N // 2)``;
- a sinogram row (one view at angle ``theta``) has ``N`` detector bins, bin ``N // 2`` is the rotation axis;
- the pixel ``(row, col)`` projects onto detector coordinate
  ``s = (col - N//2) * cos(theta) - (row - N//2) * sin(theta)`` (bins, relative to the centre bin);
- at ``theta = 0`` the projection sums over rows (``radon(x)[:, 0, :] == x.sum(-2)``).

Our sinograms are ``(B, A, N)`` (batch, angle, detector bin): the transpose of scikit-image's ``(N, A)``.
Values are line integrals in (image value) * pixels: multiply by the pixel size in mm to get ``integral mu dl`` when
the image holds attenuation per mm.

Everything outside the inscribed circle of radius ``N // 2 - 1`` is ignored by some views: callers must make sure the
object lies inside it (see :func:`square_canvas_size` and :func:`pad_to_square` used by the CT / PET simulators).

Memory is bounded by processing chunks of angles and slices (about ``_CHUNK_ELEMENTS`` interpolated samples per
``grid_sample`` call, which also keeps the work in the CPU cache).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

__all__ = [
    "FILTERS",
    "ParallelBeamProjector",
    "backproject",
    "fbp",
    "fourier_filter",
    "pad_to_square",
    "radon",
    "square_canvas_size",
    "system_matrix",
    "uniform_angles_deg",
]

FILTERS = ("ramp", "shepp-logan", "cosine", "hamming", "hann")

# About 1 M interpolated samples (4 MB in float32) per grid_sample call: fast (fits the cache) and memory-bounded.
_CHUNK_ELEMENTS = 1 << 20
# Sampling grids are cached by ParallelBeamProjector(cache_grids=True) up to this many elements (2 per sample).
_MAX_CACHED_GRID_ELEMENTS = 1 << 26


def uniform_angles_deg(n_views: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``n_views`` angles evenly spaced over [0, 180) degrees, shape ``(n_views,)``."""
    if n_views < 1:
        raise ValueError(f"n_views must be >= 1, got {n_views}")
    return torch.arange(n_views, dtype=dtype) * (180.0 / n_views)


def fourier_filter(size: int, filter_name: str | None = "ramp") -> np.ndarray:
    """Frequency response (length ``size``, FFT order) of the FBP filter, as scikit-image builds it.

    The ramp is computed as the Fourier transform of its band-limited spatial-domain kernel
    (Kak & Slaney, chap. 3, eq. 61), which removes the DC bias of a sampled ``|f|``; the other windows multiply it.
    ``size`` must be even. ``filter_name=None`` gives an all-pass filter (plain back-projection).
    """
    if size % 2:
        raise ValueError(f"filter size must be even, got {size}")
    n = np.concatenate((np.arange(1, size // 2 + 1, 2), np.arange(size // 2 - 1, 0, -2)))
    kernel = np.zeros(size)
    kernel[0] = 0.25
    kernel[1::2] = -1.0 / (np.pi * n) ** 2
    response = 2.0 * np.real(np.fft.fft(kernel))
    if filter_name == "ramp":
        pass
    elif filter_name == "shepp-logan":
        omega = np.pi * np.fft.fftfreq(size)[1:]
        response[1:] *= np.sin(omega) / omega
    elif filter_name == "cosine":
        response *= np.fft.fftshift(np.sin(np.linspace(0, np.pi, size, endpoint=False)))
    elif filter_name == "hamming":
        response *= np.fft.fftshift(np.hamming(size))
    elif filter_name == "hann":
        response *= np.fft.fftshift(np.hanning(size))
    elif filter_name is None:
        response[:] = 1.0
    else:
        raise ValueError(f"unknown FBP filter {filter_name!r}; choose one of {FILTERS} or None")
    return response


def _as_angles(angles_deg: torch.Tensor | Sequence[float] | np.ndarray) -> torch.Tensor:
    angles = torch.as_tensor(angles_deg, dtype=torch.float64).reshape(-1)
    if angles.numel() == 0:
        raise ValueError("angles_deg is empty")
    if not torch.isfinite(angles).all():
        raise ValueError("angles_deg contains NaN or Inf")
    return angles


def _check_float(t: torch.Tensor, name: str) -> None:
    if t.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name} must be float32 or float64, got {t.dtype}")


class ParallelBeamProjector:
    """Forward / back projector for ``(N, N)`` slices at fixed angles, optionally caching its sampling grids.

    Args:
        n: image side ``N`` (pixels); sinograms have ``N`` detector bins.
        angles_deg: projection angles in degrees, shape ``(A,)``.
        dtype: float32 or float64 (inputs are cast to it).
        cache_grids: keep the sampling grids in memory between calls (worth it for iterative reconstruction;
            skipped automatically when they would exceed ``_MAX_CACHED_GRID_ELEMENTS`` elements).
    """

    def __init__(
        self,
        n: int,
        angles_deg: torch.Tensor | Sequence[float] | np.ndarray,
        dtype: torch.dtype = torch.float32,
        cache_grids: bool = False,
    ) -> None:
        if n < 2:
            raise ValueError(f"image side must be >= 2, got {n}")
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        self.n = int(n)
        self.angles_deg = _as_angles(angles_deg)
        self.dtype = dtype
        self.n_angles = int(self.angles_deg.numel())
        self._cache = cache_grids and 2 * self.n_angles * self.n * self.n <= _MAX_CACHED_GRID_ELEMENTS
        self._fwd: dict[tuple[int, int], torch.Tensor] = {}
        self._bwd: dict[tuple[int, int], torch.Tensor] = {}
        c = self.n // 2
        self._centered = torch.arange(self.n, dtype=torch.float64) - c

    # ----------------------------------------------------------------------------------------------- grids
    def _angle_chunk(self, batch: int, pixels: int | None = None) -> int:
        """Views per ``grid_sample`` call for ``batch`` slices of ``pixels`` pixels each (default ``N * N``)."""
        return max(1, _CHUNK_ELEMENTS // max(1, batch * (pixels or self.n * self.n)))

    def _batch_chunk(self, pixels: int | None = None) -> int:
        """Slices per chunk for images of ``pixels`` pixels each (default ``N * N``)."""
        return max(1, _CHUNK_ELEMENTS // (pixels or self.n * self.n))

    def _forward_grid(self, a0: int, a1: int) -> torch.Tensor:
        """Normalised sampling grid ``(1, a, N*N, 2)``: for view ``a`` and output ``(t, s)`` the input (col, row)."""
        key = (a0, a1)
        if key in self._fwd:
            return self._fwd[key]
        n = self.n
        theta = torch.deg2rad(self.angles_deg[a0:a1])
        cos = torch.cos(theta).to(self.dtype)[:, None, None]
        sin = torch.sin(theta).to(self.dtype)[:, None, None]
        # normalised coordinates (align_corners=True): u = 2 * index / (n - 1) - 1, centre index n // 2
        scale = 2.0 / (n - 1)
        centre = (n // 2) * scale - 1.0
        t = (self._centered * scale).to(self.dtype)[None, :, None]  # along the ray (summed)
        s = (self._centered * scale).to(self.dtype)[None, None, :]  # detector bin
        grid = torch.empty((a1 - a0, n, n, 2), dtype=self.dtype)
        torch.add(cos * s, sin * t, out=grid[..., 0]).add_(centre)  # col
        torch.sub(cos * t, sin * s, out=grid[..., 1]).add_(centre)  # row
        grid = grid.reshape(1, a1 - a0, n * n, 2)
        if self._cache:
            self._fwd[key] = grid
        return grid

    def _backward_grid(self, a0: int, a1: int, region: tuple[int, int, int, int] | None = None) -> torch.Tensor:
        """Normalised grid ``(a, 1, P, 2)``: detector coordinate of each pixel for views ``a0:a1``.

        ``P = N * N`` (the whole canvas), or ``h * w`` for ``region = (row0, col0, h, w)`` (never cached).
        """
        key = (a0, a1)
        if region is None and key in self._bwd:
            return self._bwd[key]
        n = self.n
        row0, col0, height, width = (0, 0, n, n) if region is None else region
        theta = torch.deg2rad(self.angles_deg[a0:a1])
        cos = torch.cos(theta).to(self.dtype)[:, None, None]
        sin = torch.sin(theta).to(self.dtype)[:, None, None]
        scale = 2.0 / (n - 1)
        centre = (n // 2) * scale - 1.0
        rows = (self._centered[row0 : row0 + height] * scale).to(self.dtype)[None, :, None]
        cols = (self._centered[col0 : col0 + width] * scale).to(self.dtype)[None, None, :]
        grid = torch.zeros((a1 - a0, height, width, 2), dtype=self.dtype)
        torch.sub(cols * cos, rows * sin, out=grid[..., 0]).add_(centre)  # detector index s (normalised)
        grid = grid.reshape(a1 - a0, 1, height * width, 2)
        if self._cache and region is None:
            self._bwd[key] = grid
        return grid

    # ------------------------------------------------------------------------------------------ operators
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Radon transform: ``(B, N, N)`` -> sinograms ``(B, A, N)`` (line integrals in value * pixels)."""
        _check_float(images, "images")
        if images.ndim != 3 or images.shape[-2:] != (self.n, self.n):
            raise ValueError(f"images must have shape (B, {self.n}, {self.n}), got {tuple(images.shape)}")
        images = images.to(self.dtype)
        n, n_batch = self.n, images.shape[0]
        out = images.new_empty((n_batch, self.n_angles, n))
        for b0 in range(0, n_batch, self._batch_chunk()):
            b1 = min(n_batch, b0 + self._batch_chunk())
            x = images[b0:b1].unsqueeze(0)  # slices as channels: one grid serves all of them
            step = self._angle_chunk(b1 - b0)
            for a0 in range(0, self.n_angles, step):
                a1 = min(self.n_angles, a0 + step)
                sampled = F.grid_sample(
                    x, self._forward_grid(a0, a1), mode="bilinear", padding_mode="zeros", align_corners=True
                )  # (1, b, a, N*N)
                out[b0:b1, a0:a1] = sampled.reshape(b1 - b0, a1 - a0, n, n).sum(dim=2)
        return out

    def backward(self, sinograms: torch.Tensor, region: tuple[int, int, int, int] | None = None) -> torch.Tensor:
        """Unfiltered pixel-driven back-projection (linear interpolation): ``(B, A, N)`` -> ``(B, N, N)``.

        Same operation as scikit-image's ``iradon`` with ``filter_name=None`` before its final ``pi / (2 A)``
        scaling; it approximates the adjoint of :meth:`forward` (unit weight per view and pixel).
        ``region = (row0, col0, h, w)`` back-projects onto those canvas pixels only: ``(B, h, w)``, equal to
        ``backward(sinograms)[:, row0:row0 + h, col0:col0 + w]`` at ``h * w / N**2`` of the cost.
        """
        _check_float(sinograms, "sinograms")
        if sinograms.ndim != 3 or sinograms.shape[1:] != (self.n_angles, self.n):
            raise ValueError(f"sinograms must have shape (B, {self.n_angles}, {self.n}), got {tuple(sinograms.shape)}")
        n = self.n
        row0, col0, height, width = (0, 0, n, n) if region is None else (int(v) for v in region)
        if min(row0, col0) < 0 or min(height, width) < 1 or row0 + height > n or col0 + width > n:
            raise ValueError(f"region {region} must lie inside the {n}x{n} canvas")
        sinograms = sinograms.to(self.dtype)
        n_batch, pixels = sinograms.shape[0], height * width
        out = sinograms.new_zeros((n_batch, pixels))
        batch_step = self._batch_chunk(pixels)
        for b0 in range(0, n_batch, batch_step):
            b1 = min(n_batch, b0 + batch_step)
            step = self._angle_chunk(b1 - b0, pixels)
            for a0 in range(0, self.n_angles, step):
                a1 = min(self.n_angles, a0 + step)
                views = sinograms[b0:b1, a0:a1].permute(1, 0, 2).unsqueeze(2)  # (a, b, 1, N)
                sampled = F.grid_sample(
                    views,
                    self._backward_grid(a0, a1, None if region is None else (row0, col0, height, width)),
                    mode="bilinear",
                    padding_mode="zeros",
                    align_corners=True,
                )  # (a, b, 1, P)
                out[b0:b1] += sampled.sum(dim=0).squeeze(1)
        return out.reshape(n_batch, height, width)

    def filter_sinograms(self, sinograms: torch.Tensor, filter_name: str | None = "ramp") -> torch.Tensor:
        """Apply the FBP filter along the detector axis (zero padding to a power of two >= max(64, 2N))."""
        n = self.n
        padded = max(64, 1 << math.ceil(math.log2(2 * n)))
        response = torch.from_numpy(fourier_filter(padded, filter_name)[: padded // 2 + 1]).to(sinograms.dtype)
        spectrum = torch.fft.rfft(sinograms, n=padded, dim=-1) * response
        return torch.fft.irfft(spectrum, n=padded, dim=-1)[..., :n]

    def fbp(
        self,
        sinograms: torch.Tensor,
        filter_name: str | None = "ramp",
        region: tuple[int, int, int, int] | None = None,
    ) -> torch.Tensor:
        """Filtered back-projection ``(B, A, N)`` -> ``(B, N, N)``, scaled like scikit-image's ``iradon``.

        Pixels outside the inscribed circle are not masked (they see only part of the views). ``region`` as in
        :meth:`backward`: only those ``(B, h, w)`` canvas pixels are reconstructed.
        """
        _check_float(sinograms, "sinograms")
        filtered = self.filter_sinograms(sinograms.to(self.dtype), filter_name)
        return self.backward(filtered, region) * (math.pi / (2 * self.n_angles))


def radon(images: torch.Tensor, angles_deg: torch.Tensor | Sequence[float] | np.ndarray) -> torch.Tensor:
    """Parallel-beam Radon transform of square slices.

    Args:
        images: ``(B, N, N)`` float32/float64 tensor, zero outside the inscribed circle.
        angles_deg: ``(A,)`` projection angles in degrees.

    Returns:
        ``(B, A, N)`` sinograms in the input dtype, line integrals in (image value) * pixels.
    """
    _check_float(images, "images")
    return ParallelBeamProjector(images.shape[-1], angles_deg, dtype=images.dtype).forward(images)


def backproject(sino: torch.Tensor, angles_deg: torch.Tensor | Sequence[float] | np.ndarray, n: int) -> torch.Tensor:
    """Unfiltered back-projection ``(B, A, N)`` -> ``(B, N, N)`` (``n`` must equal the detector size ``N``)."""
    _check_float(sino, "sino")
    return ParallelBeamProjector(n, angles_deg, dtype=sino.dtype).backward(sino)


def fbp(
    sino: torch.Tensor,
    angles_deg: torch.Tensor | Sequence[float] | np.ndarray,
    n: int,
    filter: str | None = "ramp",  # noqa: A002 - public name requested by the API
) -> torch.Tensor:
    """Filtered back-projection ``(B, A, N)`` -> ``(B, N, N)``, scaled like ``skimage.transform.iradon``.

    ``filter`` is one of ``FILTERS`` or None. The result equals ``iradon(sino[b].T, angles_deg, filter_name=filter,
    circle=True)`` up to interpolation details inside the inscribed circle (no masking outside it).
    """
    _check_float(sino, "sino")
    return ParallelBeamProjector(n, angles_deg, dtype=sino.dtype).fbp(sino, filter)


def system_matrix(n: int, angles_deg: torch.Tensor | Sequence[float] | np.ndarray) -> sp.csr_matrix:
    """Sparse float32 matrix ``M`` ``(A * N, N * N)`` of :func:`radon`'s bilinear rotate-and-sum weights.

    ``M @ image.reshape(N * N) == radon(image[None], angles)[0].reshape(A * N)`` (row-major flattening, sinogram row
    index ``a * N + s``); ``M.T`` is the exact adjoint (ray-driven back-projection). Multiplying ``M`` by an
    ``(N * N, B)`` matrix of slices projects ``B`` slices at once, which is several times faster than
    :class:`ParallelBeamProjector` for iterative reconstruction of small slices. About ``2 * A * N * N`` non-zeros
    (~25 MB, ~1 s to build at N = 128, A = 96): build it once and reuse it.
    """
    angles = _as_angles(angles_deg).numpy()
    n = int(n)
    if n < 2:
        raise ValueError(f"image side must be >= 2, got {n}")
    c = n // 2
    centered = np.arange(n, dtype=np.float64) - c
    rows_out, cols_out, vals_out = [], [], []
    theta_all = np.deg2rad(angles)
    step = max(1, (1 << 20) // (n * n))  # bounds the temporaries (~100 MB)
    for a0 in range(0, theta_all.size, step):
        theta = theta_all[a0 : a0 + step]
        cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
        t, s = centered[None, :, None], centered[None, None, :]
        col = c + cos * s + sin * t  # (a, t, s)
        row = c - sin * s + cos * t
        r0, c0 = np.floor(row), np.floor(col)
        fr, fc = row - r0, col - c0
        r0, c0 = r0.astype(np.int64), c0.astype(np.int64)
        ray = ((np.arange(a0, a0 + theta.size) * n)[:, None, None] + np.arange(n)[None, None, :]).repeat(n, axis=1)
        for dr, dc, w in ((0, 0, (1 - fr) * (1 - fc)), (0, 1, (1 - fr) * fc), (1, 0, fr * (1 - fc)), (1, 1, fr * fc)):
            rr, cc = r0 + dr, c0 + dc
            keep = (rr >= 0) & (rr < n) & (cc >= 0) & (cc < n) & (w > 0)
            rows_out.append(ray[keep])
            cols_out.append((rr * n + cc)[keep])
            vals_out.append(w[keep])
    shape = (theta_all.size * n, n * n)
    matrix = sp.coo_matrix(
        (np.concatenate(vals_out), (np.concatenate(rows_out), np.concatenate(cols_out))), shape=shape
    ).tocsr()  # sums the duplicate (ray, pixel) entries
    matrix.sum_duplicates()
    return matrix.astype(np.float32)


def square_canvas_size(support: np.ndarray, margin: int = 2) -> int:
    """Smallest even side ``N >= max(X, Y)`` whose inscribed circle contains every True pixel of ``support``.

    Args:
        support: ``(X, Y)`` boolean mask of the pixels that are non-zero in at least one slice.
        margin: pixels kept between the object and the circle edge (bilinear interpolation needs >= 1).

    The slice is placed centred in the canvas as :func:`pad_to_square` does.
    """
    x_size, y_size = support.shape
    n = max(x_size, y_size)
    n += n % 2
    rows, cols = np.nonzero(support)
    if rows.size == 0:
        return n
    while True:
        ox, oy = (n - x_size) // 2, (n - y_size) // 2
        c = n // 2
        radius = math.sqrt(float(((rows + ox - c) ** 2 + (cols + oy - c) ** 2).max()))
        if radius <= c - margin:
            return n
        n = max(n + 2, 2 * math.ceil(radius + margin))
        n += n % 2


def pad_to_square(slices: torch.Tensor, n: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Zero-pad ``(B, X, Y)`` slices into the centre of an ``(B, n, n)`` canvas; returns the canvas and (ox, oy).

    Crop back with ``canvas[:, ox:ox + X, oy:oy + Y]``.
    """
    x_size, y_size = slices.shape[-2:]
    if n < max(x_size, y_size):
        raise ValueError(f"canvas side {n} smaller than the slice {x_size}x{y_size}")
    ox, oy = (n - x_size) // 2, (n - y_size) // 2
    canvas = slices.new_zeros((slices.shape[0], n, n))
    canvas[:, ox : ox + x_size, oy : oy + y_size] = slices
    return canvas, (ox, oy)
