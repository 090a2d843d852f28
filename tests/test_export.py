"""`restorezoo export`: every bundle (discovered) exports to the model-zoo release layout and the export runs its
inference in a fresh process that cannot import this repository, giving the same output as the repository's bundle,
with only the packages declared in its metadata.json. MONAI Label's calls are driven in tests/test_monailabel.py.

Weights: the inference network with every parameter perturbed (seeded; conftest.export_of), so that no layer is
trivially zero-initialised and a weight that fails to load would change the output.
"""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
import yaml
from conftest import BUNDLES, ROOT
from monai.bundle import ConfigParser

from restorezoo.export import export_bundle, rename_library, vendored_library_name

IDS = [b.name for b in BUNDLES]


# the fast tier exports one bundle (about 17 s each); the full run exports every bundle
@pytest.fixture(
    scope="module", params=[BUNDLES[0], *(pytest.param(b, marks=pytest.mark.slow) for b in BUNDLES[1:])], ids=IDS
)
def exported(request, export_of):
    return export_of(request.param)


def test_export_layout(exported):
    bundle, work, res, _, _ = exported
    root = res.folder
    for rel in ("configs/inference.yaml", "configs/metadata.json", "configs/logging.conf", "models/model.pt"):
        assert (root / rel).is_file(), rel
    assert (root / "docs" / "README.md").is_file() and (root / "LICENSE").is_file()
    library = vendored_library_name(ROOT / "common")  # named by its content: unique to this library version
    assert (root / library / "__init__.py").is_file(), "the library must travel with the export"
    assert not (root / "common").exists() and not (root / "restorezoo").exists()
    assert not (root / library / "benchmark.py").exists()  # runtime only
    config = (root / "configs" / "inference.yaml").read_text()
    assert f"$import {library}.transforms" in config and not re.search(r"[$\s]common\.", config)
    assert not (root / "configs" / "logging.conf").is_symlink()  # the shared file's content, not a link
    assert "%common/configs/" not in (root / "configs" / "inference.yaml").read_text()  # the pieces written out
    assert not list(root.rglob("__pycache__"))
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    assert res.torchscript == (meta.get("torchscript", True) is not False)
    assert (root / "models" / "model.ts").is_file() == res.torchscript
    if res.torchscript:  # metadata embedded the way MONAI's ckpt_export does it
        extra = {"metadata.json": "", "inference.yaml": ""}
        torch.jit.load(str(root / "models" / "model.ts"), _extra_files=extra)
        assert json.loads(extra["metadata.json"])["version"] == meta["version"]
    state = torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert "model" not in state and all(isinstance(v, torch.Tensor) for v in state.values())  # plain state dict
    with zipfile.ZipFile(res.zip_path) as zf:
        names = set(zf.namelist())
    assert f"{bundle.name}/configs/inference.yaml" in names and f"{bundle.name}/models/model.pt" in names
    assert f"{bundle.name}/{library}/__init__.py" in names


def test_export_refuses_to_overwrite_and_checks_weights(exported, tmp_path):
    bundle, work, res, _, _ = exported
    with pytest.raises(FileExistsError, match=re.escape(str(res.folder))):
        export_bundle(bundle, res.folder.parent, ckpt=work / "weights.pt")
    with pytest.raises(FileNotFoundError, match="missing trained weights"):
        export_bundle(bundle, tmp_path, ckpt=tmp_path / "nope.pt")
    wrong = tmp_path / "wrong.pt"
    torch.save({"not_a_layer.weight": torch.zeros(1)}, wrong)
    with pytest.raises(RuntimeError, match="do not fit the configured network"):
        export_bundle(bundle, tmp_path / "out", ckpt=wrong)
    assert not (tmp_path / "out" / bundle.name).exists(), "a failed export must leave nothing behind"


