"""MONAI dictionary transforms of the restoration bundles: input validation, dose metadata, intensity windows, HU-band
pseudo-labels and on-the-fly low-dose augmentation."""

from common.transforms.augment import RandPETCountReductiond
from common.transforms.dose import EncodeDosed, encode_dose
from common.transforms.intensity import hu_window, suv_scale
from common.transforms.labels import HU_BAND_CLASSES, HU_BAND_EDGES, HUBandLabeld, hu_band_labels
from common.transforms.validation import CheckPaird, ValidateImaged, source_of

__all__ = [
    "HU_BAND_CLASSES",
    "HU_BAND_EDGES",
    "HUBandLabeld",
    "hu_band_labels",
    "CheckPaird",
    "EncodeDosed",
    "RandPETCountReductiond",
    "ValidateImaged",
    "encode_dose",
    "hu_window",
    "source_of",
    "suv_scale",
]
