"""``restorezoo benchmark``: every bundle against its input and classical baselines, per dose, with speed and memory.

For each bundle (discovered: ``bundles/*/configs/benchmark.yaml``) and each of its runs (SR: one per factor):

1. weights: ``--ckpt`` or the run's ``models/model.pt``; missing -> trained with the default config (``--train``); a run
   with ``weights: pretrained`` measures the weights shipped in the bundle (``pretrained/model.pt``), skipped if absent;
2. baselines (``restorezoo.baselines``): each one's parameter is tuned per dose on the VALIDATION split, by the PSNR of
   the bundle's own first metric report (same metric code, window, data range), never on the test split;
3. the test split at the benchmark's doses through the bundle's ``inference.yaml`` + ``evaluate.yaml`` (+
   ``benchmark.yaml``), with the tuned baselines added to the post-processing and to the metric report's candidates,
   so input, baselines and method are measured by one code path on the same items; middle slices are kept for panels;
4. speed (``restorezoo.speed``): voxels/s, seconds per volume, peak RSS, parameters, FLOPs per voxel, achieved GFLOP/s
   and its fraction of the measured fp32 matmul peak, next to the MONAI UNet reference measured in the same run.

Outputs in ``--out``: ``results.csv`` (one row per bundle, run, dose, method), ``speed.csv``, ``results.md`` (tables
and where each target stands), ``figures/<bundle>_<run>_psnr.png`` (metric vs dose) and ``_panels.png`` (fixed
window), and, with ``--readme``, the README section between ``<!-- benchmark:start -->`` / ``<!-- benchmark:end -->``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import platform
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from ignite.engine import Engine, Events

from common.bundle_utils import PRETRAINED_WEIGHTS as PRETRAINED
from restorezoo.peers import run_overlays

__all__ = [
    "PanelCollector",
    "Task",
    "load_task",
    "read_results",
    "render",
    "run_benchmark",
    "scoring_convention",
    "table_of",
    "task_tables",
]

logger = logging.getLogger(__name__)
START, END = "<!-- benchmark:start -->", "<!-- benchmark:end -->"
# the metric columns of the reports' CSVs (<candidate>_<metric>), longest first so "body_rmse" wins over "rmse"
_METRICS = ("body_rmse", "body_bias", "nrmse", "psnr", "ssim", "rmse", "mae")


@dataclass
class Task:
    """What ``configs/benchmark.yaml``'s ``benchmark`` block says about a bundle."""

    task: str
    group_key: str
    groups: list[float]
    baselines: list[str]
    slice_wise: bool
    panel_window: list[float]
    panel_keys: list[str] | None
    target_group: float | None
    target_over: str | None
    runs: list[dict[str, Any]] = field(default_factory=lambda: [{"name": "default"}])
    speed: dict[str, Any] = field(default_factory=dict)


def load_task(bundle: Path) -> Task:
    """The benchmark description of ``bundle`` (``configs/benchmark.yaml``)."""
    from common.configs import expand_shared_macros
    from restorezoo.baselines import available_baselines

    path = bundle / "configs" / "benchmark.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing (every bundle describes its benchmark there)")
    spec = (yaml.safe_load(expand_shared_macros(path.read_text())) or {}).get("benchmark")
    if not spec:
        raise ValueError(f"{path}: no 'benchmark' block")
    baselines = spec.get("baselines", "auto")
    return Task(
        task=str(spec.get("task") or bundle.name),
        group_key=spec["group_key"],
        groups=[float(g) for g in spec["groups"]],
        baselines=available_baselines(bool(spec.get("slice_wise", False))) if baselines == "auto" else list(baselines),
        slice_wise=bool(spec.get("slice_wise", False)),
        panel_window=[float(v) for v in spec["panel_window"]],
        panel_keys=spec.get("panel_keys"),
        target_group=spec.get("target_group"),
        target_over=spec.get("target_over"),
        runs=spec.get("runs") or [{"name": "default"}],
        speed=spec.get("speed") or {},
    )


def _group_value(value: Any) -> float:
    """A dose / DRF group as a plain float: the reports write float32 tensors (0.1 -> 0.10000000149...), so keep
    the 6 significant digits float32 carries and the config's 0.1 and the report's 0.1 fall in one group."""
    return float(f"{float(value):.6g}")


