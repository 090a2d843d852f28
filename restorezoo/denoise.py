"""``restorezoo denoise``: one command from a scan to a restored scan, with a bundle's shipped weights.

It runs the bundle's own ``configs/inference.yaml`` (MONAI's ``ConfigWorkflow``, the same workflow ``python -m
monai.bundle run`` builds: no second code path) on one input, in a hidden folder beside the output, and moves the
result into place:

- a NIfTI file in -> a NIfTI file out (default ``<input name>_<postfix>.nii.gz`` in the current folder);
- a DICOM series folder in -> a derived DICOM series folder out (default ``<series folder>_<postfix>/``).

The bundle: ``--bundle``, else chosen from the input: ``--factor`` -> ``ct_throughplane_sr``; CT (DICOM ``Modality``
CT, or a NIfTI volume holding air below -200 HU) -> ``ct_lowdose_featkpn``; PET -> ``pet_lowdose_film_unet``.
Options a bundle's inference config does not take (``--dose`` for the dose-blind Feat-KPN, ``--drf`` for a CT
bundle) are refused, never silently ignored. An existing output is never overwritten unless ``overwrite``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from common.bundle_utils import PRETRAINED_WEIGHTS
from common.errors import InputDataError, MissingFileError, OutputError, find_user_error

__all__ = ["DEFAULT_BUNDLES", "DenoiseResult", "bundle_options", "choose_bundle", "denoise"]

DEFAULT_BUNDLES = {"CT": "ct_lowdose_featkpn", "PT": "pet_lowdose_film_unet", "SR": "ct_throughplane_sr"}
REQUEST_OPTIONS = ("drf", "dose", "factor")  # the per-scan options a bundle's inference config may take
_AIR_HU = -200.0  # a CT volume in HU holds air; a PET volume in SUV is never below this
_SUV_MAX = 500.0  # above it a PET volume is not in SUV (the PET bundles refuse it too)


@dataclass
class DenoiseResult:
    """What ``denoise`` wrote: the output path, the bundle, the weights and the seconds it took."""

    output: Path
    bundle: str
    weights: Path
    seconds: float


def bundle_options(bundle_dir: Path) -> dict[str, Any]:
    """The per-scan options (``drf``, ``dose``, ``factor``) ``bundle_dir``'s ``configs/inference.yaml`` takes, with
    its defaults (None: required from the user or the datalist)."""
    config = yaml.safe_load((bundle_dir / "configs" / "inference.yaml").read_text()) or {}
    return {k: config[k] for k in REQUEST_OPTIONS if k in config}


def _modality(path: Path) -> str:
    """``"CT"`` or ``"PT"`` for an input: the DICOM Modality tag of a series folder; for NIfTI, CT when the volume
    holds air (below -200 HU), PET when its values stay in the SUV range (<= 500); anything else is refused."""
    from common.io import load_volume

    if path.is_dir():
        from common.io.dicom import read_dicom_series

        modality = read_dicom_series(path).modality
        if modality not in ("CT", "PT"):
            raise InputDataError(path, f"DICOM Modality {modality!r}: restorezoo denoise restores CT or PT series")
        return modality
    volume = load_volume(path)
    low, high = float(volume.min()), float(volume.max())
    if low < _AIR_HU:
        return "CT"
    if high <= _SUV_MAX:
        return "PT"
    raise InputDataError(
        path,
        f"cannot tell CT from PET: no voxel below {_AIR_HU:.0f} (a CT stored without its rescale intercept?) and a "
        f"maximum of {high:.4g} (a PET in Bq/mL rather than SUV?); convert it, or pass --bundle",
    )


def choose_bundle(path: Path, bundle: str | None, factor: int | None) -> str:
    """The bundle to run: ``bundle`` when given, ``ct_throughplane_sr`` for ``factor``, else by modality."""
    if bundle:
        return bundle
    if factor is not None:
        return DEFAULT_BUNDLES["SR"]
    return DEFAULT_BUNDLES[_modality(path)]


def _default_output(path: Path, postfix: str) -> Path:
    if path.is_dir():
        return Path.cwd() / f"{path.name}_{postfix}"
    from common.io import restored_nifti_path

    return restored_nifti_path(Path.cwd(), path, postfix)


def _postfix(bundle_dir: Path) -> str:
    text = (bundle_dir / "configs" / "inference.yaml").read_text()
    for line in text.splitlines():
        if line.strip().startswith("output_postfix:"):
            return line.split(":", 1)[1].split("#")[0].strip()
    return "restored"


@contextlib.contextmanager
def _progress(workflow: Any, label: str) -> Iterator[None]:
    """A progress bar on the terminal that counts the network's forward passes (windows, slice batches or diffusion
    steps: whatever the bundle's inferer runs), with elapsed time and rate."""
    from tqdm import tqdm

    network = workflow.parser.get_parsed_content("network")
    bar = tqdm(desc=label, unit=" passes", leave=True)

    def count(*_: Any) -> None:  # a forward hook's non-None return value would replace the network's output
        bar.update(1)

    handle = network.register_forward_hook(count)
    try:
        yield
    finally:
        handle.remove()
        bar.close()


