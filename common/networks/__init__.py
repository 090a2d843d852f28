"""Networks of the restoration bundles (one module per architecture family).

- :mod:`common.networks.film` — FiLM conditioning on dose metadata
  (:class:`FiLM`; the dose is encoded by :func:`common.transforms.encode_dose`).
- :mod:`common.networks.conv_blocks` — convolution variants and pooling layers of the FiLM U-Net.
- :mod:`common.networks.film_unet` — :class:`FiLMUNet` (bundle ``pet_lowdose_film_unet``).
- :mod:`common.networks.pixel_kernels` — per-pixel, per-channel kernel application (kernel-prediction networks).
- :mod:`common.networks.featkpn` — :class:`FeatKPN` (bundle ``ct_lowdose_featkpn``).
- :mod:`common.networks.noise_level` — a per-image noise level from the image itself (an optional FeatKPN input).
- :mod:`common.networks.throughplane_sr` — :class:`ThroughPlaneSRNet` (bundle ``ct_throughplane_sr``).
- :mod:`common.networks.perception_unet` — :class:`AnatomyUNet`, the frozen HU-band segmenter behind Feat-KPN's
  anatomical perception loss.
- :mod:`common.networks.refiner` — :class:`RefinerUNet` (norm-free diffusion U-Net on a folded grid) and
  :class:`EstimateRefiner` (frozen estimator + refiner, bundle ``pet_lowdose_ddpm3d``).
- :mod:`common.networks.nafnet` — NAFNet teacher autoencoder and dose-conditioned student (bundle
  ``ct_lowdose_anatomy_distill``).
"""

from __future__ import annotations

from .conv_blocks import CONV_KINDS, POOL_KINDS, MixedPool, make_conv, make_pool
from .featkpn import FeatKPN
from .film import FiLM, FiLMGenerator, film_modulate
from .film_unet import FiLMUNet
from .nafnet import NAFAutoencoder, NAFDecoder, NAFEncoder, NAFStudent, StudentWithIntermediates
from .noise_level import estimate_noise_std, noise_level_map
from .perception_unet import AnatomyUNet
from .pixel_kernels import apply_pixel_kernels, apply_pixel_kernels_unfold, normalize_kernels
from .refiner import EstimateRefiner, RefinerUNet, TimeResBlock
from .throughplane_sr import ThroughPlaneSRNet, linear_upsample_z, shuffle_z

__all__ = [
    "EstimateRefiner",
    "RefinerUNet",
    "TimeResBlock",
    "AnatomyUNet",
    "NAFAutoencoder",
    "NAFDecoder",
    "NAFEncoder",
    "NAFStudent",
    "StudentWithIntermediates",
    "ThroughPlaneSRNet",
    "estimate_noise_std",
    "noise_level_map",
    "linear_upsample_z",
    "shuffle_z",
    "FeatKPN",
    "apply_pixel_kernels",
    "apply_pixel_kernels_unfold",
    "normalize_kernels",
    "CONV_KINDS",
    "POOL_KINDS",
    "FiLM",
    "FiLMGenerator",
    "FiLMUNet",
    "MixedPool",
    "film_modulate",
    "make_conv",
    "make_pool",
]
