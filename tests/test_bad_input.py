"""The bad-input corpus: every kind of input a user may feed, through every entry point that accepts it.

Entry points: the five bundles' ``inference.yaml`` (run in-process through MONAI's ``ConfigWorkflow``, the code
path of ``python -m monai.bundle run``; one real ``python -m monai.bundle run`` subprocess per bundle checks the
terminal output), and ``restorezoo simulate-pet | simulate-ct | simulate-thick | dicom2nifti`` (through
``restorezoo.cli.main``). For each case and entry point: a refusal exits non-zero with one line
``error: <file>: <problem>`` naming the input (or the output folder) and writes nothing; a valid input runs and
writes its output; every input file is byte-identical afterwards.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from conftest import BUNDLES, ROOT, perturbed_weights, run_cli, run_workflow, runtime_overlay
from dicom_factory import PET_TAGS, write_series

from common.errors import find_user_error, one_line
from common.transforms import LoadCheckedd

PET_BUNDLES = ("pet_lowdose_film_unet", "pet_lowdose_ddpm3d")
CT_BUNDLES = ("ct_lowdose_featkpn", "ct_lowdose_anatomy_distill", "ct_throughplane_sr")
BUNDLE_ARGS = {
    "pet_lowdose_film_unet": {"drf": 20},
    "pet_lowdose_ddpm3d": {"drf": 20},
    "ct_lowdose_anatomy_distill": {"dose": 0.25},
}
CLI = {"pet": ("simulate-pet", "--drf", "20"), "ct": ("simulate-ct", "--dose", "0.25", "--n_views", "32")}
AFFINE = np.diag([2.0, 2.0, 2.5, 1.0])
READ_ONLY_DIR = "/proc/restorezoo-out"  # cannot be created or written, even by root
# Where a command's answer differs from the bundles' (None: it runs): the simulators have no network (any size, a
# uniform phantom), simulate-ct also takes one 2D slice, simulate-thick works on any image (no unit checks) and
# dicom2nifti converts CT and PET alike.
_THICK_ANY_UNITS = ("absurd_magnitude", "ct_normalised", "ct_without_offset", "pet_into_ct", "constant", "too_small")
CLI_EXPECT: dict[tuple[str, str], str | None] = {
    **{("simulate-thick", name): None for name in _THICK_ANY_UNITS},
    ("simulate-pet", "too_small"): None,
    ("simulate-pet", "constant"): None,
    ("simulate-ct", "too_small"): None,
    ("simulate-ct", "two_d"): None,
    ("simulate-ct", "constant"): "no voxel below -200 HU",
    ("dicom2nifti", "wrong_modality"): None,
}


# ---------------------------------------------------------------------------------------------------- the corpus


def _pet(shape: tuple[int, ...] = (24, 20, 16), seed: int = 0) -> np.ndarray:
    """A smooth SUV-like volume: background ~1, a hot sphere ~8."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    vol = 1.0 + 7.0 * (np.sqrt((grid**2).sum(0)) < 0.4) + 0.1 * rng.standard_normal(shape)
    return np.clip(vol, 0, None).astype(np.float32)