def _requirement_closure(names: set[str]) -> set[str]:
    """``names`` and everything they require (not extras), as normalised distribution names."""

    def norm(n: str) -> str:
        return re.sub(r"[-_.]+", "-", n).lower()

    seen: set[str] = set()
    todo = [norm(n) for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        for r in reqs:
            if "extra ==" in r:
                continue
            todo.append(norm(re.split(r"[ ;<>=!~\[(]", r, maxsplit=1)[0]))
    return seen


@pytest.mark.slow
def test_export_runs_isolated_with_declared_packages_only(exported):
    bundle, work, res, repo_out, datalist = exported
    report = work / "isolated_report.json"
    # tiny windows / steps / data; its library references name the export's vendored library, as a user's would
    overlay = work / "runtime_export.yaml"
    parser = ConfigParser()  # the shared pieces it names written out: the export holds no common/configs
    parser.read_config(str(work / "runtime.yaml"))
    with contextlib.chdir(ROOT):
        parser.resolve_macro_and_relative_ids()
    text = yaml.safe_dump(parser.get())
    overlay.write_text(rename_library(text, vendored_library_name(ROOT / "common")))
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tests" / "isolated_run.py"),
            str(report),
            "--",
            "run",
            "--config_file",
            f"['configs/inference.yaml','{overlay}']",
            f"--dataset_dir={datalist}",
            f"--output_dir={work / 'export_out'}",
        ],
        cwd=res.folder,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    rep = json.loads(report.read_text())
    ((name, path),) = rep["vendored"].items()  # one vendored library, the export's own, and never a plain `common`
    assert name == vendored_library_name(ROOT / "common") and not rep["plain_common"]
    assert Path(path).resolve().is_relative_to(res.folder.resolve())
    # every third-party package the exported code imports is declared (or required by a declared package)
    meta = json.loads((res.folder / "configs" / "metadata.json").read_text())
    declared = set(meta["required_packages_version"]) | {"monai", "torch", "numpy"}
    allowed = _requirement_closure(declared)
    missing = {
        mod: dists
        for mod, dists in rep["direct_imports"].items()
        if not dists or not any(re.sub(r"[-_.]+", "-", d).lower() in allowed for d in dists)
    }
    assert not missing, f"imported by the exported code but not in required_packages_version: {missing}"
    # same output as the repository's bundle with the same weights and inputs
    repo_files = sorted(p.name for p in repo_out.glob("*.nii.gz"))
    assert repo_files and repo_files == sorted(p.name for p in (work / "export_out").glob("*.nii.gz"))
    for name in repo_files:
        a, b = nib.load(repo_out / name), nib.load(work / "export_out" / name)
        np.testing.assert_allclose(b.affine, a.affine, atol=1e-6)
        np.testing.assert_allclose(np.asarray(b.dataobj), np.asarray(a.dataobj), atol=1e-4, rtol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("bundle", BUNDLES, ids=IDS)
def test_onnx_export_matches_pytorch(bundle, export_of, tmp_path):
    """`restorezoo export --onnx`: ONNX Runtime reproduces the exported weights' PyTorch network on a new input."""
    ort = pytest.importorskip("onnxruntime")
    from restorezoo.bundle_check import extra_forward_args
    from restorezoo.export import write_onnx

    _, work, res, _, _ = export_of(bundle)
    parser = ConfigParser()
    parser.read_config(str(res.folder / "configs" / "inference.yaml"))
    parser["bundle_root"] = str(res.folder)
    sys.path.insert(0, str(res.folder))  # the export's vendored library, as `python -m monai.bundle` there finds it
    try:
        net = parser.get_parsed_content("network_def", instantiate=True)
    finally:
        sys.path.remove(str(res.folder))
    net.load_state_dict(torch.load(res.folder / "models" / "model.pt", map_location="cpu", weights_only=True))
    net.eval()
    meta = json.loads((res.folder / "configs" / "metadata.json").read_text())
    write_onnx(net, meta, tmp_path / "model.onnx", size=32)
    spec = meta["network_data_format"]["inputs"]["image"]
    x = torch.randn(
        1, spec["num_channels"], *[32] * len(spec["spatial_shape"]), generator=torch.Generator().manual_seed(7)
    )
    extra = extra_forward_args(meta)
    feeds = {"image": x.numpy(), **{k: v.numpy() for k, v in extra.items()}}
    got = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    with torch.no_grad():
        ref = net(x, *extra.values())
    ref = (ref[0] if isinstance(ref, list | tuple) else ref).numpy()
    np.testing.assert_allclose(got, ref, atol=1e-4 * float(np.ptp(ref)) + 1e-5, rtol=0)
