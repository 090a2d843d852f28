"""Dose metadata -> conditioning tensor.

PET dose is a dose-reduction factor ``DRF >= 1`` (``DRF = 20`` means 1/20 of the counts), encoded as
``ln(DRF) / 10`` (the UDPET FiLM reference). CT dose is a fraction of the normal dose ``0 < d <= 1`` (encoded as
``d``). The encoded value is written as a float32 tensor of shape ``(1,)``; after collation it is ``(B, 1)``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform

from ..errors import InputDataError
from ..networks.film import DRF_LOG_SCALE
from .validation import source_of

__all__ = ["EncodeDosed", "encode_dose", "parse_dose"]

ENCODINGS = ("log_drf", "fraction")


def parse_dose(value: Any, source: str = "<item>") -> float:
    """One finite dose value from a number, a 1-element tensor/array or a string; else :class:`InputDataError`."""
    try:
        v = float(torch.as_tensor(value).reshape(-1)[0]) if not isinstance(value, str) else float(value)
    except (TypeError, ValueError, IndexError) as err:
        raise InputDataError(source, f"dose metadata {value!r} is not a number") from err
    if not math.isfinite(v):
        raise InputDataError(source, f"dose metadata {v} is not finite")
    return v


def encode_dose(value: Any, encoding: str, source: str = "<item>") -> torch.Tensor:
    """Encode one dose value -> tensor ``(1,)`` float32; invalid values raise :class:`InputDataError`."""
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    v = parse_dose(value, source)
    if encoding == "log_drf":
        if v < 1.0:
            raise InputDataError(source, f"dose-reduction factor must be >= 1 (1 = full dose), got {v:g}")
        return torch.tensor([math.log(v) / DRF_LOG_SCALE], dtype=torch.float32)
    if not 0.0 < v <= 1.0:
        raise InputDataError(source, f"dose fraction must be in (0, 1] (1 = normal dose), got {v:g}")
    return torch.tensor([v], dtype=torch.float32)


class EncodeDosed(MapTransform):
    """Read the dose value under ``dose_key`` and write its encoding under ``out_key``.

    Args:
        dose_key: item key holding the dose (``"drf"`` for PET, ``"dose"`` for CT); a missing key is an error that
            names the item's image file (never a silent default).
        encoding: ``"log_drf"`` or ``"fraction"``.
        out_key: key of the encoded tensor ``(1,)`` (``"meta"`` by default).
        image_key: key whose file name is used in error messages.
        default: value used when the item has no dose (``None``: missing dose is an error).
        attach_to: also store the encoding in the ``.meta`` of this item's MetaTensor (e.g. ``"image"``) under
            ``out_key``, where :class:`common.inferers.ConditionedInferer` finds it when it is called as
            ``inferer(inputs, network)`` only (MONAI Label, plain MONAI inference scripts).
    """

    def __init__(
        self,
        dose_key: str = "drf",
        encoding: str = "log_drf",
        out_key: str = "meta",
        image_key: str = "image",
        default: float | None = None,
        attach_to: str | None = None,
    ) -> None:
        super().__init__(keys=[dose_key], allow_missing_keys=True)
        self.dose_key, self.encoding, self.out_key, self.image_key = dose_key, encoding, out_key, image_key
        self.default, self.attach_to = default, attach_to

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        source = source_of(d.get(self.image_key), f"item {self.image_key!r}")
        value = d.get(self.dose_key, self.default)
        if value is None:
            raise InputDataError(
                source,
                f"missing dose metadata '{self.dose_key}': give it in the datalist item, or set it in the config "
                f"(e.g. --{self.dose_key} 20)",
            )
        d[self.out_key] = encode_dose(value, self.encoding, source)
        d[self.dose_key] = parse_dose(value, source)
        if self.attach_to is not None:
            target = d.get(self.attach_to)
            if not isinstance(target, MetaTensor):
                raise TypeError(
                    f"EncodeDosed(attach_to={self.attach_to!r}): item {self.attach_to!r} is not a MetaTensor"
                )
            target.meta[self.out_key] = d[self.out_key]
        return d
