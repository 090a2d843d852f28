"""Helpers the bundle configs call from ``$`` expressions."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .errors import InputDataError, MissingFileError

logger = logging.getLogger(__name__)

__all__ = [
    "PRETRAINED_WEIGHTS",
    "check_weights_fit",
    "load_weights",
    "locate_bundle_root",
    "require_file",
    "resolve_weights",
    "run_config_if_missing",
]

PRETRAINED_WEIGHTS = os.path.join("pretrained", "model.pt")  # shipped with the bundle, relative to its root


def _bundle_name(root: Path) -> str | None:
    meta = root / "configs" / "metadata.json"
    if not meta.is_file():
        return None
    try:
        return json.loads(meta.read_text()).get("name")
    except (OSError, json.JSONDecodeError):
        return None


def locate_bundle_root(folder_name: str) -> str:
    """Find the root folder of bundle ``folder_name`` (the folder holding ``configs/``).

    So that ``python -m monai.bundle run training --config_file <...>/configs/train.yaml`` works from the repository
    root, from inside the bundle folder, or from an exported copy, without ``--bundle_root``. Order: the current
    directory if it is a bundle folder of that name, the export this library is vendored in, the current directory
    if it is any bundle, ``./bundles/<name>``, then the repository this package was installed from (editable
    installs). ``--bundle_root`` always overrides this.
    """
    cwd = Path.cwd()
    here = (cwd / "configs" / "metadata.json").is_file() and _bundle_name(cwd) is not None
    if here and cwd.name == folder_name:  # run from the bundle's own folder (e.g. an export): that bundle
        return str(cwd)
    # an exported bundle's vendored library: <bundle>/<library>/bundle_utils.py. Second, not first: exports of one
    # library version share one module in a process, whose file lies in whichever export was imported first
    vendored = Path(__file__).resolve().parent.parent
    if (vendored / "configs" / "metadata.json").is_file() and _bundle_name(vendored) is not None:
        return str(vendored)
    if here:
        return str(cwd)
    for c in (cwd / "bundles" / folder_name, Path(__file__).resolve().parent.parent / "bundles" / folder_name):
        if (c / "configs" / "metadata.json").is_file():
            return str(c)
    raise FileNotFoundError(
        f"cannot find bundle '{folder_name}' from {cwd}: run from the repository root or the bundle folder, "
        "or pass --bundle_root <path>"
    )


def require_file(path: str | os.PathLike, what: str) -> str:
    """Raise :class:`common.errors.MissingFileError` (a ``FileNotFoundError``) naming ``path`` and ``what`` it
    should be, when it does not exist."""
    if not Path(path).is_file():
        raise MissingFileError(path, f"missing {what}")
    return str(path)


def resolve_weights(ckpt_dir: str | os.PathLike, bundle_root: str | os.PathLike) -> str:
    """The weights file inference loads.

    ``<ckpt_dir>/model.pt`` (what a training wrote) when it exists. When it does not and ``ckpt_dir`` is the bundle's
    own default ``<bundle_root>/models``, the weights shipped with the bundle, ``<bundle_root>/pretrained/model.pt``
    (trainings never write there). A ``ckpt_dir`` chosen by the user is never replaced by the shipped weights: its
    missing ``model.pt`` is refused by the inference config's file check. Logs which file it chose.
    """
    trained = Path(ckpt_dir) / "model.pt"
    shipped = Path(bundle_root) / PRETRAINED_WEIGHTS
    default_dir = Path(bundle_root) / "models"
    chosen = trained
    if not trained.is_file() and shipped.is_file() and _same_path(Path(ckpt_dir), default_dir):
        chosen = shipped
    logger.info("weights: %s (%s)", chosen, "shipped with the bundle" if chosen == shipped else "trained")
    return str(chosen)


def _same_path(a: Path, b: Path) -> bool:
    return os.path.normpath(os.path.abspath(a)) == os.path.normpath(os.path.abspath(b))


def _state_dict(path: str | os.PathLike, device: torch.device | str) -> dict[str, torch.Tensor]:
    """The state dict in a ``model.pt`` the bundles write: a plain state dict, or a checkpoint holding it under
    ``"model"``."""
    state = torch.load(path, map_location=device, weights_only=True)
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    return state


def check_weights_fit(network: torch.nn.Module, path: str | os.PathLike) -> str:
    """Refuse, in one line naming ``path``, weights whose keys or tensor shapes differ from ``network``'s (weights
    trained with other settings, e.g. another SR ``factor`` or network width), before MONAI's checkpoint loader would
    fail with a long ``load_state_dict`` traceback. Returns ``path``."""
    state = _state_dict(path, "cpu")
    own = network.state_dict()
    missing, unexpected = sorted(own.keys() - state.keys()), sorted(state.keys() - own.keys())
    shapes = [k for k in own.keys() & state.keys() if tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or shapes:
        if shapes:
            k = sorted(shapes)[0]
            detail = f"{len(shapes)} tensor(s) of another shape, e.g. {k}: {tuple(state[k].shape)} in the file, "
            detail += f"{tuple(own[k].shape)} in the network"
        else:
            detail = f"{len(missing)} missing and {len(unexpected)} unexpected tensor(s)"
        raise InputDataError(
            path, f"weights do not fit the configured network ({detail}): trained with other settings?"
        )
    return str(path)


def load_weights(network: torch.nn.Module, path: str | os.PathLike, what: str = "weights") -> torch.nn.Module:
    """Load a state dict saved by the bundles (``model.pt``: a plain state dict, or a checkpoint dict holding it
    under ``"model"``) into ``network`` on its current device; returns ``network``. A missing file or mismatching
    keys/shapes raise an error naming ``path``."""
    require_file(path, what)
    state = _state_dict(path, next(network.parameters()).device)
    try:
        network.load_state_dict(state)
    except RuntimeError as err:
        raise RuntimeError(f"{path}: {what} do not fit the configured network: {err}") from None
    return network


_TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT")


def _run_workflow(config_file: str | Sequence[str], run_id: str, overrides: dict[str, Any]) -> None:
    from monai.bundle import ConfigWorkflow

    from .configs import load_config_files

    workflow = ConfigWorkflow(config_file=config_file, run_id=run_id, workflow_type=None)
    # the shared pieces written out, so the stage runs from any working folder; then the overrides, as the command
    # line sets them
    workflow.parser.read_config(load_config_files([config_file] if isinstance(config_file, str) else config_file))
    workflow.parser.update(pairs=overrides)
    workflow.initialize()
    workflow.run()
    workflow.finalize()


def _run_isolated(config_file: str | Sequence[str], run_id: str, overrides: dict[str, Any]) -> None:
    """Run the workflow in a child process (``python -m <this module>``) that is not part of any torchrun
    process group; the resolved ``overrides`` travel pickled, so they keep their types (devices, dataclasses)."""
    import pickle
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp) / "job.pkl"
        job.write_bytes(pickle.dumps((config_file, run_id, overrides)))
        env = {k: v for k, v in os.environ.items() if k not in _TORCHRUN_ENV and not k.startswith("TORCHELASTIC")}
        proc = subprocess.run([sys.executable, "-m", __name__, str(job)], env=env)  # the vendored name too
    if proc.returncode != 0:
        raise RuntimeError(f"{config_file} ({run_id}) failed in its own process (exit code {proc.returncode})")


def run_config_if_missing(
    target: str | os.PathLike,
    config_file: str | Sequence[str],
    run_id: str = "training",
    isolated: bool = False,
    **overrides: Any,
) -> bool:
    """Run the bundle workflow ``config_file`` (``run_id``) unless ``target`` already exists (e.g. a prerequisite
    training stage whose checkpoint another config loads). ``overrides`` replace config ids, as ``--key value`` does
    on the command line. ``isolated``: run it in a child process outside any torch.distributed process group (used by
    the multi-GPU overlays: rank 0 trains the prerequisite alone, whose metric syncs would otherwise wait for the
    other ranks). Returns True when the workflow ran; raises if it ran without producing ``target``."""
    if Path(target).is_file():
        logger.info("found %s: skipping %s", target, config_file)
        return False
    logger.info("%s is missing: running %s (%s)", target, config_file, run_id)
    (_run_isolated if isolated else _run_workflow)(config_file, run_id, overrides)
    if not Path(target).is_file():
        raise RuntimeError(f"{config_file} ({run_id}) finished without writing {target}")
    return True


def prerequisite_weights(
    ckpt_dir: str | os.PathLike,
    bundle_root: str | os.PathLike,
    config_file: str | Sequence[str],
    isolated: bool = False,
    **overrides: Any,
) -> str:
    """The weights of another bundle this one builds on (e.g. a frozen estimator): :func:`resolve_weights` of its
    ``ckpt_dir`` / ``bundle_root``; when that file does not exist, its training ``config_file`` runs first
    (:func:`run_config_if_missing` with ``ckpt_dir``; on rank 0 only under torch.distributed, the other ranks wait).
    Returns the weights path."""
    from .distributed import main_process_first

    path = resolve_weights(ckpt_dir, bundle_root)
    main_process_first(run_config_if_missing, path, config_file, isolated=isolated, ckpt_dir=str(ckpt_dir), **overrides)
    return path


if __name__ == "__main__":  # the child process of run_config_if_missing(isolated=True)
    import pickle
    import sys

    _run_workflow(*pickle.loads(Path(sys.argv[1]).read_bytes()))