def _ct(shape: tuple[int, ...] = (24, 20, 16), seed: int = 0) -> np.ndarray:
    """Air (-1000 HU) around an elliptic body (40 HU) with bone (700 HU)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape[:2]], indexing="ij"))
    r = np.sqrt((grid**2).sum(0))
    plane = np.where(r < 0.8, 40.0, -1000.0) + np.where(r < 0.2, 660.0, 0.0)
    vol = np.repeat(plane[..., None], shape[2], axis=2) + 10.0 * rng.standard_normal(shape)
    return vol.astype(np.float32)


def _volume(kind: str, shape: tuple[int, ...] = (24, 20, 16)) -> np.ndarray:
    return _pet(shape) if kind == "pet" else _ct(shape)


def _nifti(path: Path, array: np.ndarray, affine: np.ndarray = AFFINE, dtype: type | None = None) -> Path:
    img = nib.Nifti1Image(array if dtype is None else array.astype(dtype), affine)
    nib.save(img, str(path))
    return path


def _series(folder: Path, kind: str, n: int = 12, **kw) -> list[Path]:
    """A DICOM series of ``kind`` (PET: Bq/mL with complete SUV tags, unless ``tags`` says otherwise)."""
    if kind == "pet":
        stored = (_pet((n, 20, 24)) * 1000).astype(np.int16)  # (Z, Rows, Columns); slope 5 -> Bq/mL
        tags = kw.pop("tags", dict(PET_TAGS))
        return write_series(folder, stored, modality="PT", slope=5.0, intercept=0.0, tags=tags, **kw)
    stored = (np.transpose(_ct((24, 20, n)), (2, 1, 0)) + 1024).astype(np.int16)
    return write_series(folder, stored, modality="CT", slope=1.0, intercept=-1024.0, **kw)


@dataclass(frozen=True)
class Case:
    """One kind of input. ``make(kind, folder) -> path`` for ``kind`` in {"pet", "ct"}; ``refuse`` the expected
    fragment of the one-line message per kind (None: must work); ``dicom``: a series folder (dicom2nifti, bundles,
    not the simulators); ``only``: the bundles (by name) it applies to, if not all of its kinds; ``kinds``: the
    modalities it is fed to."""

    name: str
    make: Callable[[str, Path], Path]
    refuse: dict[str, str | None]
    dicom: bool = False
    overrides: dict | None = None
    only: tuple[str, ...] = ()
    output_dir: str | None = None
    kinds: tuple[str, ...] = ("pet", "ct")


def _both(message: str | None) -> dict[str, str | None]:
    return {"pet": message, "ct": message}


def _truncated(kind: str, folder: Path) -> Path:
    raw = _nifti(folder / "full.nii.gz", _volume(kind)).read_bytes()
    (folder / "full.nii.gz").unlink()
    path = folder / "truncated.nii.gz"
    path.write_bytes(raw[: len(raw) // 2])
    return path


def _pet_tags_without(*keys: str) -> dict:
    return {k: v for k, v in PET_TAGS.items() if k not in keys}


def _series_case(kind_of_series: str | None = None, **kw) -> Callable[[str, Path], Path]:
    def make(kind: str, folder: Path) -> Path:
        series = folder / "series"
        _series(series, kind_of_series or kind, **kw)
        return series

    return make


def _mixed(kind: str, folder: Path) -> Path:
    _series(folder / "s", kind, names=[f"a{k}.dcm" for k in range(12)])
    _series(folder / "s", kind, names=[f"b{k}.dcm" for k in range(12)])
    return folder / "s"


def _truncated_slice(kind: str, folder: Path) -> Path:
    paths = _series(folder / "s", kind)
    raw = paths[5].read_bytes()
    paths[5].write_bytes(raw[: len(raw) // 2])
    return folder / "s"


def _missing_slice(kind: str, folder: Path) -> Path:
    paths = _series(folder / "s", kind)
    paths[5].unlink()
    return folder / "s"


def _stray_text(kind: str, folder: Path) -> Path:
    _series(folder / "s", kind)
    (folder / "s" / "README.txt").write_text("exported by a PACS\n")
    return folder / "s"


def _single_dicom_file(kind: str, folder: Path) -> Path:
    return _series(folder / "s", kind)[0]


def _oblique() -> np.ndarray:
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    return rot @ np.diag([1.5, 1.5, 2.5, 1.0]) + np.array([[0, 0, 0, -20], [0, 0, 0, 10], [0, 0, 0, 5], [0, 0, 0, 0]])


CASES: list[Case] = [
    # files that are not one readable 3D volume
    Case("missing_file", lambda k, f: f / "no_such_scan.nii.gz", _both("not found")),
    Case("empty_folder", lambda k, f: (f / "empty").mkdir() or f / "empty", _both("contains no files"), dicom=True),
    Case("text_file", lambda k, f: (f / "notes.txt").write_text("x") and f / "notes.txt", _both("unsupported input")),
    Case(
        "not_nifti",
        lambda k, f: (f / "junk.nii.gz").write_bytes(b"\x00" * 400) and f / "junk.nii.gz",
        _both("cannot read NIfTI"),
    ),
    Case("truncated_nifti", _truncated, _both("cannot read NIfTI")),
    Case(
        "four_d",
        lambda k, f: _nifti(f / "x.nii.gz", np.stack([_volume(k)] * 2, -1)),
        _both("4D image 24x20x16x2; expected one 3D volume"),
    ),
    Case("two_d", lambda k, f: _nifti(f / "x.nii.gz", _volume(k)[..., 0]), _both("expected a 3D image")),
    Case("single_dicom_file", _single_dicom_file, _both("a single DICOM file"), dicom=True),
    # values
    Case("nan", lambda k, f: _nifti(f / "x.nii.gz", np.where(_volume(k) > 5, np.nan, _volume(k))), _both("NaN/Inf")),
    Case("inf", lambda k, f: _nifti(f / "x.nii.gz", np.where(_volume(k) > 5, np.inf, _volume(k))), _both("NaN/Inf")),
    Case("constant", lambda k, f: _nifti(f / "x.nii.gz", np.full((24, 20, 16), 3.0, np.float32)), _both("constant")),
    Case(
        "absurd_magnitude",
        lambda k, f: _nifti(f / "x.nii.gz", _volume(k) * 1e30),
        {"pet": "not a body-weight SUV", "ct": "outside any plausible HU range"},
    ),
    Case(
        "too_small",
        lambda k, f: _nifti(f / "x.nii.gz", _volume(k, (3, 3, 3))),
        _both("smaller than the network's minimum"),
    ),
    Case(
        "implausible_spacing",
        lambda k, f: _nifti(f / "x.nii.gz", _volume(k), np.diag([0.001, 0.001, 0.001, 1.0])),
        _both("implausible voxel spacing"),
    ),
    # units
    Case(
        "pet_in_bq_per_ml",
        lambda k, f: _nifti(f / "x.nii.gz", _pet() * 5300.0),
        {"pet": "looks like Bq/mL or counts", "ct": None},
        kinds=("pet",),
    ),
    Case(
        "pet_mostly_negative",
        lambda k, f: _nifti(f / "x.nii.gz", -_pet() + 1.0),
        {"pet": "negative activity", "ct": None},
        kinds=("pet",),
    ),
    Case(
        "pet_in_mbq_per_ml",
        lambda k, f: _nifti(f / "x.nii.gz", _pet() * 0.0053),
        {"pet": "too low", "ct": None},
        kinds=("pet",),
    ),
    Case(
        "ct_into_pet",
        lambda k, f: _nifti(f / "x.nii.gz", _ct()),
        {"pet": "negative activity", "ct": None},
        kinds=("pet",),
    ),
    Case(
        "ct_normalised",
        lambda k, f: _nifti(f / "x.nii.gz", (_ct() + 1000) / 2000),
        {"pet": None, "ct": "looks like a normalised image"},
        kinds=("ct",),
    ),
    Case(
        "ct_without_offset",
        lambda k, f: _nifti(f / "x.nii.gz", np.clip(_ct() + 1024, 0, None)),
        {"pet": None, "ct": "no voxel below -200 HU"},
        kinds=("ct",),
    ),
    Case(
        "pet_into_ct",
        lambda k, f: _nifti(f / "x.nii.gz", _pet()),
        {"pet": None, "ct": "no voxel below -200 HU"},
        kinds=("ct",),
    ),
    # DICOM series
    Case(
        "pet_no_series_date",
        _series_case(tags=_pet_tags_without("SeriesDate", "AcquisitionDate")),
        {"pet": "missing DICOM tag SeriesDate", "ct": None},
        dicom=True,
        kinds=("pet",),
    ),
    Case(
        "pet_no_patient_weight",
        _series_case(tags=_pet_tags_without("PatientWeight")),
        {"pet": "PatientWeight", "ct": None},
        dicom=True,
        kinds=("pet",),
    ),
    Case(
        "pet_no_radiopharmaceutical",
        _series_case(
            tags=_pet_tags_without("RadiopharmaceuticalStartTime", "RadionuclideTotalDose", "RadionuclideHalfLife")
        ),
        {"pet": "RadiopharmaceuticalInformationSequence", "ct": None},
        dicom=True,
        kinds=("pet",),
    ),
    Case(
        "pet_counts",
        _series_case(tags={**PET_TAGS, "Units": "CNTS"}),
        {"pet": "DICOM tag Units is CNTS", "ct": None},
        dicom=True,
        kinds=("pet",),
    ),
    Case("two_series_in_folder", _mixed, _both("2 DICOM series"), dicom=True),
    Case("truncated_slice", _truncated_slice, _both("cannot decode pixel data"), dicom=True),
    Case("missing_slice", _missing_slice, _both("missing slice?"), dicom=True),
    Case(
        "wrong_modality",
        lambda k, f: _series_case("ct" if k == "pet" else "pet")(k, f),
        {"pet": "expected 'PT'", "ct": "expected 'CT'"},
        dicom=True,
    ),
    # where the output goes
    Case(
        "read_only_output",
        lambda k, f: _nifti(f / "x.nii.gz", _volume(k)),
        _both("output folder"),
        output_dir=READ_ONLY_DIR,
    ),
    # inputs that must work
    Case("valid", lambda k, f: _nifti(f / "scan.nii.gz", _volume(k)), _both(None)),
    Case("odd_tiny_shape", lambda k, f: _nifti(f / "x.nii.gz", _volume(k, (9, 11, 7))), _both(None)),
    Case("oblique", lambda k, f: _nifti(f / "x.nii.gz", _volume(k), _oblique()), _both(None)),
    Case("anisotropic", lambda k, f: _nifti(f / "x.nii.gz", _volume(k), np.diag([0.7, 0.7, 5.0, 1.0])), _both(None)),
    Case("int16", lambda k, f: _nifti(f / "x.nii.gz", np.rint(_volume(k)), dtype=np.int16), _both(None)),
    Case("trailing_singleton", lambda k, f: _nifti(f / "x.nii.gz", _volume(k)[..., None]), _both(None)),
    Case(
        "one_slice",
        lambda k, f: _nifti(f / "x.nii.gz", _volume(k, (24, 20, 1))),
        {"pet": "smaller than the network's minimum", "ct": None},
        only=("ct_lowdose_featkpn", "ct_lowdose_anatomy_distill", "pet_lowdose_film_unet", "pet_lowdose_ddpm3d"),
    ),
    Case("dicom_series", _series_case(), _both(None), dicom=True),
    Case("dicom_series_with_stray_file", _stray_text, _both(None), dicom=True),
    Case(
        "bq_per_ml_with_override",
        lambda k, f: _nifti(f / "x.nii.gz", _pet() * 5300.0),
        {"pet": None, "ct": None},
        overrides={"allow_implausible": True},
        only=PET_BUNDLES,
        kinds=("pet",),
    ),
]


def _digest(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


# ------------------------------------------------------------------------------------------------- entry points


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad_input_weights")
    return {b.name: perturbed_weights(b, folder / f"{b.name}.pt") for b in BUNDLES}


@pytest.fixture(scope="module")
def overlays(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad_input_overlays")
    return {b.name: runtime_overlay(b, folder / f"{b.name}.yaml") for b in BUNDLES}


def _run_bundle(name: str, input_path: Path, out: Path, ckpt: Path, overlay: Path, **overrides) -> str | None:
    """The bundle's inference.yaml in-process (conftest.run_workflow); the one-line refusal, or None on success."""
    config = [ROOT / "bundles" / name / "configs" / "inference.yaml", overlay]
    args = {"input_file": str(input_path), "output_dir": str(out), "ckpt_path": str(ckpt)}
    return run_workflow(config, **args, **BUNDLE_ARGS.get(name, {}), **overrides)


