"""Interrupted writes: leftovers of a killed run are removed by the next run in that folder, the resume log names the
epoch, and outputs never appear half-written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events

from common.errors import OutputError
from common.handlers.checkpoint import BestModelSaver, LastCheckpointSaver, ResumeFromLatest
from common.io import save_nifti
from common.io.atomic import ensure_writable_dir, remove_stale_temporaries, temp_path


def _dead_pid() -> int:
    """The pid of a process that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_dead_processes_are_removed_live_ones_kept(tmp_path: Path) -> None:
    dead = _dead_pid()
    stale = [tmp_path / f".model.pt.tmp{dead}", tmp_path / f".x_denoised.nii.gz.tmp{dead}.nii.gz"]
    for p in stale:
        p.write_bytes(b"half")
    (tmp_path / f".series_ddpm.tmp{dead}").mkdir()  # a DICOM series folder being staged
    live = tmp_path / f".other.pt.tmp{os.getpid()}"
    live.write_bytes(b"in progress")
    keep = [tmp_path / "model.pt", tmp_path / ".hidden_user_file", tmp_path / "notes.tmp123"]
    for p in keep:
        p.write_bytes(b"x")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(removed) == sorted([*stale, tmp_path / f".series_ddpm.tmp{dead}"])
    assert live.exists() and all(p.exists() for p in keep)


def test_checkpoint_saver_cleans_its_folder_and_resume_names_the_epoch(tmp_path: Path, capsys) -> None:
    dead = _dead_pid()
    leftover = tmp_path / f".checkpoint_last.pt.tmp{dead}"
    leftover.write_bytes(b"truncated by kill -9")
    net = torch.nn.Linear(2, 2)
    trainer = Engine(lambda e, b: None)
    LastCheckpointSaver(str(tmp_path), {"model": net}).attach(trainer)
    assert not leftover.exists()

    state = Engine(lambda e, b: None).state_dict() | {"iteration": 6, "epoch_length": 2, "max_epochs": 10}
    torch.save({"model": net.state_dict(), "trainer": state}, tmp_path / "checkpoint_last.pt")
    resumed = Engine(lambda e, b: None)
    ResumeFromLatest(str(tmp_path), {"model": net}).attach(resumed)
    assert (resumed.state.epoch, resumed.state.iteration) == (3, 6)
    assert "3 epoch(s) done (iteration 6), next epoch 4" in capsys.readouterr().out


def _validate(saver: BestModelSaver, name: str, value: float) -> None:
    """One validation epoch whose key metric ``name`` is ``value``."""
    engine = Engine(lambda e, b: None)

    @engine.on(Events.EPOCH_COMPLETED)
    def _metric(e: Engine) -> None:  # registered first: runs before the saver reads it
        e.state.key_metric_name, e.state.metrics[name] = name, value

    saver.attach(engine)
    engine.run([0], max_epochs=1)


def test_best_model_record_of_another_metric_does_not_block_saving(tmp_path: Path) -> None:
    """A resumed run keeps its best model unless a later validation beats it; a record written under another key
    metric (a training resumed after its model-selection metric changed) does not compare and is replaced."""
    net = torch.nn.Linear(2, 2)
    _validate(BestModelSaver(str(tmp_path), net), "val_psnr", 50.0)
    record = json.loads((tmp_path / "model.json").read_text())
    assert record["metric_name"] == "val_psnr" and record["metric"] == 50.0
    _validate(BestModelSaver(str(tmp_path), net), "val_psnr", 49.0)  # same metric, worse: kept
    assert json.loads((tmp_path / "model.json").read_text())["metric"] == 50.0
    _validate(BestModelSaver(str(tmp_path), net), "val_ct_psnr", 46.0)  # another metric: replaced
    record = json.loads((tmp_path / "model.json").read_text())
    assert record["metric_name"] == "val_ct_psnr" and record["metric"] == 46.0


def test_unreadable_resume_checkpoint_is_named(tmp_path: Path) -> None:
    (tmp_path / "checkpoint_last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="checkpoint_last.pt: cannot read the checkpoint to resume from"):
        ResumeFromLatest(str(tmp_path), {"model": torch.nn.Linear(1, 1)}).attach(Engine(lambda e, b: None))


def test_output_folder_that_cannot_be_written_is_named(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="/proc/restorezoo: cannot create the output folder"):
        ensure_writable_dir("/proc/restorezoo")
    with pytest.raises(OutputError, match="/proc/restorezoo"):
        save_nifti(np.zeros((2, 2, 2), np.float32), np.eye(4), "/proc/restorezoo/x.nii.gz")
    assert ensure_writable_dir(tmp_path / "a" / "b").is_dir()


def test_failed_write_leaves_no_temporary(tmp_path: Path, monkeypatch) -> None:
    import nibabel as nib

    def broken_save(img, path):
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(nib, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_nifti(np.zeros((2, 2, 2), np.float32), np.eye(4), tmp_path / "x.nii.gz")
    assert list(tmp_path.iterdir()) == []
    name = temp_path(tmp_path / "x.nii.gz", ".nii.gz").name
    assert name.startswith(f".x.nii.gz.tmp{os.getpid()}.") and name.endswith(".nii.gz")
