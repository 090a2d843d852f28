"""Modality-independent anatomy of the phantoms: which tissue fills which shape, in painting order.

The same geometry serves PET and CT (:mod:`common.phantoms.pet`, :mod:`common.phantoms.ct`); those modules only map
tissue names to SUV / attenuation / HU and add lesions. Geometry is drawn from a random generator, so one seed gives
one "patient": body size and shape, organ sizes and positions, vessel trees, gyral pattern, ventricle size.

Frames (mm, RAS+: +x patient's right, +y anterior, +z superior):

- torso: organ positions are written relative to the top of the right diaphragm dome (``z = 0`` internally) and
  scaled with the body (in-plane by the body half-width / depth, along z by a height factor); the caller decides
  where the dome lies in the grid (``diaphragm_z_mm``).
- head: the origin is the centre of the cerebrum (about 15 mm above the AC-PC plane); the caller places it at
  ``center_z_mm`` on the grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .shapes import (
    Box,
    Canvas,
    Capsule,
    Difference,
    Ellipsoid,
    EllipticCylinder,
    Field,
    FunctionShape,
    Grid,
    HalfSpace,
    Intersection,
    Offset,
    PeriodicZ,
    ProfiledCylinder,
    Shape,
    Sphere,
    Union,
    Vec3,
    host_distance,
    sample_sphere_center,
    smooth_noise,
)

# Label tables (label name -> id). Tissues map to labels through *_TISSUE_LABEL (a tissue without an entry is its
# own label), so e.g. intervertebral discs carry the "soft_tissue" label but their own CT number.
TORSO_LABELS: dict[str, int] = {
    "background": 0,  # air outside the body
    "soft_tissue": 1,  # muscle, discs, spinal cord, neck / face soft tissue ("body")
    "fat": 2,  # subcutaneous and visceral (abdominal / mediastinal) fat
    "lung": 3,
    "liver": 4,
    "spleen": 5,
    "kidney_cortex": 6,
    "kidney_medulla": 7,  # medulla and collecting system
    "myocardium": 8,
    "blood": 9,  # cardiac chambers, aorta, iliac arteries, IVC, hepatic vessels
    "lung_vessel": 10,  # pulmonary vessel tree inside the lungs
    "bone": 11,  # cortical bone: ribs, sternum, vertebrae, pelvis, femora, skull
    "marrow": 12,  # trabecular bone / red marrow: vertebral bodies, iliac and femoral marrow
    "stomach": 13,
    "bowel": 14,
    "bladder": 15,
    "gas": 16,  # air inside the body: trachea, bronchi, stomach and bowel gas
    "brain": 17,  # whole-body phantoms only (head inside the FOV)
    "lesion": 18,  # every lesion; one id per lesion in the separate "lesions" map
}
TORSO_TISSUE_LABEL: dict[str, str] = {
    "muscle": "soft_tissue",
    "disc": "soft_tissue",
    "spinal_cord": "soft_tissue",
    "scalp": "soft_tissue",
    "visceral_fat": "fat",
    "skull": "bone",
    "rv_wall": "myocardium",
}

HEAD_LABELS: dict[str, int] = {
    "background": 0,  # air
    "scalp": 1,  # scalp, face and skull-base soft tissue, orbits
    "skull": 2,  # cortical tables, diploe, skull base
    "csf": 3,  # ventricles, subarachnoid space, sulci, interhemispheric fissure
    "grey": 4,  # cortical grey matter
    "white": 5,
    "deep_grey": 6,  # caudate, putamen, thalamus
    "cerebellum": 7,
    "brainstem": 8,
    "sinus": 9,  # air in the paranasal sinuses
    "lesion": 10,  # every lesion; one id per lesion in the separate "lesions" map
}
HEAD_TISSUE_LABEL: dict[str, str] = {
    "skull_table": "skull",
    "diploe": "skull",
    "eye": "scalp",
    "orbit_fat": "scalp",
}


def tissue_label(tissue: str, labels: dict[str, int], aliases: dict[str, str]) -> int:
    """Label id of ``tissue`` in a label table (through the alias table)."""
    return labels[aliases.get(tissue, tissue)]


@dataclass(frozen=True)
class Part:
    """One painting step: ``tissue`` fills ``shape``; if ``within`` is set, only voxels already labelled with one of
    those label names are overwritten."""

    tissue: str
    shape: Shape
    within: tuple[str, ...] | None = None


@dataclass
class Anatomy:
    """Ordered parts plus landmarks (mm, grid frame) and the label table they use."""

    parts: list[Part]
    labels: dict[str, int]
    aliases: dict[str, str]
    landmarks: dict[str, Vec3] = field(default_factory=dict)

    def label_of(self, tissue: str) -> int:
        return tissue_label(tissue, self.labels, self.aliases)


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


# --------------------------------------------------------------------------------------------------------------------
# Torso


def torso_diaphragm_z(grid: Grid) -> float:
    """Default height (mm, grid frame) of the right diaphragm dome for a torso / whole-body field of view.

    FOVs shorter than 800 mm are framed on the trunk: the dome sits 152 mm below the top (at the default 384 mm FOV
    lung apices reach the top, the bladder the bottom). Longer FOVs are whole-body: the vertex of the head is ~20 mm
    below the top of the FOV.
    """
    top = float(grid.half_extent_mm[2])
    length = 2.0 * top
    return top - 152.0 if length < 800.0 else top - 480.0


def torso_anatomy(
    rng: np.random.Generator,
    *,
    diaphragm_z_mm: float,
    fit_half_width_mm: float | None = None,
    lung_vessels: bool = True,
) -> Anatomy:
    """Trunk (plus legs, neck and head where the FOV reaches them) of one random adult.

    Args:
        rng: geometry random generator (sizes, positions, vessel trees).
        diaphragm_z_mm: grid z (mm) of the top of the right diaphragm dome.
        fit_half_width_mm: if given, the whole cross-section is scaled down (never up) so the body half-width is at
            most this (CT: keep the body inside the scan circle).
        lung_vessels: add the pulmonary vessel trees (about 270 small capsules).

    Returns:
        The :class:`Anatomy` with ``TORSO_LABELS``; landmarks ``diaphragm``, ``liver``, ``heart``, ``bladder``,
        ``head`` (centres, mm).
    """
    zd = float(diaphragm_z_mm)
    # --- body size: half-width a, anterior / posterior depth, boxiness, fat and wall thickness, height scale
    a = _u(rng, 135.0, 160.0)
    b_ant = _u(rng, 98.0, 112.0)
    b_post = b_ant * _u(rng, 0.86, 0.94)
    if fit_half_width_mm is not None and a > fit_half_width_mm:
        k = fit_half_width_mm / a
        a, b_ant, b_post = a * k, b_ant * k, b_post * k
    s, t, h = a / 150.0, b_ant / 105.0, _u(rng, 0.92, 1.08)  # in-plane x / y scale, z scale
    p = _u(rng, 2.15, 2.6)
    fat_t = _u(rng, 8.0, 22.0) * min(s, 1.0)
    wall_t = _u(rng, 8.0, 13.0) * min(s, 1.0)

    def z(v: float) -> float:  # internal (dome-relative, height-scaled) -> grid z
        return zd + v * h

    # --- outline: trunk profile (knots from the pelvic floor to the shoulders)
    zk = [-300, -220, -120, -20, 80, 150, 172, 186]
    ka = [0.98, 1.0, 0.92, 0.95, 1.0, 1.02, 0.9, 0.55]
    kb = [0.95, 1.0, 1.0, 0.97, 0.95, 0.86, 0.76, 0.5]
    trunk = ProfiledCylinder(
        (0.0, 0.0),
        tuple(z(v) for v in zk),
        tuple(a * f for f in ka),
        tuple(b_ant * f for f in kb),
        tuple(b_post * f for f in kb),
        exponent=p,
    )
    legs = [
        EllipticCylinder((sx * 0.46 * a, -0.08 * b_ant), (0.42 * a, 0.56 * b_ant), (-math.inf, z(-285.0)))
        for sx in (1.0, -1.0)
    ]
    neck_z0, neck_z1 = z(150.0), z(186.0) + 105.0
    neck = EllipticCylinder((0.0, -0.12 * b_ant), (0.36 * a, 0.46 * b_ant), (neck_z0, neck_z1))
    head_c = (0.0, 0.0, neck_z1 + 70.0)
    head = Ellipsoid(head_c, (_u(rng, 68, 74), _u(rng, 86, 92), _u(rng, 95, 102)))
    muscle = Offset(trunk, -fat_t)
    # spine geometry (the cavity, kidneys, aorta and lungs are placed relative to it)
    y_vb = -b_post + fat_t + 70.0 + _u(rng, 0.0, 8.0)  # vertebral body centre
    y_canal = y_vb - 30.0
    vb_r = (_u(rng, 17.0, 21.0), _u(rng, 14.0, 17.0))
    # body cavity (thorax + abdomen): inside the muscle wall, behind it the paraspinal muscle block
    back_block = EllipticCylinder((0.0, y_canal - 4.0), (58.0, 30.0))
    cavity_xy = Difference(Offset(trunk, -(fat_t + wall_t)), back_block)
    cavity = Intersection((cavity_xy, HalfSpace((0, 0, 1), z(178.0))))

    parts: list[Part] = [Part("fat", trunk)]
    parts += [Part("fat", leg) for leg in legs]
    parts += [Part("fat", neck), Part("scalp", head)]
    parts += [Part("muscle", muscle)]
    parts += [Part("muscle", Offset(leg, -0.8 * fat_t)) for leg in legs]
    parts += [Part("muscle", Offset(neck, -0.5 * fat_t))]
    parts += [Part("visceral_fat", cavity)]

    spine_z = (z(-330.0), neck_z1 + 20.0)
    for sx in (1.0, -1.0):  # paraspinal muscles (erector spinae), psoas in the abdomen
        parts.append(Part("muscle", EllipticCylinder((sx * 34.0, y_canal - 6.0), (25.0, 19.0), spine_z)))
        parts.append(Part("muscle", EllipticCylinder((sx * 36.0, y_vb + 2.0), (17.0, 15.0), (z(-260.0), z(-90.0)))))

    # --- abdomen and pelvis
    for _ in range(int(rng.integers(6, 10))):
        c = (_u(rng, -75, 75) * s, _u(rng, -15, 55) * t, z(_u(rng, -215, -95)))
        r = (_u(rng, 14, 28), _u(rng, 14, 26), _u(rng, 14, 28))
        bowel = Intersection((Ellipsoid(c, r, _u(rng, 0, 180)), cavity))
        parts.append(Part("bowel", bowel, within=("fat",)))
        if rng.random() < 0.45:  # gas rises anteriorly in a supine patient
            parts.append(Part("gas", Intersection((bowel, HalfSpace((0, -1, 0), -(c[1] + 0.45 * r[1])))), ("bowel",)))
    bladder_c = (0.0, 0.38 * b_ant, z(-205.0))
    bladder = Intersection((Ellipsoid(bladder_c, (_u(rng, 32, 45) * s, _u(rng, 26, 34) * t, _u(rng, 26, 34))), cavity))
    parts.append(Part("bladder", bladder))

    dome_r = Ellipsoid((40.0 * s, 0.0, z(-95.0)), (135.0 * s, 125.0 * t, 95.0 * h))
    dome_l = Ellipsoid((-45.0 * s, 0.0, z(-95.0 - _u(rng, 8, 16))), (130.0 * s, 120.0 * t, 95.0 * h))
    dome = Union((dome_r, dome_l))
    liver_r = Ellipsoid((52.0 * s, 2.0 * t, z(-55.0)), (_u(rng, 82, 92) * s, _u(rng, 76, 86) * t, 85.0 * h), 8.0)
    liver_l = Ellipsoid((-28.0 * s, 38.0 * t, z(-30.0)), (_u(rng, 45, 60) * s, 30.0 * t, 32.0 * h), 15.0)
    liver = Intersection((Union((liver_r, liver_l)), dome, cavity))
    parts.append(Part("liver", liver))
    portal = (30.0 * s, 0.0, z(-65.0))
    for cap in _vessel_tree(
        rng,
        portal,
        n_primary=5,
        length=(35.0, 55.0),
        radius=4.0,
        generations=2,
        spread=(0.8, 0.8, 0.8),
        bias=(0.3, 0.2, 0.0),
    ):
        parts.append(Part("blood", cap, ("liver",)))
    spleen = Ellipsoid((-84.0 * s, -36.0 * t, z(-55.0)), (_u(rng, 20, 27) * s, _u(rng, 42, 52) * t, 45.0 * h), -40.0)
    parts.append(Part("spleen", Intersection((spleen, cavity)), ("fat", "bowel")))
    st_c, st_r = (-50.0 * s, 30.0 * t, z(-45.0)), (_u(rng, 36, 46) * s, _u(rng, 28, 36) * t, 38.0 * h)
    stomach = Intersection((Ellipsoid(st_c, st_r, 25.0), dome, cavity))
    parts.append(Part("stomach", stomach, ("fat", "bowel")))
    gas_level = st_c[1] + st_r[1] * _u(rng, 0.2, 0.6)
    parts.append(Part("gas", Intersection((stomach, HalfSpace((0, -1, 0), -gas_level))), ("stomach",)))

    # kidneys after liver and spleen: they indent them (hepatorenal / splenorenal contact)
    kidneys = []
    for sx, dz in ((1.0, -95.0), (-1.0, -80.0)):  # the right kidney sits lower (under the liver)
        c = (sx * 64.0 * s, y_vb - 8.0, z(dz + _u(rng, -8, 8)))
        outer = Ellipsoid(c, (_u(rng, 24, 28) * s, _u(rng, 18, 21) * t, _u(rng, 45, 55) * h), sx * 30.0)
        inner = Ellipsoid((c[0] - sx * 6.0, c[1] + 2.0, c[2]), (14.0 * s, 10.0 * t, 34.0 * h), sx * 30.0)
        kidneys.append(outer)
        parts += [Part("kidney_cortex", outer), Part("kidney_medulla", inner, ("kidney_cortex",))]

    # --- great vessels
    r_ao, y_ao = _u(rng, 10.0, 13.0), y_vb + 24.0
    ao_top = z(110.0)
    asc = (5.0 * s, 32.0 * t, z(55.0))
    arch = (0.0, y_ao + 38.0 * t, z(125.0))
    aorta = [
        Capsule((-16.0, y_ao, z(-170.0)), (-16.0, y_ao, ao_top), r_ao),
        Capsule((-16.0, y_ao, ao_top), arch, r_ao),
        Capsule(arch, asc, r_ao * 1.1),
    ]
    aorta += [Capsule((-16.0, y_ao, z(-170.0)), (sx * 48.0 * s, y_ao - 6.0, z(-255.0)), 7.0) for sx in (1.0, -1.0)]
    ivc = Capsule((24.0 * s, y_ao - 2.0, z(-170.0)), (28.0 * s, y_ao + 14.0, z(15.0)), _u(rng, 9.0, 12.0))
    parts += [Part("blood", c) for c in aorta] + [Part("blood", ivc)]

    # --- heart (painted after the lungs; the lungs are carved around it)
    wall = _u(rng, 9.0, 13.0)
    lv_c, lv_r, ang = (-30.0 * s, 36.0 * t, z(45.0)), (42.0 * s, 34.0 * t, 44.0 * h), -35.0 + _u(rng, -8, 8)
    lv = Ellipsoid(lv_c, lv_r, ang)
    lv_cav = Ellipsoid((lv_c[0] + 3.0, lv_c[1], lv_c[2] + 3.0), tuple(r - wall for r in lv_r), ang)
    rv_c, rv_r = (4.0 * s, 54.0 * t, z(40.0)), (36.0 * s, 24.0 * t, 40.0 * h)
    rv = Ellipsoid(rv_c, rv_r, ang)
    rv_cav = Ellipsoid(rv_c, tuple(r - 4.0 for r in rv_r), ang)
    ra = Ellipsoid((36.0 * s, 30.0 * t, z(58.0)), (24.0 * s, 24.0 * t, 28.0 * h))
    la = Ellipsoid((-6.0 * s, 6.0 * t, z(78.0)), (30.0 * s, 20.0 * t, 22.0 * h))
    heart = [ra, la, rv, lv]

    # --- lungs: ellipsoids minus diaphragm domes, mediastinum and heart, inside the rib cage
    mediastinum = Union(
        (
            EllipticCylinder((0.0, 22.0 * t), (30.0 * s, 62.0 * t)),
            EllipticCylinder((0.0, y_vb - 8.0), (27.0, 42.0)),
            *(Offset(c, 6.0) for c in heart),
            *(Offset(c, 5.0) for c in aorta[:3]),
        )
    )
    lungs = []
    for sx, cx, rx in ((1.0, 72.0, 64.0), (-1.0, 74.0, 60.0)):
        ell = Ellipsoid((sx * cx * s, -8.0 * t, z(60.0)), (rx * s, 80.0 * t, 115.0 * h))
        lungs.append(Intersection((Difference(Difference(ell, dome), mediastinum), cavity)))
    parts += [Part("lung", lung, ("fat",)) for lung in lungs]
    if lung_vessels:
        for sx in (1.0, -1.0):
            hilum = (sx * 42.0 * s, 4.0 * t, z(88.0))
            tree = _vessel_tree(rng, hilum, 9, (40.0, 60.0), 5.0, 4, spread=(1.0, 1.0, 1.3), bias=(sx * 1.2, -0.2, 0.0))
            parts += [Part("lung_vessel", c, ("lung",)) for c in tree]
    parts += [
        Part("blood", ra),
        Part("blood", la),
        Part("rv_wall", rv),
        Part("blood", rv_cav, ("myocardium",)),  # the wall stays labelled myocardium
        Part("myocardium", lv),
        Part("blood", lv_cav, ("myocardium",)),
    ]
    carina = (0.0, 14.0 * t, z(122.0))
    airway = [Capsule(carina, (0.0, 10.0 * t, neck_z1), 9.0)]
    airway += [Capsule(carina, (sx * 38.0 * s, 4.0 * t, z(96.0)), 6.0) for sx in (1.0, -1.0)]
    parts += [Part("gas", c) for c in airway]

    # --- skeleton: discs and vertebral bodies, posterior arch, ribs, sternum, pelvis, femora
    period, phase = _u(rng, 26.0, 32.0), _u(rng, 0.0, 30.0)
    column = EllipticCylinder((0.0, y_vb), (vb_r[0] + 1.0, vb_r[1] + 1.0), spine_z)
    body = PeriodicZ(EllipticCylinder((0.0, y_vb), vb_r, spine_z), period, 6.0, phase)
    arch = PeriodicZ(
        Union(
            (
                Difference(
                    EllipticCylinder((0.0, y_canal), (14.0, 12.0), spine_z), EllipticCylinder((0, y_canal), (8, 7))
                ),
                Box((0.0, y_canal - 22.0, 0.0), (3.5, 12.0, math.inf)),
                EllipticCylinder((20.0, y_canal - 2.0), (14.0, 4.0), angle_deg=-20.0),  # transverse processes
                EllipticCylinder((-20.0, y_canal - 2.0), (14.0, 4.0), angle_deg=20.0),
            )
        ),
        period,
        period - 12.0,
        phase,
    )
    parts += [
        Part("disc", column),
        Part("bone", body),
        Part("marrow", Offset(body, -2.5), ("bone",)),
        Part("bone", Intersection((arch, HalfSpace((0, 0, 1), spine_z[1]), HalfSpace((0, 0, -1), -spine_z[0])))),
        Part("spinal_cord", EllipticCylinder((0.0, y_canal), (8.0, 7.0), spine_z)),
    ]
    rib_ring = 0.5 * wall_t  # ribs run inside the muscle wall, just outside the cavity
    y_bottom = -b_post
    ribs = _rib_cage(cavity_xy, trunk, rib_ring, z(-85.0), z(165.0), _u(rng, 24, 29), _u(rng, 0.2, 0.3), y_bottom)
    parts.append(Part("bone", ribs))
    y_st = b_ant * 0.93 - fat_t - 0.5 * wall_t
    parts.append(Part("bone", Box((0.0, y_st, z(70.0)), (14.0, 6.0, 70.0 * h))))
    for sx in (1.0, -1.0):
        ilium = Ellipsoid((sx * 88.0 * s, -22.0 * t, z(-190.0)), (9.0, 52.0 * t, 48.0 * h), sx * 40.0)
        fem_c = (sx * 80.0 * s, 4.0 * t, z(-262.0))
        femur = Union((Sphere(fem_c, 24.0), Capsule(fem_c, (sx * 0.46 * a, -0.04 * b_ant, z(-700.0)), 14.0)))
        parts += [Part("bone", ilium), Part("marrow", Offset(ilium, -3.0), ("bone",))]
        parts += [Part("bone", femur), Part("marrow", Offset(femur, -4.0), ("bone",))]
    parts.append(Part("bone", Ellipsoid((0.0, y_vb - 6.0, z(-215.0)), (38.0 * s, 14.0, 45.0 * h))))  # sacrum
    parts.append(Part("bone", Ellipsoid((0.0, 0.8 * b_ant - fat_t, z(-272.0)), (40.0 * s, 10.0, 14.0))))  # pubis

    # --- head (whole-body FOVs): scalp, skull, brain
    parts += [Part("skull", Offset(head, -5.0)), Part("brain", Offset(head, -13.0))]

    landmarks = {
        "diaphragm": (40.0 * s, 0.0, zd),
        "liver": (52.0 * s, 2.0 * t, z(-55.0)),
        "heart": lv_c,
        "bladder": bladder_c,
        "head": head_c,
    }
    return Anatomy(parts, TORSO_LABELS, TORSO_TISSUE_LABEL, landmarks)


def _vessel_tree(
    rng: np.random.Generator,
    root: Vec3,
    n_primary: int,
    length: tuple[float, float],
    radius: float,
    generations: int,
    spread: tuple[float, float, float],
    bias: tuple[float, float, float],
) -> list[Capsule]:
    """Random branching tree of capsules from ``root``: each branch splits in two, shorter (x0.65) and thinner (x0.7).

    Primary directions are ``normal(0, spread) + bias`` per axis (e.g. mostly lateral for the lungs).
    """
    out: list[Capsule] = []
    frontier: list[tuple[np.ndarray, np.ndarray, float, float]] = []
    for _ in range(n_primary):
        d = rng.standard_normal(3) * np.asarray(spread) + np.asarray(bias)
        frontier.append((np.asarray(root, float), d / np.linalg.norm(d), _u(rng, *length), radius))
    for _ in range(generations):
        nxt = []
        for start, direction, ln, r in frontier:
            end = start + direction * ln
            out.append(Capsule(tuple(start), tuple(end), r))
            for _ in range(2):
                d = direction + rng.standard_normal(3) * 0.55
                nxt.append((end, d / np.linalg.norm(d), ln * 0.65, r * 0.7))
        frontier = nxt
    return out


def _rib_cage(
    cavity: Shape,
    trunk: ProfiledCylinder,
    ring_offset_mm: float,
    z0: float,
    z1: float,
    period: float,
    slope: float,
    y_back: float,
) -> Shape:
    """Ribs: flattened tubes (3.5 mm in-plane, 6 mm along z half-sizes) running ``ring_offset_mm`` outside the body
    cavity outline, every ``period`` mm between ``z0`` and ``z1``, descending anteriorly by ``slope`` mm per mm of
    depth from ``y_back``, open in front of the sternum."""
    lo, hi = trunk.bounds()

    def sdf(x, y, z):
        ring = np.abs(cavity.sdf(x, y, z) - ring_offset_mm)
        zz = z + slope * (y - y_back)  # rib centre planes tilt downwards anteriorly
        zm = np.mod(zz - z0, period)
        dz = np.minimum(zm, period - zm)
        d = (np.sqrt((ring / 3.5) ** 2 + (dz / 6.0) ** 2) - 1.0) * 3.5
        d = np.maximum(d, np.maximum(z0 - z, z - z1))
        front_gap = np.where(y > 0.0, 22.0 - np.abs(x), -np.inf)  # sternum / costal cartilage gap
        return np.maximum(d, front_gap)

    return FunctionShape(sdf, (lo[0], lo[1], z0 - 60.0), (hi[0], hi[1], z1 + 10.0))


# --------------------------------------------------------------------------------------------------------------------
# Head


def head_anatomy(
    rng: np.random.Generator,
    grid: Grid,
    *,
    center_z_mm: float,
    cortex_mm: tuple[float, float] = (3.0, 4.5),
    sulcus_width_mm: float = 1.6,
    fissure_width_mm: float = 2.0,
    gyral_amplitude: float = 0.6,
) -> Anatomy:
    """Head of one random adult: scalp, skull tables and diploe, skull base, sinuses, orbits, CSF spaces, cortex with
    a gyral grey / white boundary and sulci, deep grey nuclei, ventricles, cerebellum and brainstem.

    Args:
        rng: geometry random generator.
        grid: the grid the texture fields (gyral pattern) are made for.
        center_z_mm: grid z (mm) of the centre of the cerebrum.
        cortex_mm: range of the mean cortical ribbon thickness (PET phantoms use a thicker effective ribbon).
        sulcus_width_mm: width of the sulcal CSF lines (0: none).
        fissure_width_mm: width of the interhemispheric fissure.
        gyral_amplitude: depth of the gyral folding of the grey / white boundary, as a fraction of the cortex.

    Returns:
        The :class:`Anatomy` with ``HEAD_LABELS``; landmark ``brain`` (cerebrum centre).
    """
    zc = float(center_z_mm)
    A, B, C = _u(rng, 66.0, 72.0), _u(rng, 82.0, 89.0), _u(rng, 92.0, 100.0)
    scalp_t, skull_t = _u(rng, 4.0, 7.0), _u(rng, 6.0, 9.0)
    table_t = 0.3 * skull_t
    csf_t = _u(rng, 1.5, 3.0)
    cortex = _u(rng, *cortex_mm)
    vent = _u(rng, 0.8, 1.5)  # ventricle size (age / atrophy)

    def P(x: float, y: float, z: float) -> Vec3:
        return (x, y, zc + z)

    scalp = Ellipsoid(P(0.0, -4.0, -12.0), (A, B, C))
    inner = Offset(scalp, -(scalp_t + skull_t))

    def floor(y: np.ndarray) -> np.ndarray:  # skull-base height: anterior, middle and posterior fossae
        return zc + np.interp(y, [-200.0, -35.0, -20.0, 20.0, 35.0, 200.0], [-70.0, -70.0, -46.0, -46.0, -27.0, -27.0])

    def tentorium(y: np.ndarray) -> np.ndarray:
        return zc + np.interp(y, [-200.0, -45.0, -20.0, 20.0, 35.0, 200.0], [-30.0, -33.0, -46.0, -46.0, -27.0, -27.0])

    lo, hi = scalp.bounds()

    def above(fn, dz: float) -> Shape:
        return FunctionShape(lambda x, y, z: (fn(y) + dz) - z + 0.0 * x, tuple(lo), tuple(hi))

    parts: list[Part] = [Part("scalp", scalp)]
    parts.append(Part("skull_table", Intersection((Offset(scalp, -scalp_t), above(floor, -10.0)))))
    parts.append(Part("diploe", Intersection((Offset(scalp, -(scalp_t + table_t)), above(floor, -10.0 + table_t)))))
    parts.append(
        Part("skull_table", Intersection((Offset(scalp, -(scalp_t + skull_t - table_t)), above(floor, -table_t))))
    )
    intracranial = Intersection((inner, above(floor, 0.0)))
    parts.append(Part("csf", intracranial))
    for sx in (1.0, -1.0):  # orbits below the anterior fossa
        parts.append(Part("orbit_fat", Sphere(P(sx * 31.0, B - 32.0, -46.0), 17.0), ("scalp", "skull")))
        parts.append(Part("eye", Sphere(P(sx * 32.0, B - 24.0, -46.0), 12.0), ("scalp", "skull")))

    # --- brain
    brain_env = Offset(intracranial, -csf_t)
    cerebellum = Intersection((Ellipsoid(P(0.0, -0.55 * B, -50.0), (0.7 * A, 0.36 * B, 21.0)), brain_env))
    parts.append(Part("cerebellum", cerebellum, ("csf",)))
    parts.append(Part("brainstem", Capsule(P(0.0, -12.0, -12.0), P(0.0, -22.0, -95.0), 12.0)))
    cerebrum = Intersection((brain_env, above(tentorium, 3.0)))
    parts.append(Part("grey", cerebrum, ("csf",)))
    gyri = Field(grid, smooth_noise(grid, rng, 9.0))
    white = _white_matter(cerebrum, gyri, cortex, gyral_amplitude)
    parts.append(Part("white", white, ("grey",)))
    if sulcus_width_mm > 0:
        parts.append(Part("csf", _sulci(cerebrum, gyri, sulcus_width_mm, depth=cortex + 3.0), ("grey",)))

    def fissure_sdf(x, y, z):  # midline sheet, interrupted by the corpus callosum / diencephalon (an ellipse in y-z)
        cc = np.sqrt((y / 44.0) ** 2 + ((z - zc - 2.0) / 23.0) ** 2)
        return np.maximum(np.abs(x) - fissure_width_mm / 2.0, (1.0 - cc) * 23.0)

    fissure = FunctionShape(fissure_sdf, (-fissure_width_mm, lo[1], lo[2]), (fissure_width_mm, hi[1], hi[2]))
    parts.append(Part("csf", Intersection((fissure, cerebrum)), ("grey", "white")))
    for sx in (1.0, -1.0):
        parts += [
            Part("deep_grey", Ellipsoid(P(sx * 12.0, 17.0, 11.0), (6.0, 12.0, 12.0)), ("white", "grey")),
            Part("deep_grey", Ellipsoid(P(sx * 24.0, 3.0, 2.0), (6.5, 16.0, 12.0), -sx * 8.0), ("white", "grey")),
            Part("deep_grey", Ellipsoid(P(sx * 9.5, -13.0, 5.0), (8.0, 13.0, 9.0)), ("white", "grey")),
        ]
    brain_labels = ("grey", "white", "deep_grey")
    for sx in (1.0, -1.0):  # lateral ventricles: body, frontal horn, atrium and occipital horn
        parts += [
            Part("csf", Ellipsoid(P(sx * 9.0, 0.0, 21.0), (4.5 * vent, 27.0, 6.5 * vent), sx * 4.0), brain_labels),
            Part("csf", Ellipsoid(P(sx * 9.0, 21.0, 14.0), (4.0 * vent, 9.0, 8.0 * vent)), brain_labels),
            Part("csf", Capsule(P(sx * 11.0, -22.0, 20.0), P(sx * 17.0, -42.0, 9.0), 4.5 * vent), brain_labels),
        ]
    parts.append(Part("csf", Ellipsoid(P(0.0, -3.0, 2.0), (1.6 * vent, 14.0, 9.0)), brain_labels))
    parts.append(Part("csf", Ellipsoid(P(0.0, -36.0, -47.0), (5.0, 4.0, 6.0)), ("cerebellum", "brainstem")))

    # --- sinuses: frontal (inside a thickened frontal bone) and sphenoid / ethmoid
    fs_c = P(0.0, B - 14.0, -20.0 + _u(rng, -4, 4))
    parts.append(Part("diploe", Ellipsoid(fs_c, (20.0, 9.0, 15.0))))
    parts.append(Part("sinus", Ellipsoid(fs_c, (_u(rng, 11, 18), 6.5, _u(rng, 8, 13)))))
    parts.append(Part("sinus", Ellipsoid(P(0.0, B - 48.0, -44.0), (12.0, 15.0, 10.0)), ("scalp", "skull", "csf")))
    return Anatomy(parts, HEAD_LABELS, HEAD_TISSUE_LABEL, {"brain": P(0.0, 0.0, 0.0)})


def _white_matter(cerebrum: Shape, gyri: Field, cortex_mm: float, amplitude: float) -> Shape:
    """White matter: the cerebrum shrunk by the cortical ribbon, pushed out under gyral crowns (|field| large) and
    pulled in under sulci (|field| ~ 0, where :func:`_sulci` draws the CSF lines)."""
    lo, hi = cerebrum.bounds()

    def sdf(x, y, z):
        n = np.abs(np.clip(gyri.sample(x, y, z), -2.5, 2.5))
        return cerebrum.sdf(x, y, z) + cortex_mm - amplitude * cortex_mm * (n - 0.8)

    return FunctionShape(sdf, tuple(lo), tuple(hi))


def _sulci(cerebrum: Shape, gyri: Field, width_mm: float, depth: float) -> Shape:
    """Sulcal CSF: thin sheets along the zero set of the gyral field, reaching ``depth`` mm below the brain surface."""
    lo, hi = cerebrum.bounds()

    def sdf(x, y, z):
        n = np.abs(gyri.sample(x, y, z))
        sheet = n * 6.0 - width_mm / 2.0  # |field| ~ distance / 6 mm near its zero set (9 mm correlation)
        return np.maximum(sheet, -depth - cerebrum.sdf(x, y, z))

    return FunctionShape(sdf, tuple(lo), tuple(hi))


# --------------------------------------------------------------------------------------------------------------------
# Lesions


@dataclass(frozen=True)
class LesionSpec:
    """A lesion to place: ``diameter_mm`` inside one of the ``hosts`` label names (tried in order)."""

    diameter_mm: float
    hosts: tuple[str, ...]


@dataclass(frozen=True)
class PlacedLesion:
    center_mm: Vec3
    diameter_mm: float
    host: str


def place_lesions(
    rng: np.random.Generator,
    grid: Grid,
    labels: np.ndarray,
    label_table: dict[str, int],
    specs: Sequence[LesionSpec],
    host_groups: dict[str, tuple[str, ...]] | None = None,
) -> list[PlacedLesion]:
    """Place non-overlapping spheres wholly inside their host regions (largest first); unplaceable ones are skipped.

    Args:
        labels: current label map ``(X, Y, Z)``.
        host_groups: optional host name -> label names it covers (e.g. ``"soft_tissue": ("soft_tissue", "fat")``).
    """
    host_groups = host_groups or {}
    distances: dict[str, np.ndarray] = {}
    placed: list[PlacedLesion] = []
    for spec in sorted(specs, key=lambda sp: -sp.diameter_mm):
        for host in spec.hosts:
            if host not in distances:
                ids = [label_table[n] for n in host_groups.get(host, (host,))]
                distances[host] = host_distance(np.isin(labels, ids), grid)
            avoid = [(pl.center_mm, pl.diameter_mm / 2.0) for pl in placed]
            c = sample_sphere_center(rng, grid, distances[host], spec.diameter_mm / 2.0, avoid, margin_mm=3.0)
            if c is not None:
                placed.append(PlacedLesion(c, spec.diameter_mm, host))
                break
    return placed


# --------------------------------------------------------------------------------------------------------------------
# Rendering helpers shared by the PET and CT phantoms


def seed_streams(seed: int, n: int = 4) -> list[np.random.Generator]:
    """Independent generators derived from ``seed`` (geometry, values, texture, lesions): changing how many values
    one stage draws never shifts another stage's stream."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"phantom seed must be a non-negative integer, got {seed!r}")
    return [np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(n)]


