"""`restorezoo benchmark` in a tiny configuration: every bundle (discovered through configs/benchmark.yaml) with
perturbed weights on the tiny smoke phantoms, quick baseline grids and a small speed volume. The full benchmark is the
documented command in README.md, not part of CI."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from collections import defaultdict
from pathlib import Path

import pytest
import torch
import yaml
from conftest import BUNDLES, perturbed_weights
from monai.bundle import ConfigParser

from restorezoo.baselines import available_baselines, denoise, noise_sigma, parameter_grid, tune
from restorezoo.benchmark import (
    END,
    START,
    _restrict_runs,
    load_task,
    markdown,
    merge,
    read_results,
    run_benchmark,
    scoring_convention,
    table_of,
    task_tables,
)
from restorezoo.peers import run_overlays

IDS = [b.name for b in BUNDLES]


def _read(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("bundle", [b for b in BUNDLES if load_task(b).task == "ct_denoising"], ids=lambda b: b.name)
def test_ct_denoisers_select_their_checkpoint_on_the_task_convention(bundle):
    """The checkpoint a CT training keeps is the best on the metric its test split is reported in: the validation's
    key metric is the PSNR of the output and of the reference both clipped to the convention's window, with the
    window's width as the peak, whatever intensity range the network works in (Feat-KPN: [-1024, 3072] HU)."""
    from ignite.engine import Engine

    from common.metrics import psnr, window

    low, high = scoring_convention(bundle)["window"]
    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "train.yaml"))
    metrics = parser.get_parsed_content("validate#key_metric", instantiate=True)
    assert list(metrics) == ["val_ct_psnr"]
    g = torch.Generator().manual_seed(0)
    label = torch.rand(1, 16, 16, 4, generator=g) * 4000 - 1024  # well beyond the window on both sides
    pred = label + torch.randn(1, 16, 16, 4, generator=g) * 150
    engine = Engine(lambda e, b: [{"pred": pred, "label": label}])
    metrics["val_ct_psnr"].attach(engine, "val_ct_psnr")
    engine.run([0], max_epochs=1)
    clipped = psnr(window(pred, low, high), window(label, low, high), data_range=high - low)
    assert engine.state.metrics["val_ct_psnr"] == pytest.approx(clipped, abs=1e-4)
    assert abs(clipped - psnr(pred, label, data_range=high - low)) > 0.5  # the clipping matters on this pair


@pytest.mark.parametrize("bundle", BUNDLES, ids=IDS)
def test_every_bundle_describes_its_benchmark(bundle):
    task = load_task(bundle)
    assert task.groups and task.group_key and len(task.panel_window) == 2
    assert set(task.baselines) <= set(available_baselines()) | {"bm3d", "bm4d"}


def test_bundles_of_one_task_score_with_one_convention():
    """One ruler per task: every bundle of a task scores its test split with the same settings (the first report of
    its evaluate.yaml), so their rows compare; the CT and PET conventions are the documented ones."""
    by_task = defaultdict(list)
    for bundle in BUNDLES:
        by_task[load_task(bundle).task].append(scoring_convention(bundle))
    assert len(by_task["ct_denoising"]) >= 2 and len(by_task["pet_denoising"]) >= 2
    for task, conventions in by_task.items():
        assert all(c == conventions[0] for c in conventions), (task, conventions)
    ct, pet = by_task["ct_denoising"][0], by_task["pet_denoising"][0]
    assert ct["window"] == (-1000.0, 1000.0) and ct["data_range"] == "window" and ct["ssim_axis"] == -1
    assert ct["scale"] == 1.0 and {"psnr", "ssim", "body_rmse", "body_bias"} <= set(ct["names"])
    assert pet["data_range"] == "reference_max" and pet["window"] is None and pet["scale"] == 1.0
    assert {"psnr", "ssim", "body_rmse", "body_bias"} <= set(pet["names"])


def test_runs_filter_measures_only_the_named_runs_and_the_tables_still_name_them():
    tasks = {b.name: load_task(b) for b in BUNDLES}
    only = _restrict_runs(tasks, ["shipped"])
    assert {b for b, t in only.items() if t.runs} == {b for b, t in tasks.items() if any(
        r.get("name") == "shipped" for r in t.runs)} != set()  # fmt: skip
    assert all(r["name"] == "shipped" for t in only.values() for r in t.runs)
    assert _restrict_runs(tasks, None) is tasks
    with pytest.raises(ValueError, match="nosuch"):
        _restrict_runs(tasks, ["shipped", "nosuch"])
    # a bundle measured only through its shipped weights is labelled as such, its main run by its name alone
    row = {"bundle": "ct_lowdose_featkpn", "method": "output", "dose": 0.25}
    shipped = task_tables([{**row, "run": "shipped"}], tasks)["ct_denoising"]
    assert [r["label"] for r in shipped] == ["ct_lowdose_featkpn (shipped)"]
    default = task_tables([{**row, "run": "default"}], tasks)["ct_denoising"]
    assert [r["label"] for r in default] == ["ct_lowdose_featkpn"]


