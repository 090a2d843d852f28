"""Shared library of the MONAI restoration bundles.

Array conventions used everywhere in this package:

- spatial arrays are ``(X, Y, Z)`` as nibabel / MONAI ``LoadImage`` return them (z = axial slice index, last);
  MONAI tensors add channel (and batch) in front: ``(C, X, Y, Z)`` / ``(B, C, X, Y, Z)``;
- spacings are in millimetres, ordered like the axes ``(sx, sy, sz)``;
- CT intensities are Hounsfield units (HU); PET intensities are SUV (body weight) unless stated otherwise.
"""

__version__ = "0.1.0"
