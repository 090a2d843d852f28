"""The benchmark's learned peers (restorezoo.peers): overlays that swap only the network of a host bundle, and
networks that run through the host's unchanged configs."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import yaml
from conftest import BUNDLES, ROOT, run_bundle_steps

from common.configs import load_config_files
from restorezoo.benchmark import load_task
from restorezoo.peers import Unconditioned, run_overlays

# what an overlay may change: the network, where its files go, the epochs of the CPU budget, and (CT) the loss term
# that needs a second network of the host's own method
ALLOWED = {"network_def", "ckpt_dir", "output_dir", "max_epochs", "val_interval", "anatomy_weight"}


PEERS = [(bundle, run) for bundle in BUNDLES for run in load_task(bundle).runs if run.get("peer")]


def test_there_is_a_peer_per_denoising_task():
    tasks = {load_task(bundle).task for bundle, _ in PEERS}
    assert tasks == {"ct_denoising", "pet_denoising"}


@pytest.mark.parametrize(("bundle", "run"), PEERS, ids=[r["name"] for _, r in PEERS])
def test_overlay_changes_only_the_network_and_its_budget(bundle, run):
    overlay: dict = {}
    for path in run_overlays(run):  # applied in order: a later overlay's keys replace an earlier one's
        part = yaml.safe_load(path.read_text())
        assert set(part) <= ALLOWED, (path.name, set(part) - ALLOWED)
        overlay.update(part)
    assert run["ckpt_subdir"] in overlay["ckpt_dir"]  # the peer never overwrites the bundle's own weights
    assert run["ckpt_subdir"] in overlay["output_dir"].replace("eval", "models")
    if run.get("requires"):
        pytest.importorskip(run["requires"])
    from monai.bundle import ConfigParser

    for config in ("train.yaml", "inference.yaml"):
        parser = ConfigParser()
        parser.read_config(load_config_files([bundle / "configs" / config, *run_overlays(run)]))
        parser["bundle_root"] = str(bundle)
        net = parser.get_parsed_content("network_def", instantiate=True)
        ct = load_task(bundle).task == "ct_denoising"
        x = torch.rand(2, 1, *([32] * (2 if ct else 3)))
        dose = () if ct else (torch.full((2, 1), 0.3),)  # a PET host passes its dose vector: the peer ignores it
        with torch.no_grad():
            y = net(x, *dose)
        assert y.shape == x.shape and torch.isfinite(y).all()


def test_unconditioned_ignores_the_dose():
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    net = Unconditioned(UNet(3, 1, 1, (4, 8), (2,)))
    x = torch.rand(1, 1, 16, 16, 16)
    torch.testing.assert_close(net(x, torch.zeros(1, 1)), net(x, torch.ones(1, 1)))
    torch.testing.assert_close(net(x), net.network(x))


def test_redcnn_is_ldct_benchmarks_network():
    pytest.importorskip("ldctbench")
    from ldctbench.methods.redcnn.network import Model

    from restorezoo.peers import RedCNN

    torch.manual_seed(0)
    net = RedCNN()
    ref = Model(None)
    ref.load_state_dict(net.net.state_dict())  # the same layers and shapes
    x = torch.rand(1, 1, 40, 36)
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref(x))
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in ref.parameters())


@pytest.mark.slow
@pytest.mark.parametrize(("bundle", "run"), PEERS, ids=[r["name"] for _, r in PEERS])
def test_peer_trains_and_infers_through_the_host_configs(bundle, run, tmp_path, data_cache):
    """One tiny epoch of the peer with the host's smoke overlay, then the host's inference with the peer's weights."""
    if run.get("requires") and importlib.util.find_spec(run["requires"]) is None:
        pytest.skip(f"optional peer: {run.get('install')}")
    configs, peer = bundle / "configs", run_overlays(run)
    common = [f"--ckpt_dir={tmp_path / 'models'}", f"--output_dir={tmp_path / 'eval'}",
              f"--data_cache_dir={data_cache / bundle.name}"]  # fmt: skip
    from restorezoo.benchmark import _train_configs

    train_files = [configs / "train.yaml", *_train_configs(bundle, run), configs / "smoke.yaml"]  # as the benchmark
    train = repr([str(f) for f in train_files])
    infer = repr([str(f) for f in [configs / "inference.yaml", *peer, configs / "smoke.yaml"]])
    run_bundle_steps(
        [
            (ROOT, ["run", "training", "--config_file", train, "--max_epochs=1", *common]),
            (ROOT, ["run", "--config_file", infer, *common]),
        ],  # fmt: skip
        tmp_path,
    )
    weights = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert any(k.startswith(("net.", "network.")) for k in weights)  # the peer's network, not the host's
    assert sorted((tmp_path / "eval").glob("*.nii*")), "inference wrote no output"


FULL_PEERS = [(bundle, run) for bundle, run in PEERS if run.get("train_overlays")]


def test_there_is_a_full_budget_peer_per_denoising_task():
    assert {load_task(bundle).task for bundle, _ in FULL_PEERS} == {"ct_denoising", "pet_denoising"}


@pytest.mark.parametrize(("bundle", "run"), FULL_PEERS, ids=[r["name"] for _, r in FULL_PEERS])
def test_full_budget_peer_trains_by_the_hosts_full_recipe(bundle, run):
    """The training configs of a full-budget peer: the host's train.yaml and full recipe, then the peer's overlays, so
    the peer gets the full recipe's data engine and schedule with its own network, epochs and folders."""
    from restorezoo.benchmark import _train_configs

    files = [bundle / "configs" / "train.yaml", *_train_configs(bundle, run)]
    assert [f.name for f in files[:2]] == ["train.yaml", "train_full.yaml"]
    assert files[2:] == run_overlays(run) and len(files) == 4
    full = load_config_files([bundle / "configs" / "train.yaml", bundle / "configs" / "train_full.yaml"])
    merged = load_config_files(files)
    peer_full = yaml.safe_load(files[-1].read_text())
    peer_keys = {k for f in files[2:] for k in yaml.safe_load(f.read_text())}
    for key, value in full.items():  # the host's full recipe reaches the peer except what the peer's overlays set
        if key not in peer_keys:
            assert merged[key] == value, key
    assert peer_keys <= ALLOWED
    assert merged["max_epochs"] == peer_full["max_epochs"] >= full["max_epochs"] // 3
    assert merged["network_def"] == yaml.safe_load(files[2].read_text())["network_def"]
    assert run["ckpt_subdir"] in merged["ckpt_dir"] and "models_full" not in merged["ckpt_dir"]
