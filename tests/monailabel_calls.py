"""The calls MONAI Label makes on a bundle, replayed without MONAI Label (it cannot be installed beside torch 2.13 CPU).

Read from monailabel 0.8.5 (``pip download monailabel --no-deps``): ``monailabel/tasks/infer/bundle.py``
(``BundleInferTask``), ``tasks/infer/basic_infer.py`` (``BasicInferTask.__call__``, ``_get_network``,
``run_inferer``), ``interfaces/utils/transform.py`` (``run_transforms``), ``transform/post.py`` (``Restored``) and
``transform/writer.py`` (``write_nifti``). Each step below names the MONAI Label code it replays, in the same order
and with the same arguments, including what MONAI Label does that a bundle must survive:

- the bundle folder is on ``sys.path`` only while configs are parsed (``sys.path.insert`` / ``remove``),
  ``scripts`` modules are unloaded each time;
- ``bundle_root`` is overwritten with the bundle path, ``device`` with a plain string (``"cpu"``);
- the request dictionary (``image`` path, ``image_path``, ``device``, user options such as ``drf``) is the data;
- ``LoadImaged`` gets ``image_only=False`` (an ``image_meta_dict`` key appears), ``SaveImaged`` (and subclasses) are
  dropped from the post transforms, a ``latencies`` key is added after every transform;
- ``models/model.pt`` is loaded with ``map_location`` into ``network_def`` (``checkpoint.get("model", checkpoint)``);
- ``inferer(inputs, network)`` on ``data["image"][None]`` only, under ``torch.no_grad``, output ``[0]`` -> ``pred``;
- ``Restored(keys=pred, ref_image=image)``: nearest-neighbour resize to the input's original spatial shape when they
  differ, channel squeezed, affine = the input's original affine; the writer saves ``pred`` with the affine in
  ``pred_meta_dict`` (else pred's own).
"""

from __future__ import annotations

import copy
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigItem, ConfigParser
from monai.data import MetaTensor
from monai.transforms import Compose, LoadImaged, Resize, SaveImaged


def _unload_module(name: str) -> None:  # monailabel.utils.others.class_utils.unload_module
    for m in sorted(sys.modules):
        if m == name or m.startswith(f"{name}."):
            del sys.modules[m]


def _run_transforms(data: dict, callables: list) -> dict:  # interfaces/utils/transform.run_transforms
    for t in callables:
        start = time.time()
        data = t(data)
        data.setdefault("latencies", {}).setdefault("stage", {})[t.__class__.__name__] = round(time.time() - start, 4)
    return data


def _restored(data: dict, key: str, ref_image: str) -> dict:  # transform/post.Restored (has_channel=True, nearest)
    d = dict(data)
    meta = d[ref_image].meta if isinstance(d[ref_image], MetaTensor) else d.get(f"{ref_image}_meta_dict", {})
    result = d[key]
    current = result.shape[1:]
    spatial_shape = meta.get("spatial_shape", current)
    spatial = spatial_shape[-len(current) :]
    if np.any(np.not_equal(current, spatial)):
        result = Resize(spatial_size=spatial, mode="nearest")(result, mode="nearest", align_corners=None)
    d[key] = result if len(result.shape) <= 3 else result[0] if result.shape[0] == 1 else result
    d.setdefault(f"{key}_meta_dict", {})["affine"] = meta.get("original_affine")
    return d


