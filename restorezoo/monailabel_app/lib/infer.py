"""``RestorationInferTask``: MONAI Label's ``BundleInferTask`` for an image-to-image restoration bundle."""

from __future__ import annotations

from typing import Any

from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.bundle import BundleInferTask

from lib.restoration import check_request, restoration_spec

__all__ = ["RestorationInferTask"]


class RestorationInferTask(BundleInferTask):
    """A restoration bundle served by MONAI Label: type ``others`` (not ``segmentation``: clients must not treat the
    restored volume as a label map), no label names, the description of the served bundle with its request options,
    ``add_post_restore`` off when the bundle changes the grid (through-plane SR), and a request carrying an option
    the bundle does not take (``dose`` for a dose-blind bundle) refused with a message naming it."""

    def __init__(self, path: str, conf: dict[str, str], **kwargs: Any) -> None:
        self.spec = restoration_spec(path)
        kwargs.setdefault("add_post_restore", not self.spec.changes_grid)
        super().__init__(path, conf, type=InferType.OTHERS, **kwargs)
        self.labels = {}  # image in, image out: no label map, no label names
        self.description = self.spec.description

    def __call__(self, request: dict[str, Any], callbacks: Any = None) -> Any:
        check_request(self.spec, request)
        return super().__call__(request, callbacks)