class PanelCollector:
    """Evaluator handler: keep the middle axial slice of ``keys`` for the first item of every dose group, saved to
    ``<output_dir>/panels.npz`` (``"<group>|<key>"`` -> 2D array) when the run completes."""

    def __init__(self, output_dir: str, keys: Sequence[str], group_key: str) -> None:
        self.output_dir, self.keys, self.group_key = Path(output_dir), list(keys), group_key
        self.slices: dict[str, np.ndarray] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._save)

    def _collect(self, engine: Engine) -> None:
        outputs = engine.state.output if isinstance(engine.state.output, list) else [engine.state.output]
        batch = engine.state.batch if isinstance(engine.state.batch, list) else [engine.state.batch]
        for out, item in zip(outputs, batch, strict=False):
            group = _group_value(torch.as_tensor(item.get(self.group_key, out.get(self.group_key))).reshape(-1)[0])
            for key in self.keys:
                name = f"{group:g}|{key}"
                if name in self.slices or out.get(key) is None:
                    continue
                arr = torch.as_tensor(out[key]).detach().cpu().float().numpy()[0]
                self.slices[name] = arr[:, :, arr.shape[2] // 2]

    def _save(self, engine: Engine) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(self.output_dir / "panels.npz", **self.slices)


# ------------------------------------------------------------------------------------------------------- configs


def _parser(bundle: Path, files: Sequence[Path], overrides: dict[str, Any]):
    from monai.bundle import ConfigParser

    from common.configs import load_config_files

    parser = ConfigParser()
    parser.read_config(load_config_files(files))
    parser.read_meta(str(bundle / "configs" / "metadata.json"))
    parser["bundle_root"] = str(bundle)
    for k, v in overrides.items():
        parser[k] = v
    return parser


def _first_report_index(parser) -> int:
    for i, h in enumerate(parser.get("handlers") or []):
        if isinstance(h, dict) and str(h.get("_target_", "")).endswith("GroupedMetricsReport"):
            return i
    raise ValueError("the evaluation config has no GroupedMetricsReport in handlers")


def scoring_convention(bundle: Path) -> dict[str, Any]:
    """How ``bundle`` scores its test split: the settings of the first metric report of its evaluation (window, data
    range, SSIM axis, body threshold, metric names; :meth:`common.handlers.GroupedMetricsReport.metric_kwargs`), which
    the benchmark also uses for the baselines. The bundles of one task must agree on it."""
    parser = _parser(bundle, _eval_files(bundle, []), {})
    report = parser.get_parsed_content(f"handlers#{_first_report_index(parser)}", instantiate=True)
    return {k: v for k, v in report.metric_kwargs().items() if k != "mask"}


def _eval_files(bundle: Path, extra: Sequence[Path]) -> list[Path]:
    c = bundle / "configs"
    return [c / "inference.yaml", c / "evaluate.yaml", c / "benchmark.yaml", *extra]


# -------------------------------------------------------------------------------------------------------- tuning


def tune_baselines(
    bundle: Path,
    task: Task,
    files: Sequence[Path],
    overrides: dict[str, Any],
    quick: bool = False,
    cache_dir: Path | None = None,
) -> tuple[dict[str, dict[float, float]], list[dict[str, Any]]]:
    """Per baseline and validation dose, the parameter with the best mean PSNR of the bundle's first report
    (``restorezoo.baselines.tune``: a walk on the grid from its start value). Returns ``({name: {dose: param}}, rows
    of every tried value)``."""
    from common.io import load_nifti
    from restorezoo.baselines import denoise, tune

    if not task.baselines:
        return {}, []
    parser = _parser(bundle, files, {**overrides, "data_split": "validation"})
    report = parser.get_parsed_content(f"handlers#{_first_report_index(parser)}", instantiate=True)
    metric_kw = report.metric_kwargs()  # the report's own settings
    by_dose: dict[float, list[tuple[np.ndarray, torch.Tensor]]] = defaultdict(list)
    for item in parser.get_parsed_content("datalist_items"):
        image, _ = load_nifti(item["image"])
        label, _ = load_nifti(item["label"])
        by_dose[_group_value(item[task.group_key])].append((image, torch.as_tensor(label)[None]))
    rows: list[dict[str, Any]] = []
    best: dict[str, dict[float, float]] = defaultdict(dict)
    for name in task.baselines:
        previous = None  # the walk at each dose starts from the value tuned at the previous (lower) dose
        for dose, pairs in sorted(by_dose.items()):

            def score(param: float, name: str = name, pairs: list = pairs) -> float:
                values = []
                for image, ref in pairs:
                    out = torch.as_tensor(denoise(name, image, param, task.slice_wise, cache_dir))[None]
                    values.append(_metrics(out, ref, metric_kw)["psnr"])
                return float(np.mean(values))

            tried = tune(name, score, quick, start=previous)
            rows += [{"baseline": name, task.group_key: dose, "param": p, "val_psnr": v, "n": len(pairs)}
                     for p, v in sorted(tried.items())]  # fmt: skip
            best[name][dose] = previous = max(tried, key=tried.__getitem__)
            logger.info("%s: %s at %s %g tuned to %g (%d values tried)", bundle.name, name, task.group_key, dose,
                        best[name][dose], len(tried))  # fmt: skip
    return dict(best), rows


def _metrics(pred: torch.Tensor, ref: torch.Tensor, kw: dict[str, Any]) -> dict[str, float]:
    from common.handlers import compute_item_metrics

    kw = dict(kw)
    kw["names"] = sorted(set(kw["names"]) | {"psnr"})
    return compute_item_metrics(pred, ref, **kw)


# ---------------------------------------------------------------------------------------------------- evaluation


def evaluate_run(
    bundle: Path,
    task: Task,
    files: Sequence[Path],
    overrides: dict[str, Any],
    params: dict[str, dict[float, float]],
    out_dir: Path,
    cache_dir: Path | None = None,
) -> tuple[Path, Path | None, float]:
    """The bundle's evaluation on the test split with the tuned baselines added; returns (metric items CSV, SUV bias
    items CSV or None, seconds)."""
    parser = _parser(bundle, files, {**overrides, "data_split": "test", "output_dir": str(out_dir)})
    names = list(params)
    if names:
        transforms = parser["postprocessing"]["transforms"]
        transforms.append(
            {
                "_target_": "restorezoo.baselines.BaselineDenoised",
                "keys": "image",
                "params": {n: {str(k): v for k, v in t.items()} for n, t in params.items()},
                "dose_key": task.group_key,
                "slice_wise": task.slice_wise,
                "cache_dir": None if cache_dir is None else str(cache_dir),
                "from_file": True,  # the stored input, as the tuning saw it, not a bundle's clipped copy
            }
        )
    handlers = parser["handlers"]
    index = _first_report_index(parser)
    report = handlers[index]
    if names and "candidates" not in report:
        report["candidates"] = {"input": "image", **{n: n for n in names}, "output": "pred"}
    for h in handlers:  # the bundle's SUV bias report (PET convention) measures the baselines too
        if _is_suv_bias(h):
            h["candidates"] = report.get("candidates") or {"input": "image", "output": "pred"}
    keys = task.panel_keys or ["image", *names, "pred", "label"]
    handlers.append(
        {
            "_target_": "restorezoo.benchmark.PanelCollector",
            "output_dir": str(out_dir),
            "keys": keys,
            "group_key": task.group_key,
        }
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    config = out_dir / "benchmark_config.json"
    parser.export_config_file(parser.get(), str(config))
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(config)]
    cmd += ["--meta_file", str(bundle / "configs" / "metadata.json")]
    cmd += ["--logging_file", str(bundle / "configs" / "logging.conf")]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=bundle, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    (out_dir / "evaluation.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"{bundle.name}: benchmark evaluation failed (log: {out_dir / 'evaluation.log'})")
    parsed = _parser(bundle, files, {**overrides, "data_split": "test"})
    items = out_dir / f"{parsed.get_parsed_content(f'handlers#{index}#prefix')}_items.csv"
    bias = next((i for i, h in enumerate(handlers) if _is_suv_bias(h)), None)
    bias_items = None if bias is None else out_dir / f"{parsed.get_parsed_content(f'handlers#{bias}#prefix')}_items.csv"
    return items, bias_items, seconds


def _is_suv_bias(handler: Any) -> bool:
    return isinstance(handler, dict) and str(handler.get("_target_", "")).endswith("SUVBiasReport")


def _suv_bias(path: Path, group_key: str) -> dict[tuple[float, str], dict[str, float]]:
    """Mean SUV bias per (dose, method): ``{<region>_suvmean_bias_pct: ..., <region>_suvmax_bias_pct: ...}``."""
    if not path.is_file() or not path.stat().st_size:
        return {}
    with open(path) as f:
        rows = list(csv.DictReader(f))
    acc: dict[tuple[float, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        for stat in ("suvmean_bias_pct", "suvmax_bias_pct"):
            acc[(_group_value(r[group_key]), r["method"])][f"{r['region']}_{stat}"].append(float(r[stat]))
    return {k: {m: float(np.mean(v)) for m, v in d.items()} for k, d in acc.items()}


def summarize(
    items_csv: Path,
    bundle: str,
    run: str,
    task: Task,
    params: dict[str, dict[float, float]],
    bias_csv: Path | None = None,
) -> list[dict]:
    """Mean of every ``<method>_<metric>`` column per dose group -> one row per (dose, method), with the mean SUV
    biases of ``bias_csv`` (PET)."""
    bias = _suv_bias(bias_csv, task.group_key) if bias_csv else {}
    with open(items_csv) as f:
        items = list(csv.DictReader(f))
    groups: dict[float, list[dict]] = defaultdict(list)
    for r in items:
        groups[_group_value(r[task.group_key])].append(r)
    rows = []
    for g in sorted(groups):
        rs = groups[g]
        methods: dict[str, dict[str, float]] = defaultdict(dict)
        for col in rs[0]:
            metric = next((m for m in _METRICS if col.endswith(f"_{m}")), None)
            if metric is None or col in ("item", task.group_key):
                continue
            method = col[: -len(metric) - 1]
            try:
                methods[method][metric] = float(np.mean([float(r[col]) for r in rs]))
            except ValueError:
                continue
        for method, values in methods.items():
            param = params.get(method, {})
            tuned = None
            if param:
                tuned = param[min(param, key=lambda k: abs(np.log(k) - np.log(g)))]
            rows.append({"bundle": bundle, "run": run, task.group_key: g, "group_key": task.group_key,
                         "method": method, "param": tuned, "n": len(rs), **values,
                         **bias.get((g, method), {})})  # fmt: skip
    return rows


# -------------------------------------------------------------------------------------------------------- outputs


def _plot(rows: list[dict], task: Task, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for method in dict.fromkeys(r["method"] for r in rows):
        pts = sorted((r[task.group_key], r["psnr"]) for r in rows if r["method"] == method and "psnr" in r)
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", label=method, lw=2.5 if method == "output" else 1.2)
    ax.set_xscale("log")
    ax.set_xlabel(task.group_key)
    ax.set_ylabel("PSNR (dB)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _panels(npz: Path, task: Task, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = np.load(npz)
    groups = sorted({float(k.split("|")[0]) for k in data.files})
    keys = list(dict.fromkeys(k.split("|")[1] for k in data.files))
    if not groups:
        return
    fig, axes = plt.subplots(len(groups), len(keys), figsize=(1.9 * len(keys), 1.9 * len(groups)), squeeze=False)
    lo, hi = task.panel_window
    for i, g in enumerate(groups):
        for j, k in enumerate(keys):
            ax = axes[i, j]
            name = f"{g:g}|{k}"
            if name in data.files:
                ax.imshow(np.rot90(data[name]), cmap="gray", vmin=lo, vmax=hi)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(k, fontsize=8)
            if j == 0:
                ax.set_ylabel(f"{task.group_key} {g:g}", fontsize=8)
    fig.suptitle(f"{title} (window {lo:g} .. {hi:g})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None or v == "":
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}f}" if abs(v) >= 0.01 or v == 0 else f"{v:.2e}"
    return str(v)


def _same_measurement(a: dict, b: dict) -> bool:
    """Whether two rows hold the same values of every metric both have (relative tolerance 1e-6)."""
    keys = [m for m in _METRICS if a.get(m) is not None and b.get(m) is not None]
    return bool(keys) and all(abs(a[m] - b[m]) <= 1e-6 * max(1.0, abs(a[m])) for m in keys)


def table_of(row: dict, tasks: dict[str, Task]) -> str:
    """The table a result row belongs to: its run's ``table`` (a run measured on other data than the task's test
    split, e.g. the held-out anatomy), else its bundle's task."""
    return row.get("table") or tasks[row["bundle"]].task


def task_tables(rows: list[dict], tasks: dict[str, Task]) -> dict[str, list[dict]]:
    """The rows of every bundle grouped by table (``benchmark.task`` of configs/benchmark.yaml, or a run's own
    ``table``), each with a
    ``label``: a bundle's output is named after the bundle; the input and the baselines, which every bundle of a task
    measures by the same convention on the same items, appear once per group value (a bundle whose value differs
    gets its own row, labelled ``<method> (<bundle>)``). Per group value: input, baselines, then the outputs."""
    out: dict[str, list[dict]] = defaultdict(list)
    seen: dict[tuple, dict] = {}
    for r in rows:
        task = tasks[r["bundle"]]
        table = table_of(r, tasks)
        label = r["method"]
        if label == "output" and r.get("peer"):
            label = f"{r['peer']} (peer)"
        elif label == "output":
            own_runs = {x["run"] for x in rows if x["bundle"] == r["bundle"] and not x.get("peer")}
            first = task.runs[0].get("name", "default")  # the bundle's main run is named after the bundle alone
            label = r["bundle"] if own_runs == {first} else f"{r['bundle']} ({r['run']})"
        else:
            key = (table, r[task.group_key], label)
            if key in seen:
                if _same_measurement(seen[key], r):
                    continue
                label = f"{label} ({r['bundle']})"
            else:
                seen[key] = r
        out[table].append({**r, "label": label})
    return {
        name: sorted(rs, key=lambda r: (r[tasks[r["bundle"]].group_key], r["method"] == "output"))
        for name, rs in out.items()
    }


def markdown(rows: list[dict], speed: list[dict], tasks: dict[str, Task], meta: dict[str, Any]) -> str:
    """The results as Markdown: per task one table (group value x method: input, baselines and every bundle of the
    task, measured by the task's one convention), the figures of each bundle and run, the targets, the speed table. A
    tuned parameter at either end of its grid is flagged "(grid edge)": the best value may lie outside the grid."""
    from restorezoo.baselines import GRIDS, parameter_grid

    lines = [f"Machine: {meta['machine']}. Command: `{meta['command']}`. Date: {meta['date']}.", ""]
    targets = []
    for name, rs in task_tables(rows, tasks).items():
        group_key = tasks[rs[0]["bundle"]].group_key
        metrics = [m for m in ("psnr", "ssim", "rmse", "nrmse", "mae", "body_rmse", "body_bias")
                   if any(r.get(m) is not None for r in rs)]  # fmt: skip
        metrics += sorted({k for r in rs for k in r if k.endswith("_bias_pct") and r.get(k) is not None})
        bundles = list(dict.fromkeys(r["bundle"] for r in rs))
        lines += [f"### {name}", "", "Bundles: " + ", ".join(f"`{b}`" for b in bundles) + ".", ""]
        lines += ["| " + group_key + " | method | tuned param | " + " | ".join(metrics) + " |"]
        lines += ["|---|---|---|" + "---|" * len(metrics)]
        for r in rs:
            vals = " | ".join(_fmt(r.get(m), 4 if m in ("ssim", "nrmse") else 2) for m in metrics)
            param = _fmt(r.get("param"), 3)
            if r.get("param") is not None and r["method"] in GRIDS:
                grid = parameter_grid(r["method"])
                param += " (grid edge)" if float(r["param"]) in (grid[0], grid[-1]) else ""
            label = f"**{r['label']}**" if r["method"] == "output" else r["label"]
            lines.append(f"| {r[group_key]:g} | {label} | {param} | {vals} |")
        lines.append("")
        for bundle, run in dict.fromkeys((r["bundle"], r["run"]) for r in rs):
            lines.append(f"{bundle} ({run}): ![PSNR vs {group_key}](figures/{bundle}_{run}_psnr.png) "
                         f"![panels](figures/{bundle}_{run}_panels.png)")  # fmt: skip
        lines.append("")
    by_run: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in rows:
        by_run[(r["bundle"], r["run"])].append(r)
    for (bundle, run), rs in by_run.items():
        task = tasks[bundle]
        if rs[0].get("peer"):
            continue
        if task.target_group is not None:

            def at_target(r: dict, task: Task = task) -> bool:
                return abs(r[task.group_key] - float(task.target_group)) < 1e-9 and "psnr" in r

            at = [r for r in rs if at_target(r)]
            out = next((r for r in at if r["method"] == "output"), None)
            # every baseline row of the run's table, whichever run measured it (a merged table holds each baseline
            # once, e.g. BM3D re-run with one bundle's shipped weights), not only the run's own
            others = [r for r in rows if r["method"] not in ("output", "input")
                      and table_of(r, tasks) == table_of(rs[0], tasks) and at_target(r)]  # fmt: skip
            if task.target_over:
                others = [r for r in others if r["method"] == task.target_over]
            if out and others:
                best = max(others, key=lambda r: r["psnr"])
                gain = out["psnr"] - best["psnr"]
                targets.append(
                    f"- {bundle} ({run}) at {task.group_key} {task.target_group:g}: output {out['psnr']:.2f} dB vs "
                    f"best baseline {best['method']} {best['psnr']:.2f} dB: {gain:+.2f} dB "
                    f"(target >= +1 dB: {'met' if gain >= 1 else 'NOT met'})"
                )
            peers = [r for r in rows if r.get("peer") and r["method"] == "output" and "psnr" in r
                     and table_of(r, tasks) == table_of(rs[0], tasks)
                     and abs(r[task.group_key] - float(task.target_group)) < 1e-9]  # fmt: skip
            for peer in peers if out else []:
                gain = out["psnr"] - peer["psnr"]
                targets.append(
                    f"- {bundle} ({run}) at {task.group_key} {task.target_group:g}: output {out['psnr']:.2f} dB vs "
                    f"peer {peer['peer']} {peer['psnr']:.2f} dB: {gain:+.2f} dB (target > 0: "
                    f"{'met' if gain > 0 else 'NOT met'})"
                )
    if speed:
        lines += ["### Speed and memory (128 x 128 x 96 output volume)", ""]
        lines += ["| model | params (M) | s / volume | output voxels/s | x reference | FLOPs / voxel | GFLOP/s "
                  "| fraction of fp32 matmul peak | peak RSS (MB) |"]  # fmt: skip
        lines += ["|---|---|---|---|---|---|---|---|---|"]
        for s in speed:
            note = f" (x{s['per_volume_factor']:g} from one call)" if s.get("per_volume_factor", 1) != 1 else ""
            lines.append(
                f"| {s['model']} | {s['params'] / 1e6:.2f} | {s['seconds_per_volume']:.2f}{note} | "
                f"{s['voxels_per_s']:.3g} | {s['x_reference']:.3f} | {s['flops_per_voxel']:.3g} | "
                f"{s['gflops_per_s']:.1f} | {s['peak_fraction']:.2f} | {s['peak_rss_MB']:.0f} |"
            )
            denoiser = s["model"] in tasks and bool(tasks[s["model"]].baselines)  # SR has no BM4D comparison
            if denoiser and meta.get("bm4d_seconds"):
                bm = float(meta["bm4d_seconds"])
                targets.append(
                    f"- {s['model']}: {s['seconds_per_volume']:.1f} s per 128 x 128 x 96 volume vs BM4D "
                    f"{bm:.1f} s: {s['seconds_per_volume'] / bm:.3f} of BM4D's time (target <= 0.1: "
                    f"{'met' if s['seconds_per_volume'] <= 0.1 * bm else 'NOT met'})"
                )
            if s["model"] != "reference" and "reference" not in s["model"]:
                targets.append(
                    f"- {s['model']}: {s['peak_fraction'] * 100:.0f} % of the measured fp32 matmul peak "
                    f"({s['matmul_peak_gflops']:.0f} GFLOP/s) (target >= 30 %: "
                    f"{'met' if s['peak_fraction'] >= 0.3 else 'NOT met'})"
                )
        lines.append("")
    if targets:
        lines += ["### Targets", "", *targets, meta.get("bm4d_note", ""), ""]
    return "\n".join(lines)


def update_readme(readme: Path, body: str) -> None:
    """Replace the text between the benchmark markers of ``readme`` with ``body``."""
    text = readme.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{readme}: no {START} ... {END} markers")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{body}\n{END}{tail}")


# ---------------------------------------------------------------------------------------------------------- runner


def _restrict_baselines(task: Task, baselines: Sequence[str] | None) -> Task:
    """``task`` with only the chosen baselines (every one it has when ``baselines`` is None)."""
    if baselines is None:
        return task
    from restorezoo.baselines import GRIDS

    unknown = sorted(set(baselines) - set(GRIDS))
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; known: {sorted(GRIDS)}")
    return dataclasses.replace(task, baselines=[b for b in task.baselines if b in set(baselines)])


def _restrict_runs(tasks: dict[str, Task], runs: Sequence[str] | None) -> dict[str, Task]:
    """Each task with only the runs named in ``runs`` (all of them when None); a bundle that has none of them keeps an
    empty list (it is skipped). A name that no selected bundle has is an error, before anything runs."""
    if runs is None:
        return tasks
    known = {r.get("name", "default") for t in tasks.values() for r in t.runs}
    unknown = sorted(set(runs) - known)
    if unknown:
        raise ValueError(f"unknown run(s) {unknown}; the selected bundles have: {sorted(known)}")
    wanted = set(runs)
    return {
        b: dataclasses.replace(t, runs=[r for r in t.runs if r.get("name", "default") in wanted])
        for b, t in tasks.items()
    }


def _train_configs(bundle: Path, run: dict[str, Any]) -> list[Path]:
    """The overlays of a run's training, after ``train.yaml``: its ``train_overlays`` (files of the bundle's configs,
    e.g. ``train_full.yaml`` for a peer at the full recipe's budget), then its peer overlay(s)."""
    return [bundle / "configs" / name for name in run.get("train_overlays", [])] + run_overlays(run)


def _peer_available(bundle: Path, run: dict[str, Any]) -> bool:
    """Whether a run's optional package (``requires``, a module name) is installed; logs the skip when not."""
    import importlib.util

    module = run.get("requires")
    if not module or importlib.util.find_spec(module) is not None:
        return True
    logger.warning("%s: %s skipped: optional package '%s' is not installed (%s)", bundle.name,
                   run.get("peer") or run.get("name"), module, run.get("install", "see restorezoo/peers"))  # fmt: skip
    return False


def _shipped(run: dict[str, Any]) -> bool:
    """Whether a run measures the weights shipped with the bundle (``weights: pretrained`` in its benchmark.yaml)."""
    return run.get("weights") == "pretrained"


def _train(bundle: Path, ckpt_dir: Path, run: dict[str, Any], extra: Sequence[Path], overrides: dict[str, Any]):
    files = [bundle / "configs" / "train.yaml", *extra]
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", repr([str(f) for f in files])]
    cmd += [f"--bundle_root={bundle}", f"--ckpt_dir={ckpt_dir}"]
    cmd += [f"--{k}={v}" for k, v in {**run.get("overrides", {}), **overrides}.items()]
    logger.info("training %s: %s", bundle.name, " ".join(cmd))
    subprocess.run(cmd, cwd=bundle, check=True)  # the configs' shared pieces resolve from the bundle folder


def run_benchmark(
    bundles: Sequence[str | Path] | None = None,
    bundles_dir: str | Path = "bundles",
    out: str | Path = "benchmarks/results",
    train: bool = False,
    ckpts: dict[str, str] | None = None,
    extra_configs: Sequence[str | Path] = (),
    overrides: dict[str, Any] | None = None,
    quick: bool = False,
    speed: bool = True,
    speed_shape: Sequence[int] | None = None,
    threads: int = 2,
    readme: str | Path | None = None,
    command: str = "",
    baselines: Sequence[str] | None = None,
    runs: Sequence[str] | None = None,
) -> Path:
    """Run the benchmark (see the module docstring); returns the path of ``results.md``.

    ``baselines``: only these of each task's baselines (e.g. ``["gaussian", "tv"]`` to leave out the slow BM3D /
    BM4D); a name no task has is an error. ``None``: every baseline the task lists.
    ``runs``: only these runs of each bundle's ``benchmark.yaml`` (e.g. ``["shipped"]`` to measure the shipped weights
    without training the defaults); a name no selected bundle has is an error. ``None``: every run.
    """
    out = Path(out).resolve()
    (out / "figures").mkdir(parents=True, exist_ok=True)
    extra = [Path(e).resolve() for e in extra_configs]
    overrides = dict(overrides or {})
    ckpts = dict(ckpts or {})
    root = Path(bundles_dir).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no bundles folder (pass the folder that holds the bundles)")
    found = sorted(p for p in root.iterdir() if (p / "configs" / "benchmark.yaml").is_file())
    selected = [Path(b).resolve() if "/" in str(b) else root / str(b) for b in bundles] if bundles else found
    rows: list[dict] = []
    tuning: list[dict] = []
    speed_rows_all: list[dict] = []
    described = {b.name: _restrict_baselines(load_task(b), baselines) for b in selected}
    tasks = _restrict_runs(described, runs)  # the runs measured now; tables name them as described
    cache = out / "work" / "baseline_cache"  # baseline outputs, shared by the bundles that share embedded data
    for bundle in selected:
        task = tasks[bundle.name]
        host_params: dict[str, dict[float, float]] | None = None
        for run in task.runs:
            name = run.get("name", "default")
            if not _peer_available(bundle, run):
                continue
            run_extra = [*extra, *run_overlays(run)]  # evaluation: the peer's network, not its training budget
            run_over = {**run.get("overrides", {}), **overrides}
            ckpt_dir = bundle / run.get("ckpt_subdir", "models")
            key = f"{bundle.name}:{name}" if f"{bundle.name}:{name}" in ckpts else bundle.name
            ckpt = Path(ckpts[key]) if key in ckpts else ckpt_dir / "model.pt"
            if _shipped(run):  # the weights shipped in the bundle: measured as they are, never trained here
                ckpt = Path(ckpts[f"{bundle.name}:{name}"]) if f"{bundle.name}:{name}" in ckpts else bundle / PRETRAINED
                if not ckpt.is_file():
                    logger.warning("%s: run '%s' skipped: no shipped weights %s", bundle.name, name, ckpt)
                    continue
            elif not ckpt.is_file():
                if not train:
                    raise FileNotFoundError(f"{ckpt}: no weights for {bundle.name} ({name}); pass --train or --ckpt")
                _train(bundle, ckpt_dir, run, [*extra, *_train_configs(bundle, run)], overrides)
            files = _eval_files(bundle, run_extra)
            run_over["ckpt_path"] = str(ckpt)
            own_data = bool(run.get("table"))  # measured on other data: baselines tuned on that data's validation
            if (run.get("peer") or _shipped(run)) and host_params is not None and not own_data:
                params, tried = host_params, []  # the host's baselines, tuned once
            else:
                params, tried = tune_baselines(bundle, task, files, run_over, quick, cache)
                host_params = host_params if own_data else params
            tuning += [{"bundle": bundle.name, "run": name, **t} for t in tried]
            work = out / "work" / bundle.name / name
            items_csv, bias_csv, seconds = evaluate_run(bundle, task, files, run_over, params, work, cache)
            rs = summarize(items_csv, bundle.name, name, task, params, bias_csv)
            for r in rs:
                r["eval_seconds"] = seconds
                if run.get("peer"):
                    r["peer"] = run["peer"]
                if run.get("table"):
                    r["table"] = run["table"]
            rows += rs
            _plot(rs, task, out / "figures" / f"{bundle.name}_{name}_psnr.png", f"{bundle.name} ({name}), test split")
            _panels(work / "panels.npz", task, out / "figures" / f"{bundle.name}_{name}_panels.png", bundle.name)
        if speed:
            from restorezoo.speed import SHAPE, speed_rows

            shape = tuple(speed_shape or task.speed.get("input_shape") or SHAPE)
            reference = speed_rows_all[0] if speed_rows_all else None  # measured once per benchmark run
            sr = speed_rows(bundle, threads, 1 if quick else 2, shape, task.speed.get("overrides"),
                            float(task.speed.get("per_volume_factor", 1.0)), reference)  # fmt: skip
            if not speed_rows_all:
                speed_rows_all.append(sr[0])
            speed_rows_all.append(sr[1])
    _write_csv(out / "results.csv", rows)
    _write_csv(out / "tuning.csv", tuning)
    _write_csv(out / "speed.csv", speed_rows_all)
    meta = {
        "machine": f"{_cpu_model()}, {torch.get_num_threads()} torch threads available, "
        f"{threads} used for speed, torch {torch.__version__}",
        "command": command or "restorezoo benchmark",
        "date": time.strftime("%Y-%m-%d"),
    }
    _bm4d_meta(meta, speed)
    md = markdown(rows, speed_rows_all, described, meta)
    (out / "results.md").write_text(md)
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    if readme:
        update_readme(Path(readme), _relink(md, out, Path(readme).resolve().parent))
    return out / "results.md"


def _cpu_model() -> str:
    """The CPU model name (Linux ``/proc/cpuinfo``), else the platform's processor / machine string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a ``results.csv`` with numbers as floats (empty cells: None)."""
    with open(path) as f:
        return [_numeric(r) for r in csv.DictReader(f)]


def _numeric(row: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        if k in ("bundle", "run", "method", "group_key", "model", "table"):
            out[k] = v
            continue
        try:
            out[k] = float(v) if v != "" else None
        except ValueError:
            out[k] = v
    group = row.get("group_key")
    if group and out.get(group) is not None:  # files written before the group values were rounded: 0.1000000015
        out[group] = _group_value(out[group])
    return out


def _bm4d_meta(meta: dict[str, Any], speed: bool) -> None:
    """BM4D's time on a 128 x 128 x 96 volume (the "1/10 of BM4D's time" target) when the optional extra is
    installed, else a note saying it was not measured."""
    from restorezoo.baselines import bm4d_seconds

    seconds = bm4d_seconds() if speed else None
    meta["bm4d_seconds"] = seconds
    meta["bm4d_note"] = (
        "- BM4D time: not measured in this run (speed not measured)"
        if not speed
        else "- BM4D time: not measured (the optional non-commercial `baselines` extra is not installed)"
        if seconds is None
        else f"- BM4D (bm4d package, default profile) on a 128 x 128 x 96 sphere phantom plus noise of std 0.1 "
        f"(`restorezoo.baselines.bm4d_seconds`): {seconds:.1f} s"
    )


def render(
    out: str | Path = "benchmarks/results",
    readme: str | Path | None = None,
    measure_bm4d: bool = False,
    bundles_dir: str | Path = "bundles",
) -> Path:
    """Re-write ``results.md`` (and the README section) from the CSV files of an earlier run, without re-running
    (``measure_bm4d``: time BM4D now, when installed, and record it)."""
    out = Path(out).resolve()
    rows = read_results(out / "results.csv")
    speed = []
    if (out / "speed.csv").stat().st_size:
        with open(out / "speed.csv") as f:
            speed = [_numeric(r) for r in csv.DictReader(f)]
    tasks = {b: load_task(Path(bundles_dir).resolve() / b) for b in dict.fromkeys(r["bundle"] for r in rows)}
    meta = json.loads((out / "meta.json").read_text())
    if measure_bm4d:
        _bm4d_meta(meta, True)
        (out / "meta.json").write_text(json.dumps(meta, indent=2))
    md = markdown(rows, speed, tasks, meta)
    (out / "results.md").write_text(md)
    if readme:
        update_readme(Path(readme), _relink(md, out, Path(readme).resolve().parent))
    return out / "results.md"


def merge(
    new: str | Path,
    into: str | Path,
    bundles_dir: str | Path = "bundles",
    readme: str | Path | None = None,
    replace_baselines: Sequence[str] = (),
) -> Path:
    """Merge the results of a partial run (``new``, e.g. ``--runs shipped`` of one bundle) into an earlier run's
    folder ``into`` (e.g. ``benchmarks/results``), then re-write its ``results.md`` (and the ``readme`` section);
    returns the path of ``results.md``.

    - rows: every (bundle, run) measured in ``new`` replaces that (bundle, run)'s output rows in ``into``; the input
      and baseline rows of ``into`` stay, whichever run measured them, and those of ``new`` are added only where
      ``into`` has no row of the same task, group value and method (the same items scored by the same code, so the
      earlier, complete baseline set stays the reference: a re-run with ``--baselines gaussian`` keeps the BM3D rows
      its earlier run measured), except the
      baselines named in ``replace_baselines`` (re-measured on purpose, e.g. after a baseline code change): their rows
      in ``new`` replace those of the same table, group value and method, whichever run measured them;
    - tuning: the tried parameters go with the result rows they produced: those of rows kept stay, those of rows
      added come in, those of a replaced baseline go with its rows;
    - speed: ``new``'s bundle rows replace the rows of the same model; the reference row of ``into`` stays (each
      ``x reference`` was measured against the reference of its own run);
    - meta: both commands and dates are kept; BM4D's time is ``new``'s only if ``new`` measured it;
    - figures of ``new`` are copied (same names replaced)."""
    import shutil

    new, into = Path(new).resolve(), Path(into).resolve()
    for d in (new, into):
        if not (d / "results.csv").is_file():
            raise FileNotFoundError(f"{d / 'results.csv'}: no benchmark results to merge")
    old_rows, new_rows = read_results(into / "results.csv"), read_results(new / "results.csv")
    root = Path(bundles_dir).resolve()
    tasks = {b: load_task(root / b) for b in dict.fromkeys(r["bundle"] for r in [*old_rows, *new_rows])}
    measured = {(r["bundle"], r["run"]) for r in new_rows}
    kept = [r for r in old_rows if (r["bundle"], r["run"]) not in measured or r["method"] != "output"]

    def key(r: dict) -> tuple:
        return table_of(r, tasks), r.get(tasks[r["bundle"]].group_key), r["method"]

    fresh = {key(r) for r in new_rows if r["method"] in replace_baselines}
    replaced = {(r["bundle"], r["run"], r["method"]) for r in kept if key(r) in fresh}
    kept = [r for r in kept if key(r) not in fresh]
    have = {key(r) for r in kept if r["method"] != "output"}
    added = [r for r in new_rows if r["method"] == "output" or key(r) not in have]
    _write_csv(into / "results.csv", kept + added)

    def read_plain(path: Path) -> list[dict]:
        if not path.is_file() or not path.stat().st_size:
            return []
        with open(path) as f:
            return list(csv.DictReader(f))

    # tuning rows go with the result rows they produced: a measured run keeps those of the baselines whose rows it
    # kept, and new tuning rows come in only with their new rows (no second set for one baseline of one run)
    kept_methods = {(r["bundle"], r["run"], r["method"]) for r in kept}
    added_methods = {(r["bundle"], r["run"], r["method"]) for r in added}

    def own(r: dict) -> tuple:
        return r["bundle"], r["run"], r["baseline"]

    tuning = [
        r
        for r in read_plain(into / "tuning.csv")
        if own(r) not in replaced and (own(r) in kept_methods or (r["bundle"], r["run"]) not in measured)
    ]
    tuning += [r for r in read_plain(new / "tuning.csv") if own(r) in added_methods]
    _write_csv(into / "tuning.csv", tuning)
    new_speed = [r for r in read_plain(new / "speed.csv") if r["model"] in tasks]  # bundles, not the reference
    names = {r["model"] for r in new_speed}
    old_speed = read_plain(into / "speed.csv")
    if new_speed or old_speed:
        _write_csv(into / "speed.csv", [r for r in old_speed if r["model"] not in names] + new_speed)
    meta_old = json.loads((into / "meta.json").read_text()) if (into / "meta.json").is_file() else {}
    meta_new = json.loads((new / "meta.json").read_text())
    # rendered as "Command: `<command>`": the commands of both runs, each in its own code span
    old_cmd = meta_old.get("command")
    meta = {**meta_old, "command": f"{old_cmd}`; then `{meta_new['command']}" if old_cmd else meta_new["command"]}
    dates = list(dict.fromkeys(d for d in (meta_old.get("date"), meta_new.get("date")) if d))
    meta["date"] = " and ".join(dates)
    meta.setdefault("machine", meta_new.get("machine"))
    if meta_new.get("bm4d_seconds") is not None:
        meta["bm4d_seconds"], meta["bm4d_note"] = meta_new["bm4d_seconds"], meta_new["bm4d_note"]
    (into / "meta.json").write_text(json.dumps(meta, indent=2))
    (into / "figures").mkdir(exist_ok=True)
    for png in sorted((new / "figures").glob("*.png")):
        shutil.copy(png, into / "figures" / png.name)
    logger.info("merged %d rows of %s into %s (%d kept)", len(added), sorted(measured), into, len(kept))
    return render(into, readme, bundles_dir=bundles_dir)


def _relink(md: str, out: Path, base: Path) -> str:
    """Figure links of ``results.md`` made relative to ``base`` (the README's folder)."""
    try:
        rel = out.relative_to(base.resolve())
    except ValueError:
        rel = out
    return md.replace("](figures/", f"]({rel.as_posix()}/figures/")


def _write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        path.write_text("")
        return
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: (json.dumps(v) if isinstance(v, list | dict) else v) for k, v in r.items()})
