"""Atomic checkpointing and automatic resume.

MONAI's ``CheckpointSaver`` writes with ``atomic=False``; an interrupted write can leave a truncated file that the
next run fails to load. These handlers write to a temporary file in the same folder and ``os.replace`` it, and only
rank 0 writes under ``torch.distributed``.

- :class:`LastCheckpointSaver` (trainer): ``<ckpt_dir>/checkpoint_last.pt`` with every object of ``save_dict``
  (network, optimizer, trainer, ...) after each ``interval`` epochs and at the end.
- :class:`BestModelSaver` (evaluator): ``<ckpt_dir>/model.pt`` = the network ``state_dict`` whenever the key metric
  improves (model-zoo convention), with ``model.json`` holding the metric and epoch so a resumed run keeps the best.
- :class:`ResumeFromLatest` (trainer): if ``checkpoint_last.pt`` exists, load it with MONAI's ``CheckpointLoader``
  (``map_location`` so GPU-trained checkpoints load on CPU) before the run starts.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader

from ..distributed import is_main_process, rank
from ..errors import InputDataError
from ..io.atomic import ensure_writable_dir, remove_stale_temporaries, temp_path

__all__ = ["BestModelSaver", "LastCheckpointSaver", "ResumeFromLatest", "atomic_torch_save", "last_checkpoint"]

LAST = "checkpoint_last.pt"
logger = logging.getLogger(__name__)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path`` through a temporary file + ``os.replace`` (never a half-written file)."""
    path = Path(path)
    ensure_writable_dir(path.parent, "checkpoint folder")
    tmp = temp_path(path)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _state(obj: Any) -> Any:
    if isinstance(obj, torch.nn.parallel.DistributedDataParallel | torch.nn.DataParallel):
        obj = obj.module
    return obj.state_dict() if hasattr(obj, "state_dict") else obj


def last_checkpoint(ckpt_dir: str | os.PathLike) -> str | None:
    """Path of ``<ckpt_dir>/checkpoint_last.pt`` if it exists, else ``None``."""
    path = Path(ckpt_dir) / LAST
    return str(path) if path.is_file() else None


class LastCheckpointSaver:
    """Save every object of ``save_dict`` to ``<ckpt_dir>/checkpoint_last.pt`` after each ``interval`` epochs.

    The engine it is attached to is saved too, under ``engine_key`` (a config cannot reference the trainer from
    the trainer's own handler list without a circular reference).
    """

    def __init__(
        self, ckpt_dir: str, save_dict: Mapping[str, Any], interval: int = 1, engine_key: str | None = "trainer"
    ) -> None:
        self.ckpt_dir, self.save_dict, self.interval = Path(ckpt_dir), dict(save_dict), max(1, int(interval))
        self.engine_key = engine_key

    def attach(self, engine: Engine) -> None:
        if self.engine_key:
            self.save_dict[self.engine_key] = engine
        if is_main_process():  # a killed run's half-written checkpoints (.checkpoint_last.pt.tmp<pid>, ...)
            for path in remove_stale_temporaries(self.ckpt_dir):
                logger.info("removed %s, left by an interrupted run", path)
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self.save)
        engine.add_event_handler(Events.COMPLETED, self.save)

    def save(self, engine: Engine) -> None:
        if is_main_process():
            path = atomic_torch_save({k: _state(v) for k, v in self.save_dict.items()}, self.ckpt_dir / LAST)
            logger.info("rank %d wrote %s (epoch %d)", rank(), path, engine.state.epoch)


class BestModelSaver:
    """Save the network weights to ``<ckpt_dir>/<filename>`` when the evaluator's key metric improves."""

    def __init__(
        self,
        ckpt_dir: str,
        network: torch.nn.Module,
        metric_name: str | None = None,
        filename: str = "model.pt",
        higher_is_better: bool = True,
        epoch_engine: Engine | None = None,
    ) -> None:
        self.ckpt_dir, self.network, self.metric_name = Path(ckpt_dir), network, metric_name
        self.filename, self.higher = filename, higher_is_better
        self.epoch_engine = epoch_engine
        self.best: float | None = None
        self.best_name: str | None = None
        record = self.ckpt_dir / (Path(filename).stem + ".json")
        if record.is_file():
            try:
                saved = json.loads(record.read_text())
                self.best, self.best_name = float(saved["metric"]), saved.get("metric_name")
            except (ValueError, KeyError, TypeError, json.JSONDecodeError):
                self.best = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._maybe_save)

    def _maybe_save(self, engine: Engine) -> None:
        name = self.metric_name or engine.state.key_metric_name
        value = float(engine.state.metrics[name])
        if self.best is not None and self.best_name is not None and self.best_name != name:
            # a record of another metric (e.g. a run resumed after the key metric changed) does not compare
            logger.warning(
                "%s holds the best %s, not %s: it is replaced at this validation", self.filename, self.best_name, name
            )
            self.best = None
        self.best_name = name
        improved = self.best is None or (value > self.best if self.higher else value < self.best)
        if not improved or not is_main_process():
            return
        self.best = value
        epoch = self.epoch_engine.state.epoch if self.epoch_engine is not None else engine.state.epoch
        atomic_torch_save(_state(self.network), self.ckpt_dir / self.filename)
        record = self.ckpt_dir / (Path(self.filename).stem + ".json")
        tmp = temp_path(record)
        tmp.write_text(json.dumps({"metric_name": name, "metric": value, "epoch": epoch}, indent=2))
        os.replace(tmp, record)
        logger.info("saved best model (%s = %.4f, epoch %d) to %s", name, value, epoch, self.ckpt_dir / self.filename)


class ResumeFromLatest:
    """Resume training from ``<ckpt_dir>/checkpoint_last.pt`` when it exists (nothing happens otherwise).

    The engine it is attached to is restored too (epoch, iteration) from the ``engine_key`` entry.
    """

    def __init__(
        self, ckpt_dir: str, load_dict: Mapping[str, Any], map_location: Any = "cpu", engine_key: str | None = "trainer"
    ) -> None:
        self.ckpt_dir, self.load_dict, self.map_location = ckpt_dir, dict(load_dict), map_location
        self.engine_key = engine_key
        self.path = last_checkpoint(ckpt_dir)

    def _engine_state(self) -> dict[str, int]:
        try:
            checkpoint = torch.load(self.path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:
            raise InputDataError(
                self.path, f"cannot read the checkpoint to resume from ({type(exc).__name__}); delete it to start over"
            ) from exc
        state = checkpoint.get(self.engine_key) if self.engine_key else None
        return state if isinstance(state, dict) else {}

    def attach(self, engine: Engine) -> None:
        if self.path is None:
            return
        state = self._engine_state()
        if self.engine_key:
            self.load_dict[self.engine_key] = engine
        iteration, epoch_length = int(state.get("iteration", 0)), int(state.get("epoch_length") or 0)
        epoch = int(state.get("epoch", iteration // epoch_length if epoch_length else 0))
        # set before the run starts, so that ignite's own "Engine run resuming from ..." line is right too
        # (CheckpointLoader restores the full state at STARTED)
        engine.state.iteration, engine.state.epoch = iteration, epoch
        message = f"resuming from {self.path}: {epoch} epoch(s) done (iteration {iteration}), next epoch {epoch + 1}"
        logger.info(message)
        print(message, flush=True)
        CheckpointLoader(load_path=self.path, load_dict=self.load_dict, map_location=self.map_location).attach(engine)
