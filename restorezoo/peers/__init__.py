"""Learned peers for the benchmark: networks a user would otherwise pick, trained by the host bundle's own recipe
(same data, patches, loss, optimiser and CPU budget) through a config overlay in this folder, so that the benchmark
compares architectures and nothing else.

- ``redcnn_ct.yaml`` on ``ct_lowdose_featkpn``: RED-CNN as packaged by ldct-benchmark (optional:
  ``pip install --no-deps ldct-benchmark==0.0.15``; its declared dependencies pull torchvision and pin pydicom,
  while its network module imports torch only);
- ``unet_pet.yaml`` on ``pet_lowdose_film_unet``: a plain MONAI ``UNet`` (no dose input).

A host bundle lists its peers as extra runs of its ``configs/benchmark.yaml`` (``peer``, ``peer_overlay``,
``ckpt_subdir``, ``requires``, and ``train_overlays``: host configs added to training only, e.g. its full recipe);
``restorezoo benchmark --train`` trains a missing peer with the overlays.
- ``redcnn_ct_full.yaml`` / ``unet_pet_full.yaml``: the same peers at the budget of the host's full recipe
  (``configs/train_full.yaml``), stacked after the default-budget overlay.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch
from torch import nn

__all__ = ["RedCNN", "Unconditioned", "overlay_path", "run_overlays"]


def overlay_path(name: str) -> Path:
    """Path of a peer overlay shipped in this package (e.g. ``"redcnn_ct.yaml"``)."""
    path = Path(str(resources.files("restorezoo.peers") / name))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such peer overlay")
    return path


def run_overlays(run: dict) -> list[Path]:
    """The peer overlays of a benchmark run (``peer_overlay``: one file name of this package or a list of them, applied
    in order, e.g. the default-budget overlay then the full-budget one); ``[]`` for a run that is not a peer."""
    names = run.get("peer_overlay") or []
    return [overlay_path(n) for n in ([names] if isinstance(names, str) else names)]


class RedCNN(nn.Module):
    """RED-CNN (residual encoder-decoder CNN, Chen et al. 2017), the class ``ldctbench.methods.redcnn.network.Model``
    of ldct-benchmark 0.0.15 unchanged: five 5x5 valid convolutions and five 5x5 transposed convolutions with
    ``channels`` features, three residual shortcuts, no final ReLU.

    Input / output: ``(B, 1, H, W)`` slices in the host bundle's normalised units, any ``H, W >= 21``.

    Example (with ldct-benchmark installed):
        >>> RedCNN()(torch.zeros(2, 1, 64, 64)).shape
        torch.Size([2, 1, 64, 64])
    """

    def __init__(self, channels: int = 96) -> None:
        super().__init__()
        try:
            from ldctbench.methods.redcnn.network import Model
        except ImportError as err:
            raise ImportError(
                "the RED-CNN peer needs ldct-benchmark: pip install --no-deps ldct-benchmark==0.0.15"
            ) from err
        self.net = Model(None, out_ch=channels)  # its `args` are not used by the network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Unconditioned(nn.Module):
    """Run ``network(x)`` and ignore the conditioning arguments a dose-conditioned bundle passes (``dose``), so a
    plain network (e.g. MONAI ``UNet``) trains and infers through that bundle's unchanged configs.

    Input / output: whatever ``network`` takes and returns.

    Example:
        >>> from monai.networks.nets import UNet
        >>> net = Unconditioned(UNet(3, 1, 1, (8, 16), (2,)))
        >>> net(torch.zeros(1, 1, 16, 16, 16), torch.zeros(1, 1)).shape
        torch.Size([1, 1, 16, 16, 16])
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor, *conditioning: torch.Tensor) -> torch.Tensor:
        return self.network(x)
