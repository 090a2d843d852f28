"""Static validation of a bundle folder, used by the test suite (every bundle, automatically) and the CLI.

:func:`validate_bundle` returns a list of human-readable problems (empty = valid). It checks, in order: the
model-zoo files are present; every config parses; ``train.yaml`` defines ``training`` and ``run``; MONAI's
``ConfigWorkflow(...).check_properties()`` finds nothing missing for the train and the inference workflow (monai
1.6.1 RAISES ``KeyError`` for a missing required id instead of returning it: caught and reported); the metadata
validates against the vendored JSON schema (offline); the train and inference configs define the same network;
and MONAI's ``verify_net_in_out`` runs the network on fake data shaped as the metadata says.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import yaml

__all__ = ["REQUIRED_FILES", "extra_forward_args", "meta_schema_path", "validate_bundle"]

REQUIRED_FILES = (
    "configs/metadata.json",
    "configs/train.yaml",
    "configs/inference.yaml",
    "configs/evaluate.yaml",
    "configs/multi_gpu_train.yaml",
    "configs/logging.conf",
    "configs/smoke.yaml",
    "docs/README.md",
    "LICENSE",
)
_TRAIN_OVERLAYS = ("multi_gpu_train.yaml", "train_full.yaml")
_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "int64": torch.long}


def _is_overlay(path: Path) -> bool:
    """Whether a bundle config edits another one's ids: a known overlay name or a top-level ``a#b`` key."""
    if path.name in _TRAIN_OVERLAYS:
        return True
    if path.suffix != ".yaml":
        return False
    content = yaml.safe_load(path.read_text()) or {}
    return isinstance(content, dict) and any("#" in str(k) for k in content)


def meta_schema_path() -> str:
    """Path of the vendored MONAI bundle metadata JSON schema."""
    return str(resources.files("restorezoo") / "schemas" / "meta_schema.json")


def extra_forward_args(meta: dict[str, Any], batch: int = 1) -> dict[str, torch.Tensor]:
    """Fake tensors for the network's non-image inputs described in ``network_data_format`` (e.g. dose
    metadata ``meta`` of shape ``(B, num_channels)``), filled with a valid value from ``value_range``. An input whose
    ``format`` is ``timesteps`` (diffusion networks) is a ``(B,)`` tensor in the middle of its range."""
    out = {}
    for name, spec in meta["network_data_format"]["inputs"].items():
        if name == "image":
            continue
        lo = (spec.get("value_range") or [0, None])[0] or 0.0
        if spec.get("format") == "timesteps":
            hi = (spec.get("value_range") or [0, 0])[1] or 0
            out[name] = torch.full((batch,), (int(lo) + int(hi)) // 2, dtype=_DTYPES.get(spec["dtype"], torch.long))
            continue
        value = float(lo) + 0.3
        out[name] = torch.full(
            (batch, int(spec["num_channels"])), value, dtype=_DTYPES.get(spec["dtype"], torch.float32)
        )
    return out


@contextlib.contextmanager
def _quiet():
    level = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.getLogger().setLevel(level)


def _check_workflow(
    config: Path, workflow_type: str, meta: Path, problems: list[str], overlays: Sequence[Path] = ()
) -> None:
    from monai.bundle import ConfigWorkflow

    from common.configs import load_config_files

    name = config.name

    try:
        with _quiet():
            # init_id names no id: initialize() only parses the config (monai 1.6.1 needs it before the property
            # check) without running the bundle's own `initialize` expressions (which may need weights or data)
            wf = ConfigWorkflow(
                config_file=str(config),
                meta_file=str(meta),
                logging_file=False,
                workflow_type=workflow_type,
                init_id="__validate_only__",
            )
            # the shared pieces written out (any working folder), then the overlays (e.g. smoke.yaml's tiny data)
            wf.parser.read_config(load_config_files([config, *overlays]))
            wf.initialize()
            missing = wf.check_properties()
    except KeyError as err:
        problems.append(f"{name}: required {workflow_type} property missing: {err}")
        return
    except Exception as err:  # noqa: BLE001 - any failure to build the workflow is a problem to report
        problems.append(f"{name}: cannot build the {workflow_type} workflow: {type(err).__name__}: {err}")
        return
    if missing:
        problems.append(f"{name}: missing {workflow_type} properties {missing}")


def validate_bundle(
    bundle_root: str | Path, run_network: bool = True, overlays: Sequence[str | Path] = ()
) -> list[str]:
    """Validate one bundle folder; returns the list of problems found (empty when valid).

    ``overlays``: config files read on top of ``train.yaml`` / ``inference.yaml`` for the workflow property check,
    e.g. ``configs/smoke.yaml`` plus a file setting ``data_cache_dir``: building the workflows resolves the datalist,
    which generates the embedded phantoms on first use (about 100 s for the full-size default data)."""
    from monai.bundle import ConfigParser, verify_metadata, verify_net_in_out

    from common.configs import load_config_files

    root = Path(bundle_root)
    problems = [f"missing file {f}" for f in REQUIRED_FILES if not (root / f).is_file()]
    if problems:
        return problems
    configs = root / "configs"
    meta_file = configs / "metadata.json"
    parsed: dict[str, ConfigParser] = {}
    for f in sorted(configs.glob("*.yaml")) + sorted(configs.glob("*.json")):
        try:
            p = ConfigParser()
            # an overlay that edits nested ids (multi-GPU: `train#sampler`; `network_def#...`) only parses on top of
            # the config that defines them
            p.read_config(load_config_files([configs / "train.yaml", f] if _is_overlay(f) else [f]))
            parsed[f.name] = p
        except Exception as err:  # noqa: BLE001
            problems.append(f"{f.name}: does not parse: {err}")
    if problems:
        return problems
    train = parsed["train.yaml"]
    for rid in ("training", "run", "network_def", "initialize"):
        if rid not in train:
            problems.append(f"train.yaml: no top-level '{rid}' id")
    if "run" not in parsed["inference.yaml"]:
        problems.append("inference.yaml: no top-level 'run' id")
    if "network_def" in train and "network_def" in parsed["inference.yaml"]:
        if train.get("network_def") != parsed["inference.yaml"].get("network_def"):
            problems.append("train.yaml and inference.yaml define different network_def")
    extra = [Path(o) for o in overlays]
    _check_workflow(configs / "train.yaml", "train", meta_file, problems, extra)
    _check_workflow(configs / "inference.yaml", "infer", meta_file, problems, extra)
    # multi_gpu_train.yaml: parsed on top of train.yaml above; building it needs a process group (tests/test_multi_gpu)
    try:
        with _quiet():
            verify_metadata(meta_file=str(meta_file), filepath=meta_schema_path())
    except Exception as err:  # noqa: BLE001
        problems.append(f"metadata.json: {err}")
    if problems or not run_network:
        return problems
    try:
        meta = ConfigParser.load_config_file(str(meta_file))
        with _quiet():
            verify_net_in_out(
                net_id="network_def",
                meta_file=str(meta_file),
                config_file=str(configs / "inference.yaml"),
                device="cpu",
                n=2,
                p=1,
                any=32,
                extra_forward_args=extra_forward_args(meta),
            )
    except Exception as err:  # noqa: BLE001
        problems.append(f"verify_net_in_out: {type(err).__name__}: {err}")
    return problems
