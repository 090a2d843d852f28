"""Write a PNG panel (input | restored | reference | |error|) of the first validation volume.

Attached to an evaluator; reads the decollated ``engine.state.output`` (a list of dicts with ``image``, ``pred``,
``label`` tensors ``(C, X, Y, Z)`` or ``(C, X, Y)``) at EPOCH_COMPLETED of the evaluator's run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events

from ..io.atomic import temp_path

__all__ = ["PanelWriter", "save_panel"]


VIEWS = {"axial": 2, "coronal": 1, "sagittal": 0}


def _plane(x: torch.Tensor | np.ndarray, z: int | None, view: str = "axial") -> np.ndarray:
    a = np.asarray(torch.as_tensor(x).detach().float().cpu())
    a = a[0] if a.ndim in (3, 4) and a.shape[0] == 1 else a
    if a.ndim == 3:
        axis = VIEWS[view]
        a = np.take(a, a.shape[axis] // 2 if z is None else z, axis=axis)
    return a.T  # (X, Y) -> rows = Y, columns = X for display (coronal: rows = Z)


def save_panel(
    path: str | os.PathLike,
    images: Sequence[torch.Tensor | np.ndarray],
    titles: Sequence[str],
    window: tuple[float, float],
    error_window: float | None = None,
    suptitle: str = "",
    z: int | None = None,
    view: str = "axial",
) -> Path:
    """Save input/restored/reference images (mid slice of ``view``: ``axial`` (default), ``coronal`` or ``sagittal``;
    ``z`` = slice index along that view's axis; fixed ``window``) plus |restored - reference|.

    ``images`` is ``[input, restored, reference]``; the error panel is added automatically. Written atomically.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if view not in VIEWS:
        raise ValueError(f"view must be one of {sorted(VIEWS)}, got {view!r}")
    sl = [_plane(im, z, view) for im in images]
    err = np.abs(sl[1] - sl[2])
    emax = error_window if error_window is not None else (window[1] - window[0]) / 4
    fig, axes = plt.subplots(1, len(sl) + 1, figsize=(3.2 * (len(sl) + 1), 3.4))
    for ax, im, title in zip(axes, sl, titles, strict=False):
        ax.imshow(im, cmap="gray", vmin=window[0], vmax=window[1], origin="lower")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    axes[-1].imshow(err, cmap="magma", vmin=0, vmax=emax, origin="lower")
    axes[-1].set_title(f"|error| (0..{emax:.3g})", fontsize=9)
    axes[-1].axis("off")
    if suptitle:
        fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path, ".png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


class PanelWriter:
    """Evaluator handler: after each evaluation run, write ``<output_dir>/<prefix>_epoch<N>.png`` and
    ``<prefix>_latest.png`` for the first item of the first iteration.

    Args:
        output_dir: folder of the PNGs.
        window: display window in the tensors' units (e.g. ``(0, 0.8)`` for SUV / 10).
        titles: titles of input, restored, reference.
        epoch_engine: the trainer, whose epoch numbers the files (optional).
        scale: multiply intensities by this before display (e.g. back to SUV), applied to ``window`` too.
        keys: output keys shown as input, restored, reference (e.g. ``("cubic", "pred", "label")`` for SR, whose
            thick input is on another grid).
        view: ``axial``, ``coronal`` (shows z: through-plane SR) or ``sagittal``.
    """

    def __init__(
        self,
        output_dir: str,
        window: Sequence[float] = (0.0, 1.0),
        titles: Sequence[str] = ("low dose", "restored", "full dose"),
        prefix: str = "panel",
        epoch_engine: Engine | None = None,
        scale: float = 1.0,
        dose_key: str | None = None,
        keys: Sequence[str] = ("image", "pred", "label"),
        view: str = "axial",
    ) -> None:
        if len(keys) != 3:
            raise ValueError(f"keys must name input, restored and reference, got {keys!r}")
        self.keys = tuple(keys)
        self.view = view
        self.output_dir = output_dir
        self.window = (float(window[0]) * scale, float(window[1]) * scale)
        self.titles = list(titles)
        self.prefix = prefix
        self.epoch_engine = epoch_engine
        self.scale = float(scale)
        self.dose_key = dose_key
        self._item: dict | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._grab)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self._item = None

    def _grab(self, engine: Engine) -> None:
        if self._item is not None:
            return
        out = engine.state.output
        item = out[0] if isinstance(out, list) else out
        batch = engine.state.batch
        bitem = batch[0] if isinstance(batch, list) else batch
        self._item = {k: item[k].detach().cpu() for k in self.keys if k in item}
        if self.dose_key and isinstance(bitem, dict) and self.dose_key in bitem:
            self._item["dose"] = float(torch.as_tensor(bitem[self.dose_key]).reshape(-1)[0])

    def _write(self, engine: Engine) -> None:
        if self._item is None or not all(k in self._item for k in self.keys):
            return
        epoch = self.epoch_engine.state.epoch if self.epoch_engine is not None else engine.state.epoch
        ims = [self._item[k] * self.scale for k in self.keys]
        title = f"epoch {epoch}" + (f", {self.dose_key} {self._item['dose']:g}" if "dose" in self._item else "")
        path = save_panel(
            Path(self.output_dir) / f"{self.prefix}_epoch{epoch}.png",
            ims,
            self.titles,
            self.window,
            suptitle=title,
            view=self.view,
        )
        latest = Path(self.output_dir) / f"{self.prefix}_latest.png"
        tmp = temp_path(latest)
        tmp.write_bytes(path.read_bytes())
        os.replace(tmp, latest)
