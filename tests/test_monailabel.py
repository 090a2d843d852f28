"""Every exported bundle (discovered) through the calls MONAI Label's BundleInferTask makes (tests/monailabel_calls.py,
replayed from monailabel 0.8.5): the result MONAI Label would write equals the bundle's own inference output.

The through-plane SR bundle returns more slices than it receives. MONAI Label's default post step ``Restored`` resizes
every output back to the input grid (it is written for segmentation), so that bundle is served with
``add_post_restore=False`` (its docs/README.md shows the app code); the test checks both facts.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from conftest import BUNDLES, ROOT, run_workflow
from monailabel_calls import BundleInferTaskCalls, write_like_monailabel

from restorezoo.export import vendored_library_name

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


@pytest.mark.slow
def test_bundles_of_two_library_versions_in_one_process(export_of, tmp_path):
    """One MONAI Label process loading two exports made from different versions of the library: each runs its own
    vendored code (the library travels under a name unique to its content), neither silently the other's."""
    first, second = (next(b for b in BUNDLES if b.name == n) for n in ("ct_lowdose_featkpn", "pet_lowdose_film_unet"))
    _, _, res1, _, datalist1 = export_of(first)
    _, _, res2, _, datalist2 = export_of(second)
    current = vendored_library_name(ROOT / "common")
    other_name = "restorezoo_common_0123456789ab"  # what an export of another library version is called
    other = tmp_path / second.name
    shutil.copytree(res2.folder, other)
    (other / current).rename(other / other_name)
    with open(other / other_name / "__init__.py", "a") as f:
        f.write("\nRELEASE_MARK = 'another version'\n")
    config = other / "configs" / "inference.yaml"
    config.write_text(config.read_text().replace(current, other_name))

    tasks = [
        BundleInferTaskCalls(res1.folder),
        BundleInferTaskCalls(other),
    ]  # loaded one after the other, as MONAI Label does
    assert type(tasks[0].network).__module__.startswith(current + ".")
    assert type(tasks[1].network).__module__.startswith(other_name + ".")
    assert Path(sys.modules[other_name].__file__).resolve().is_relative_to(other.resolve())
    assert sys.modules[other_name].RELEASE_MARK == "another version"
    assert not hasattr(sys.modules[current], "RELEASE_MARK")
    for task, datalist in zip(tasks, (datalist1, datalist2), strict=True):
        item = _first_test_item(datalist)
        pred, _, _ = task({"image": item["image"], **{k: item[k] for k in REQUEST_KEYS if k in item}})
        assert pred.shape == nib.load(item["image"]).shape and np.isfinite(pred).all()
