"""Embedded default datasets: deterministic phantoms generated from a seed, with simulated degraded inputs.

- :mod:`~common.phantoms.shapes`: signed-distance shapes, partial-volume painting and smooth texture on a mm grid;
- :mod:`~common.phantoms.anatomy`: modality-independent torso / head geometry and the label tables;
- :mod:`~common.phantoms.pet`: FDG-like torso and brain phantoms (SUV, 511 keV mu map, labels);
- :mod:`~common.phantoms.ct`: head, chest / abdomen and (held-out) pelvis CT phantoms (HU, labels);
- :mod:`~common.phantoms.datasets`: dataset builders (NIfTI + decathlon datalist with provenance, cached).

Every phantom is a pure function of ``(seed, shape, spacing_mm)``; arrays are ``(X, Y, Z)`` RAS+ with the volume
centred on the origin (affine ``Grid(shape, spacing_mm).affine()``). The code and its outputs are ours (no third-party
anatomy or images), so the data can be redistributed under the project licence.
"""

from __future__ import annotations

from .anatomy import HEAD_LABELS, TORSO_LABELS
from .ct import CT_BODY_LABELS, CT_HEAD_LABELS, ct_body_phantom, ct_head_phantom, ct_pelvis_phantom
from .datasets import (
    build_ct_dataset,
    build_ct_sr_dataset,
    build_pet_dataset,
    cached_datalist,
    default_data_dir,
)
from .pet import PET_BRAIN_LABELS, PET_TORSO_LABELS, pet_brain_phantom, pet_torso_phantom
from .shapes import Grid

__all__ = [
    "CT_BODY_LABELS",
    "CT_HEAD_LABELS",
    "Grid",
    "HEAD_LABELS",
    "PET_BRAIN_LABELS",
    "PET_TORSO_LABELS",
    "TORSO_LABELS",
    "build_ct_dataset",
    "build_ct_sr_dataset",
    "build_pet_dataset",
    "cached_datalist",
    "ct_body_phantom",
    "ct_head_phantom",
    "ct_pelvis_phantom",
    "default_data_dir",
    "pet_brain_phantom",
    "pet_torso_phantom",
]
