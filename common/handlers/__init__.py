"""Ignite/MONAI event handlers that MONAI does not already provide."""

from common.handlers.checkpoint import (
    BestModelSaver,
    LastCheckpointSaver,
    ResumeFromLatest,
    atomic_torch_save,
    last_checkpoint,
)
from common.handlers.grouped_metrics import GroupedMetricsReport, compute_item_metrics
from common.handlers.output import BatchOutputAsList
from common.handlers.panel import PanelWriter, save_panel
from common.handlers.suv_bias import SUVBiasReport

__all__ = [
    "BatchOutputAsList",
    "BestModelSaver",
    "GroupedMetricsReport",
    "LastCheckpointSaver",
    "PanelWriter",
    "ResumeFromLatest",
    "SUVBiasReport",
    "atomic_torch_save",
    "compute_item_metrics",
    "last_checkpoint",
    "save_panel",
]