def _check_refusal(line: str | None, expected: str, path: Path, case: Case, where: str) -> None:
    assert line is not None, f"{where}: {case.name} was not refused"
    assert line.startswith("error: "), f"{where}: {case.name}: {line}"
    assert "\n" not in line
    named = case.output_dir or str(path)
    assert named in line or str(path.parent) in line, f"{where}: {case.name}: message does not name the file: {line}"
    assert expected in line, f"{where}: {case.name}: expected {expected!r} in {line!r}"


@pytest.mark.parametrize("bundle", [*PET_BUNDLES, *CT_BUNDLES])
def test_bundle_inference_corpus(bundle: str, tmp_path: Path, weights, overlays) -> None:
    """Every case through one bundle's inference.yaml (in-process, the code path of ``monai.bundle run``)."""
    kind = "pet" if bundle in PET_BUNDLES else "ct"
    results = {}
    for i, case in enumerate(CASES):
        if kind not in case.kinds or (case.only and bundle not in case.only):
            continue
        folder = tmp_path / f"{i:02d}_{case.name}"
        folder.mkdir()
        path = case.make(kind, folder)
        before = _digest(path)
        out = Path(case.output_dir) if case.output_dir else tmp_path / f"out_{i:02d}"
        line = _run_bundle(bundle, path, out, weights[bundle], overlays[bundle], **(case.overrides or {}))
        assert _digest(path) == before, f"{case.name}: the input changed"
        expected = case.refuse[kind]
        if expected is None:
            assert line is None, f"{case.name}: refused: {line}"
            written = [p for p in out.rglob("*") if p.is_file()]
            assert any(p.name.endswith(".nii.gz") for p in written), f"{case.name}: no output written"
            assert not [p for p in written if p.name.startswith(".")], f"{case.name}: temporaries left: {written}"
        else:
            _check_refusal(line, expected, path, case, bundle)
            assert not out.exists() or not any(out.rglob("*")), f"{case.name}: output written"
        results[case.name] = line
    assert len(results) >= 25, sorted(results)


