"""Transform lists written as several parts, some of them shared config pieces, joined into one flat list."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["chain"]


def chain(*parts: Sequence[Any] | Callable) -> list[Callable]:
    """One flat list of transforms from ``parts``: each a transform or a (possibly nested) list of transforms, e.g.
    a piece brought in by a ``"%common/configs/train.yaml#slice_patches"`` list item. Flat, not nested
    ``Compose`` objects, so that a ``CacheDataset`` caches up to the same first random transform and every random
    transform draws its seed from the outer ``Compose`` in the same order as a list written out in full.

    Example (a config item)::

        transforms: "$common.transforms.chain(@load, @train#augment)"
    """
    out: list[Callable] = []
    for part in parts:
        if isinstance(part, list | tuple):
            out.extend(chain(*part))
        elif part is not None:
            out.append(part)
    return out
