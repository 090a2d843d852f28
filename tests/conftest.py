"""Shared fixtures: the repository root, every bundle (discovered), and a session-wide phantom cache."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from monai.bundle import ConfigParser

ROOT = Path(__file__).resolve().parent.parent
BUNDLES = sorted(p for p in (ROOT / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())


def pytest_configure(config):
    os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> Path:
    """One phantom-data cache for the whole session (bundles' smoke runs generate tiny data into it)."""
    return tmp_path_factory.mktemp("phantom_cache")


def load_script(path: Path):
    """Import a bundle's stand-alone script (``bundles/<name>/scripts/<file>.py``, not a package) as a module."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_bundle(args: list[str], cwd: Path = ROOT, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run ``python -m monai.bundle <args>`` in a subprocess; fail the test with its output on error."""
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        pytest.fail(
            f"monai.bundle {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


def run_workflow(config_files: list[str | Path], cwd: Path | None = None, **overrides) -> str | None:
    """Run a bundle config in THIS process as ``python -m monai.bundle run --config_file <files> --<k>=<v>`` runs it
    (MONAI's ``ConfigWorkflow``: initialize, run, finalize), from ``cwd`` when given. Returns the one-line report of
    a user error (what the command prints before exiting non-zero), None on success; any other exception is a bug
    and propagates. Saves the ~8 s import of a fresh process where a test checks outputs or the refusal's text;
    the tests of the process itself (exit code, no traceback on the terminal) run the real command."""
    from monai.bundle import ConfigWorkflow

    from common.errors import find_user_error, one_line

    previous = Path.cwd()
    if cwd is not None:  # `python -m monai.bundle` started there: that folder first on sys.path (an export's library)
        os.chdir(cwd)
        sys.path.insert(0, str(cwd))
    try:
        workflow = ConfigWorkflow(config_file=[str(f) for f in config_files], workflow_type=None, **overrides)
        workflow.initialize()
        workflow.run()
        workflow.finalize()
    except Exception as exc:
        user = find_user_error(exc)
        if user is None:
            raise
        return one_line(user)
    finally:
        os.chdir(previous)
        if cwd is not None:
            sys.path.remove(str(cwd))
    return None


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    """``restorezoo <args>`` in THIS process (``restorezoo.cli.main``): ``(exit code, last stderr line)``."""
    from restorezoo import cli

    old = sys.argv
    sys.argv = ["restorezoo", *args]
    code = 0
    try:
        cli.main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = old
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    return code, lines[-1] if lines else ""


def smoke_overlays(bundle: Path, tmp: Path, data_cache: Path) -> list[Path]:
    """Config overlays for a quick workflow build: the bundle's smoke.yaml (tiny phantoms) and its data in the
    session's data cache, instead of generating the full-size default phantoms on first use."""
    data = tmp / "data.yaml"
    data.write_text(yaml.safe_dump({"data_cache_dir": str(data_cache / bundle.name)}))
    return [bundle / "configs" / "smoke.yaml", data]


def run_bundle_steps(steps: list[tuple[Path | str, list]], tmp: Path, timeout: int = 900) -> list[str]:
    """Run several ``python -m monai.bundle <args>`` commands (``(cwd, args)`` each) in order in ONE subprocess
    (tests/bundle_steps.py); ``("snapshot", [folder, copy])`` copies a folder between two commands. Fail the test
    with the output on error. Returns each step's stdout + stderr."""
    plan = tmp / "bundle_steps.json"
    plan.write_text(
        json.dumps(
            [
                {"snapshot": [str(a) for a in args]} if cwd == "snapshot" else {"cwd": str(cwd), "args": list(args)}
                for cwd, args in steps
            ]  # fmt: skip
        )
    )
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "bundle_steps.py"), str(plan)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        pytest.fail(f"bundle steps failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    outs, errs = (re.split(r"STEP \d+ DONE\n", s) for s in (proc.stdout, proc.stderr))
    assert len(outs) == len(errs) == len(steps) + 1, "a step did not report its end"
    return [o + e for o, e in zip(outs[:-1], errs[:-1], strict=True)]


def perturbed_weights(bundle: Path, path: Path, overlays: tuple[Path, ...] = (), **overrides) -> Path:
    """Save the bundle's inference network (config ids changed by ``overlays`` files and ``overrides``, e.g.
    ``factor=2``) with seeded, perturbed parameters to ``path``."""
    from common.configs import load_config_files

    parser = ConfigParser()
    parser.read_config(load_config_files([bundle / "configs" / "inference.yaml", *overlays]))
    parser["bundle_root"] = str(bundle)
    for k, v in overrides.items():
        parser[k] = v
    net = parser.get_parsed_content("network_def", instantiate=True)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.02 * torch.randn(p.shape, generator=gen))
    torch.save({"model": net.state_dict()}, path)  # a training checkpoint layout: export must unwrap it
    return path


def runtime_overlay(bundle: Path, path: Path) -> Path:
    """The bundle's smoke overlay without the ids its network is built from (tiny windows / steps / data, but the
    exported network's architecture), written to ``path``."""
    inference = yaml.safe_load((bundle / "configs" / "inference.yaml").read_text())
    network_refs = set(re.findall(r"@(\w+)", json.dumps(inference["network_def"])))
    smoke = yaml.safe_load((bundle / "configs" / "smoke.yaml").read_text()) or {}
    path.write_text(yaml.safe_dump({k: v for k, v in smoke.items() if k not in network_refs}))
    return path


@pytest.fixture(scope="session")
def export_of(tmp_path_factory, data_cache):
    """``export_of(bundle)`` -> (bundle, work dir, export result, repository inference output folder, datalist):
    perturbed weights, the repository bundle's inference with them on tiny data, and the export; once per session."""
    cache: dict[Path, tuple] = {}

    def make(bundle: Path) -> tuple:
        if bundle not in cache:
            cache[bundle] = _export(bundle, tmp_path_factory, data_cache)
        return cache[bundle]

    return make


def _export(bundle: Path, tmp_path_factory, data_cache: Path) -> tuple:
    from restorezoo.export import export_bundle

    work = tmp_path_factory.mktemp(f"export_{bundle.name}")
    ckpt = perturbed_weights(bundle, work / "weights.pt")
    data_dir = data_cache / f"export_{bundle.name}"
    overlay = runtime_overlay(bundle, work / "runtime.yaml")
    refusal = run_workflow(
        [bundle / "configs" / "inference.yaml", overlay],
        ckpt_path=str(ckpt),
        output_dir=str(work / "repo_out"),
        data_cache_dir=str(data_dir),
    )
    assert refusal is None, refusal
    result = export_bundle(bundle, work / "dist", ckpt=ckpt)
    return bundle, work, result, work / "repo_out", data_dir / "datalist.json"
