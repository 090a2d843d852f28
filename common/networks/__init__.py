"""Networks of the restoration bundles (one module per architecture family).

- :mod:`common.networks.film` — FiLM conditioning on dose metadata (:func:`encode_drf`, :class:`FiLM`).
- :mod:`common.networks.conv_blocks` — convolution variants and pooling layers of the FiLM U-Net.
- :mod:`common.networks.film_unet` — :class:`FiLMUNet` (bundle ``pet_lowdose_film_unet``).
"""

from __future__ import annotations

from common.networks.conv_blocks import CONV_KINDS, POOL_KINDS, MixedPool, make_conv, make_pool
from common.networks.film import FiLM, FiLMGenerator, encode_drf, film_modulate
from common.networks.film_unet import FiLMUNet

__all__ = [
    "CONV_KINDS",
    "POOL_KINDS",
    "FiLM",
    "FiLMGenerator",
    "FiLMUNet",
    "MixedPool",
    "encode_drf",
    "film_modulate",
    "make_conv",
    "make_pool",
]
