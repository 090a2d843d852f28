"""Ignite/MONAI event handlers that MONAI does not already provide."""

from .checkpoint import (
    BestModelSaver,
    LastCheckpointSaver,
    ResumeFromLatest,
    atomic_torch_save,
    last_checkpoint,
)
from .grouped_metrics import GroupedMetricsReport, compute_item_metrics
from .output import BatchOutputAsList
from .panel import PanelWriter, save_panel
from .suv_bias import SUVBiasReport
from .window_psnr import window_psnr, windowed_output

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
    "window_psnr",
    "windowed_output",
]
