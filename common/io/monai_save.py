"""``AtomicSaveImaged``: MONAI's ``SaveImaged`` with an atomic write and a guard against overwriting the input.

MONAI writes straight to the final file name, so an interrupted run leaves a truncated NIfTI that looks valid by
name. Here every image is written to a hidden temporary name in the output folder and renamed into place; the
final path may never be the file the image was read from.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

from monai.data import MetaTensor
from monai.transforms import SaveImaged

from common.errors import InputDataError

__all__ = ["AtomicSaveImaged"]


class AtomicSaveImaged(SaveImaged):
    """Same arguments as ``monai.transforms.SaveImaged`` (``separate_folder`` defaults to False, ``resample`` to
    False and ``output_dtype`` to float32 here: outputs keep the input grid and affine)."""

    def __init__(
        self,
        keys: Any,
        output_dir: str = "./",
        output_postfix: str = "pred",
        separate_folder: bool = False,
        resample: bool = False,
        output_dtype: Any = "float32",
        **kwargs: Any,
    ) -> None:
        import numpy as np

        dtype = np.dtype(output_dtype) if isinstance(output_dtype, str) else output_dtype
        super().__init__(
            keys,
            output_dir=output_dir,
            output_postfix=output_postfix,
            separate_folder=separate_folder,
            resample=resample,
            output_dtype=dtype,
            savepath_in_metadict=True,
            **kwargs,
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        saver = self.saver
        for key in self.key_iterator(d):
            img = d[key]
            meta = img.meta if isinstance(img, MetaTensor) else d.get(f"{key}_meta_dict")
            kw = saver.fname_formatter(meta, saver)
            final = Path(saver.folder_layout.filename(**kw))
            source = (meta or {}).get("filename_or_obj")
            if source and Path(str(source)).resolve() == final.resolve():
                raise InputDataError(source, f"refusing to overwrite the input file with output key '{key}'")
            final.parent.mkdir(parents=True, exist_ok=True)
            ext = saver.output_ext
            tmp_stem = final.parent / f".{final.name}.tmp{os.getpid()}"
            saver(img, meta_data=None if isinstance(img, MetaTensor) else meta, filename=str(tmp_stem))
            os.replace(f"{tmp_stem}{ext}", final)
            if isinstance(img, MetaTensor):
                img.meta["saved_to"] = str(final)
        return d
