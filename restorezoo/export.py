"""Export a trained bundle as a self-contained model-zoo release (a folder and a zip) for MONAI Label or a PACS script.

Layout of ``<out>/<bundle>/`` (the model-zoo release layout; the zip holds the same tree under ``<bundle>/``)::

    configs/inference.yaml  configs/metadata.json  configs/logging.conf   (the shared config pieces written out)
    models/model.pt         plain state dict of the inference network (loads with map_location on any device)
    models/model.ts         TorchScript with metadata.json / inference.yaml embedded (when the network scripts)
    models/model.onnx       optional (``onnx=True``, the ``onnx`` extra): fixed input shape (1, C, size, ...), checked
                            against PyTorch with ONNX Runtime before it is written
    restorezoo_common_<hash>/  this repository's library, vendored under a name unique to its content (a hash of its
                            files): the configs' ``common.*`` references are renamed to it, so two bundles exported
                            from different versions can be served by one process without sharing library code
    scripts/                the bundle's own scripts, if any
    docs/README.md  LICENSE

Why vendored code: the configs name ``common.*`` classes, and an exported bundle must run where only the PyPI
packages of ``metadata.json`` ``required_packages_version`` are installed. MONAI Label puts the bundle folder on
``sys.path`` before it parses the configs; ``python -m monai.bundle run`` started in the bundle folder does the same
through the current directory.

Checks made here, before anything is written: the checkpoint loads strictly into the inference network (so MONAI
Label's non-strict load cannot silently skip weights), and the TorchScript module reproduces the eager network on a
test input. The folder and zip appear atomically (built under a temporary name, then renamed); an existing export is
never overwritten unless asked.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = [
    "ExportResult",
    "export_bundle",
    "inference_config_path",
    "rename_library",
    "vendored_library_name",
    "write_onnx",
]

logger = logging.getLogger(__name__)

_CONFIG_FILES = ("metadata.json", "logging.conf")
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")


@dataclass
class ExportResult:
    """Where the export went and how large it is (bytes)."""

    folder: Path
    zip_path: Path | None
    folder_bytes: int
    zip_bytes: int | None
    torchscript: bool
    onnx_max_abs_diff: float | None = None


def inference_config_path(bundle_dir: Path) -> Path:
    """``configs/inference.yaml`` or ``configs/inference.json`` of ``bundle_dir`` (the names MONAI Label reads)."""
    for name in ("inference.yaml", "inference.json"):
        if (bundle_dir / "configs" / name).is_file():
            return bundle_dir / "configs" / name
    raise FileNotFoundError(f"{bundle_dir}: no configs/inference.yaml or configs/inference.json")


def vendored_library_name(library: Path) -> str:
    """The package name the library is vendored under in an export: ``restorezoo_common_<12 hex>``, a hash of its
    files, so exports of one library version share the name (identical code) and exports of different versions
    never meet in ``sys.modules`` when one process (a MONAI Label server) loads several bundles."""
    digest = hashlib.sha256()
    for path in sorted(p for p in library.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        if path.name.startswith(".") or path.suffix == ".pyc":
            continue
        digest.update(path.relative_to(library).as_posix().encode() + b"\0" + path.read_bytes())
    return f"restorezoo_common_{digest.hexdigest()[:12]}"


_LIBRARY_REF = re.compile(r"(?<![\w./-])common(?=\.\w|[\s\"']|$)", re.MULTILINE)


def rename_library(config_text: str, name: str) -> str:
    """``config_text`` with every reference to the ``common`` package (``$import common.x``, ``_target_: common.x``,
    ``$common.x(...)``) naming ``name`` instead; folder paths such as ``common/configs`` in comments are left alone.
    The library itself imports its own modules relatively, so it needs no rewriting."""
    return _LIBRARY_REF.sub(name, config_text)


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _inference_network(bundle_dir: Path, ckpt: Path) -> tuple[torch.nn.Module, dict]:
    """The inference config's ``network_def`` on CPU with ``ckpt`` loaded strictly, and the metadata."""
    from monai.bundle import ConfigParser

    from common.bundle_utils import load_weights
    from common.configs import load_config_files

    meta = json.loads((bundle_dir / "configs" / "metadata.json").read_text())
    parser = ConfigParser()
    parser.read_config(load_config_files(inference_config_path(bundle_dir)))
    parser.read_meta(str(bundle_dir / "configs" / "metadata.json"))
    parser["bundle_root"] = str(bundle_dir)
    net = parser.get_parsed_content("network_def", instantiate=True).to("cpu")
    load_weights(net, ckpt, what=f"checkpoint for the {bundle_dir.name} inference network")
    return net.eval(), meta


