"""Per-item quality metrics of input and output, grouped by dose (or any item key), written as CSV + Markdown.

Attached to an evaluator whose decollated ``engine.state.output`` items carry ``image`` (degraded input), ``pred``
(restored) and ``label`` (reference) tensors ``(C, *spatial)`` in the same units, and whose ``engine.state.batch``
items carry the group key (e.g. ``drf`` or ``dose``).
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from ignite.engine import Engine, Events

from .. import metrics as M
from ..distributed import is_distributed, is_main_process, world_size
from ..io.atomic import temp_path, write_csv_atomic, write_text_atomic
from ..transforms.masks import body_mask
from ..transforms.validation import source_of

__all__ = ["GroupedMetricsReport", "compute_item_metrics"]

METRICS = ("psnr", "ssim", "rmse", "nrmse")
BODY_METRICS = ("body_rmse", "body_bias")  # inside the body mask of the reference, after the window clip
_IN_UNITS = ("rmse", "mae", *BODY_METRICS)  # metrics in the image's physical units (HU, SUV)


def _group_label(group: Any) -> str:
    """A group value as written in tables and metric names (``20`` for 20.0; strings such as ``all`` as they are)."""
    return group if isinstance(group, str) else f"{group:g}"


def _metric_label(name: str) -> str:
    """Table header of a metric: ``PSNR``, ``body RMSE``, ``body bias``."""
    return {"body_rmse": "body RMSE", "body_bias": "body bias"}.get(name, name.upper())


def compute_item_metrics(
    pred: torch.Tensor,
    ref: torch.Tensor,
    names: Sequence[str] = METRICS,
    data_range: float | str = "reference_max",
    window: Sequence[float] | None = None,
    scale: float = 1.0,
    ssim_axis: int | None = None,
    mask: torch.Tensor | None = None,
    ssim_win: int = 11,
    body_threshold: float | None = None,
) -> dict[str, float]:
    """Metrics of one ``pred`` against ``ref`` ((C, *spatial) tensors), after multiplying by ``scale`` (to physical
    units) and clipping to ``window`` when given. ``data_range``: a number, ``"reference_max"`` or ``"window"``.
    ``ssim_axis``: None = SSIM over the whole image (2D or 3D); an axis (-1 = axial z) = mean 2D SSIM over the slices
    along it (the convention of slice-wise CT papers). ``mask``: optional (C, *spatial) 0/1 tensor: PSNR, SSIM (whole
    image) and MAE inside it (e.g. the body); RMSE/NRMSE stay global.

    ``body_rmse`` / ``body_bias``: RMSE and mean signed error ``mean(pred - ref)`` in physical units (HU, SUV) inside
    the body of the reference (:func:`common.transforms.body_mask` at ``body_threshold``: -500 HU for CT, a low SUV
    for PET), on the same (clipped) values as the other metrics: a denoiser must not shift the mean inside the body.
    (Clipped, because bundles clip their inputs to their own windows: after the common window every bundle of a task
    sees the same input and reference.)"""
    p, r = pred.float() * scale, ref.float() * scale
    if window is not None:
        lo, hi = float(window[0]), float(window[1])
        p, r = p.clamp(lo, hi), r.clamp(lo, hi)
    if any(n in BODY_METRICS for n in names):
        if body_threshold is None:
            raise ValueError(f"{[n for n in names if n in BODY_METRICS]} need a body_threshold")
        body = torch.as_tensor(body_mask(r, float(body_threshold)))
        if not body.any():
            raise ValueError(f"the reference has no voxel above the body threshold {body_threshold}")
        diff = (p - r)[body]
        body_values = {"body_rmse": float(diff.pow(2).mean().sqrt()), "body_bias": float(diff.mean())}
    if data_range == "reference_max":
        dr = M.reference_max(r)
    elif data_range == "window":
        if window is None:
            raise ValueError("data_range='window' needs a window")
        dr = float(window[1]) - float(window[0])
    else:
        dr = float(data_range)
    p, r = p.unsqueeze(0), r.unsqueeze(0)
    m = None if mask is None else torch.as_tensor(mask).unsqueeze(0) > 0.5
    if m is not None and ssim_axis is not None:
        raise ValueError("a mask needs ssim_axis=None (masked SSIM is computed on the whole volume)")
    fns = {
        "psnr": lambda: M.psnr(p, r, dr, mask=m),
        "ssim": lambda: (
            M.ssim(p, r, dr, win_size=ssim_win, mask=m)
            if ssim_axis is None
            else M.ssim_slices(p, r, dr, axis=ssim_axis, win_size=ssim_win)
        ),
        "rmse": lambda: M.rmse(p, r),
        "nrmse": lambda: M.nrmse(p, r),
        "mae": lambda: M.hu_mae(p, r, mask=m),
    }
    return {n: body_values[n] if n in BODY_METRICS else fns[n]() for n in names}


class GroupedMetricsReport:
    """Compute metrics of ``image`` and ``pred`` (or any ``candidates``) against ``label`` per item and summarise
    them per group.

    Writes ``<output_dir>/<prefix>_items.csv`` (one row per item) and ``<prefix>_summary.md`` (mean per group of
    every candidate's metrics and the PSNR gain of ``output`` over ``gain_over``), logs the table, and stores
    ``<group>=<v>/<metric>`` means in ``engine.state.metrics``.

    Args:
        output_dir: where the CSV and Markdown go.
        group_key: batch item key to group by (``"drf"``, ``"dose"``, ``"factor"``).
        metric_names: subset of ``psnr, ssim, rmse, nrmse, mae, body_rmse, body_bias`` (the last two need
            ``body_threshold``).
        data_range: ``"reference_max"`` (PET convention), ``"window"`` or a number.
        window: optional ``(low, high)`` clip in physical units (e.g. HU brain window ``(-40, 120)``).
        scale: factor to physical units (e.g. the SUV scale) applied before metrics.
        prefix: file-name prefix (one report per window/setting).
        units: label of the RMSE units for the table header.
        ssim_axis: SSIM per 2D slice along this spatial axis, averaged (None: one 2D/3D SSIM per item).
        plot: also write ``<prefix>_vs_<group_key>.png``: each metric of every candidate against the group value
            (numeric groups only).
        candidates: ordered ``{tag: output key}`` compared with ``label``; default ``{"input": input_key,
            "output": "pred"}`` (e.g. add classical baselines: ``{"linear": "linear", "cubic": "cubic",
            "output": "pred"}``). The ``output`` tag must be present.
        gain_over: tag whose PSNR the gain column subtracts from the output's (default: the first candidate).
        mask_key: optional key of a 0/1 mask (e.g. ``mask``, the body) in the output or the batch item: PSNR, SSIM
            and MAE inside it.
        ssim_win: SSIM window size.
        body_threshold: threshold of the body mask of the reference, in physical units (after ``scale``), for
            ``body_rmse`` / ``body_bias`` (:func:`compute_item_metrics`).
    """

    def __init__(
        self,
        output_dir: str,
        group_key: str = "drf",
        metric_names: Sequence[str] = METRICS,
        data_range: float | str = "reference_max",
        window: Sequence[float] | None = None,
        scale: float = 1.0,
        prefix: str = "metrics",
        units: str = "",
        input_key: str = "image",
        plot: bool = False,
        ssim_axis: int | None = None,
        candidates: dict[str, str] | None = None,
        gain_over: str | None = None,
        mask_key: str | None = None,
        ssim_win: int = 11,
        body_threshold: float | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.group_key = group_key
        self.metric_names = list(metric_names)
        self.data_range = data_range
        self.window = None if window is None else tuple(float(w) for w in window)
        self.scale = float(scale)
        self.prefix = prefix
        self.units = units
        self.input_key = input_key
        self.plot = bool(plot)
        self.ssim_axis = ssim_axis
        self.candidates = dict(candidates) if candidates else {"input": input_key, "output": "pred"}
        if "output" not in self.candidates:
            raise ValueError(f"candidates must include an 'output' tag, got {list(self.candidates)}")
        self.gain_over = gain_over or next(iter(self.candidates))
        if self.gain_over not in self.candidates:
            raise ValueError(f"gain_over {self.gain_over!r} is not a candidate tag {list(self.candidates)}")
        self.mask_key = mask_key
        self.ssim_win = int(ssim_win)
        self.body_threshold = None if body_threshold is None else float(body_threshold)
        if any(n in BODY_METRICS for n in self.metric_names) and self.body_threshold is None:
            raise ValueError(f"metric_names {self.metric_names} need a body_threshold")
        self.rows: list[dict[str, Any]] = []
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._update)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self.rows = []

    def _update(self, engine: Engine) -> None:
        outputs = engine.state.output if isinstance(engine.state.output, list) else [engine.state.output]
        batch = engine.state.batch if isinstance(engine.state.batch, list) else [engine.state.batch]
        for out, item in zip(outputs, batch, strict=False):
            group = item.get(self.group_key, "all") if isinstance(item, dict) else "all"
            group = float(torch.as_tensor(group).reshape(-1)[0]) if not isinstance(group, str) else group
            row: dict[str, Any] = {"item": source_of(out.get(self.input_key), ""), self.group_key: group}
            kw = self.metric_kwargs(self._mask(out, item))
            for tag, key in self.candidates.items():
                for name, value in compute_item_metrics(out[key], out["label"], **kw).items():
                    row[f"{tag}_{name}"] = value
            self.rows.append(row)

    def metric_kwargs(self, mask: torch.Tensor | None = None) -> dict[str, Any]:
        """The keyword arguments of :func:`compute_item_metrics` this report uses (so other code, e.g. the
        benchmark's baseline tuning, measures exactly as the report does)."""
        return dict(
            names=self.metric_names,
            data_range=self.data_range,
            window=self.window,
            scale=self.scale,
            ssim_axis=self.ssim_axis,
            mask=mask,
            ssim_win=self.ssim_win,
            body_threshold=self.body_threshold,
        )

    def _mask(self, out: dict[str, Any], item: Any) -> torch.Tensor | None:
        """The mask from the evaluator output, else from the batch item (MONAI evaluators output only image, label
        and pred)."""
        if self.mask_key is None:
            return None
        for source in (out, item):
            if isinstance(source, dict) and self.mask_key in source:
                return source[self.mask_key]
        raise KeyError(f"mask key '{self.mask_key}' is neither in the evaluator output nor in the batch")

    def summary(self) -> list[dict[str, Any]]:
        """Mean of every metric per group, sorted by group value."""
        groups: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        for row in self.rows:
            groups[row[self.group_key]].append(row)
        table = []
        for g in sorted(groups, key=lambda v: (isinstance(v, str), v)):
            rows = groups[g]
            entry: dict[str, Any] = {self.group_key: g, "n": len(rows)}
            for tag in self.candidates:
                for name in self.metric_names:
                    entry[f"{tag}_{name}"] = float(np.mean([r[f"{tag}_{name}"] for r in rows]))
            if "psnr" in self.metric_names:
                entry["psnr_gain_db"] = entry["output_psnr"] - entry[f"{self.gain_over}_psnr"]
            table.append(entry)
        return table

    def markdown(self) -> str:
        table = self.summary()
        tags = list(self.candidates)
        unit = f" ({self.units})" if self.units else ""
        header = [self.group_key, "n"] + [
            f"{t} {_metric_label(m)}{unit if m in _IN_UNITS else ''}" for m in self.metric_names for t in tags
        ]
        if "psnr" in self.metric_names:
            header.append("PSNR gain (dB)" if self.gain_over == "input" else f"PSNR gain over {self.gain_over} (dB)")
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for e in table:
            cells = [
                _group_label(e[self.group_key]),
                str(e["n"]),
            ]
            for m in self.metric_names:
                small = max(abs(e[f"{t}_{m}"]) for t in tags) < 1.0  # e.g. RMSE in normalised units
                digits = 4 if m in ("ssim", "nrmse") or small else 2
                cells += [f"{e[f'{t}_{m}']:.{digits}f}" for t in tags]
            if "psnr_gain_db" in e:
                cells.append(f"{e['psnr_gain_db']:+.2f}")
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def plot_summary(self, path: Path) -> Path | None:
        """One panel per metric: mean input and output value against the (numeric) group value; atomic write."""
        table = [e for e in self.summary() if not isinstance(e[self.group_key], str)]
        if not table:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        xs = [e[self.group_key] for e in table]
        fig, axes = plt.subplots(1, len(self.metric_names), figsize=(4 * len(self.metric_names), 3.2), squeeze=False)
        for ax, name in zip(axes[0], self.metric_names, strict=True):
            for tag in self.candidates:
                style = "s-" if tag == "output" else "o--"
                ax.plot(xs, [e[f"{tag}_{name}"] for e in table], style, label=tag)
            ax.set_xlabel(self.group_key)
            ax.set_ylabel(name.upper() + (f" ({self.units})" if self.units and name in ("rmse", "mae") else ""))
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle(f"{self.prefix}: mean over items per {self.group_key}")
        fig.tight_layout()
        tmp = temp_path(path, ".png")
        fig.savefig(tmp, dpi=100)
        plt.close(fig)
        os.replace(tmp, path)
        return path

    def _gather(self) -> None:
        """Under torch.distributed (each rank evaluated its shard): every rank gets all rows, ordered by
        item, once each (DistributedSampler pads a split shorter than the number of ranks with repeats)."""
        if is_distributed() and world_size() > 1:
            shards: list[Any] = [None] * world_size()
            dist.all_gather_object(shards, self.rows)
            unique = {(str(r["item"]), str(r[self.group_key])): r for shard in shards for r in shard}  # padded shards
            self.rows = [unique[k] for k in sorted(unique)]

    def _write(self, engine: Engine) -> None:
        self._gather()
        if not self.rows:
            return
        for e in self.summary():  # every rank: the metrics are the same everywhere
            for k, v in e.items():
                if k not in (self.group_key, "n"):
                    engine.state.metrics[f"{self.group_key}:{_group_label(e[self.group_key])}/{k}"] = (
                        v  # MLflow-valid name
                    )
        if not is_main_process():
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        csv_path = write_csv_atomic(self.output_dir / f"{self.prefix}_items.csv", self.rows)
        md = self.markdown()
        write_text_atomic(self.output_dir / f"{self.prefix}_summary.md", md)
        if self.plot:
            self.plot_summary(self.output_dir / f"{self.prefix}_vs_{self.group_key}.png")
        self.logger.info("%s per %s (%s):\n%s", self.prefix, self.group_key, csv_path, md)
        print(f"\n{self.prefix} per {self.group_key}:\n{md}", flush=True)