class BundleInferTaskCalls:
    """``BundleInferTask(path, conf={})`` followed by ``task(request)``, as MONAI Label runs them."""

    def __init__(self, path: str | os.PathLike) -> None:
        path = str(path)
        configs = [c for c in ("inference.json", "inference.yaml") if os.path.exists(os.path.join(path, "configs", c))]
        assert configs, f"MONAI Label would ignore {path}: no configs/inference.json|yaml"
        sys.path.insert(0, path)
        _unload_module("scripts")
        self.bundle_path = path
        self.bundle_config = ConfigParser()
        self.bundle_config.read_config(os.path.join(path, "configs", configs[0]))
        self.bundle_config.config.update({"bundle_root": path})
        self.bundle_config.config["use_click"] = False
        self.model_path = os.path.join(path, "models", "model.pt")
        assert os.path.exists(self.model_path), "MONAI Label would fall back to model.ts or ignore the bundle"
        self.network = self.bundle_config.get_parsed_content("network_def", instantiate=True)
        with open(os.path.join(path, "configs", "metadata.json")) as fp:
            metadata = json.load(fp)
        self.key_image, _ = next(iter(metadata["network_data_format"]["inputs"].items()))
        self.key_pred, pred = next(iter(metadata["network_data_format"]["outputs"].items()))
        self.labels = {v.lower(): int(k) for k, v in pred.get("channel_def", {}).items() if v.lower() != "background"}
        sys.path.remove(path)

    def _update_device(self, data: dict) -> None:
        device = data.get("device") if data else None
        if device:
            self.bundle_config.config.update({"device": device})
            if self.bundle_config.ref_resolver.items.get("device"):
                self.bundle_config.ref_resolver.items["device"] = ConfigItem(config=device, id="device")

    def _parsed(self, keys: tuple[str, ...], data: dict) -> Any:
        sys.path.insert(0, self.bundle_path)
        _unload_module("scripts")
        self._update_device(data)
        out = None
        for k in keys:
            if self.bundle_config.get(k):
                out = self.bundle_config.get_parsed_content(k, instantiate=True)
                break
        sys.path.remove(self.bundle_path)
        return out

    def pre_transforms(self, data: dict) -> list:
        c = self._parsed(("preprocessing", "pre_transforms"), data)
        pre = list(c.transforms) if isinstance(c, Compose) else (c or [])
        for t in pre:
            if isinstance(t, LoadImaged):
                t._loader.image_only = False
        return pre

    def post_transforms(self, data: dict) -> list:
        c = self._parsed(("postprocessing", "post_transforms"), data)
        post = list(c.transforms) if isinstance(c, Compose) else (c or [])
        return [t for t in post if not isinstance(t, SaveImaged)]

    def _get_network(self, device: str) -> torch.nn.Module:
        network = copy.deepcopy(self.network).to(torch.device(device))
        checkpoint = torch.load(self.model_path, map_location=torch.device(device))
        state = checkpoint.get("model", checkpoint)
        # MONAI Label only warns here (load_strict=False): a mismatch would run on random weights; we fail instead
        assert set(self.network.state_dict()) == set(state), "checkpoint keys differ from network_def"
        network.load_state_dict(state, strict=False)
        return network.eval()

    def __call__(self, request: dict, add_post_restore: bool = True) -> tuple[np.ndarray, np.ndarray, dict]:
        """Returns what MONAI Label's writer saves: ``pred`` array, its affine, and the final data dict.
        ``add_post_restore``: ``BundleInferTask``'s argument of that name (default True: ``Restored`` runs)."""
        req = {"device": "cpu"}
        req.update(request)
        device = req["device"]
        data = copy.deepcopy(req)
        data.update({"image_path": req.get("image")})
        data = _run_transforms(data, self.pre_transforms(data))
        inferer = self._parsed(("inferer",), data)
        network = self._get_network(device)
        inputs = data[self.key_image]
        inputs = inputs if torch.is_tensor(inputs) else torch.from_numpy(inputs)
        inputs = inputs[None].to(torch.device(device))
        with torch.no_grad():
            outputs = inferer(inputs, network)
        data[self.key_pred] = outputs[0]
        data = _run_transforms(data, self.post_transforms(data))
        if add_post_restore:
            data = _restored(data, self.key_pred, self.key_image)
        result = data[self.key_pred]
        pred = result.array if isinstance(result, MetaTensor) else np.asarray(result)
        if pred.ndim == 4 and pred.shape[0] == 1:  # the writer's squeeze of a one-channel result
            pred = pred[0]
        # writer.Writer (ref_image = label = "pred"): the affine in "pred_meta_dict" (set by Restored), else pred's own
        affine = (data.get(f"{self.key_pred}_meta_dict") or {}).get("affine")
        if affine is None and isinstance(result, MetaTensor):
            affine = result.affine
        return pred, np.asarray(affine), data


def write_like_monailabel(pred: np.ndarray, affine: np.ndarray, path: Path) -> Path:
    """transform/writer.write_nifti: MONAI's NibabelWriter with the affine from Restored."""
    from monai.data import NibabelWriter

    writer = NibabelWriter(output_dtype=np.float32)
    writer.set_data_array(pred, channel_dim=None, spatial_ndim=None)
    writer.set_metadata({"affine": affine, "original_affine": None})
    writer.write(str(path))
    return path