def test_a_run_measured_without_baselines_is_held_to_the_task_baselines():
    """``--runs shipped --baselines gaussian`` rows merged with an earlier run's baselines: the target line of the
    shipped run compares it with the task's best baseline at the target group, whichever run of the table measured
    it."""
    tasks = {b.name: load_task(b) for b in BUNDLES}
    film = "pet_lowdose_film_unet"
    rows = [
        {"bundle": film, "run": "default", "method": "tv", "drf": 20.0, "psnr": 44.0, "param": 0.02},
        {"bundle": film, "run": "default", "method": "output", "drf": 20.0, "psnr": 44.5},
        {"bundle": film, "run": "shipped", "method": "output", "drf": 20.0, "psnr": 45.5},
    ]
    md = markdown(rows, [], tasks, {"command": "x", "date": "d", "machine": "m"})
    assert f"{film} (shipped) at drf 20: output 45.50 dB vs best baseline tv 44.00 dB: +1.50 dB" in md
    assert f"{film} (default) at drf 20: output 44.50 dB vs best baseline tv 44.00 dB: +0.50 dB" in md
    # a baseline re-measured in another run of the table (merged): every run is held to the table's best
    rows.append({"bundle": film, "run": "shipped", "method": "bm4d", "drf": 20.0, "psnr": 44.8, "param": 2.0})
    md = markdown(rows, [], tasks, {"command": "x", "date": "d", "machine": "m"})
    assert f"{film} (default) at drf 20: output 44.50 dB vs best baseline bm4d 44.80 dB: -0.30 dB" in md
    assert f"{film} (shipped) at drf 20: output 45.50 dB vs best baseline bm4d 44.80 dB: +0.70 dB" in md


def test_runs_on_other_data_get_their_own_table_and_targets():
    """A run with ``table`` (the held-out anatomy, doses between the benchmark's) is measured on other data: its
    input / baselines are never merged with the task's rows, and its target line compares it with the baselines and
    peers of its own table only."""
    tasks = {b.name: load_task(b) for b in BUNDLES}
    kpn = "ct_lowdose_featkpn"
    heldout = [r for r in tasks[kpn].runs if r.get("table")]
    assert {r["table"] for r in heldout} == {"ct_denoising_heldout", "ct_denoising_between_doses"}
    assert all(r.get("weights") == "pretrained" and r["overrides"]["data_cache_dir"] for r in heldout)
    table = "ct_denoising_heldout"
    rows = [
        {"bundle": kpn, "run": "default", "method": "input", "dose": 0.25, "psnr": 41.0},
        {"bundle": kpn, "run": "default", "method": "bm3d", "dose": 0.25, "psnr": 46.0, "param": 1.0},
        {"bundle": kpn, "run": "default", "method": "output", "dose": 0.25, "psnr": 46.5},
        {"bundle": kpn, "run": "redcnn", "method": "output", "dose": 0.25, "psnr": 45.0, "peer": "RED-CNN"},
        {"bundle": kpn, "run": "heldout_pelvis", "method": "input", "dose": 0.25, "psnr": 26.0, "table": table},
        {"bundle": kpn, "run": "heldout_pelvis", "method": "bm3d", "dose": 0.25, "psnr": 38.0, "table": table},
        {"bundle": kpn, "run": "heldout_pelvis", "method": "output", "dose": 0.25, "psnr": 30.0, "table": table},
    ]
    tables = task_tables(rows, tasks)
    assert [r["label"] for r in tables[table]] == ["input", "bm3d", "ct_lowdose_featkpn (heldout_pelvis)"]
    assert [r["psnr"] for r in tables["ct_denoising"] if r["label"] == "input"] == [41.0]  # one input: not merged
    md = markdown(rows, [], tasks, {"command": "x", "date": "d", "machine": "m"})
    assert f"### {table}" in md
    assert f"{kpn} (heldout_pelvis) at dose 0.25: output 30.00 dB vs best baseline bm3d 38.00 dB: -8.00 dB" in md
    assert "(heldout_pelvis) at dose 0.25: output 30.00 dB vs peer" not in md  # the peer was measured elsewhere
    assert f"{kpn} (default) at dose 0.25: output 46.50 dB vs peer RED-CNN 45.00 dB: +1.50 dB" in md
    assert table_of(rows[-1], tasks) == table and table_of(rows[0], tasks) == "ct_denoising"


