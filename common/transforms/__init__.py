"""MONAI dictionary transforms of the restoration bundles: input validation, dose metadata, intensity windows, HU-band
pseudo-labels, on-the-fly low-dose augmentation (fresh PET counts, fresh CT noise per patch), body masks and
through-plane (thick/thin slice) pairs."""

from common.transforms.augment import RandPETCountReductiond
from common.transforms.chain import chain
from common.transforms.ct_noise import CTSimulatord, RandCTLowDosePatchesd
from common.transforms.dose import EncodeDosed, encode_dose
from common.transforms.intensity import hu_window, suv_scale
from common.transforms.labels import HU_BAND_CLASSES, HU_BAND_EDGES, HUBandLabeld, hu_band_labels
from common.transforms.loading import LoadCheckedd
from common.transforms.masks import BodyMaskd, body_mask
from common.transforms.throughplane import (
    CheckFactord,
    InPlaneAsZd,
    InterpolateZd,
    ThickFromThind,
    ThinGridd,
    ZEdgeWeightd,
    thick_margin,
)
from common.transforms.validation import CheckPaird, ValidateImaged, source_of

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
