"""MONAI dictionary transforms of the restoration bundles: input validation, dose metadata, intensity windows, HU-band
pseudo-labels, on-the-fly low-dose augmentation (fresh PET counts, fresh CT noise per patch), body masks and
through-plane (thick/thin slice) pairs."""

from .augment import RandPETCountReductiond
from .chain import chain
from .ct_noise import CTSimulatord, RandCTLowDosePatchesd
from .dose import EncodeDosed, encode_dose
from .intensity import hu_window, suv_scale
from .labels import HU_BAND_CLASSES, HU_BAND_EDGES, HUBandLabeld, hu_band_labels
from .loading import LoadCheckedd
from .masks import BodyMaskd, body_mask
from .throughplane import (
    CheckFactord,
    InPlaneAsZd,
    InterpolateZd,
    ThickFromThind,
    ThinGridd,
    ZEdgeWeightd,
    thick_margin,
)
from .validation import CheckPaird, ValidateImaged, source_of

__all__ = [
    "BodyMaskd",
    "CheckFactord",
    "CTSimulatord",
    "InPlaneAsZd",
    "InterpolateZd",
    "ThickFromThind",
    "ThinGridd",
    "ZEdgeWeightd",
    "body_mask",
    "thick_margin",
    "HU_BAND_CLASSES",
    "HU_BAND_EDGES",
    "HUBandLabeld",
    "LoadCheckedd",
    "chain",
    "hu_band_labels",
    "CheckPaird",
    "EncodeDosed",
    "RandCTLowDosePatchesd",
    "RandPETCountReductiond",
    "ValidateImaged",
    "encode_dose",
    "hu_window",
    "source_of",
    "suv_scale",
]
