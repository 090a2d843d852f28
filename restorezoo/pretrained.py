"""Weights shipped inside a bundle: ``<bundle>/pretrained/model.pt``, its sha256 in ``<bundle>/large_files.yml``.

The file is the state dict of the bundle's inference network (the ``network_def`` of ``configs/inference.yaml``),
checked to load strictly before it is written; floating-point tensors may be stored in half precision to keep clones
light, except those with values beyond float16's range (they are cast back to the network's dtype when loaded:
``torch.nn.Module.load_state_dict`` copies values into the existing fp32 parameters). ``large_files.yml`` follows the
model-zoo convention (``path``, ``url``, ``hash_val``, ``hash_type``) so ``python -m monai.bundle
download_large_files --bundle_path <bundle>`` verifies the file; ``url`` is empty because the file is part of the
repository, not a download.

Inference finds the file through :func:`common.bundle_utils.resolve_weights` when the bundle has no trained
``models/model.pt``; trainings write to ``models/`` (or their ``--ckpt_dir``) and never to ``pretrained/``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from common.bundle_utils import PRETRAINED_WEIGHTS

__all__ = ["MAX_FILE_BYTES", "MAX_TOTAL_BYTES", "ShippedWeights", "sha256", "ship_weights", "shipped_weights"]

MAX_FILE_BYTES = 20 * 2**20  # per weight file: clones stay light
MAX_TOTAL_BYTES = 60 * 2**20  # all bundles together
LARGE_FILES = "large_files.yml"


@dataclass
class ShippedWeights:
    """One shipped weight file: its bundle, path, size (bytes), sha256 and storage dtype."""

    bundle: Path
    path: Path
    size: int
    sha256: str
    dtype: str


def sha256(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _storage_dtype(state: dict[str, torch.Tensor]) -> str:
    dtypes = {str(v.dtype).removeprefix("torch.") for v in state.values() if v.is_floating_point()}
    return "+".join(sorted(dtypes))


def _half(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in float16 when it is floating point and every value stays finite there; else unchanged (a tensor
    holding values beyond float16's +-65504, such as a constant channel of 1e5, keeps its precision)."""
    if not tensor.is_floating_point():
        return tensor
    half = tensor.half()
    return half if bool(torch.isfinite(half).all()) else tensor


def ship_weights(bundle_dir: str | os.PathLike, ckpt: str | os.PathLike, half: bool = False) -> ShippedWeights:
    """Write the weights ``ckpt`` (a ``model.pt`` or checkpoint the bundle's training wrote) as the bundle's shipped
    ``pretrained/model.pt`` and record its sha256 in ``large_files.yml``. The state dict is the inference network's
    after a strict load (a checkpoint that does not fit is refused); ``half``: floating-point tensors stored as
    float16 (those whose values do not fit float16 stay as they are). Raises ``ValueError`` when the file would
    exceed :data:`MAX_FILE_BYTES`. Written atomically."""
    from restorezoo.export import _inference_network

    bundle = Path(bundle_dir).expanduser().resolve()
    net, _ = _inference_network(bundle, Path(ckpt).expanduser())
    state = {k: (_half(v) if half else v).contiguous() for k, v in net.state_dict().items()}
    target = bundle / PRETRAINED_WEIGHTS
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".model.pt.tmp", dir=target.parent)
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600: a shipped file is read by everyone
        size = os.path.getsize(tmp)
        if size > MAX_FILE_BYTES:
            raise ValueError(f"{ckpt}: {size / 2**20:.1f} MiB > {MAX_FILE_BYTES / 2**20:.0f} MiB (try half=True)")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    digest = sha256(target)
    listing = {
        "large_files": [
            {"path": PRETRAINED_WEIGHTS, "url": "", "hash_val": digest, "hash_type": "sha256"},
        ]
    }
    header = (
        "# Weights shipped in this repository (no download: url is empty). Verify with\n"
        "#   python -m monai.bundle download_large_files --bundle_path <this bundle folder>\n"
        '# Written by `restorezoo ship`; provenance in docs/README.md, "Shipped weights".\n'
    )
    (bundle / LARGE_FILES).write_text(header + yaml.safe_dump(listing, sort_keys=False))
    return ShippedWeights(bundle, target, target.stat().st_size, digest, _storage_dtype(state))


def shipped_weights(bundle_dir: str | os.PathLike) -> list[ShippedWeights]:
    """The weight files ``large_files.yml`` lists for a bundle, with their recorded sha256 (not recomputed; empty when
    the bundle ships none)."""
    bundle = Path(bundle_dir).expanduser().resolve()
    listing = bundle / LARGE_FILES
    if not listing.is_file():
        return []
    out = []
    for item in (yaml.safe_load(listing.read_text()) or {}).get("large_files", []):
        path = bundle / item["path"]
        state = torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else {}
        size = path.stat().st_size if path.is_file() else 0
        out.append(ShippedWeights(bundle, path, size, str(item.get("hash_val", "")), _storage_dtype(state)))
    return out
