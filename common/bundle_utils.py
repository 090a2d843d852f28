"""Helpers the bundle configs call from ``$`` expressions."""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["locate_bundle_root"]


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
    directory if it is that bundle (or any bundle whose folder has that name), ``./bundles/<name>``, then the
    repository this package was installed from (editable installs). ``--bundle_root`` always overrides this.
    """
    cwd = Path.cwd()
    if (cwd / "configs" / "metadata.json").is_file() and _bundle_name(cwd) is not None:
        return str(cwd)
    for c in (cwd / "bundles" / folder_name, Path(__file__).resolve().parent.parent / "bundles" / folder_name):
        if (c / "configs" / "metadata.json").is_file():
            return str(c)
    raise FileNotFoundError(
        f"cannot find bundle '{folder_name}' from {cwd}: run from the repository root or the bundle folder, "
        "or pass --bundle_root <path>"
    )


def require_file(path: str | os.PathLike, what: str) -> str:
    """Raise ``FileNotFoundError`` naming ``path`` and ``what`` it should be, when it does not exist."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: missing {what}")
    return str(path)
