"""What a restoration bundle tells MONAI Label, read from its exported files only (no MONAI Label, no torch).

A restoration bundle maps an image to an image: MONAI Label must report it as such (type ``others``, no label names,
never the segmentation defaults), keep the output grid when the bundle changes it (through-plane SR returns more
slices than it receives), and refuse per-request options the bundle does not take instead of ignoring them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["REQUEST_OPTIONS", "RestorationSpec", "check_request", "restoration_spec"]

# the per-request options a restoration bundle's inference config may take, and what they mean
REQUEST_OPTIONS = {
    "drf": "dose reduction factor of the low-count PET (e.g. 20 for 5 % of the counts)",
    "dose": "dose fraction of the low-dose CT (e.g. 0.25 for 25 %)",
    "factor": "through-plane up-sampling factor (must match the trained network)",
}


@dataclass
class RestorationSpec:
    """A bundle as MONAI Label should serve it.

    Attributes:
        name: the bundle folder's name.
        options: the request options its ``configs/inference.yaml`` takes, with their defaults (None: required).
        changes_grid: the output lies on another grid than the input (MONAI Label's ``Restored`` post step, written
            for segmentation, would resample it back: it must be off).
        description: the metadata description, plus the request options.
    """

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    changes_grid: bool = False
    description: str = ""


def restoration_spec(bundle: str | Path) -> RestorationSpec:
    """Read ``bundle``'s ``configs/inference.yaml`` (or ``.json``) and ``configs/metadata.json``."""
    bundle = Path(bundle)
    configs = bundle / "configs"
    path = configs / "inference.yaml" if (configs / "inference.yaml").is_file() else configs / "inference.json"
    config = (yaml.safe_load(path.read_text()) if path.suffix == ".yaml" else json.loads(path.read_text())) or {}
    meta = json.loads((configs / "metadata.json").read_text())
    options = {k: config[k] for k in REQUEST_OPTIONS if k in config}
    if options:
        said = "; ".join(
            f"{k} ({REQUEST_OPTIONS[k]}; {'required' if v is None else f'default {v}'})" for k, v in options.items()
        )
        usage = f" Request options: {said}."
    else:
        usage = " No request options (dose, drf and factor are refused)."
    return RestorationSpec(
        name=bundle.name,
        options=options,
        changes_grid="factor" in options,
        description=f"Image-to-image restoration: {meta.get('description', '')}{usage}",
    )


def check_request(spec: RestorationSpec, request: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the bundle and the option when ``request`` carries a restoration option the
    bundle does not take (it would otherwise be silently ignored)."""
    for key in REQUEST_OPTIONS:
        if key in request and key not in spec.options:
            takes = ", ".join(spec.options) or "no restoration option"
            raise ValueError(f"{spec.name} takes no '{key}' ({REQUEST_OPTIONS[key]}); it takes {takes}")