def _write_torchscript(net: torch.nn.Module, meta: dict, config_text: str, models: Path) -> None:
    """Script ``net``, check it against the eager network on a test input, save ``models/model.ts``."""
    from monai.data import save_net_with_metadata

    from restorezoo.bundle_check import extra_forward_args

    scripted = torch.jit.script(net)
    spec = meta["network_data_format"]["inputs"]["image"]
    x = torch.rand(
        1, int(spec["num_channels"]), *[32] * len(spec["spatial_shape"]), generator=torch.Generator().manual_seed(0)
    )
    extra = extra_forward_args(meta)
    with torch.no_grad():
        torch.testing.assert_close(scripted(x, **extra), net(x, **extra), atol=1e-5, rtol=1e-4)
    save_net_with_metadata(
        scripted,
        str(models / "model"),
        include_config_vals=False,
        append_timestamp=False,
        meta_values=meta,
        more_extra_files={"inference.yaml": config_text.encode()},
    )


def write_onnx(net: torch.nn.Module, meta: dict, path: Path, size: int = 64) -> float:
    """Export ``net`` to ONNX at the fixed input shape ``(1, C, size, ...)`` (plus its metadata-described extra
    inputs: dose vector, diffusion timestep) and check ONNX Runtime against PyTorch on a fresh input. Tries the
    TorchScript-based exporter first, then the ``torch.export`` (dynamo) one. Returns the largest absolute
    difference; raises ``RuntimeError`` when it exceeds 1e-4 x the output's range (+1e-5)."""
    import warnings

    import onnxruntime as ort

    from restorezoo.bundle_check import extra_forward_args

    spec = meta["network_data_format"]["inputs"]["image"]
    gen = torch.Generator().manual_seed(0)

    def inputs() -> tuple[torch.Tensor, ...]:
        x = torch.rand(1, int(spec["num_channels"]), *[size] * len(spec["spatial_shape"]), generator=gen)
        return (x, *extra_forward_args(meta).values())

    names = ["image", *extra_forward_args(meta)]
    args = inputs()
    errors = []
    for dynamo in (False, True):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    net, args, str(path), input_names=names, output_names=["pred"], dynamo=dynamo, opset_version=18
                )
            break
        except Exception as err:  # noqa: BLE001 - each exporter fails with its own error types
            errors.append(f"{'dynamo' if dynamo else 'torchscript'} exporter: {type(err).__name__}: {err}")
    else:
        raise RuntimeError("ONNX export failed: " + " | ".join(e[:500] for e in errors))
    check = inputs()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {n: a.numpy() for n, a in zip(names, check, strict=True)})[0]
    with torch.no_grad():
        ref = net(*check)
    ref = (ref[0] if isinstance(ref, list | tuple) else ref).numpy()
    diff = float(abs(got - ref).max())
    if diff > 1e-4 * float(ref.max() - ref.min()) + 1e-5:
        raise RuntimeError(f"ONNX Runtime output differs from PyTorch by {diff:.3g}")
    return diff


