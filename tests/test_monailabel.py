"""Every exported bundle (discovered) through the calls MONAI Label's BundleInferTask makes (tests/monailabel_calls.py,
replayed from monailabel 0.8.5): the result MONAI Label would write equals the bundle's own inference output.

The through-plane SR bundle returns more slices than it receives. MONAI Label's default post step ``Restored`` resizes
every output back to the input grid (it is written for segmentation), so that bundle is served with
``add_post_restore=False`` (its docs/README.md shows the app code); the test checks both facts.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from conftest import BUNDLES, run_workflow
from monailabel_calls import BundleInferTaskCalls, write_like_monailabel

IDS = [b.name for b in BUNDLES]
REQUEST_KEYS = ("drf", "dose", "factor")  # user options a MONAI Label request carries next to the image


def _first_test_item(datalist: Path) -> dict:
    item = dict(json.loads(datalist.read_text())["test"][0])
    item["image"] = str((datalist.parent / item["image"]).resolve())
    return item


def _reference_output(folder: Path, item: dict, out: Path) -> Path:
    """The exported bundle's own inference (its configs/inference.yaml run from its folder, default settings) on the
    item's image, in this process (conftest.run_workflow: the same workflow ``python -m monai.bundle run`` builds;
    tests/test_export.py runs the export in a fresh process of its own)."""
    config = yaml.safe_load((folder / "configs" / "inference.yaml").read_text())
    options = {k: item[k] for k in ("drf", "dose") if k in item and k in config}
    refusal = run_workflow(
        [folder / "configs" / "inference.yaml"], cwd=folder, input_file=item["image"], output_dir=str(out), **options
    )
    assert refusal is None, refusal
    outputs = [p for p in out.glob("*.nii.gz") if "_std" not in p.name]
    assert len(outputs) == 1, outputs
    return outputs[0]


@pytest.mark.slow
@pytest.mark.parametrize("bundle", BUNDLES, ids=IDS)
def test_monailabel_bundle_infer_task_calls(bundle, export_of, tmp_path):
    _, work, res, _, datalist = export_of(bundle)
    item = _first_test_item(datalist)
    reference = nib.load(_reference_output(res.folder, item, tmp_path / "reference"))
    ref = np.asarray(reference.dataobj, dtype=np.float32)
    request = {"image": item["image"], **{k: item[k] for k in REQUEST_KEYS if k in item}}

    task = BundleInferTaskCalls(res.folder)
    assert task.key_image == "image" and task.key_pred == "pred"
    grows = ref.shape != nib.load(item["image"]).shape
    pred, affine, data = task(request, add_post_restore=not grows)
    assert data["image_path"] == item["image"]
    path = write_like_monailabel(pred, affine, tmp_path / "monailabel_pred.nii.gz")
    written = nib.load(path)
    assert written.shape == ref.shape
    np.testing.assert_allclose(written.affine, reference.affine, atol=1e-5)
    np.testing.assert_allclose(np.asarray(written.dataobj), ref, atol=1e-4, rtol=1e-4)
    if grows:  # MONAI Label's default Restored would put the SR output back on the thick input grid
        restored, _, _ = BundleInferTaskCalls(res.folder)(request, add_post_restore=True)
        assert restored.shape == nib.load(item["image"]).shape != ref.shape