def test_cli_corpus(tmp_path: Path, capsys) -> None:
    """Every NIfTI case through simulate-pet / simulate-ct / simulate-thick, every DICOM case through dicom2nifti."""
    count = 0
    for i, case in enumerate(CASES):
        if case.overrides or case.only:
            continue
        for kind in case.kinds:
            folder = tmp_path / f"{i:02d}_{case.name}_{kind}"
            folder.mkdir()
            path = case.make(kind, folder)
            before = _digest(path)
            out_root = Path(case.output_dir) if case.output_dir else folder / "out"
            commands = [["dicom2nifti", str(path), str(out_root / "d2n" / "x.nii.gz")]] if case.dicom else []
            if not case.dicom:
                commands.append([CLI[kind][0], str(path), str(out_root / "sim" / "low.nii.gz"), *CLI[kind][1:]])
                if kind == "ct":
                    commands.append(
                        ["simulate-thick", str(path), str(out_root / "thick" / "t.nii.gz"), "--factor", "2"]
                    )
            for command in commands:
                out_dir = Path(command[2]).parent
                code, line = run_cli(command, capsys)
                expected = case.refuse[kind]
                expected = CLI_EXPECT.get((command[0], case.name), expected)
                if expected is None:
                    assert code == 0, f"{command}: {line}"
                    assert (out_dir / Path(command[2]).name).is_file()
                else:
                    assert code == 1, f"{command}: exit code {code}, {line}"
                    _check_refusal(line, expected, path, case, command[0])
                    assert not out_dir.exists() or not any(out_dir.rglob("*")), f"{command}: output written"
                count += 1
            assert _digest(path) == before, f"{case.name}: the input changed"
    assert count >= 60