def export_bundle(
    bundle_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    ckpt: str | os.PathLike | None = None,
    make_zip: bool = True,
    overwrite: bool = False,
    onnx: bool = False,
    onnx_size: int = 64,
) -> ExportResult:
    """Export ``bundle_dir`` with the weights ``ckpt`` (default ``<bundle>/models/model.pt``, else the weights shipped
    in ``<bundle>/pretrained/model.pt``) to ``out_dir/<name>``
    (and ``out_dir/<name>.zip``). Returns the paths and sizes. Raises ``FileNotFoundError`` for a missing bundle
    file or checkpoint and ``FileExistsError`` when the export exists and ``overwrite`` is False. ``onnx``: also write
    ``models/model.onnx`` at input size ``onnx_size`` per spatial axis (see :func:`write_onnx`)."""
    import common
    from common.bundle_utils import resolve_weights
    from common.configs import expand_shared_macros

    bundle = Path(bundle_dir).expanduser().resolve()
    if not (bundle / "configs" / "metadata.json").is_file():
        raise FileNotFoundError(f"{bundle}: not a bundle folder (no configs/metadata.json)")
    config = inference_config_path(bundle)
    weights = Path(ckpt).expanduser() if ckpt else Path(resolve_weights(bundle / "models", bundle))
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: missing trained weights (train the bundle first, or pass --ckpt)")
    out = Path(out_dir).expanduser().resolve()
    final = out / bundle.name
    final_zip = out / f"{bundle.name}.zip"
    for target in (final, final_zip) if make_zip else (final,):
        if target.exists() and not overwrite:
            raise FileExistsError(f"{target} exists: choose another --out or pass --overwrite")
    if out == bundle or bundle in final.parents or final == bundle:
        raise ValueError(f"{out}: the export may not be written into the bundle being exported")

    net, meta = _inference_network(bundle, weights)
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{bundle.name}.", dir=out))
    try:
        root = stage / bundle.name
        (root / "configs").mkdir(parents=True)
        config_text = config.read_text()
        if config.suffix in (".yaml", ".yml"):  # the shared pieces written out: the release runs anywhere
            config_text = expand_shared_macros(config_text)
        config_text = rename_library(config_text, vendored_library_name(Path(common.__file__).resolve().parent))
        (root / "configs" / config.name).write_text(config_text)
        for name in _CONFIG_FILES:  # logging.conf is a link to the shared file: its content is copied
            shutil.copy2(bundle / "configs" / name, root / "configs" / name)
        shutil.copytree(bundle / "docs", root / "docs", ignore=_IGNORE)
        shutil.copy2(bundle / "LICENSE", root / "LICENSE")
        if (bundle / "scripts").is_dir():
            shutil.copytree(bundle / "scripts", root / "scripts", ignore=_IGNORE)
        library = Path(common.__file__).resolve().parent
        shutil.copytree(library, root / vendored_library_name(library), ignore=_IGNORE)
        models = root / "models"
        models.mkdir()
        torch.save(net.state_dict(), models / "model.pt")
        scripted = meta.get("torchscript", True) is not False
        if scripted:
            _write_torchscript(net, meta, config_text, models)
        onnx_diff = write_onnx(net, meta, models / "model.onnx", onnx_size) if onnx else None
        zip_tmp = None
        if make_zip:
            zip_tmp = Path(shutil.make_archive(str(stage / bundle.name), "zip", root_dir=stage, base_dir=bundle.name))
        if final.exists():
            shutil.rmtree(final)
        os.replace(root, final)
        if zip_tmp is not None:
            os.replace(zip_tmp, final_zip)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    result = ExportResult(
        folder=final,
        zip_path=final_zip if make_zip else None,
        folder_bytes=_folder_bytes(final),
        zip_bytes=final_zip.stat().st_size if make_zip else None,
        torchscript=scripted,
        onnx_max_abs_diff=onnx_diff,
    )
    logger.info("exported %s -> %s (%d bytes; zip %s bytes)", bundle.name, final, result.folder_bytes, result.zip_bytes)
    return result
