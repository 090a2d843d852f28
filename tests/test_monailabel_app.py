"""The MONAI Label app for restoration bundles (restorezoo/monailabel_app): bundles are reported as image-to-image
(type ``others``, no label names), described as the served bundle with its request options, the SR bundle keeps its
thin grid (no ``Restored`` resampling), an option a bundle does not take is refused, nothing is downloaded.

monailabel cannot be installed beside this project's torch, so the app's MONAI Label base classes are replaced by
stand-ins that record what the app passes them (the names and values of monailabel 0.8.5's ``InferType`` and
``BundleInferTask`` arguments, read from its wheel); the inference calls themselves are replayed in
tests/test_monailabel.py."""

from __future__ import annotations

import enum
import json
import sys
import types
from pathlib import Path

import pytest
from conftest import ROOT

APP = ROOT / "restorezoo" / "monailabel_app"
BUNDLES_DIR = ROOT / "bundles"


class InferType(str, enum.Enum):  # noqa: UP042 - as in monailabel.interfaces.tasks.infer_v2.InferType (0.8.5)
    SEGMENTATION = "segmentation"
    ANNOTATION = "annotation"
    CLASSIFICATION = "classification"
    DEEPGROW = "deepgrow"
    DEEPEDIT = "deepedit"
    SCRIBBLES = "scribbles"
    DETECTION = "detection"
    OTHERS = "others"


class BundleInferTask:
    """Stand-in for monailabel.tasks.infer.bundle.BundleInferTask: what 0.8.5 derives from its arguments (type from
    the bundle name when none is given, labels from the output's channel_def, the metadata description)."""

    def __init__(self, path, conf, const=None, type="", add_post_restore=True, **kwargs):
        meta = json.loads((Path(path) / "configs" / "metadata.json").read_text())
        pred = next(iter(meta["network_data_format"]["outputs"].values()))
        self.type = type or InferType.SEGMENTATION
        self.labels = {v.lower(): int(k) for k, v in pred.get("channel_def", {}).items() if v.lower() != "background"}
        self.description = meta.get("description")
        self.add_post_restore = add_post_restore
        self.calls = []

    def is_valid(self):
        return True

    def __call__(self, request, callbacks=None):
        self.calls.append(request)
        return None, {}

    def info(self):
        return {"type": self.type, "labels": self.labels, "description": self.description}


@pytest.fixture
def app(monkeypatch):
    """The app's modules imported against the stand-ins; returns (lib.restoration, lib.infer, main)."""
    import importlib

    stubs = {
        "monailabel": types.ModuleType("monailabel"),
        "monailabel.interfaces.tasks.infer_v2": types.ModuleType("infer_v2"),
        "monailabel.tasks.infer.bundle": types.ModuleType("bundle"),
        "monailabel.interfaces.app": types.ModuleType("app"),
        "monailabel.tasks.activelearning.first": types.ModuleType("first"),
        "monailabel.tasks.activelearning.random": types.ModuleType("random"),
    }
    stubs["monailabel"].__version__ = "0.8.5"
    stubs["monailabel.interfaces.tasks.infer_v2"].InferType = InferType
    stubs["monailabel.tasks.infer.bundle"].BundleInferTask = BundleInferTask
    stubs["monailabel.interfaces.app"].MONAILabelApp = type("MONAILabelApp", (), {"__init__": lambda self, **kw: None})
    stubs["monailabel.tasks.activelearning.first"].First = object
    stubs["monailabel.tasks.activelearning.random"].Random = object
    for name, module in stubs.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.syspath_prepend(str(APP))
    for name in [m for m in sys.modules if m == "lib" or m.startswith("lib.") or m == "main"]:
        monkeypatch.delitem(sys.modules, name)
    mods = tuple(importlib.import_module(m) for m in ("lib.restoration", "lib.infer", "main"))
    yield mods
    for name in [m for m in sys.modules if m == "lib" or m.startswith("lib.") or m == "main"]:
        del sys.modules[name]


def test_restoration_spec_reads_the_options_each_bundle_takes(app):
    restoration, _, _ = app
    specs = {b: restoration.restoration_spec(BUNDLES_DIR / b) for b in ("ct_lowdose_featkpn", "pet_lowdose_film_unet",
             "ct_lowdose_anatomy_distill", "ct_throughplane_sr", "pet_lowdose_ddpm3d")}  # fmt: skip
    assert {k: s.options for k, s in specs.items()} == {
        "ct_lowdose_featkpn": {},
        "pet_lowdose_film_unet": {"drf": None},
        "ct_lowdose_anatomy_distill": {"dose": None},
        "ct_throughplane_sr": {"factor": 4},
        "pet_lowdose_ddpm3d": {"drf": None},
    }
    assert [k for k, s in specs.items() if s.changes_grid] == ["ct_throughplane_sr"]
    assert "drf (dose reduction factor" in specs["pet_lowdose_film_unet"].description
    assert "required" in specs["pet_lowdose_film_unet"].description
    assert "No request options" in specs["ct_lowdose_featkpn"].description


@pytest.mark.parametrize("bundle", ["ct_lowdose_featkpn", "pet_lowdose_film_unet", "ct_throughplane_sr"])
def test_served_as_image_to_image_with_its_own_description(app, bundle):
    _, infer, _ = app
    task = infer.RestorationInferTask(str(BUNDLES_DIR / bundle), {})
    info = task.info()
    assert info["type"] == "others" and info["labels"] == {}  # not segmentation, no channel names as labels
    meta = json.loads((BUNDLES_DIR / bundle / "configs" / "metadata.json").read_text())
    assert info["description"].startswith("Image-to-image restoration: " + meta["description"])
    assert task.add_post_restore == (bundle != "ct_throughplane_sr")  # SR keeps its thin grid


def test_an_option_the_bundle_does_not_take_is_refused(app):
    _, infer, _ = app
    featkpn = infer.RestorationInferTask(str(BUNDLES_DIR / "ct_lowdose_featkpn"), {})
    with pytest.raises(ValueError, match="ct_lowdose_featkpn takes no 'dose'"):
        featkpn({"image": "x.nii.gz", "dose": 0.25})
    assert featkpn.calls == []  # refused before any work
    featkpn({"image": "x.nii.gz"})
    film = infer.RestorationInferTask(str(BUNDLES_DIR / "pet_lowdose_film_unet"), {})
    film({"image": "x.nii.gz", "drf": 20})
    with pytest.raises(ValueError, match="takes no 'dose'.*it takes drf"):
        film({"image": "x.nii.gz", "dose": 0.05})
    assert featkpn.calls == [{"image": "x.nii.gz"}] and film.calls == [{"image": "x.nii.gz", "drf": 20}]


def test_served_bundles_are_local_only(app, tmp_path):
    _, _, main = app
    (tmp_path / "model" / "a" / "configs").mkdir(parents=True)
    (tmp_path / "model" / "a" / "configs" / "metadata.json").write_text("{}")
    (tmp_path / "model" / "notes").mkdir()
    assert main.served_bundles(str(tmp_path), {}) == {"a": str(tmp_path / "model" / "a")}
    assert main.served_bundles(str(tmp_path), {"models": " a "}) == {"a": str(tmp_path / "model" / "a")}
    with pytest.raises(FileNotFoundError, match="no exported bundle \\['spleen_ct_segmentation'\\]"):
        main.served_bundles(str(tmp_path), {"models": "a,spleen_ct_segmentation"})  # never a model-zoo download