def test_dicom_through_bundles_equals_dicom2nifti(tmp_path: Path, capsys) -> None:
    """A valid PET / CT series gives the same SUV / HU through the bundles' loading as through ``restorezoo
    dicom2nifti`` and through the NIfTI path of the same bundle."""
    from monai.bundle import ConfigParser

    for kind, bundle in (("pet", "pet_lowdose_film_unet"), ("ct", "ct_lowdose_featkpn"), ("ct", "ct_throughplane_sr")):
        series = tmp_path / f"{bundle}_series"
        _series(series, kind)
        nifti = tmp_path / f"{bundle}.nii.gz"
        code, line = run_cli(["dicom2nifti", str(series), str(nifti)], capsys)
        assert code == 0, line
        parser = ConfigParser()
        parser.read_config(str(ROOT / "bundles" / bundle / "configs" / "inference.yaml"))
        parser["bundle_root"] = str(ROOT / "bundles" / bundle)
        load = [t for t in parser.get_parsed_content("preprocessing").transforms if isinstance(t, LoadCheckedd)]
        assert len(load) == 1  # load, channel first, validate, in one transform
        from_dicom, from_nifti = {"image": str(series)}, {"image": str(nifti)}
        for t in load:
            from_dicom, from_nifti = t(from_dicom), t(from_nifti)
        a, b = from_dicom["image"], from_nifti["image"]
        assert a.shape == b.shape
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-4)
        np.testing.assert_allclose(a.affine.numpy(), b.affine.numpy(), atol=1e-4)
        if kind == "pet":
            assert a.meta["units"] == "SUVbw"
            assert 0.5 < float(a.max()) < 20  # SUV, not Bq/mL
        else:
            assert float(a.min()) < -900  # HU: air


def _last_stderr_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    return lines[-1] if lines else ""