def paint_anatomy(canvas: Canvas, anatomy: Anatomy, values: Callable[[str], Mapping[str, float | np.ndarray]]) -> None:
    """Paint every part of ``anatomy`` on ``canvas`` (a :class:`~common.phantoms.shapes.Canvas`).

    Args:
        values: callable ``tissue -> {layer: scalar or full-grid array}``.
    """
    for part in anatomy.parts:
        within = None if part.within is None else [anatomy.labels[n] for n in part.within]
        canvas.paint(part.shape, anatomy.label_of(part.tissue), values(part.tissue), within)


def local_background(
    canvas: Canvas,
    layer: str,
    center_mm: Vec3,
    radius_mm: float,
    host_ids: Sequence[int],
    shell_mm: tuple[float, float],
) -> float:
    """Mean of ``layer`` over host voxels in a shell ``shell_mm`` (mm beyond the sphere surface) around a sphere."""
    outer = Sphere(center_mm, radius_mm + shell_mm[1])
    region = canvas.grid.region(*outer.bounds())
    d = Sphere(center_mm, radius_mm).sdf(*canvas.grid.coords(region))
    d = np.broadcast_to(d, canvas.labels[region].shape)
    mask = (d >= shell_mm[0]) & (d <= shell_mm[1]) & np.isin(canvas.labels[region], list(host_ids))
    values = canvas.layers[layer][region][mask]
    return float(values.mean()) if values.size else float(canvas.layers[layer][region][d <= 0].mean())


