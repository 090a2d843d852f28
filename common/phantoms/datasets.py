"""Embedded default datasets: phantoms + physically simulated degraded inputs, NIfTI files and a decathlon datalist.

Each builder writes, under ``out_dir``, NIfTI volumes (``.nii.gz``, affine ``diag(spacing)`` centred on the volume, see
:meth:`common.phantoms.shapes.Grid.affine`) and ``datalist.json`` readable by
``monai.data.load_decathlon_datalist(path, data_list_key="training" | "validation" | "test")`` (paths are relative to
the datalist's folder). Every item carries ``image`` (degraded input), ``label`` (reference), ``labels`` (organ
labels), ``volume_id``, ``source: "phantom"``, its dose key at the top level (``drf`` / ``dose`` / ``factor``) and a
``simulation`` record with every parameter and seed. Splits are by volume: all pairs of a volume sit in one split.

Seeds (documented, stable): for master ``seed`` and volume index ``i`` (train, then validation, then test),
the phantom seed is ``SeedSequence(seed, spawn_key=(i,)).generate_state(1)[0]`` and the noise seed of dose level
``v`` is ``SeedSequence(seed, spawn_key=(i, 1, round(v * 1000)))...`` (``v`` = DRF or dose fraction), so a volume's
DRF-20 input does not change when other DRFs are added.

Cache: ``params_hash`` hashes the generator record (function, version, every parameter, the seed and a hash of the
phantom / physics code, docstrings and formatting excluded). When ``out_dir/datalist.json`` has the same hash and all
its files exist, the builder logs a cache hit and returns without writing. Otherwise it generates into a temporary
folder inside ``out_dir``, moves each file into place (``os.replace``), deletes only the files the *previous* datalist
listed as its own (``files``) and the new one no longer uses, and writes the datalist last; files it does not own are
never touched. Two builders writing the same folder at the same time are not coordinated (no lock).
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .anatomy import HEAD_LABELS, TORSO_LABELS
from .ct import ct_body_phantom, ct_head_phantom, ct_pelvis_phantom
from .pet import pet_brain_phantom, pet_torso_phantom
from .shapes import Grid

logger = logging.getLogger(__name__)

GENERATOR_VERSION = "1.0"
DATALIST_NAME = "datalist.json"
ENV_DATA_DIR = "RESTOREZOO_DATA"

# PET: the fast route's count scale is calibrated so that a uniform region at this SUV (a typical liver) has the
# OSEM calibration target at DRF 1 (2.3 %, docs/physics.md); every PET volume of a dataset shares the scale.
PET_REFERENCE_SUV = 2.0
PET_REFERENCE_NOISE_AT_DRF1 = 0.023

PET_PSF_FWHM_MM = 6.0  # resolution of the full-dose reference (clinical whole-body PET with post-filter)
PET_TORSO_GRID = ((96, 64, 96), (4.0, 4.0, 4.0))
PET_BRAIN_GRID = ((64, 64, 48), (3.0, 3.0, 3.0))
# "pelvis" is the held-out anatomy of the benchmark (clinical 0.7 mm sampling); no bundle trains on it
CT_GRIDS = {
    "head": ((128, 128, 24), (1.5, 1.5, 3.0)),
    "body": ((128, 128, 24), (2.5, 2.5, 3.0)),
    "pelvis": ((512, 512, 8), (0.7, 0.7, 3.0)),
}
CT_SR_GRIDS = {"head": ((128, 128, 48), (1.5, 1.5, 1.5)), "body": ((128, 128, 48), (2.5, 2.5, 1.5))}
_CT_PHANTOMS: dict[str, Callable[..., dict[str, np.ndarray]]] = {
    "head": ct_head_phantom,
    "body": ct_body_phantom,
    "pelvis": ct_pelvis_phantom,
}
_CT_LABEL_TABLES = {"head": HEAD_LABELS, "body": TORSO_LABELS, "pelvis": TORSO_LABELS}


def default_data_dir(kind: str) -> Path:
    """Folder of an embedded dataset: ``$RESTOREZOO_DATA/<kind>`` if the variable is set, else
    ``~/.cache/restorezoo/<kind>`` (``kind`` e.g. ``"pet"``, ``"ct"``, ``"ct_sr"``)."""
    if not kind or any(sep in kind for sep in ("/", "\\")) or kind in (".", ".."):
        raise ValueError(f"dataset kind must be a plain folder name, got {kind!r}")
    root = os.environ.get(ENV_DATA_DIR)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "restorezoo"
    return base / kind


# --------------------------------------------------------------------------------------------------------------------
# seeds, hashing, file naming


def volume_seed(seed: int, index: int) -> int:
    """Phantom seed of volume ``index`` derived from the master ``seed``."""
    return int(np.random.SeedSequence(seed, spawn_key=(index,)).generate_state(1)[0])


def noise_seed(seed: int, index: int, level: float) -> int:
    """Noise seed of volume ``index`` at dose level ``level`` (DRF or dose fraction)."""
    return int(np.random.SeedSequence(seed, spawn_key=(index, 1, round(level * 1000))).generate_state(1)[0])


def _level_tag(value: float) -> str:
    """File-name tag of a DRF / dose percentage: 20 -> '20', 12.5 -> '12p5'."""
    text = f"{value:g}"
    return text.replace(".", "p").replace("-", "m")


@functools.lru_cache(maxsize=1)
def _code_hash() -> str:
    """Hash of the phantom and physics code (syntax trees without docstrings, so comment, docstring and formatting
    edits keep cached datasets valid while any change of the computation invalidates them)."""
    from .. import phantoms as phantoms_pkg
    from .. import physics as physics_pkg

    digest = hashlib.sha256()
    for pkg in (phantoms_pkg, physics_pkg):
        for path in sorted(Path(pkg.__file__).parent.glob("*.py")):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                body = getattr(node, "body", None)
                if (
                    isinstance(body, list)
                    and body
                    and isinstance(body[0], ast.Expr)
                    and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)
                ):
                    node.body = body[1:] or [ast.Pass()]
            digest.update(path.name.encode())
            digest.update(ast.dump(tree, annotate_fields=False).encode())
    return digest.hexdigest()[:16]


def params_hash(generator: dict[str, Any]) -> str:
    """Stable hash (16 hex) of a JSON-serialisable generator record."""
    text = json.dumps(generator, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _split_sizes(n_train: int, n_val: int, n_test: int) -> dict[str, int]:
    sizes = {"training": n_train, "validation": n_val, "test": n_test}
    for key, n in sizes.items():
        if isinstance(n, bool) or int(n) != n or n < 0:
            raise ValueError(f"number of {key} volumes must be an integer >= 0, got {n!r}")
    if sum(sizes.values()) == 0:
        raise ValueError("at least one volume is needed (n_train + n_val + n_test > 0)")
    return {k: int(v) for k, v in sizes.items()}


def _split_of(sizes: dict[str, int]) -> list[tuple[str, int]]:
    """``(split, index within split)`` of every volume, in global volume order (train, validation, test)."""
    return [(split, k) for split, n in sizes.items() for k in range(n)]


class _CTVolume(NamedTuple):
    index: int
    split: str
    vid: str
    anatomy: str
    spacing: Sequence[float]
    phantom: dict[str, np.ndarray]
    affine: np.ndarray
    record: dict[str, Any]


def _ct_volumes(
    sizes: dict[str, int],
    anatomies: Sequence[str],
    grid_table: dict[str, tuple[Sequence[int], Sequence[float]]],
    seed: int,
) -> Iterator[_CTVolume]:
    """The CT phantoms of a dataset, volume by volume, in global order (train, validation, test).

    Anatomies alternate in ``anatomies`` order; volume ``i`` uses ``volume_seed(seed, i)``; ``record`` is the
    phantom's provenance (:func:`_phantom_record`).
    """
    for i, (split, _) in enumerate(_split_of(sizes)):
        anatomy = anatomies[i % len(anatomies)]
        function = _CT_PHANTOMS[anatomy]
        shape, spacing = grid_table[anatomy]
        vseed = volume_seed(seed, i)
        yield _CTVolume(
            index=i,
            split=split,
            vid=f"{anatomy}_{i:03d}",
            anatomy=anatomy,
            spacing=spacing,
            phantom=function(vseed, shape, spacing),
            affine=Grid(shape, spacing).affine(),
            record=_phantom_record(function, vseed, shape, spacing),
        )


def _check_levels(name: str, values: Iterable[float], lo: float, hi: float) -> list[float]:
    out = []
    for v in values:
        f = float(v)
        if not (math.isfinite(f) and lo <= f <= hi):
            raise ValueError(f"{name} values must be in [{lo}, {hi}], got {v!r}")
        out.append(f)
    if not out:
        raise ValueError(f"{name} must not be empty")
    return out


# --------------------------------------------------------------------------------------------------------------------
# cache and atomic publication


def _load_datalist(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _owned_files(datalist: dict[str, Any] | None, out_dir: Path) -> list[Path]:
    """Files a datalist lists as its own (``files``), kept only if they resolve inside ``out_dir``."""
    if not datalist or not isinstance(datalist.get("files"), list):
        return []
    root = out_dir.resolve()
    out = []
    for rel in datalist["files"]:
        p = (out_dir / str(rel)).resolve()
        if root in p.parents:
            out.append(p)
    return out


def cached_datalist(out_dir: str | os.PathLike, expected_hash: str) -> Path | None:
    """Path of ``out_dir/datalist.json`` if it has ``expected_hash`` and every file it owns exists, else ``None``."""
    path = Path(out_dir) / DATALIST_NAME
    datalist = _load_datalist(path)
    if not datalist or datalist.get("params_hash") != expected_hash or not datalist.get("files"):
        return None
    files = _owned_files(datalist, Path(out_dir))
    if len(files) != len(datalist["files"]) or not all(f.is_file() for f in files):
        return None
    return path


class _Writer:
    """Writes NIfTI files into a private temporary folder (in a small thread pool: gzip releases the GIL)."""

    def __init__(self, out_dir: Path) -> None:
        from ..io import save_nifti  # late import: common.io is optional for phantom-only users

        self._save = save_nifti
        out_dir.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".build-{uuid.uuid4().hex[:8]}-", dir=out_dir))
        self.files: list[str] = []
        self._pool = ThreadPoolExecutor(max_workers=2)
        self._jobs: list[Any] = []

    def save(self, rel: str, array: np.ndarray, affine: np.ndarray, dtype: type = np.float32) -> str:
        """Queue ``array`` for writing to ``rel`` (relative path); at most 16 writes are pending (bounded memory)."""
        self.files.append(rel)
        while len(self._jobs) >= 16:
            self._jobs.pop(0).result()
        self._jobs.append(self._pool.submit(self._save, array, affine, self.tmp / rel, dtype=dtype))
        return rel

    def wait(self) -> None:
        for job in self._jobs:
            job.result()
        self._jobs.clear()

    def publish(self, out_dir: Path, datalist: dict[str, Any]) -> Path:
        """Move the files into ``out_dir``, drop stale owned files, write the datalist last; remove the temp dir."""
        self.wait()
        self._pool.shutdown()
        target = out_dir / DATALIST_NAME
        previous = _load_datalist(target)
        if target.exists():  # a crash while moving must not leave an old datalist describing new files
            target.unlink()
        for rel in self.files:
            dest = out_dir / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.tmp / rel, dest)
        keep = {(out_dir / rel).resolve() for rel in self.files}
        for stale in _owned_files(previous, out_dir):
            if stale not in keep and stale.is_file():
                stale.unlink()
        datalist["files"] = sorted(self.files)
        fd, tmp_name = tempfile.mkstemp(prefix=".datalist.", suffix=".json", dir=out_dir)
        with os.fdopen(fd, "w") as handle:
            json.dump(datalist, handle, indent=1)
        os.replace(tmp_name, target)
        self.discard()
        return target

    def discard(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.tmp, ignore_errors=True)


def _build(
    out_dir: str | os.PathLike,
    generator: dict[str, Any],
    header: dict[str, Any],
    force: bool,
    fill: Callable[[_Writer, dict[str, list[dict[str, Any]]]], None],
) -> Path:
    """Shared cache / generate / publish logic of the builders."""
    out = Path(out_dir).expanduser()
    generator = {**generator, "version": GENERATOR_VERSION, "code_hash": _code_hash()}
    digest = params_hash(generator)
    if not force:
        hit = cached_datalist(out, digest)
        if hit is not None:
            logger.info("%s: cached dataset (params_hash %s), nothing regenerated", hit, digest)
            return hit
    start = time.perf_counter()
    writer = _Writer(out)
    try:
        splits: dict[str, list[dict[str, Any]]] = {"training": [], "validation": [], "test": []}
        fill(writer, splits)
        datalist = {**header, "generator": generator, "params_hash": digest, **splits}
        path = writer.publish(out, datalist)
    except BaseException:
        writer.discard()
        raise
    logger.info("%s: generated %d files in %.1f s", path, len(writer.files), time.perf_counter() - start)
    return path


def _phantom_record(function: Callable, seed: int, shape: Sequence[int], spacing: Sequence[float]) -> dict[str, Any]:
    return {"function": f"{function.__module__}.{function.__name__}", "seed": seed, "shape": list(shape),
            "spacing_mm": list(spacing)}  # fmt: skip


# --------------------------------------------------------------------------------------------------------------------
# PET


def _brain_flags(sizes: dict[str, int], n_brain: int | None) -> list[bool]:
    """Which volumes (global order) are brain phantoms: evenly spaced inside each split.

    ``n_brain=None``: every 4th volume of a split (at least one in each split of >= 2 volumes). An integer is shared
    between the splits in proportion to their sizes (largest remainders first).
    """
    total = sum(sizes.values())
    if n_brain is None:
        per_split = {k: (max(1, n // 4) if n >= 2 else 0) for k, n in sizes.items()}
    else:
        if isinstance(n_brain, bool) or int(n_brain) != n_brain or not 0 <= n_brain <= total:
            raise ValueError(f"n_brain must be an integer in [0, {total}], got {n_brain!r}")
        exact = {k: n_brain * n / total for k, n in sizes.items()}
        per_split = {k: int(v) for k, v in exact.items()}
        for k in sorted(exact, key=lambda k: exact[k] - per_split[k], reverse=True)[
            : n_brain - sum(per_split.values())
        ]:
            per_split[k] += 1
    flags = []
    for split, n in sizes.items():
        nb = per_split[split]
        positions = {round((j + 1) * n / nb) - 1 for j in range(nb)} if nb else set()
        flags += [k in positions for k in range(n)]
    return flags


def _apply_psf(activity: np.ndarray, spacing_mm: Sequence[float], fwhm_mm: float) -> np.ndarray:
    """Blur ``activity`` (X, Y, Z) by an isotropic Gaussian PSF of ``fwhm_mm`` (0: unchanged)."""
    if fwhm_mm < 0 or not np.isfinite(fwhm_mm):
        raise ValueError(f"psf_fwhm_mm must be >= 0, got {fwhm_mm}")
    if fwhm_mm == 0:
        return activity
    from scipy.ndimage import gaussian_filter

    from ..physics import fwhm_to_sigma

    sigma = [fwhm_to_sigma(fwhm_mm) / float(s) for s in spacing_mm]
    return gaussian_filter(activity.astype(np.float32), sigma, mode="nearest").astype(np.float32)


def build_pet_dataset(
    out_dir: str | os.PathLike,
    *,
    n_train: int = 12,
    n_val: int = 3,
    n_test: int = 3,
    drfs: Sequence[float] = (4, 10, 20, 50, 100),
    val_drfs: Sequence[float] = (4, 20, 100),
    test_drfs: Sequence[float] | None = None,
    route: str = "fast",
    n_brain: int | None = None,
    seed: int = 0,
    force: bool = False,
    sigma_vox: float = 1.0,
    psf_fwhm_mm: float = PET_PSF_FWHM_MM,
    scanner: Any = None,
    torso_grid: tuple[Sequence[int], Sequence[float]] = PET_TORSO_GRID,
    brain_grid: tuple[Sequence[int], Sequence[float]] = PET_BRAIN_GRID,
) -> Path:
    """Low-count PET pairs on torso and brain phantoms; returns the datalist path.

    Writes ``fulldose/<vol>.nii.gz`` (the reference: noise-free phantom SUV at the scanner's resolution, i.e. blurred
    by a Gaussian PSF of ``psf_fwhm_mm``), ``lowdose/<vol>_drf<D>.nii.gz``,
    ``mu/<vol>.nii.gz`` (1/mm at 511 keV), ``labels/<vol>.nii.gz`` (organ labels, int16) and ``lesions/<vol>.nii.gz``
    (one id per lesion, int16).

    Args:
        drfs / val_drfs / test_drfs: dose-reduction factors of the training / validation / test inputs (test defaults
            to ``drfs``).
        route: ``"fast"``: image-domain counting noise on the reference, correlated by a Gaussian of ``sigma_vox``
            voxels (the count scale is calibrated once with ``calibrate_count_scale(PET_REFERENCE_SUV,
            PET_REFERENCE_NOISE_AT_DRF1, sigma_vox)``). ``"sinogram"``: projection of the sharp phantom with
            attenuation (the mu map), randoms, scatter, Poisson and OSEM (``scanner``: a
            :class:`common.physics.PETScanner`, default one).
        psf_fwhm_mm: resolution of the reference (a real full-dose reconstruction is not sharper than the scanner:
            ~6 mm FWHM for a clinical whole-body protocol with post-filter). 0 keeps the sharp phantom.
        n_brain: number of brain phantoms among the volumes (default: every 4th volume of each split).
        seed: master seed (see the module docstring for the derived seeds).
        force: regenerate even if a matching cached dataset exists.
        torso_grid / brain_grid: ``(shape, spacing_mm)`` of the phantoms.
    """
    from ..physics import PETScanner, calibrate_count_scale

    sizes = _split_sizes(n_train, n_val, n_test)
    seed = _check_seed(seed)
    if route not in ("fast", "sinogram"):
        raise ValueError(f"route must be 'fast' or 'sinogram', got {route!r}")
    levels = {
        "training": _check_levels("drfs", drfs, 1.0, 1e6),
        "validation": _check_levels("val_drfs", val_drfs, 1.0, 1e6),
        "test": _check_levels("test_drfs", drfs if test_drfs is None else test_drfs, 1.0, 1e6),
    }
    scanner = scanner if scanner is not None else PETScanner()
    count_scale = calibrate_count_scale(PET_REFERENCE_SUV, PET_REFERENCE_NOISE_AT_DRF1, sigma_vox)
    brains = _brain_flags(sizes, n_brain)
    grids = {
        "torso": (tuple(torso_grid[0]), tuple(torso_grid[1])),
        "brain": (tuple(brain_grid[0]), tuple(brain_grid[1])),
    }
    generator = {
        "function": f"{__name__}.build_pet_dataset",
        "n_train": sizes["training"],
        "n_val": sizes["validation"],
        "n_test": sizes["test"],
        "drfs": levels["training"],
        "val_drfs": levels["validation"],
        "test_drfs": levels["test"],
        "route": route,
        "n_brain": n_brain,
        "n_brain_volumes": int(sum(brains)),
        "seed": int(seed),
        "sigma_vox": float(sigma_vox),
        "psf_fwhm_mm": float(psf_fwhm_mm),
        "count_scale": count_scale,
        "reference_suv": PET_REFERENCE_SUV,
        "reference_noise_at_drf1": PET_REFERENCE_NOISE_AT_DRF1,
        "scanner": dataclasses.asdict(scanner) if route == "sinogram" else None,
        "grids": {k: {"shape": list(v[0]), "spacing_mm": list(v[1])} for k, v in grids.items()},
    }
    header = {
        "name": "restorezoo-phantom-pet",
        "description": (
            "Deterministic FDG-like torso and brain phantoms (SUV) with simulated low-count inputs. label = noise-free "
            f"phantom activity at the scanner resolution (Gaussian PSF, FWHM {psf_fwhm_mm:g} mm); image = low-count "
            "simulation at the item's DRF."
        ),
        "modality": "PT",
        "label_tables": {"torso": TORSO_LABELS, "brain": HEAD_LABELS},
    }

    def fill(writer: _Writer, splits: dict[str, list[dict[str, Any]]]) -> None:
        from ..physics import simulate_low_count_pet_fast, simulate_low_count_pet_sinogram

        for i, ((split, _), is_brain) in enumerate(zip(_split_of(sizes), brains, strict=True)):
            anatomy = "brain" if is_brain else "torso"
            function = pet_brain_phantom if is_brain else pet_torso_phantom
            shape, spacing = grids[anatomy]
            vseed = volume_seed(seed, i)
            phantom = function(vseed, shape, spacing)
            affine = Grid(shape, spacing).affine()
            vid = f"{anatomy}_{i:03d}"
            reference = _apply_psf(phantom["activity"], spacing, psf_fwhm_mm)
            label = writer.save(f"fulldose/{vid}.nii.gz", reference, affine)
            labels = writer.save(f"labels/{vid}.nii.gz", phantom["labels"], affine, np.int16)
            lesions = writer.save(f"lesions/{vid}.nii.gz", phantom["lesions"], affine, np.int16)
            mu = writer.save(f"mu/{vid}.nii.gz", phantom["mu_map"], affine)
            for drf in levels[split]:
                nseed = noise_seed(seed, i, drf)
                if route == "fast":
                    low = simulate_low_count_pet_fast(reference, drf, nseed, count_scale, sigma_vox)
                    sim = {"kind": "pet_fast", "drf": drf, "seed": nseed, "count_scale": count_scale,
                           "sigma_vox": float(sigma_vox), "psf_fwhm_mm": float(psf_fwhm_mm)}  # fmt: skip
                else:
                    low = simulate_low_count_pet_sinogram(
                        phantom["activity"], phantom["mu_map"], float(spacing[0]), drf, nseed, scanner
                    )
                    sim = {"kind": "pet_sinogram", "drf": drf, "seed": nseed, **dataclasses.asdict(scanner)}
                image = writer.save(f"lowdose/{vid}_drf{_level_tag(drf)}.nii.gz", low, affine)
                splits[split].append(
                    {
                        "image": image,
                        "label": label,
                        "labels": labels,
                        "lesions": lesions,
                        "mu": mu,
                        "volume_id": vid,
                        "anatomy": anatomy,
                        "drf": drf,
                        "source": "phantom",
                        "phantom": _phantom_record(function, vseed, shape, spacing),
                        "simulation": sim,
                    }
                )

    return _build(out_dir, generator, header, force, fill)


# --------------------------------------------------------------------------------------------------------------------
# CT low dose


def build_ct_dataset(
    out_dir: str | os.PathLike,
    *,
    anatomies: Sequence[str] = ("head", "body"),
    n_train: int = 6,
    n_val: int = 2,
    n_test: int = 2,
    doses: Sequence[float] = (0.1, 0.25, 0.5, 0.7),
    seed: int = 0,
    force: bool = False,
    acquisition: Any = None,
    grids: dict[str, tuple[Sequence[int], Sequence[float]]] | None = None,
) -> Path:
    """Low-dose CT pairs (projection-domain simulation) on head / body phantoms; returns the datalist path.

    Volumes alternate over ``anatomies`` (volume ``i`` is ``anatomies[i % len(anatomies)]``); ``n_train`` etc. count
    volumes over all anatomies. Writes ``fulldose/<vol>.nii.gz`` (the label: FBP of the noise-free sinogram, so it has
    the same reconstruction blur as the input), ``lowdose/<vol>_dose<pct>.nii.gz``
    (``CTLowDoseSimulator.simulate(dose, seed)``; the clean sinogram is computed once per volume and reused across
    doses), ``phantom_hu/<vol>.nii.gz`` (raw phantom HU), ``labels/`` and ``lesions/`` (int16). The raw-HU folder is
    not called ``phantom/``: MONAI's datalist loader turns any item string naming an existing path into an absolute
    path, so such a folder would rewrite ``"source": "phantom"``.

    Args:
        doses: dose fractions in (0, 1], used in every split.
        acquisition: a :class:`common.physics.CTAcquisition` (default one if ``None``).
        grids: per anatomy ``(shape, spacing_mm)``; default :data:`CT_GRIDS`.

    Note: monai 1.6.1 ``load_decathlon_datalist`` raises ``IndexError`` on an empty ``"test"`` list (``n_test=0``).
    """
    from ..physics import CTAcquisition

    sizes = _split_sizes(n_train, n_val, n_test)
    seed = _check_seed(seed)
    anatomies = list(anatomies)
    if not anatomies or any(a not in _CT_PHANTOMS for a in anatomies):
        raise ValueError(f"anatomies must be a non-empty subset of {sorted(_CT_PHANTOMS)}, got {anatomies!r}")
    dose_list = _check_levels("doses", doses, 1e-6, 1.0)
    if any(d <= 0 for d in dose_list):
        raise ValueError(f"doses must be > 0, got {doses!r}")
    acquisition = acquisition if acquisition is not None else CTAcquisition()
    grid_table = {a: (tuple(g[0]), tuple(g[1])) for a, g in {**CT_GRIDS, **(grids or {})}.items()}
    generator = {
        "function": f"{__name__}.build_ct_dataset",
        "anatomies": anatomies,
        "n_train": sizes["training"],
        "n_val": sizes["validation"],
        "n_test": sizes["test"],
        "doses": dose_list,
        "seed": int(seed),
        "acquisition": dataclasses.asdict(acquisition),
        "grids": {a: {"shape": list(grid_table[a][0]), "spacing_mm": list(grid_table[a][1])} for a in anatomies},
    }
    header = {
        "name": "restorezoo-phantom-ct-lowdose",
        "description": (
            "Deterministic head, chest/abdomen and pelvis CT phantoms (HU) with projection-domain low-dose simulation "
            "(Poisson + electronic noise on the sinogram, FBP). label = FBP of the noise-free sinogram; image = FBP "
            "at the item's dose fraction; phantom_hu/ = raw phantom HU."
        ),
        "modality": "CT",
        "label_tables": {a: _CT_LABEL_TABLES[a] for a in anatomies},
    }

    def fill(writer: _Writer, splits: dict[str, list[dict[str, Any]]]) -> None:
        from ..physics import CTLowDoseSimulator

        for vol in _ct_volumes(sizes, anatomies, grid_table, seed):
            i, split, vid, anatomy, spacing, phantom, affine = vol[:7]
            simulator = CTLowDoseSimulator(phantom["hu"], float(spacing[0]), acquisition)
            label = writer.save(f"fulldose/{vid}.nii.gz", simulator.reference(), affine)
            raw = writer.save(f"phantom_hu/{vid}.nii.gz", phantom["hu"], affine)
            labels = writer.save(f"labels/{vid}.nii.gz", phantom["labels"], affine, np.int16)
            lesions = writer.save(f"lesions/{vid}.nii.gz", phantom["lesions"], affine, np.int16)
            for dose in dose_list:
                nseed = noise_seed(seed, i, dose)
                image = writer.save(
                    f"lowdose/{vid}_dose{_level_tag(dose * 100)}.nii.gz", simulator.simulate(dose, nseed), affine
                )
                splits[split].append(
                    {
                        "image": image,
                        "label": label,
                        "phantom_hu": raw,
                        "labels": labels,
                        "lesions": lesions,
                        "volume_id": vid,
                        "anatomy": anatomy,
                        "dose": dose,
                        "source": "phantom",
                        "phantom": vol.record,
                        "simulation": {
                            "kind": "ct_projection",
                            "dose": dose,
                            "seed": nseed,
                            "pixel_mm": spacing[0],
                            **dataclasses.asdict(acquisition),
                        },  # fmt: skip
                    }
                )

    return _build(out_dir, generator, header, force, fill)


# --------------------------------------------------------------------------------------------------------------------
# CT through-plane super-resolution


def build_ct_sr_dataset(
    out_dir: str | os.PathLike,
    *,
    factors: Sequence[int] = (2, 4),
    thickness_mm: float | None = None,
    offset: int = 0,
    anatomies: Sequence[str] = ("head", "body"),
    n_train: int = 6,
    n_val: int = 2,
    n_test: int = 2,
    seed: int = 0,
    force: bool = False,
    grids: dict[str, tuple[Sequence[int], Sequence[float]]] | None = None,
) -> Path:
    """Thin-slice CT phantoms and their simulated thick-slice versions; returns the datalist path.

    Writes ``thin/<vol>.nii.gz`` (noise-free phantom HU on the thin grid: the label), ``thick/<vol>_x<f>.nii.gz``
    (Gaussian slice profile of FWHM ``thickness_mm``, default ``factor * spacing_z``, then every ``factor``-th slice
    from ``offset``; affine from :func:`common.physics.thick_slice_affine`), ``labels/`` and ``lesions/`` (thin grid).

    Args:
        factors: integer through-plane factors (one input per factor and volume).
        thickness_mm: slice thickness (FWHM) in mm for every factor; ``None``: ``factor * spacing_z``.
        offset: thin-slice index of the first thick slice's centre.
        grids: per anatomy thin ``(shape, spacing_mm)``; default :data:`CT_SR_GRIDS` (1.5 mm slices, 48 of them).
    """
    from ..physics import simulate_thick_slices, thick_slice_affine

    sizes = _split_sizes(n_train, n_val, n_test)
    seed = _check_seed(seed)
    anatomies = list(anatomies)
    if not anatomies or any(a not in _CT_PHANTOMS for a in anatomies):
        raise ValueError(f"anatomies must be a non-empty subset of {sorted(_CT_PHANTOMS)}, got {anatomies!r}")
    factor_list = []
    for f in factors:
        if isinstance(f, bool) or int(f) != f or f < 1:
            raise ValueError(f"factors must be integers >= 1, got {f!r}")
        factor_list.append(int(f))
    if not factor_list:
        raise ValueError("factors must not be empty")
    if thickness_mm is not None and not (math.isfinite(thickness_mm) and thickness_mm >= 0):
        raise ValueError(f"thickness_mm must be >= 0 mm or None, got {thickness_mm!r}")
    grid_table = {a: (tuple(g[0]), tuple(g[1])) for a, g in {**CT_SR_GRIDS, **(grids or {})}.items()}
    generator = {
        "function": f"{__name__}.build_ct_sr_dataset",
        "anatomies": anatomies,
        "factors": factor_list,
        "thickness_mm": thickness_mm,
        "offset": int(offset),
        "n_train": sizes["training"],
        "n_val": sizes["validation"],
        "n_test": sizes["test"],
        "seed": int(seed),
        "grids": {a: {"shape": list(grid_table[a][0]), "spacing_mm": list(grid_table[a][1])} for a in anatomies},
    }
    header = {
        "name": "restorezoo-phantom-ct-sr",
        "description": (
            "Deterministic thin-slice head and chest/abdomen CT phantoms (HU, noise-free) with simulated thick-slice "
            "inputs (Gaussian slice profile, FWHM = thickness, decimation by the factor). label = thin volume; "
            "image = thick volume whose affine places thick slice k on thin slice offset + k * factor."
        ),
        "modality": "CT",
        "label_tables": {a: _CT_LABEL_TABLES[a] for a in anatomies},
    }

    def fill(writer: _Writer, splits: dict[str, list[dict[str, Any]]]) -> None:
        for vol in _ct_volumes(sizes, anatomies, grid_table, seed):
            i, split, vid, anatomy, spacing, phantom, affine = vol[:7]
            label = writer.save(f"thin/{vid}.nii.gz", phantom["hu"], affine)
            labels = writer.save(f"labels/{vid}.nii.gz", phantom["labels"], affine, np.int16)
            lesions = writer.save(f"lesions/{vid}.nii.gz", phantom["lesions"], affine, np.int16)
            for factor in factor_list:
                thickness = float(factor * spacing[2] if thickness_mm is None else thickness_mm)
                thick = simulate_thick_slices(phantom["hu"], float(spacing[2]), factor, thickness, int(offset))
                image = writer.save(
                    f"thick/{vid}_x{factor}.nii.gz", thick, thick_slice_affine(affine, factor, int(offset))
                )
                splits[split].append(
                    {
                        "image": image,
                        "label": label,
                        "labels": labels,
                        "lesions": lesions,
                        "volume_id": vid,
                        "anatomy": anatomy,
                        "factor": factor,
                        "source": "phantom",
                        "phantom": vol.record,
                        "simulation": {
                            "kind": "thick_slice",
                            "factor": factor,
                            "thickness_mm": thickness,
                            "offset": int(offset),
                            "spacing_z_mm": float(spacing[2]),
                            "profile": "gaussian_fwhm",
                        },  # fmt: skip
                    }
                )

    return _build(out_dir, generator, header, force, fill)
