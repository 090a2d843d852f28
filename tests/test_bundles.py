"""CI validation of every bundle under bundles/ (discovered automatically: a new bundle is covered for free).

Per bundle: static validation (files, parsing, ConfigWorkflow properties for train and infer, metadata against the
vendored schema, identical network in train/inference, verify_net_in_out), a TorchScript export round trip, and a
tiny training (tracked with MLflow) -> resume -> inference run on generated data through the real
`python -m monai.bundle` entry point.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import yaml
from conftest import BUNDLES, ROOT, run_bundle_steps, smoke_overlays
from monai.bundle import ConfigParser, ckpt_export

from restorezoo.bundle_check import extra_forward_args, validate_bundle

IDS = [b.name for b in BUNDLES]


def test_bundles_are_discovered():
    assert "pet_lowdose_film_unet" in IDS


@pytest.mark.parametrize("bundle", BUNDLES, ids=IDS)
def test_bundle_validates(bundle, tmp_path, data_cache):
    assert validate_bundle(bundle, overlays=smoke_overlays(bundle, tmp_path, data_cache)) == []


@pytest.mark.parametrize("bundle", BUNDLES, ids=IDS)
def test_torchscript_export_roundtrip(bundle, tmp_path):
    configs = bundle / "configs"
    parser = ConfigParser()
    parser.read_config(str(configs / "inference.yaml"))
    parser.read_meta(str(configs / "metadata.json"))
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def", instantiate=True)
    meta = json.loads((configs / "metadata.json").read_text())
    if meta.get("torchscript") is False:  # declared not scriptable: prove it, so the declaration cannot go stale
        with pytest.raises(Exception):  # noqa: B017 - TorchScript raises several error types
            torch.jit.script(net)
        return
    torch.save(net.state_dict(), tmp_path / "model.pt")
    ckpt_export(
        net_id="network_def",
        filepath=str(tmp_path / "model.ts"),
        ckpt_file=str(tmp_path / "model.pt"),
        meta_file=str(configs / "metadata.json"),
        config_file=str(configs / "inference.yaml"),
    )
    scripted = torch.jit.load(str(tmp_path / "model.ts"), map_location="cpu")
    extra = extra_forward_args(meta)
    image = meta["network_data_format"]["inputs"]["image"]
    x = torch.rand(1, image["num_channels"], *[32] * len(image["spatial_shape"]))  # 2D or 3D networks
    net.eval()
    with torch.no_grad():
        torch.testing.assert_close(scripted(x, **extra), net(x, **extra), atol=1e-5, rtol=1e-4)


def _mutated_copy(bundle, tmp_path):
    dst = tmp_path / bundle.name
    shutil.copytree(bundle, dst, ignore=shutil.ignore_patterns("models", "eval"))
    return dst


@pytest.mark.parametrize("bundle", BUNDLES[:1], ids=IDS[:1])
@pytest.mark.parametrize("mutation", ["no_network_def", "no_metadata_version", "no_training_id", "no_trainer"])
def test_broken_bundle_fails_validation(bundle, tmp_path, mutation, data_cache):
    dst = _mutated_copy(bundle, tmp_path)
    configs = dst / "configs"
    if mutation == "no_metadata_version":
        meta = json.loads((configs / "metadata.json").read_text())
        del meta["version"]
        (configs / "metadata.json").write_text(json.dumps(meta))
    else:
        name = "inference.yaml" if mutation == "no_network_def" else "train.yaml"
        cfg = yaml.safe_load((configs / name).read_text())
        if mutation == "no_network_def":
            del cfg["network_def"]
        elif mutation == "no_training_id":
            del cfg["training"]
        else:
            del cfg["train"]["trainer"]
        (configs / name).write_text(yaml.safe_dump(cfg, sort_keys=False))
    problems = validate_bundle(dst, run_network=False, overlays=smoke_overlays(dst, tmp_path, data_cache))
    assert problems, f"mutation {mutation} was not detected"


@pytest.mark.slow
@pytest.mark.parametrize("bundle", BUNDLES, ids=IDS)
def test_smoke_train_resume_infer(bundle, tmp_path, data_cache):
    """One tiny epoch tracked with MONAI's ``--tracking mlflow``, a resumed second epoch, then inference; from the
    repo root and from the bundle folder. The three commands run in one process (tests/bundle_steps.py), each as
    ``python -m monai.bundle`` would run it."""
    import mlflow

    configs = bundle / "configs"
    common = [
        f"--ckpt_dir={tmp_path / 'models'}",
        f"--output_dir={tmp_path / 'eval'}",
        f"--data_cache_dir={data_cache / bundle.name}",
    ]
    train = f"['{configs / 'train.yaml'}','{configs / 'smoke.yaml'}']"
    infer = f"['{configs / 'inference.yaml'}','{configs / 'smoke.yaml'}']"
    ckpt = tmp_path / "models" / "checkpoint_last.pt"
    tracked = ["run", "training", "--config_file", train, "--max_epochs=1", "--val_interval=1", "--tracking", "mlflow"]
    out1, out2, _ = run_bundle_steps(
        [
            (ROOT, [*tracked, *common]),
            # interrupted-and-rerun: picks up the last checkpoint and trains only the missing epoch
            (bundle, ["run", "training", "--config_file", train, "--max_epochs=2", *common]),
            (bundle, ["run", "--config_file", infer, *common]),
        ],
        tmp_path,
    )
    assert f"resuming from {ckpt}" not in out1
    assert f"resuming from {ckpt}: 1 epoch(s) done" in out2
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["trainer"]  # ignite: iteration, epoch_length
    assert state["iteration"] == state["epoch_length"] * 2 and state["max_epochs"] == 2
    assert (tmp_path / "models" / "model.pt").is_file()
    assert list((tmp_path / "eval").glob("*_latest.png")), "no PNG panel written"
    assert list((tmp_path / "eval" / "tensorboard").glob("events.*")), "no TensorBoard log"
    outputs = sorted((tmp_path / "eval").glob("*.nii*"))
    assert outputs, "inference wrote no output"

    # the tracked first epoch: training loss per iteration and the validation metrics in MONAI's SQLite store
    db = tmp_path / "eval" / "mlruns.db"
    assert db.is_file()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert runs and all(r.info.status == "FINISHED" for r in runs)
    metrics = {k for r in runs for k in r.data.metrics}
    assert "train_loss" in metrics, metrics
    assert any(k.startswith("val_") for k in metrics), metrics  # the evaluator's key metric, every epoch
    history = [h for r in runs for h in client.get_metric_history(r.info.run_id, "train_loss")]
    assert history and len(history) == state["epoch_length"]  # one epoch tracked, one value per iteration
    assert all(h.value == h.value for h in history)  # finite
