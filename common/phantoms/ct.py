"""CT phantoms in Hounsfield units (HU) with organ labels, from a seed (noise-free, no scanner blur).

Values are drawn per seed (uniformly) from the ranges below, plus a smooth low-frequency texture (additive, std in
HU) and partial-volume blended edges. Air is -1000 HU.

Head (HU): scalp 30-50; skull tables 1200-1500, diploe 700-900; CSF / ventricles 5-12; grey 38-42; white 23-28;
deep grey 33-38; cerebellum 35-40; brainstem 28-34; sinus air -1000; eye 5-15; orbital fat -100 to -70.
1-3 low-contrast lesions (6-20 mm) in grey / white / deep grey, +-5-15 HU from their local background.

Body (chest / abdomen, contrast-enhanced; HU): fat -110 to -85 (visceral -105 to -80); muscle 40-60; lungs -870
to -830 with vessels 30-50; liver 55-65; spleen 45-55; kidney cortex 140-190, medulla 60-90; myocardium 80-110;
blood pool / aorta 150-250; cortical bone 900-1200, marrow 300-400; stomach 10-30, bowel 20-45, bladder 0-15;
gas -1000. Lesions: 2-4 solid lung nodules (4-16 mm, 10-60 HU) and 1-2 hypodense liver lesions (8-25 mm, 15-40 HU
below the surrounding liver).
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
)
from .shapes import Canvas, Grid, smooth_noise, spread_diameters

CT_HEAD_LABELS = HEAD_LABELS
CT_BODY_LABELS = TORSO_LABELS
AIR_HU = -1000.0

# tissue: (HU range, texture std in HU)
CT_HEAD_TISSUES: dict[str, tuple[tuple[float, float], float]] = {
    "scalp": ((30.0, 50.0), 4.0),
    "skull_table": ((1200.0, 1500.0), 40.0),
    "diploe": ((700.0, 900.0), 50.0),
    "csf": ((5.0, 12.0), 1.5),
    "grey": ((38.0, 42.0), 1.5),
    "white": ((23.0, 28.0), 1.5),
    "deep_grey": ((33.0, 38.0), 1.5),
    "cerebellum": ((35.0, 40.0), 1.5),
    "brainstem": ((28.0, 34.0), 1.5),
    "sinus": ((AIR_HU, AIR_HU), 0.0),
    "eye": ((5.0, 15.0), 1.5),
    "orbit_fat": ((-100.0, -70.0), 5.0),
}
CT_BODY_TISSUES: dict[str, tuple[tuple[float, float], float]] = {
    "fat": ((-110.0, -85.0), 6.0),
    "visceral_fat": ((-105.0, -80.0), 8.0),
    "muscle": ((40.0, 60.0), 4.0),
    "disc": ((70.0, 95.0), 4.0),
    "spinal_cord": ((30.0, 40.0), 2.0),
    "scalp": ((30.0, 50.0), 4.0),
    "lung": ((-870.0, -830.0), 20.0),
    "liver": ((55.0, 65.0), 3.0),
    "spleen": ((45.0, 55.0), 3.0),
    "kidney_cortex": ((140.0, 190.0), 6.0),
    "kidney_medulla": ((60.0, 90.0), 5.0),
    "myocardium": ((80.0, 110.0), 4.0),
    "rv_wall": ((80.0, 110.0), 4.0),
    "blood": ((150.0, 250.0), 4.0),
    "lung_vessel": ((30.0, 50.0), 3.0),
    "bone": ((900.0, 1200.0), 60.0),
    "skull": ((900.0, 1200.0), 60.0),
    "marrow": ((300.0, 400.0), 40.0),
    "stomach": ((10.0, 30.0), 4.0),
    "bowel": ((20.0, 45.0), 8.0),
    "bladder": ((0.0, 15.0), 2.0),
    "gas": ((AIR_HU, AIR_HU), 0.0),
    "brain": ((30.0, 40.0), 2.0),
}

_TEXTURE_CORRELATION_MM = (6.0, 15.0)

# The held-out pelvis: texture about five times finer than the training phantoms' (correlation 1.2 and 3 mm) and
# stronger in soft tissue, and a trabecular marrow pattern (140 HU std at 1.2 mm around a 180-320 HU mean); what a
# model has never seen, as real anatomy at 0.7 mm is not what it trained on.
_PELVIS_TEXTURE_MM = (1.2, 3.0)
CT_PELVIS_TISSUES: dict[str, tuple[tuple[float, float], float]] = {
    **CT_BODY_TISSUES,
    "fat": ((-110.0, -85.0), 10.0),
    "visceral_fat": ((-105.0, -80.0), 12.0),
    "muscle": ((40.0, 60.0), 8.0),
    "bowel": ((20.0, 45.0), 12.0),
    "bladder": ((0.0, 15.0), 3.0),
    "marrow": ((180.0, 320.0), 140.0),
    "bone": ((900.0, 1300.0), 80.0),
}


def _value_function(
    grid: Grid,
    tissues: Mapping[str, tuple[tuple[float, float], float]],
    base: Mapping[str, float],
    tex_rng: np.random.Generator,
    texture_mm: tuple[float, ...] = _TEXTURE_CORRELATION_MM,
) -> Callable[[str], dict[str, float | np.ndarray]]:
    """tissue -> {"hu": base + std * smooth texture}; textured fields (one per correlation length in ``texture_mm``,
    assigned to tissues in turn) are built once per tissue."""
    fields = [smooth_noise(grid, tex_rng, c) for c in texture_mm]
    cache: dict[str, dict[str, float | np.ndarray]] = {}

    def values(tissue: str) -> dict[str, float | np.ndarray]:
        if tissue not in cache:
            std = tissues[tissue][1]
            field = fields[sorted(tissues).index(tissue) % len(fields)]
            cache[tissue] = {"hu": np.float32(base[tissue]) + np.float32(std) * field if std > 0 else base[tissue]}
        return cache[tissue]

    return values


def _render(
    grid: Grid,
    anatomy: Anatomy,
    tissues,
    val: np.random.Generator,
    tex: np.random.Generator,
    texture_mm: tuple[float, ...] = _TEXTURE_CORRELATION_MM,
) -> tuple[Canvas, dict[str, float]]:
    base = {t: float(val.uniform(*v[0])) for t, v in tissues.items()}
    canvas = Canvas(grid, {"hu": AIR_HU})
    paint_anatomy(canvas, anatomy, _value_function(grid, tissues, base, tex, texture_mm))
    return canvas, base


def _finish(canvas: Canvas, lesions: np.ndarray, extra: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    hu = np.maximum(canvas.layers["hu"], AIR_HU).astype(np.float32)
    return {"hu": hu, "labels": canvas.labels, "lesions": lesions, **extra}


def ct_head_phantom(
    seed: int,
    shape: tuple[int, int, int] = (128, 128, 24),
    spacing_mm: tuple[float, float, float] = (1.5, 1.5, 3.0),
) -> dict[str, np.ndarray]:
    """Head CT (HU) from ``seed``: the FOV is centred near the basal ganglia / lateral ventricles, the frontal sinus
    in the lowest slices.

    Returns:
        ``hu`` (float32 (X, Y, Z)), ``labels`` (int16, :data:`CT_HEAD_LABELS`), ``lesions`` (int16, lesion i+1),
        ``lesion_diameters_mm`` (n,), ``lesion_centers_mm`` (n, 3), ``lesion_delta_hu`` (n,: lesion minus local
        background), ``lesion_background`` (n,: local background HU) and ``lesion_host_label`` (n,: label around the
        lesion).
    """
    geom, val, tex, les = seed_streams(seed)
    grid = Grid(shape, spacing_mm)
    anatomy = head_anatomy(geom, grid, center_z_mm=float(geom.uniform(-12.0, -6.0)))
    canvas, _ = _render(grid, anatomy, CT_HEAD_TISSUES, val, tex)

    n = int(les.integers(1, 4))
    specs = [LesionSpec(d, ("brain",)) for d in spread_diameters(les, n, 6.0, 20.0)]
    groups = {"brain": ("grey", "white", "deep_grey")}
    placed = place_lesions(les, grid, canvas.labels, anatomy.labels, specs, groups)
    delta = (les.uniform(5.0, 15.0, len(placed)) * les.choice([-1.0, 1.0], len(placed))).astype(np.float32)
    lesions, bg, host = paint_lesions(
        canvas, anatomy, placed, groups, "hu", lambda i, pl, b: {"hu": b + float(delta[i])}
    )
    return _finish(
        canvas,
        lesions,
        lesion_arrays(placed) | {"lesion_delta_hu": delta, "lesion_background": bg, "lesion_host_label": host},
    )


def ct_body_phantom(
    seed: int,
    shape: tuple[int, int, int] = (128, 128, 24),
    spacing_mm: tuple[float, float, float] = (2.5, 2.5, 3.0),
) -> dict[str, np.ndarray]:
    """Contrast-enhanced chest / upper-abdomen CT (HU) from ``seed``, centred near the diaphragm (lung bases, heart,
    liver dome, stomach, spleen). The body is scaled to fit inside the scan circle (92 % of the in-plane half-FOV).

    Returns:
        Same keys as :func:`ct_head_phantom`; labels follow :data:`CT_BODY_LABELS`.
    """
    geom, val, tex, les = seed_streams(seed)
    grid = Grid(shape, spacing_mm)
    half_fov = float(min(grid.half_extent_mm[:2]))
    anatomy = torso_anatomy(geom, diaphragm_z_mm=float(geom.uniform(-20.0, 15.0)), fit_half_width_mm=0.92 * half_fov)
    canvas, _ = _render(grid, anatomy, CT_BODY_TISSUES, val, tex)

    n_nod, n_liv = int(les.integers(2, 5)), int(les.integers(1, 3))
    specs = [LesionSpec(d, ("lung",)) for d in spread_diameters(les, n_nod, 4.0, 16.0)]
    specs += [LesionSpec(d, ("liver",)) for d in spread_diameters(les, n_liv, 8.0, 25.0)]
    placed = place_lesions(les, grid, canvas.labels, anatomy.labels, specs)
    nodule_hu = les.uniform(10.0, 60.0, len(placed))
    liver_delta = -les.uniform(15.0, 40.0, len(placed))

    def value(i, pl, b):
        return {"hu": float(nodule_hu[i]) if pl.host == "lung" else b + float(liver_delta[i])}

    lesions, bg, host = paint_lesions(canvas, anatomy, placed, {}, "hu", value)
    delta = np.asarray([value(i, pl, b)["hu"] - b for i, (pl, b) in enumerate(zip(placed, bg, strict=True))])
    extra = lesion_arrays(placed) | {
        "lesion_delta_hu": delta.astype(np.float32),
        "lesion_background": bg,
        "lesion_host_label": host,
    }
    return _finish(canvas, lesions, extra)


def ct_pelvis_phantom(
    seed: int,
    shape: tuple[int, int, int] = (512, 512, 8),
    spacing_mm: tuple[float, float, float] = (0.7, 0.7, 3.0),
) -> dict[str, np.ndarray]:
    """Contrast-enhanced pelvis CT (HU) from ``seed`` at clinical in-plane sampling (512 x 512 at 0.7 mm by default):
    the held-out anatomy of the CT benchmark, never part of a training dataset.

    The slab lies between the bladder and the pubic symphysis (iliac wings or acetabula, femoral heads, sacrum, bowel,
    iliac vessels, gluteal and psoas muscle), a region the chest / upper-abdomen training phantoms never reach; tissue
    texture is finer and stronger than in training (:data:`CT_PELVIS_TISSUES`, correlation 1.2 and 3 mm) and marrow
    carries a trabecular pattern. Lesions: 1-3 hypodense soft-tissue lesions (8-20 mm, 15-40 HU below their local
    background) and 0-2 lytic marrow lesions (6-12 mm, 100-200 HU below).

    Returns:
        Same keys as :func:`ct_head_phantom`; labels follow :data:`CT_BODY_LABELS`.
    """
    geom, val, tex, les = seed_streams(seed)
    grid = Grid(shape, spacing_mm)
    half_fov = float(min(grid.half_extent_mm[:2]))
    anatomy = torso_anatomy(
        geom,
        diaphragm_z_mm=float(geom.uniform(220.0, 265.0)),
        fit_half_width_mm=0.92 * half_fov,
        lung_vessels=False,  # no lung in the slab
    )
    canvas, _ = _render(grid, anatomy, CT_PELVIS_TISSUES, val, tex, _PELVIS_TEXTURE_MM)

    n_soft, n_bone = int(les.integers(1, 4)), int(les.integers(0, 3))
    specs = [LesionSpec(d, ("soft_tissue",)) for d in spread_diameters(les, n_soft, 8.0, 20.0)]
    specs += [LesionSpec(d, ("marrow",)) for d in spread_diameters(les, n_bone, 6.0, 12.0)]
    placed = place_lesions(les, grid, canvas.labels, anatomy.labels, specs)
    soft_delta = -les.uniform(15.0, 40.0, len(placed))
    bone_delta = -les.uniform(100.0, 200.0, len(placed))

    def value(i, pl, b):
        return {"hu": b + float(bone_delta[i] if pl.host == "marrow" else soft_delta[i])}

    lesions, bg, host = paint_lesions(canvas, anatomy, placed, {}, "hu", value)
    delta = np.asarray([value(i, pl, b)["hu"] - b for i, (pl, b) in enumerate(zip(placed, bg, strict=True))])
    extra = lesion_arrays(placed) | {
        "lesion_delta_hu": delta.astype(np.float32),
        "lesion_background": bg,
        "lesion_host_label": host,
    }
    return _finish(canvas, lesions, extra)
