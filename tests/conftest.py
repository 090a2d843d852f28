"""Shared fixtures: the repository root, every bundle (discovered), and a session-wide phantom cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUNDLES = sorted(p for p in (ROOT / "bundles").iterdir() if (p / "configs" / "metadata.json").is_file())


def pytest_configure(config):
    os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> Path:
    """One phantom-data cache for the whole session (bundles' smoke runs generate tiny data into it)."""
    return tmp_path_factory.mktemp("phantom_cache")


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


def run_bundle_failing(args: list[str], cwd: Path = ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python -m monai.bundle <args>`` in a subprocess that must FAIL; returns it (for its stderr/stdout)."""
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode != 0, f"monai.bundle {' '.join(args)} unexpectedly succeeded:\n{proc.stdout[-2000:]}"
    return proc
