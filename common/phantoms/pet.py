"""PET phantoms: FDG-like activity (SUV), 511 keV attenuation (mu, 1/mm) and organ labels, from a seed.

Values are drawn per seed (uniformly) from the ranges below, each organ gets a smooth low-frequency texture
(multiplicative, a few % std), and edges are partial-volume blended (see :mod:`common.phantoms.shapes`). The activity
is a noise-free *truth*: no PSF and no counting noise (the dataset builders add those).

Torso ranges (SUV | mu 1/mm): fat 0.25-0.4 | 0.0088-0.0092; visceral fat 0.35-0.55; muscle / body 0.6-0.9 |
0.0095-0.0099; lungs 0.25-0.4 | 0.0020-0.0030; liver 2.0-2.5; spleen 1.6-2.1; kidney cortex 3-5; medulla 2-3;
myocardium (left ventricle) 3-6, right-ventricle wall 0.3-0.5x that; blood pool 1.5-2.0; marrow 1.2-1.8 |
0.0125-0.0135; cortical bone 0.4-0.7 | 0.0150-0.0170; stomach 1.0-1.8; bowel 1.2-2.2; bladder 10-30; brain 6-8
(whole-body FOVs); gas 0 | 0.
Lesions: 4-7 spheres, diameters spread over 6-25 mm, in liver, lungs and soft tissue (muscle / visceral fat), SUV =
contrast (2-8) x the mean activity in a 2-8 mm shell around the sphere inside its host.

Brain: grey matter G = 6.5-9; white G / 3.8-4.2 (grey:white ~4:1); deep grey 0.85-1.0 G; cerebellum 0.7-0.85 G;
brainstem 0.35-0.5 G; CSF 0.05-0.15; scalp 0.5-0.8; skull tables | 0.0155-0.0170; diploe 0.6-1.0 | 0.0128-0.0140;
sinus air 0 | 0. 1-3 lesions (8-20 mm): hot (2-4x local background) in white matter / deep grey, cold (0.3-0.6x) in
the cortex. The cortical ribbon is drawn 6-9 mm thick (an effective PET-resolution cortex).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from .anatomy import (
    HEAD_LABELS,
    TORSO_LABELS,
    Anatomy,
    LesionSpec,
    head_anatomy,
    lesion_arrays,
    paint_anatomy,
    paint_lesions,
    place_lesions,
    seed_streams,
    torso_anatomy,
    torso_diaphragm_z,
)
from .shapes import Canvas, Grid, smooth_noise, spread_diameters

PET_TORSO_LABELS = TORSO_LABELS
PET_BRAIN_LABELS = HEAD_LABELS

# tissue: (SUV range, texture std (fraction), mu range 1/mm)
_SOFT_MU = (0.0095, 0.0099)
PET_TORSO_TISSUES: dict[str, tuple[tuple[float, float], float, tuple[float, float]]] = {
    "fat": ((0.25, 0.40), 0.10, (0.0088, 0.0092)),
    "visceral_fat": ((0.35, 0.55), 0.12, (0.0088, 0.0092)),
    "muscle": ((0.60, 0.90), 0.08, _SOFT_MU),
    "disc": ((0.50, 0.80), 0.05, _SOFT_MU),
    "spinal_cord": ((0.80, 1.10), 0.05, _SOFT_MU),
    "scalp": ((0.50, 0.80), 0.08, _SOFT_MU),
    "lung": ((0.25, 0.40), 0.15, (0.0020, 0.0030)),
    "liver": ((2.00, 2.50), 0.07, _SOFT_MU),
    "spleen": ((1.60, 2.10), 0.07, _SOFT_MU),
    "kidney_cortex": ((3.00, 5.00), 0.08, _SOFT_MU),
    "kidney_medulla": ((2.00, 3.00), 0.08, _SOFT_MU),
    "myocardium": ((3.00, 6.00), 0.10, _SOFT_MU),
    "rv_wall": ((1.0, 1.0), 0.05, _SOFT_MU),  # 0.3-0.5 x myocardium (thin, faint right ventricle)
    "blood": ((1.50, 2.00), 0.03, (0.0098, 0.0100)),
    "lung_vessel": ((1.50, 2.00), 0.03, (0.0098, 0.0100)),
    "bone": ((0.40, 0.70), 0.05, (0.0150, 0.0170)),
    "skull": ((0.30, 0.50), 0.05, (0.0155, 0.0170)),
    "marrow": ((1.20, 1.80), 0.08, (0.0125, 0.0135)),
    "stomach": ((1.00, 1.80), 0.10, _SOFT_MU),
    "bowel": ((1.20, 2.20), 0.15, _SOFT_MU),
    "bladder": ((10.0, 30.0), 0.02, _SOFT_MU),
    "gas": ((0.0, 0.0), 0.0, (0.0, 0.0)),
    "brain": ((6.00, 8.00), 0.08, _SOFT_MU),
}
PET_BRAIN_TISSUES: dict[str, tuple[tuple[float, float], float, tuple[float, float]]] = {
    "scalp": ((0.50, 0.80), 0.08, _SOFT_MU),
    "skull_table": ((0.20, 0.40), 0.05, (0.0155, 0.0170)),
    "diploe": ((0.60, 1.00), 0.05, (0.0128, 0.0140)),
    "csf": ((0.05, 0.15), 0.05, (0.0095, 0.0097)),
    "grey": ((6.50, 9.00), 0.06, _SOFT_MU),
    "white": ((1.0, 1.0), 0.06, _SOFT_MU),  # relative to grey, see _brain_relative
    "deep_grey": ((1.0, 1.0), 0.06, _SOFT_MU),
    "cerebellum": ((1.0, 1.0), 0.06, _SOFT_MU),
    "brainstem": ((1.0, 1.0), 0.05, _SOFT_MU),
    "sinus": ((0.0, 0.0), 0.0, (0.0, 0.0)),
    "eye": ((0.20, 0.40), 0.05, _SOFT_MU),
    "orbit_fat": ((0.20, 0.35), 0.05, (0.0088, 0.0092)),
}
# ratios to the grey-matter SUV
_BRAIN_RELATIVE = {
    "white": (1 / 4.2, 1 / 3.8),
    "deep_grey": (0.85, 1.0),
    "cerebellum": (0.7, 0.85),
    "brainstem": (0.35, 0.5),
}

_TEXTURE_CORRELATION_MM = (14.0, 30.0)


def _value_function(
    grid: Grid,
    tissues: Mapping[str, tuple[tuple[float, float], float, tuple[float, float]]],
    base: Mapping[str, float],
    mu: Mapping[str, float],
    tex_rng: np.random.Generator,
) -> Callable[[str], dict[str, float | np.ndarray]]:
    """tissue -> {"activity": textured SUV field, "mu": scalar}; textured fields are built once per tissue."""
    fields = [smooth_noise(grid, tex_rng, c) for c in _TEXTURE_CORRELATION_MM]
    cache: dict[str, dict[str, float | np.ndarray]] = {}

    def values(tissue: str) -> dict[str, float | np.ndarray]:
        if tissue not in cache:
            amp = tissues[tissue][1]
            field = fields[sorted(tissues).index(tissue) % len(fields)]
            act = np.float32(base[tissue]) * (1.0 + np.float32(amp) * field) if amp > 0 else base[tissue]
            cache[tissue] = {"activity": act, "mu": mu[tissue]}
        return cache[tissue]

    return values


def _sample_table(rng: np.random.Generator, tissues) -> tuple[dict[str, float], dict[str, float]]:
    base = {t: float(rng.uniform(*v[0])) for t, v in tissues.items()}
    mu = {t: float(rng.uniform(*v[2])) for t, v in tissues.items()}
    return base, mu


def _finish_with_lesions(
    canvas: Canvas, anatomy: Anatomy, placed: list, groups: dict[str, tuple[str, ...]], contrast: np.ndarray
) -> dict[str, np.ndarray]:
    """Paint the placed lesions at ``contrast`` x their local background activity (soft-tissue mu) and finish."""
    lesions, bg, host = paint_lesions(
        canvas,
        anatomy,
        placed,
        groups,
        "activity",
        lambda i, pl, b: {"activity": float(contrast[i]) * b, "mu": 0.0096},
    )
    extra = lesion_arrays(placed) | {"lesion_contrast": contrast, "lesion_background": bg, "lesion_host_label": host}
    return _finish(canvas, lesions, extra)


def _finish(canvas: Canvas, lesions: np.ndarray, extra: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    activity = np.maximum(canvas.layers["activity"], 0.0).astype(np.float32)
    mu_map = np.maximum(canvas.layers["mu"], 0.0).astype(np.float32)
    return {"activity": activity, "mu_map": mu_map, "labels": canvas.labels, "lesions": lesions, **extra}


def pet_torso_phantom(
    seed: int,
    shape: tuple[int, int, int] = (96, 64, 96),
    spacing_mm: tuple[float, float, float] = (4.0, 4.0, 4.0),
) -> dict[str, np.ndarray]:
    """FDG-like torso (whole-body when the FOV is >= 800 mm long: head at the top of z) from ``seed``.

    Args:
        seed: non-negative integer; the same seed gives identical arrays.
        shape: ``(X, Y, Z)`` voxels; spacing_mm: ``(sx, sy, sz)`` mm. Anatomy is defined in mm, so any grid works.

    Returns:
        ``activity`` (SUV, float32 (X, Y, Z), noise-free), ``mu_map`` (1/mm at 511 keV, float32), ``labels`` (int16,
        :data:`PET_TORSO_LABELS`), ``lesions`` (int16, lesion i+1), ``lesion_diameters_mm`` (n,),
        ``lesion_centers_mm`` (n, 3), ``lesion_contrast`` (n,: lesion SUV / local background),
        ``lesion_background`` (n,: local background SUV), ``lesion_host_label`` (n,: label around the lesion).
    """
    geom, val, tex, les = seed_streams(seed)
    grid = Grid(shape, spacing_mm)
    anatomy = torso_anatomy(geom, diaphragm_z_mm=torso_diaphragm_z(grid) + float(geom.uniform(-12.0, 12.0)))
    base, mu = _sample_table(val, PET_TORSO_TISSUES)
    base["rv_wall"] = base["myocardium"] * float(val.uniform(0.3, 0.5))
    canvas = Canvas(grid, {"activity": 0.0, "mu": 0.0})
    paint_anatomy(canvas, anatomy, _value_function(grid, PET_TORSO_TISSUES, base, mu, tex))

    n = int(les.integers(4, 8))
    diameters = spread_diameters(les, n, 6.0, 25.0)
    preferred = ["liver", "lung", "soft"] + [str(h) for h in les.choice(["liver", "lung", "soft"], n)]
    fallback = {
        "liver": ("liver", "soft", "lung"),
        "lung": ("lung", "soft", "liver"),
        "soft": ("soft", "liver", "lung"),
    }
    specs = [LesionSpec(d, fallback[preferred[i]]) for i, d in enumerate(les.permutation(diameters))]
    groups = {"soft": ("soft_tissue", "fat")}
    placed = place_lesions(les, grid, canvas.labels, anatomy.labels, specs, groups)
    contrast = les.uniform(2.0, 8.0, len(placed)).astype(np.float32)
    return _finish_with_lesions(canvas, anatomy, placed, groups, contrast)


def pet_brain_phantom(
    seed: int,
    shape: tuple[int, int, int] = (64, 64, 48),
    spacing_mm: tuple[float, float, float] = (3.0, 3.0, 3.0),
) -> dict[str, np.ndarray]:
    """FDG-like brain (grey:white ~4:1, deep grey nuclei, CSF ~0, skull in the mu map) from ``seed``.

    The cerebrum centre sits 92 mm (+-3) below the top of the FOV, so the default 144 mm FOV covers the vertex down
    to the cerebellum.

    Returns:
        Same keys as :func:`pet_torso_phantom`; labels follow :data:`PET_BRAIN_LABELS`.
    """
    geom, val, tex, les = seed_streams(seed)
    grid = Grid(shape, spacing_mm)
    center_z = float(grid.half_extent_mm[2]) - 92.0 + float(geom.uniform(-3.0, 3.0))
    anatomy: Anatomy = head_anatomy(
        geom,
        grid,
        center_z_mm=center_z,
        cortex_mm=(6.0, 9.0),
        sulcus_width_mm=0.0,
        fissure_width_mm=1.5,
        gyral_amplitude=0.45,
    )
    base, mu = _sample_table(val, PET_BRAIN_TISSUES)
    for tissue, (lo, hi) in _BRAIN_RELATIVE.items():
        base[tissue] = base["grey"] * float(val.uniform(lo, hi))
    canvas = Canvas(grid, {"activity": 0.0, "mu": 0.0})
    paint_anatomy(canvas, anatomy, _value_function(grid, PET_BRAIN_TISSUES, base, mu, tex))

    n = int(les.integers(1, 4))
    specs = [LesionSpec(d, ("brain",)) for d in spread_diameters(les, n, 8.0, 20.0)]
    groups = {"brain": ("grey", "white", "deep_grey")}
    placed = place_lesions(les, grid, canvas.labels, anatomy.labels, specs, groups)
    grey_id = anatomy.labels["grey"]
    hot = [bool(canvas.labels[grid.voxel_index(pl.center_mm)] != grey_id) for pl in placed]
    contrast = np.asarray(
        [les.uniform(2.0, 4.0) if h else les.uniform(0.3, 0.6) for h in hot], dtype=np.float32
    ).reshape(-1)
    return _finish_with_lesions(canvas, anatomy, placed, groups, contrast)
