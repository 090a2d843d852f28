"""pet_lowdose_film_unet specifics: inference on an arbitrary-shape NIfTI keeps shape, affine and units; a missing
DRF is a clear error; the evaluation overlay writes the per-DRF table."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import ROOT, run_workflow
from monai.bundle import ConfigParser

from common.networks import MixedPool

BUNDLE = ROOT / "bundles" / "pet_lowdose_film_unet"
CONFIGS = BUNDLE / "configs"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Random (untrained) weights of the bundle's network, saved like training does."""
    folder = tmp_path_factory.mktemp("pet_models")
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.yaml"))
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def")
    torch.save(net.state_dict(), folder / "model.pt")
    return folder


def _volume(tmp_path, shape=(37, 29, 21)):
    rng = np.random.default_rng(0)
    data = rng.gamma(2.0, 1.0, shape).astype(np.float32)  # SUV-like, strictly positive
    affine = np.array([[-2.0, 0, 0, 10.5], [0, 2.5, 0, -7.0], [0, 0, 3.0, 100.0], [0, 0, 0, 1]])
    path = tmp_path / "input" / "pet.nii.gz"
    path.parent.mkdir()
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path, data, affine


@pytest.mark.slow
def test_inference_any_shape_keeps_affine_and_units(tmp_path, weights):
    path, data, affine = _volume(tmp_path)
    before = path.read_bytes()
    refusal = run_workflow(  # in-process (conftest.run_workflow); the smoke test runs the real command
        [CONFIGS / "inference.yaml"],
        input_file=str(path),
        drf=20,
        ckpt_dir=str(weights),
        output_dir=str(tmp_path / "out"),
        roi_size=[32, 32, 32],
    )
    assert refusal is None, refusal
    outputs = list((tmp_path / "out").glob("*denoised.nii.gz"))
    assert len(outputs) == 1
    img = nib.load(str(outputs[0]))
    assert img.shape == data.shape
    np.testing.assert_allclose(img.affine, affine, atol=1e-4)
    out = img.get_fdata()
    assert np.isfinite(out).all() and out.min() >= 0.0
    # untrained FiLM is the identity modulation and the residual is small: same units (SUV), not suv_scale units
    assert 0.3 < out.mean() / data.mean() < 3.0
    assert path.read_bytes() == before  # input untouched
    assert not list((tmp_path / "out").glob(".*tmp*"))  # atomic writes leave no temporary files


def _failing_inference(**args: str) -> str:
    """Run the inference config with ``args`` in-process (conftest.run_workflow); it must be refused: the line."""
    line = run_workflow([CONFIGS / "inference.yaml"], **args)
    assert line is not None, "the inference was not refused"
    return line


@pytest.mark.slow
def test_inference_without_drf_is_a_clear_error(tmp_path, weights):
    path, _, _ = _volume(tmp_path)
    out = _failing_inference(input_file=str(path), ckpt_dir=str(weights), output_dir=str(tmp_path / "out"))
    assert "pet.nii.gz: missing dose metadata 'drf'" in out
    assert not list((tmp_path / "out").glob("*.nii.gz"))


@pytest.mark.slow
def test_inference_without_weights_names_the_file(tmp_path):
    path, _, _ = _volume(tmp_path)
    out = _failing_inference(input_file=str(path), drf=4, ckpt_dir=str(tmp_path / "nothing"))
    assert "model.pt: missing trained weights" in out


@pytest.mark.parametrize(
    "overrides",
    [{"conv": "depthwise"}, {"conv": "interleaved"}, {"conv": "mixture"}, {"pooling": "mixed"}, {"pooling": "max"}],
    ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()),
)
def test_variants_are_selectable_from_the_config(overrides):
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.yaml"))
    for key, value in overrides.items():
        parser[f"network_def#{key}"] = value
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def").eval()
    if overrides.get("pooling") == "mixed":
        assert any(isinstance(m, MixedPool) for m in net.modules())
    if overrides.get("pooling") == "max":
        assert any(isinstance(m, torch.nn.MaxPool3d) for m in net.modules())
    x = torch.rand(1, 1, 32, 32, 32)
    with torch.no_grad():
        out = net(x, torch.tensor([[0.3]]))
    assert out.shape == x.shape and torch.isfinite(out).all()
    default = ConfigParser()
    default.read_config(str(CONFIGS / "train.yaml"))
    torch.manual_seed(0)
    n_default = sum(p.numel() for p in default.get_parsed_content("network_def").parameters())
    n_variant = sum(p.numel() for p in net.parameters())
    if "conv" in overrides:
        assert n_variant != n_default  # the variant really changed the layers