def paint_lesions(
    canvas: Canvas,
    anatomy: Anatomy,
    placed: Sequence[PlacedLesion],
    host_groups: dict[str, tuple[str, ...]],
    layer: str,
    value_fn: Callable[[int, PlacedLesion, float], Mapping[str, float]],
    shell_mm: tuple[float, float] = (2.0, 8.0),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paint lesions; return the lesion id map (int16 (X, Y, Z), lesion i+1), the per-lesion local background of
    ``layer`` and the per-lesion host label (label at the centre before painting).

    Args:
        value_fn: ``(index, lesion, background) -> {layer: value}``; ``background`` is the mean of ``layer`` in a
            shell around the lesion inside its host (before any lesion is painted).
    """
    lesions = np.zeros(canvas.grid.shape, dtype=np.int16)
    backgrounds = []
    hosts = [int(canvas.labels[canvas.grid.voxel_index(pl.center_mm)]) for pl in placed]
    for pl in placed:
        ids = [anatomy.labels[n] for n in host_groups.get(pl.host, (pl.host,))]
        backgrounds.append(local_background(canvas, layer, pl.center_mm, pl.diameter_mm / 2.0, ids, shell_mm))
    for i, (pl, bg) in enumerate(zip(placed, backgrounds, strict=True)):
        ids = [anatomy.labels[n] for n in host_groups.get(pl.host, (pl.host,))]
        out = canvas.paint(
            Sphere(pl.center_mm, pl.diameter_mm / 2.0), anatomy.labels["lesion"], value_fn(i, pl, bg), ids
        )
        if out is not None:
            region, occ = out
            lesions[region][occ >= 0.5] = i + 1
    return lesions, np.asarray(backgrounds, dtype=np.float32), np.asarray(hosts, dtype=np.int16)


def lesion_arrays(placed: Sequence[PlacedLesion]) -> dict[str, np.ndarray]:
    """Per-lesion diameters (mm, (n,)) and centres (mm, (n, 3)); lesion id i + 1 in the lesions map is row i."""
    return {
        "lesion_diameters_mm": np.asarray([p.diameter_mm for p in placed], dtype=np.float32),
        "lesion_centers_mm": np.asarray([p.center_mm for p in placed], dtype=np.float32).reshape(-1, 3),
    }