def _results_dir(path: Path, rows: list[dict], speed: list[dict], meta: dict, figures: list[str]) -> Path:
    (path / "figures").mkdir(parents=True)
    for name, content in (("results.csv", rows), ("speed.csv", speed), ("tuning.csv", [])):
        with open(path / name, "w", newline="") as f:
            if content:
                w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in content for k in r)))
                w.writeheader()
                w.writerows(content)
    (path / "meta.json").write_text(json.dumps(meta))
    for name in figures:
        (path / "figures" / name).write_bytes(path.name.encode())
    return path


def _speed_row(model: str, seconds: float) -> dict:
    return {"model": model, "params": 1e6, "seconds_per_volume": seconds, "voxels_per_s": 1.0, "x_reference": 1.0,
            "flops_per_voxel": 1.0, "gflops_per_s": 1.0, "peak_fraction": 0.1, "peak_rss_MB": 100.0,
            "matmul_peak_gflops": 10.0}  # fmt: skip


def test_merge_replaces_the_measured_runs_and_keeps_the_rest(tmp_path):
    """``--merge_into``: a partial run (one bundle's shipped weights, gaussian only, no speed) merged into a complete
    earlier run: its runs replace theirs, the earlier baselines stay, the rest is untouched; the README renders both."""
    film, ddpm = "pet_lowdose_film_unet", "pet_lowdose_ddpm3d"
    base = {"drf": 20.0, "ssim": 0.99}
    old = [
        {"bundle": film, "run": "default", "method": "input", "psnr": 42.9, **base},
        {"bundle": film, "run": "default", "method": "tv", "psnr": 44.4, "param": 0.02, **base},
        {"bundle": film, "run": "default", "method": "output", "psnr": 45.0, **base},
        {"bundle": film, "run": "shipped", "method": "output", "psnr": 45.1, **base},
        {"bundle": ddpm, "run": "shipped", "method": "output", "psnr": 45.7, **base},
    ]
    new = [
        {"bundle": film, "run": "shipped", "method": "input", "psnr": 42.9, **base},
        {"bundle": film, "run": "shipped", "method": "gaussian", "psnr": 44.1, "param": 1.0, **base},
        {"bundle": film, "run": "shipped", "method": "tv", "psnr": 44.3, "param": 0.03, **base},
        {"bundle": film, "run": "shipped", "method": "output", "psnr": 45.6, **base},
    ]
    into = _results_dir(
        tmp_path / "into",
        old,
        [_speed_row("MONAI UNet reference", 0.4), _speed_row(film, 60.0), _speed_row(ddpm, 38.0)],
        {
            "command": "restorezoo benchmark",
            "date": "2026-11-22",
            "machine": "m",
            "bm4d_seconds": 89.0,
            "bm4d_note": "- BM4D 89 s",
        },  # fmt: skip
        [f"{film}_shipped_psnr.png", f"{ddpm}_shipped_psnr.png"],
    )
    part = _results_dir(
        tmp_path / "part",
        new,
        [_speed_row("MONAI UNet reference", 0.5), _speed_row(film, 5.9)],
        {
            "command": "restorezoo benchmark --runs shipped",
            "date": "2026-12-04",
            "machine": "m",
            "bm4d_seconds": None,
            "bm4d_note": "- BM4D time: not measured",
        },  # fmt: skip
        [f"{film}_shipped_psnr.png"],
    )
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{START}\nold\n{END}\n")
    md = merge(part, into, readme=readme).read_text()

    rows = read_results(into / "results.csv")
    got = {(r["bundle"], r["run"], r["method"]): r["psnr"] for r in rows}
    assert got[(film, "shipped", "output")] == 45.6  # the measured run replaced
    assert got[(film, "default", "output")] == 45.0 and got[(ddpm, "shipped", "output")] == 45.7  # the rest kept
    assert got[(film, "default", "tv")] == 44.4 and (film, "shipped", "tv") not in got  # earlier baselines stay
    assert got[(film, "shipped", "gaussian")] == 44.1  # a baseline the earlier run lacked is added
    assert (film, "shipped", "input") not in got and len(rows) == 6
    speed = {r["model"]: float(r["seconds_per_volume"]) for r in _read(into / "speed.csv")}
    assert speed == {"MONAI UNet reference": 0.4, film: 5.9, ddpm: 38.0}
    meta = json.loads((into / "meta.json").read_text())
    assert meta["bm4d_seconds"] == 89.0 and meta["date"] == "2026-11-22 and 2026-12-04"
    assert "`restorezoo benchmark`; then `restorezoo benchmark --runs shipped`" in md
    assert (into / "figures" / f"{film}_shipped_psnr.png").read_bytes() == b"part"
    assert (into / "figures" / f"{ddpm}_shipped_psnr.png").read_bytes() == b"into"
    assert "| 20 | **pet_lowdose_film_unet (shipped)** |" in md and "45.60" in md and "45.10" not in md
    assert "45.60" in readme.read_text() and "old" not in readme.read_text()
    with pytest.raises(FileNotFoundError, match="no benchmark results"):
        merge(tmp_path / "nothing", into)