@pytest.mark.slow
@pytest.mark.parametrize(
    ("bundle", "case_name"),
    [
        ("pet_lowdose_film_unet", "four_d"),
        ("pet_lowdose_ddpm3d", "pet_no_series_date"),
        ("ct_lowdose_featkpn", "truncated_nifti"),
        ("ct_lowdose_anatomy_distill", "ct_without_offset"),
        ("ct_throughplane_sr", "two_series_in_folder"),
    ],
)
def test_monai_bundle_run_prints_one_line(bundle: str, case_name: str, tmp_path: Path, weights) -> None:
    """As users run it: ``python -m monai.bundle run``; the last line on the terminal is the one-line refusal,
    no traceback is printed, the exit code is non-zero; RESTOREZOO_TRACEBACK=1 gives the traceback."""
    case = next(c for c in CASES if c.name == case_name)
    kind = "pet" if bundle in PET_BUNDLES else "ct"
    path = case.make(kind, tmp_path)
    out = tmp_path / "out"
    args = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        str(ROOT / "bundles" / bundle / "configs" / "inference.yaml"),
        "--input_file",
        str(path),
        "--output_dir",
        str(out),
        "--ckpt_path",
        str(weights[bundle]),
    ]
    args += [f"--{k}={v}" for k, v in BUNDLE_ARGS.get(bundle, {}).items()]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode != 0
    line = _last_stderr_line(proc)
    _check_refusal(line, case.refuse[kind], path, case, bundle)
    assert "Traceback" not in proc.stderr + proc.stdout
    assert not out.exists() or not any(out.rglob("*"))
    if bundle == "pet_lowdose_film_unet":
        env = {**__import__("os").environ, "RESTOREZOO_TRACEBACK": "1"}
        proc = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
        assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_nifti_input_logs_no_reader_fallback(tmp_path: Path, caplog) -> None:
    """NIfTI items are read by one reader: no 'unable to load' log line from MONAI's reader fallback."""
    from common.io import LoadVolumed

    path = _nifti(tmp_path / "x.nii.gz", _pet())
    with caplog.at_level("DEBUG"):
        item = LoadVolumed("image", modality="PT")({"image": str(path)})
    assert tuple(item["image"].shape) == (24, 20, 16)
    assert "unable to load" not in caplog.text


def test_one_slice_ct_stays_3d(tmp_path: Path, weights, overlays) -> None:
    """A one-slice CT comes back as a one-slice 3D volume with the input's affine."""
    path = _nifti(tmp_path / "one.nii.gz", _ct((24, 20, 1)))
    out = tmp_path / "out"
    assert (
        _run_bundle("ct_lowdose_featkpn", path, out, weights["ct_lowdose_featkpn"], overlays["ct_lowdose_featkpn"])
        is None
    )
    result = nib.load(str(out / "one_denoised.nii.gz"))
    assert result.shape == (24, 20, 1)
    np.testing.assert_allclose(result.affine, AFFINE, atol=1e-5)


def test_dicom_pet_reaches_the_network_in_suv(tmp_path: Path) -> None:
    """The series the issue found read in raw Bq/mL: through the bundle's loader it arrives in SUV."""
    from common.io import LoadVolumed

    series = tmp_path / "s"
    paths = _series(series, "pet")
    raw_max = float(pydicom.dcmread(paths[6]).pixel_array.max()) * 5.0
    image = LoadVolumed("image", modality="PT")({"image": str(series)})["image"]
    assert raw_max > 1000 and float(torch.as_tensor(image).max()) < 50


def test_mismatched_pair_is_refused_in_evaluation(tmp_path: Path, weights, overlays) -> None:
    """evaluate.yaml with a datalist whose low-dose / full-dose pair differ in shape: one line naming both files."""
    import json

    from monai.bundle import ConfigWorkflow

    low = _nifti(tmp_path / "low.nii.gz", _pet())
    full = _nifti(tmp_path / "full.nii.gz", _pet((24, 20, 12)))
    (tmp_path / "datalist.json").write_text(json.dumps({"test": [{"image": "low.nii.gz", "label": "full.nii.gz",
                                                                   "drf": 20}]}))  # fmt: skip
    configs = ROOT / "bundles" / "pet_lowdose_film_unet" / "configs"
    workflow = ConfigWorkflow(
        config_file=[str(configs / "inference.yaml"), str(configs / "evaluate.yaml"), str(overlays[PET_BUNDLES[0]])],
        workflow_type=None,
        dataset_dir=str(tmp_path / "datalist.json"),
        output_dir=str(tmp_path / "out"),
        ckpt_path=str(weights[PET_BUNDLES[0]]),
    )
    with pytest.raises(Exception) as info:
        workflow.initialize()
        workflow.run()
    line = one_line(find_user_error(info.value))
    assert str(low) in line and str(full) in line and "mismatched pair: shapes (24, 20, 16) and (24, 20, 12)" in line
    assert not any(p.suffix == ".gz" for p in (tmp_path / "out").rglob("*"))
