"""``AtomicSaveImaged``: MONAI's ``SaveImaged`` with an atomic write and a guard against overwriting the input;
``SaveDicomSeriesd``: the output as a derived DICOM series when the input was a DICOM series.

MONAI writes straight to the final file name, so an interrupted run leaves a truncated NIfTI that looks valid by
name. Here every image is written to a hidden temporary name in the output folder and renamed into place; the
final path may never be the file the image was read from.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform, SaveImaged

from ..errors import InputDataError, OutputError
from .atomic import ensure_writable_dir, remove_stale_temporaries, temp_path
from .nifti import nifti_suffix, save_nifti

__all__ = ["AtomicSaveImaged", "SaveDicomSeriesd", "SaveRestoredd"]


def restored_nifti_path(output_dir: str | os.PathLike, source: str | os.PathLike, postfix: str) -> Path:
    """Where :class:`AtomicSaveImaged` / :class:`SaveRestoredd` write the NIfTI output of ``source``:
    ``<output_dir>/<source name without its NIfTI suffix (else its last suffix)>_<postfix>.nii.gz``."""
    src = Path(source)
    suffix = nifti_suffix(src)
    stem = src.name[: -len(suffix)] if suffix else src.stem
    return Path(output_dir) / f"{stem}_{postfix}.nii.gz"


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
        self._cleaned: set[Path] = set()
        self._dtype = dtype

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        saver = self.saver
        for key in self.key_iterator(d):
            img = d[key]
            meta = img.meta if isinstance(img, MetaTensor) else d.get(f"{key}_meta_dict")
            ensure_writable_dir(saver.folder_layout.output_dir)  # before MONAI's makedirs: one line naming it
            kw = saver.fname_formatter(meta, saver)
            final = Path(saver.folder_layout.filename(**kw))
            source = (meta or {}).get("filename_or_obj")
            if source and Path(str(source)).resolve() == final.resolve():
                raise InputDataError(source, f"refusing to overwrite the input file with output key '{key}'")
            if final.parent not in self._cleaned:  # a killed run's half-written outputs
                remove_stale_temporaries(final.parent)
                self._cleaned.add(final.parent)
            if isinstance(img, MetaTensor) and img.ndim == 4 and img.shape[0] == 1 and nifti_suffix(final):
                # one (X, Y, Z) volume: written by save_nifti, which keeps a one-slice Z (MONAI's writer squeezes
                # every trailing singleton dimension, so a one-slice CT came back 2D)
                array = img[0].detach().cpu().numpy()
                save_nifti(array, img.affine.cpu().numpy(), final, dtype=self._dtype, overwrite=True)
                img.meta["saved_to"] = str(final)
                continue
            ext = saver.output_ext
            tmp_stem = temp_path(final)
            try:
                saver(img, meta_data=None if isinstance(img, MetaTensor) else meta, filename=str(tmp_stem))
                os.replace(f"{tmp_stem}{ext}", final)
            except BaseException:
                Path(f"{tmp_stem}{ext}").unlink(missing_ok=True)
                raise
            if isinstance(img, MetaTensor):
                img.meta["saved_to"] = str(final)
        return d


class SaveDicomSeriesd(MapTransform):
    """Write ``keys`` as DICOM series derived from the item's source series, when the source was a DICOM series
    folder (read by :class:`common.io.DicomSeriesReader`); items read from NIfTI files pass unchanged.

    Output: ``<output_dir>/<source folder name>_<output_postfix>/IM00001.dcm ...`` (see
    :func:`common.io.write_dicom_series`: same geometry as the output's affine, patient / study tags kept, new series
    and instance UIDs, ``SeriesDescription`` + ``description_suffix``, ``ImageType`` DERIVED, PET ``Units`` kept and
    values converted back to them). The output folder may not be the source folder.

    Args:
        keys: output keys (channel-first ``(1, X, Y, Z)`` in the source's units: HU, or SUVbw for PET).
        output_dir: parent folder of the new series folder.
        output_postfix: folder name suffix; also the default ``SeriesDescription`` suffix (`` [<postfix>]``).
        source_key: the key whose meta data name the source series (``filename_or_obj``).
        description_suffix: ``SeriesDescription`` suffix (default `` [<output_postfix>]``).
        derivation: ``DerivationDescription`` text.
    """

    def __init__(
        self,
        keys: Any,
        output_dir: str | os.PathLike,
        output_postfix: str = "restored",
        source_key: str = "image",
        description_suffix: str | None = None,
        derivation: str = "restored by a MONAI restoration bundle",
    ) -> None:
        super().__init__(keys, allow_missing_keys=False)
        self.output_dir, self.output_postfix, self.source_key = Path(output_dir), output_postfix, source_key
        self.description_suffix = f" [{output_postfix}]" if description_suffix is None else description_suffix
        self.derivation = derivation

    def _source(self, d: Mapping[Hashable, Any], key: Hashable) -> tuple[Path | None, dict]:
        for k in (self.source_key, key):
            item = d.get(k)
            meta = item.meta if isinstance(item, MetaTensor) else d.get(f"{k}_meta_dict") or {}
            source = meta.get("filename_or_obj")
            if source:
                return Path(str(source)), meta
        return None, {}

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from .dicom import read_ct_hu
        from .dicom_write import write_dicom_series
        from .suv import read_pet_suv

        d = dict(data)
        source, meta = self._source(d, self.keys[0])
        if source is None or not source.is_dir():
            return d
        uid = meta.get("series_instance_uid") or None
        reference = (
            read_pet_suv(source, series_uid=uid) if meta.get("units") == "SUVbw" else read_ct_hu(source, series_uid=uid)
        )
        for key in self.key_iterator(d):
            img = d[key]
            if not isinstance(img, MetaTensor) or img.ndim != 4 or img.shape[0] != 1:
                raise ValueError(
                    f"SaveDicomSeriesd: '{key}' must be a (1, X, Y, Z) MetaTensor, got {type(img).__name__}"
                )
            out = self.output_dir / f"{source.name}_{self.output_postfix}"
            if out.resolve() == source.resolve():
                raise InputDataError(source, f"refusing to overwrite the input series with output key '{key}'")
            write_dicom_series(
                img[0].detach().cpu().numpy(),
                img.affine.cpu().numpy(),
                reference,
                out,
                description_suffix=self.description_suffix,
                derivation=self.derivation,
            )
            img.meta["saved_dicom_to"] = str(out)
        return d


class SaveRestoredd(MapTransform):
    """Write ``keys`` the way the input came: always a NIfTI file (:class:`AtomicSaveImaged`,
    ``<output_dir>/<name>_<output_postfix>.nii.gz``), and also a derived DICOM series (:class:`SaveDicomSeriesd`)
    when the input was a DICOM series folder. The bundles' last postprocessing step.

    Args:
        keys: output keys, channel-first ``(1, X, Y, Z)`` in the input's units (HU, or SUVbw for PET).
        output_dir: folder of the outputs.
        output_postfix: file name (and DICOM folder) suffix, e.g. ``denoised``.

    Example (a config item)::

        - _target_: common.io.SaveRestoredd
          keys: pred
          output_dir: "@output_dir"
          output_postfix: denoised
    """

    def __init__(self, keys: Any, output_dir: str | os.PathLike, output_postfix: str) -> None:
        super().__init__(keys, allow_missing_keys=False)
        self.nifti = AtomicSaveImaged(keys, output_dir=str(output_dir), output_postfix=output_postfix)
        self.dicom = SaveDicomSeriesd(keys, output_dir=output_dir, output_postfix=output_postfix)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        for key in self.key_iterator(dict(data)):
            value = data[key]
            if not bool(torch.isfinite(torch.as_tensor(value)).all()):
                source = getattr(value, "meta", {}).get("filename_or_obj", key)
                problem = f"the restored '{key}' holds NaN or Inf values: nothing written (broken or unfit weights?)"
                raise OutputError(source, problem)
        return self.dicom(self.nifti(data))