def test_merge_replaces_a_baseline_remeasured_on_purpose(tmp_path):
    """``--merge_into ... --replace_baselines bm3d``: BM3D re-run with one bundle's shipped weights replaces the BM3D
    row that another run of the same table measured earlier (and its tuning rows); other baselines stay."""
    kpn, distill = "ct_lowdose_featkpn", "ct_lowdose_anatomy_distill"
    base = {"dose": 0.1, "group_key": "dose", "ssim": 0.99}
    old = [
        {"bundle": distill, "run": "default", "method": "bm3d", "psnr": 42.0, "param": 2.8, **base},
        {"bundle": distill, "run": "default", "method": "tv", "psnr": 41.0, "param": 0.01, **base},
        {"bundle": kpn, "run": "shipped", "method": "output", "psnr": 42.85, **base},
    ]
    new = [
        {"bundle": kpn, "run": "shipped", "method": "bm3d", "psnr": 43.87, "param": 2.8, **base},
        {"bundle": kpn, "run": "shipped", "method": "output", "psnr": 42.85, **base},
    ]
    meta = {"command": "c", "date": "d", "machine": "m", "bm4d_seconds": None, "bm4d_note": ""}
    into = _results_dir(tmp_path / "into", old, [], meta, [])
    part = _results_dir(tmp_path / "part", new, [], meta, [])
    tuning = [{"bundle": distill, "run": "default", "baseline": b, "dose": 0.1, "param": 1.0, "val_psnr": 40.0, "n": 2}
              for b in ("bm3d", "tv")]  # fmt: skip
    with open(into / "tuning.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(tuning[0]))
        w.writeheader()
        w.writerows(tuning)
    kept = _results_dir(tmp_path / "kept", old, [], meta, [])
    merge(part, kept)  # without replace_baselines the earlier BM3D row stays the reference
    assert {r["psnr"] for r in read_results(kept / "results.csv") if r["method"] == "bm3d"} == {42.0}
    md = merge(part, into, replace_baselines=["bm3d"]).read_text()
    rows = read_results(into / "results.csv")
    assert {(r["bundle"], r["psnr"]) for r in rows if r["method"] == "bm3d"} == {(kpn, 43.87)}
    assert [r["psnr"] for r in rows if r["method"] == "tv"] == [41.0]
    assert {r["baseline"] for r in _read(into / "tuning.csv")} == {"tv"}
    assert "| bm3d | 2.800 | 43.87 |" in md and "42.00" not in md


def test_merge_of_a_rerun_keeps_the_baselines_it_did_not_measure_again(tmp_path):
    """Re-measuring a bundle's shipped weights with ``--baselines gaussian`` replaces its output rows, but the BM3D
    rows the same (bundle, run) measured earlier (the table's only BM3D rows) and their tuning stay the reference."""
    kpn = "ct_lowdose_featkpn"
    base = {"dose": 0.25, "group_key": "dose", "ssim": 0.99}
    old = [
        {"bundle": kpn, "run": "shipped", "method": "input", "psnr": 41.2, **base},
        {"bundle": kpn, "run": "shipped", "method": "bm3d", "psnr": 46.55, "param": 2.0, **base},
        {"bundle": kpn, "run": "shipped", "method": "output", "psnr": 46.19, **base},
    ]
    new = [
        {"bundle": kpn, "run": "shipped", "method": "input", "psnr": 41.2, **base},
        {"bundle": kpn, "run": "shipped", "method": "gaussian", "psnr": 43.0, "param": 1.0, **base},
        {"bundle": kpn, "run": "shipped", "method": "output", "psnr": 46.9, **base},
    ]
    meta = {"command": "c", "date": "d", "machine": "m", "bm4d_seconds": None, "bm4d_note": ""}
    into = _results_dir(tmp_path / "into", old, [], meta, [])
    part = _results_dir(tmp_path / "part", new, [], meta, [])
    with open(into / "tuning.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["bundle", "run", "baseline", "dose", "param", "val_psnr", "n"])
        w.writeheader()
        w.writerow({"bundle": kpn, "run": "shipped", "baseline": "bm3d", "dose": 0.25, "param": 2.0, "val_psnr": 50.0,
                    "n": 2})  # fmt: skip
    with open(part / "tuning.csv", "w", newline="") as f:  # the re-run tuned gaussian (added) and bm3d (not)
        w = csv.DictWriter(f, fieldnames=["bundle", "run", "baseline", "dose", "param", "val_psnr", "n"])
        w.writeheader()
        for b, param in (("gaussian", 1.0), ("bm3d", 2.8)):
            w.writerow({"bundle": kpn, "run": "shipped", "baseline": b, "dose": 0.25, "param": param, "val_psnr": 49.0,
                        "n": 2})  # fmt: skip
    md = merge(part, into).read_text()
    got = {r["method"]: r["psnr"] for r in read_results(into / "results.csv")}
    assert got == {"input": 41.2, "bm3d": 46.55, "gaussian": 43.0, "output": 46.9}
    # tuning rows go with their result rows: the kept BM3D row keeps its own, the added gaussian row brings its own
    tuned = [(r["baseline"], float(r["param"])) for r in _read(into / "tuning.csv")]
    assert tuned == [("bm3d", 2.0), ("gaussian", 1.0)]
    assert "46.55" in md and "46.90" in md and "46.19" not in md


def test_results_written_before_rounding_fall_in_the_same_dose_group(tmp_path):
    """Results files of earlier runs hold float32 doses (0.10000000149...); read back they must group with today's
    0.1, or a merge would split one dose into two table groups."""
    rows = [
        {
            "bundle": "b",
            "run": "old",
            "dose": "0.10000000149011612",
            "group_key": "dose",
            "method": "bm3d",
            "psnr": 42.0,
        },
        {"bundle": "b", "run": "new", "dose": "0.1", "group_key": "dose", "method": "output", "psnr": 43.0},
        {"bundle": "b", "run": "new", "dose": "0.25", "group_key": "dose", "method": "output", "psnr": 46.0},
    ]
    folder = _results_dir(tmp_path / "r", rows, [], {}, [])
    assert [r["dose"] for r in read_results(folder / "results.csv")] == [0.1, 0.1, 0.25]


def test_baselines_reduce_noise_and_keep_shape():
    import numpy as np

    rng = np.random.default_rng(0)
    clean = np.zeros((48, 40, 6), np.float32)
    clean[12:36, 10:30] = 20.0  # low contrast: smoothing must win over edge blur
    noisy = clean + rng.normal(0, 10, clean.shape).astype(np.float32)
    for name, param in (("gaussian", 1.0), ("tv", 0.1), ("nlm", 1.2)):
        assert param in parameter_grid(name)
        for slice_wise in (True, False):
            out = denoise(name, noisy, param, slice_wise)
            assert out.shape == noisy.shape and out.dtype == np.float32
            assert np.sqrt(((out - clean) ** 2).mean()) < 0.8 * np.sqrt(((noisy - clean) ** 2).mean()), name


def test_nlm_with_small_h_stays_near_its_input():
    """Regression: passing the noise estimate as scikit-image's ``sigma`` smoothed heavily at every ``h`` (PET NLM
    fell below its input at the smallest h); the smallest h must leave the input nearly untouched."""
    import numpy as np

    rng = np.random.default_rng(0)
    clean = np.zeros((48, 40, 12), np.float32)
    clean[12:36, 10:30, 2:10] = 20.0
    noisy = clean + rng.normal(0, 2, clean.shape).astype(np.float32) * (clean > 0)
    out = denoise("nlm", noisy, parameter_grid("nlm")[0])
    assert np.sqrt(((out - noisy) ** 2).mean()) < 0.3 * np.sqrt(((noisy - clean) ** 2).mean())


def test_tune_walks_to_the_grid_argmax():
    grid = parameter_grid("nlm")
    for peak in (grid[0], grid[3], grid[5], grid[-1]):
        calls = []

        def score(p, peak=peak, calls=calls):
            calls.append(p)
            return -abs(math.log(p) - math.log(peak))  # unimodal, maximal at peak

        tried = tune("nlm", score)
        assert max(tried, key=tried.__getitem__) == peak
        assert len(calls) == len(set(calls)) < len(grid)  # each value scored once, never the whole grid
    flat = tune("tv", lambda p: 1.0)  # no improvement either way: the start and both neighbours
    assert len(flat) == 3
    warm = tune("nlm", lambda p: -abs(p - grid[-2]), start=grid[-3])  # warm start next to the optimum
    assert max(warm, key=warm.__getitem__) == grid[-2] and len(warm) == 3


def test_noise_sigma_reads_correlated_noise_inside_the_body():
    import numpy as np
    from scipy import ndimage

    rng = np.random.default_rng(1)
    body = np.zeros((64, 64, 32), np.float32)
    body[8:56, 8:56, 4:28] = 10.0  # flat "body" on a zero background
    for sigma, corr in ((0.2, 1.0), (1.0, 1.0), (1.0, 0.0)):
        white = ndimage.gaussian_filter(rng.normal(size=body.shape), corr)  # correlated, like reconstructed noise
        noise = (white / white.std() * sigma).astype(np.float32)
        noisy = body + noise * (body > 0)  # no noise outside the body (PET background)
        assert 0.6 * sigma < noise_sigma(noisy) < 1.25 * sigma, (sigma, corr)


def test_denoise_cache_reuses_the_output(tmp_path, monkeypatch):
    import numpy as np

    import restorezoo.baselines as baselines

    x = np.random.default_rng(0).normal(size=(24, 20, 4)).astype(np.float32)
    first = denoise("gaussian", x, 1.0, True, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 1

    def recompute(*args):
        raise LookupError("recomputed")

    monkeypatch.setattr(baselines, "_denoise", recompute)
    np.testing.assert_array_equal(denoise("gaussian", x, 1.0, True, cache_dir=tmp_path), first)
    for other in ((x + 1, 1.0), (x, 1.5)):  # another input or parameter is another entry
        with pytest.raises(LookupError):
            denoise("gaussian", other[0], other[1], True, cache_dir=tmp_path)


@pytest.mark.parametrize("name", ["bm3d", "bm4d"])
def test_optional_bm3d_bm4d(name):
    """Only where the optional non-commercial extra is installed (``pip install -e ".[baselines]"``)."""
    import numpy as np

    pytest.importorskip(name)
    rng = np.random.default_rng(0)
    clean = np.zeros((40, 40, 8), np.float32)
    clean[10:30, 10:30] = 20.0
    noisy = clean + rng.normal(0, 5, clean.shape).astype(np.float32)
    out = denoise(name, noisy, 1.0, slice_wise=name == "bm3d")
    assert out.shape == noisy.shape and out.dtype == np.float32
    assert np.sqrt(((out - clean) ** 2).mean()) < 0.5 * np.sqrt(((noisy - clean) ** 2).mean())
    assert name in available_baselines(slice_wise=name == "bm3d")


TINY_BASELINES = ["gaussian", "tv"]  # the machinery with two tuned baselines; BM3D / BM4D (optional) take minutes


@pytest.mark.slow
def test_tiny_benchmark_all_bundles(export_of, data_cache, tmp_path):
    ckpts = {}
    for bundle in BUNDLES:
        _, work, _, _, _ = export_of(bundle)  # perturbed weights, tiny data, run-time overlay
        ckpts[bundle.name] = str(work / "weights.pt")
        runs = [r for r in load_task(bundle).runs if not r.get("table")]  # runs on other data: their own test
        for run in runs[1:]:  # extra runs (SR x2, the learned peers): weights of that network
            if run.get("requires") and importlib.util.find_spec(run["requires"]) is None:
                continue  # an optional peer that is not installed: the benchmark skips it
            over = run.get("overrides", {})
            overlays = tuple(run_overlays(run))
            ckpts[f"{bundle.name}:{run['name']}"] = str(
                perturbed_weights(bundle, tmp_path / f"{bundle.name}_{run['name']}.pt", overlays, **over)
            )
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n## Results\n{START}\nold\n{END}\n\n## After\n")
    # one overlay per bundle is not possible in one call: run bundle by bundle with its own run-time overlay; the
    # bundles of one task run on the same tiny data (the first one's phantoms and doses), as in the real benchmark
    shared: dict[str, dict] = {}
    all_rows: list[dict] = []
    for bundle in BUNDLES:
        _, work, _, _, datalist = export_of(bundle)
        overlay = yaml.safe_load((work / "runtime.yaml").read_text())
        task_name = load_task(bundle).task
        if bundle.name == "ct_throughplane_sr":  # the x2 run needs x2 items in the tiny data
            overlay["phantom_kwargs"]["factors"] = [2, 4]
        first = shared.setdefault(task_name, {k: overlay.get(k) for k in ("phantom_kwargs", "doses", "drfs")})
        overlay.update({k: v for k, v in first.items() if v is not None})
        data_dir = data_cache / f"bench_{task_name}"
        (tmp_path / f"{bundle.name}.yaml").write_text(yaml.safe_dump(overlay))
        out = tmp_path / "out" / bundle.name
        run_benchmark(
            bundles=[bundle],
            out=out,
            ckpts=ckpts,
            extra_configs=[tmp_path / f"{bundle.name}.yaml"],
            overrides={"data_cache_dir": str(data_dir)},
            quick=True,
            speed=bundle == BUNDLES[0],  # the speed rows of one bundle (~35 s each; test_speed_command covers more)
            speed_shape=(32, 32, 8) if bundle.name == "ct_throughplane_sr" else (32, 32, 16),
            readme=readme,
            baselines=TINY_BASELINES,
            runs=[r.get("name", "default") for r in load_task(bundle).runs if not r.get("table")],
        )
        task = load_task(bundle)
        task.runs = [r for r in task.runs if not r.get("table")]
        chosen = [b for b in task.baselines if b in TINY_BASELINES]
        rows = _read(out / "results.csv")
        assert rows, bundle.name
        all_rows += read_results(out / "results.csv")
        methods = defaultdict(set)
        for r in rows:
            methods[(r["run"], float(r[task.group_key]))].add(r["method"])
            assert math.isfinite(float(r["psnr"]))
        assert {r["run"] for r in rows} == {
            run.get("name", "default")
            for run in task.runs
            if f"{bundle.name}:{run.get('name')}" in ckpts or run is task.runs[0]
        }
        for found in methods.values():
            assert {"output"} <= found and set(chosen) <= found and not (found & (set(task.baselines) - set(chosen)))
            assert ("input" in found) or ({"linear", "cubic"} <= found)
        tuning = _read(out / "tuning.csv")
        for r in rows:  # the parameter used on the test split is the validation argmax for that dose
            if r["method"] in chosen:
                spec = next(run for run in task.runs if run.get("name", "default") == r["run"])
                reuses = r.get("peer") or spec.get("weights") == "pretrained"  # peers, shipped weights: the host's
                tuned_in = task.runs[0].get("name", "default") if reuses else r["run"]
                tried = [t for t in tuning if t["baseline"] == r["method"] and t["run"] == tuned_in]
                doses = {float(t[task.group_key]) for t in tried}
                nearest = min(doses, key=lambda d: abs(math.log(d) - math.log(float(r[task.group_key]))))
                at = [t for t in tried if float(t[task.group_key]) == nearest]
                assert float(r["param"]) == float(max(at, key=lambda t: float(t["val_psnr"]))["param"])
                assert {float(t["param"]) for t in at} == set(parameter_grid(r["method"], quick=True))
        if bundle == BUNDLES[0]:
            speed = _read(out / "speed.csv")
            assert "reference" in speed[0]["model"] and speed[1]["model"] == bundle.name
            assert float(speed[1]["voxels_per_s"]) > 0 and float(speed[1]["flops_per_voxel"]) > 0
            assert 0 < float(speed[1]["peak_fraction"]) < 5
        for run in task.runs:  # every run that had weights (an optional peer that is not installed has none)
            name = run.get("name", "default")
            if name != task.runs[0].get("name", "default") and f"{bundle.name}:{name}" not in ckpts:
                assert not (out / "figures" / f"{bundle.name}_{name}_psnr.png").exists()
                continue
            assert (out / "figures" / f"{bundle.name}_{name}_psnr.png").is_file()
            assert (out / "figures" / f"{bundle.name}_{name}_panels.png").is_file()
        text = readme.read_text()
        assert "old" not in text and f"### {task.task}" in text and text.endswith("## After\n")
    json.loads((tmp_path / "out" / BUNDLES[0].name / "meta.json").read_text())

    # one table per task: the input and the baselines once per dose (every bundle of the task measured them with
    # the task's one convention, on the same items: identical values), then each bundle's output under its name
    tasks = {b.name: load_task(b) for b in BUNDLES}
    tables = task_tables(all_rows, tasks)
    assert set(tables) == {"ct_denoising", "pet_denoising", "ct_throughplane_sr"}
    for name in ("ct_denoising", "pet_denoising"):
        members = [b for b, t in tasks.items() if t.task == name]
        assert len(members) == 2, members
        rs = tables[name]
        key = tasks[members[0]].group_key
        for g in {r[key] for r in rs}:
            labels = [r["label"] for r in rs if r[key] == g]
            outputs = [r["label"] for r in rs if r[key] == g and r["method"] == "output"]
            assert labels.count("input") == 1, labels  # each member's output, one row per run when it has several
            assert all(any(o == m or o.startswith(f"{m} (") for o in outputs) for m in members), labels
            assert labels[: -len(outputs)] == [r["label"] for r in rs if r[key] == g and r["method"] != "output"]
            assert not any("(" in label for label in labels if label not in outputs), labels  # one input per dose
        assert all(r.get("body_bias") is not None and r.get("body_rmse") is not None for r in rs)
    pet_peers = {f"{run['peer']} (peer)" for run in tasks["pet_lowdose_film_unet"].runs if run.get("peer")}
    assert pet_peers and pet_peers <= {r["label"] for r in tables["pet_denoising"]}  # the PET peers, always installed
    pet = [r for r in tables["pet_denoising"] if r["label"] == "input"]
    assert all(r.get("lesion_suvmax_bias_pct") is not None for r in pet)  # the bundles' own SUV bias report


@pytest.mark.slow
def test_heldout_run_tunes_its_own_baselines_and_gets_its_own_table(tmp_path):
    """The held-out pelvis run of the shipped Feat-KPN weights, on a coarse pelvis grid (the run's data settings
    replaced by small ones): the baselines are tuned on that dataset's validation volume although the run measures
    shipped weights, and the rows form the table the run names."""
    bundle = next(b for b in BUNDLES if b.name == "ct_lowdose_featkpn")
    run = next(r for r in load_task(bundle).runs if r["name"] == "heldout_pelvis")
    small = {**run["overrides"]["phantom_kwargs"], "grids": {"pelvis": [[64, 64, 2], [5.6, 5.6, 6.0]]}}
    out = tmp_path / "out"
    run_benchmark(
        bundles=[bundle],
        out=out,
        overrides={"data_cache_dir": str(tmp_path / "pelvis"), "phantom_kwargs": small},
        quick=True,
        speed=False,
        baselines=["gaussian"],
        runs=["heldout_pelvis"],
    )
    rows = _read(out / "results.csv")
    assert {r["table"] for r in rows} == {run["table"]} and {r["run"] for r in rows} == {"heldout_pelvis"}
    assert {float(r["dose"]) for r in rows} == set(run["overrides"]["doses"]) == {0.1, 0.15, 0.25}
    assert {r["method"] for r in rows} == {"input", "gaussian", "output"}
    tuning = _read(out / "tuning.csv")
    assert {r["run"] for r in tuning} == {"heldout_pelvis"}  # tuned on the held-out validation volume
    assert {float(r["dose"]) for r in tuning} == {0.1, 0.15, 0.25}
    datalist = json.loads((tmp_path / "pelvis" / "datalist.json").read_text())
    assert {i["anatomy"] for s in ("validation", "test") for i in datalist[s]} == {"pelvis"}
    assert not datalist["training"]
    assert f"### {run['table']}" in (out / "results.md").read_text()


@pytest.mark.slow
def test_speed_command_plain_window(tmp_path):
    """``restorezoo speed`` (over restorezoo.speed), run outside the checkout on a bundle folder: both networks through
    the same plain window, the bundle's dose vector passed to its network; prints the reference row first."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "-m", "restorezoo.cli", "speed", str(root / "bundles" / "pet_lowdose_film_unet"),
           "--roi", "16", "--overlap", "0.25", "--input_shape", "32,32,16", "--repeats", "1"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, check=True).stdout
    rows = [line.split("|")[1:-1] for line in out.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r[0].strip() for r in rows] == ["MONAI UNet (16,32,64,128) reference", "pet_lowdose_film_unet"]
    assert rows[0][3].strip() == "128x128x96" and rows[1][3].strip() == "32x32x16"
    assert float(rows[0][6]) == 1.0 and 0 < float(rows[1][6])


def test_benchmark_command_resolves_weights_and_overlays_from_the_callers_folder(tmp_path, monkeypatch):
    """`restorezoo benchmark --ckpt name=models/x.pt --config extra.yaml` with paths relative to where it is typed:
    the runs work in folders of their own, so the command hands them absolute paths (a relative path was reported
    as missing weights)."""
    import restorezoo.benchmark as bench
    from restorezoo import cli

    seen = {}
    monkeypatch.setattr(bench, "run_benchmark", lambda **kw: seen.update(kw) or tmp_path / "results.md")
    (tmp_path / "results.md").write_text("ok")
    monkeypatch.chdir(tmp_path)
    cli.benchmark(bundles="ct_lowdose_featkpn", ckpt="ct_lowdose_featkpn:shipped=models/x.pt", config="a.yaml,b.yaml")
    assert seen["ckpts"] == {"ct_lowdose_featkpn:shipped": str(tmp_path / "models" / "x.pt")}
    assert list(seen["extra_configs"]) == [str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")]