def denoise(
    inp: str | os.PathLike,
    out: str | os.PathLike | None = None,
    bundle: str | None = None,
    drf: float | None = None,
    dose: float | None = None,
    factor: int | None = None,
    weights: str | os.PathLike | None = None,
    bundles_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool = True,
    allow_implausible: bool = False,
) -> DenoiseResult:
    """Restore one scan with a bundle (see the module docstring). ``weights``: a ``model.pt`` to use instead of the
    bundle's shipped ``pretrained/model.pt``. Raises :class:`common.errors.UserError` subclasses (one line naming
    the file and the problem) for what the bundle would refuse, a missing input, an option the bundle does not take,
    missing weights or an existing output."""
    from monai.bundle import ConfigWorkflow

    path = Path(inp).expanduser().resolve()
    if not path.exists():
        raise MissingFileError(path, "no such file or DICOM series folder")
    root = (
        Path(bundles_dir).expanduser().resolve() if bundles_dir else Path(__file__).resolve().parent.parent / "bundles"
    )
    name = choose_bundle(path, bundle, factor)
    bundle_dir = root / name
    if not (bundle_dir / "configs" / "inference.yaml").is_file():
        known = sorted(p.name for p in root.iterdir() if (p / "configs" / "inference.yaml").is_file())
        raise MissingFileError(bundle_dir, f"no such bundle (available: {', '.join(known)})")
    accepted = bundle_options(bundle_dir)
    given = {k: v for k, v in {"drf": drf, "dose": dose, "factor": factor}.items() if v is not None}
    for key in given.keys() - accepted.keys():
        takes = ", ".join(f"--{k}" for k in accepted) or "no per-scan option"
        hint = " (it denoises without knowing the dose)" if key == "dose" and name == DEFAULT_BUNDLES["CT"] else ""
        raise InputDataError(path, f"{name} takes no --{key}{hint}; it takes {takes}")
    ckpt = Path(weights).expanduser().resolve() if weights else bundle_dir / PRETRAINED_WEIGHTS
    if not ckpt.is_file():
        raise MissingFileError(ckpt, f"missing weights for {name} (train it, or pass --weights model.pt)")
    postfix = _postfix(bundle_dir)
    target = Path(out).expanduser().resolve() if out else _default_output(path, postfix)
    if target == path:
        raise OutputError(target, "output path is the input path: refusing to overwrite the input")
    if target.exists() and not overwrite:
        raise OutputError(target, "exists: choose another --out or pass --overwrite")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.restorezoo", dir=target.parent))
    start = time.perf_counter()
    previous = Path.cwd()
    try:
        os.chdir(bundle_dir)  # the configs' shared pieces resolve from the bundle folder
        overrides = {"input_file": str(path), "output_dir": str(work), "ckpt_path": str(ckpt), **given}
        if allow_implausible:
            overrides["allow_implausible"] = True
        try:
            workflow = ConfigWorkflow(
                config_file=str(bundle_dir / "configs" / "inference.yaml"), workflow_type=None, **overrides
            )
            workflow.initialize()
            with _progress(workflow, f"{name}: {path.name}") if progress else contextlib.nullcontext():
                workflow.run()
            workflow.finalize()
        except Exception as exc:  # what the bundle refuses: its one-line user error, not MONAI's wrapping
            user = find_user_error(exc)
            if user is None:
                raise
            raise user from None
        os.chdir(previous)
        produced = _produced(work, path, postfix)
        if target.exists():
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        os.replace(produced, target)
    finally:
        os.chdir(previous)
        shutil.rmtree(work, ignore_errors=True)
    return DenoiseResult(target, name, ckpt, time.perf_counter() - start)


def _produced(work: Path, source: Path, postfix: str) -> Path:
    """The bundle's output for ``source`` in ``work``: the derived DICOM series folder for a series, else the NIfTI."""
    if source.is_dir():
        folders = [p for p in work.iterdir() if p.is_dir() and p.name.endswith(f"_{postfix}")]
        if len(folders) == 1:
            return folders[0]
    else:
        files = [p for p in work.glob(f"*_{postfix}.nii.gz")]
        if len(files) == 1:
            return files[0]
    raise RuntimeError(f"{work}: the bundle did not write one '{postfix}' output for {source}")
