"""``--tracking mlflow`` (MONAI's built-in bundle tracking; mlflow-skinny + SQLAlchemy from the ``tracking`` extra)
on every bundle (discovered): one tiny epoch logs the training loss and the validation metrics to the SQLite store
MONAI sets up under the output folder, and the run ends FINISHED."""

from __future__ import annotations

import pytest
from conftest import BUNDLES, run_bundle

mlflow = pytest.importorskip("mlflow")
IDS = [b.name for b in BUNDLES]


@pytest.mark.slow
@pytest.mark.parametrize("bundle", BUNDLES, ids=IDS)
def test_tracking_mlflow(bundle, tmp_path, data_cache):
    configs = bundle / "configs"
    run_bundle(
        ["run", "training", "--config_file", f"['{configs / 'train.yaml'}','{configs / 'smoke.yaml'}']"]
        + ["--max_epochs=1", "--val_interval=1", "--tracking", "mlflow"]
        + [f"--ckpt_dir={tmp_path / 'models'}", f"--output_dir={tmp_path / 'eval'}"]
        + [f"--data_cache_dir={data_cache / bundle.name}"]
    )
    db = tmp_path / "eval" / "mlruns.db"
    assert db.is_file()
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert runs and all(r.info.status == "FINISHED" for r in runs)
    metrics = {k for r in runs for k in r.data.metrics}
    assert "train_loss" in metrics, metrics
    assert any(k.startswith("val_") for k in metrics), metrics  # the evaluator's key metric, every epoch
    history = client.get_metric_history(runs[0].info.run_id, "train_loss") or client.get_metric_history(
        runs[-1].info.run_id, "train_loss"
    )
    assert history and all(h.value == h.value for h in history)  # logged per iteration, finite
