"""PET quantification: SUVmean / SUVmax bias of every candidate against the full-dose reference inside the lesions
and named organs (the liver by default), per item, summarised per dose group.

Attached to an evaluator whose decollated ``engine.state.output`` items carry the candidates (``image``, ``pred``,
...) and ``label`` as ``(C, X, Y, Z)`` tensors in SUV, and whose ``engine.state.batch`` items carry the group key
and the region files of the embedded phantoms' datalist: ``lesions`` (0/1 NIfTI), ``labels`` (label map) and
``anatomy`` (``torso`` or ``brain``, which label table applies). Items without region files are skipped.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events

from ..distributed import is_main_process
from ..io.atomic import write_csv_atomic, write_text_atomic

__all__ = ["SUVBiasReport"]

STATS = ("suvmean_bias_pct", "suvmax_bias_pct")


class SUVBiasReport:
    """Per item, candidate and region: SUVmean and SUVmax bias in percent of the reference's
    (:func:`common.metrics.suv_bias_in_masks`). Writes ``<output_dir>/<prefix>_items.csv`` (one row per item,
    candidate and region) and ``<prefix>_summary.md`` (mean per group, candidate and region).

    Args:
        output_dir: where the CSV and Markdown go.
        candidates: ordered ``{tag: output key}`` measured against ``label`` (default: input and output).
        group_key: batch item key to group by (``drf``).
        organs: organ names of the phantoms' label tables measured besides the lesions.
        prefix: file-name prefix.
    """

    def __init__(
        self,
        output_dir: str,
        candidates: dict[str, str] | None = None,
        group_key: str = "drf",
        organs: Sequence[str] = ("liver",),
        prefix: str = "test_suv_bias",
    ) -> None:
        self.output_dir, self.group_key, self.prefix = Path(output_dir), group_key, prefix
        self.candidates = dict(candidates) if candidates else {"input": "image", "output": "pred"}
        self.organs = list(organs)
        self.rows: list[dict[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, lambda _: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _masks(self, item: dict) -> dict[str, np.ndarray]:
        from ..io import load_nifti
        from ..phantoms.pet import PET_BRAIN_LABELS, PET_TORSO_LABELS

        masks = {}
        if item.get("lesions"):
            masks["lesion"] = load_nifti(str(item["lesions"]))[0] > 0
        if item.get("labels"):
            labels = load_nifti(str(item["labels"]))[0]
            table = PET_TORSO_LABELS if item.get("anatomy") == "torso" else PET_BRAIN_LABELS
            masks.update({o: labels == table[o] for o in self.organs if o in table})
        return masks

    def _collect(self, engine: Engine) -> None:
        from ..metrics import suv_bias_in_masks

        outputs = engine.state.output if isinstance(engine.state.output, list) else [engine.state.output]
        batch = engine.state.batch if isinstance(engine.state.batch, list) else [engine.state.batch]
        for out, item in zip(outputs, batch, strict=False):
            masks = self._masks(item) if isinstance(item, dict) else {}
            if not masks:
                continue
            group = float(torch.as_tensor(item.get(self.group_key)).reshape(-1)[0])
            ref = torch.as_tensor(out["label"]).detach().cpu().float()[0]
            for tag, key in self.candidates.items():
                pred = torch.as_tensor(out[key]).detach().cpu().float()[0]
                for region, b in suv_bias_in_masks(pred, ref, masks).items():
                    self.rows.append({"item": str(item.get("image", "")), self.group_key: group, "method": tag,
                                      "region": region, **b})  # fmt: skip

    def summary(self) -> list[dict[str, Any]]:
        """Mean bias per (group, candidate, region), sorted by group then candidate order."""
        acc: dict[tuple, list[dict]] = defaultdict(list)
        for r in self.rows:
            acc[(r[self.group_key], r["method"], r["region"])].append(r)
        order = {t: i for i, t in enumerate(self.candidates)}
        keys = sorted(acc, key=lambda k: (k[0], order.get(k[1], 99), k[2]))
        return [{self.group_key: g, "method": m, "region": reg, "n": len(acc[(g, m, reg)]),
                 **{s: float(np.mean([r[s] for r in acc[(g, m, reg)]])) for s in STATS}}
                for g, m, reg in keys]  # fmt: skip

    def markdown(self) -> str:
        lines = [f"| {self.group_key} | method | region | n | SUVmean bias (%) | SUVmax bias (%) |", "|---" * 6 + "|"]
        for e in self.summary():
            lines.append(f"| {e[self.group_key]:g} | {e['method']} | {e['region']} | {e['n']} | "
                         f"{e['suvmean_bias_pct']:+.2f} | {e['suvmax_bias_pct']:+.2f} |")  # fmt: skip
        return "\n".join(lines) + "\n"

    def _write(self, engine: Engine) -> None:
        if not self.rows or not is_main_process():
            return
        self.output_dir.mkdir(parents=True, exist_ok=True)
        write_csv_atomic(self.output_dir / f"{self.prefix}_items.csv", self.rows)
        write_text_atomic(self.output_dir / f"{self.prefix}_summary.md", self.markdown())
        print(f"\n{self.prefix} per {self.group_key}:\n{self.markdown()}", flush=True)
