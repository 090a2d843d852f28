"""Fresh low-dose CT noise for every training patch (the CT data engine).

A stored low-dose volume carries ONE noise realisation per dose; a network trained on it sees the same noise every
epoch and can memorise it. For the embedded phantoms the datalist records the noise-free phantom (``phantom_hu``)
and the acquisition (``simulation``), so the projection-domain simulation of :mod:`common.physics.ct` can draw new
Poisson + electronic counts on the slice's clean sinogram for every patch and reconstruct only the patch's pixels:
the same physics as the stored inputs (non-stationary, streaky), never the same noise twice.

- :class:`CTSimulatord` (deterministic, cached with the loading): the clean sinograms of the volume.
- :class:`RandCTLowDosePatchesd` (random): ``num_samples`` 2D axial patch pairs ``(1, P, P)``; the input of each is
  a fresh realisation with probability ``prob``, else the stored low-dose patch. Items without a simulator (a
  user's own pairs) always give their stored patches, as :class:`monai.transforms.RandSpatialCropSamplesd` would.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform, Randomizable

from ..errors import InputDataError
from ..inferers import neighbour_slices
from ..io.nifti import load_nifti
from ..physics.ct import CTAcquisition, CTLowDoseSimulator, check_dose

__all__ = ["CTSimulatord", "RandCTLowDosePatchesd"]

_LOG = logging.getLogger(__name__)
_ACQUISITION_FIELDS = ("i0", "n_views", "electronic_noise_std", "mu_water_per_mm", "fbp_filter")


class CTSimulatord(MapTransform):
    """Add ``simulator_key``: a :class:`common.physics.CTLowDoseSimulator` of the item's noise-free phantom.

    Needs ``source_key`` (path of the phantom in HU, ``(X, Y, Z)`` on the label's grid) and ``simulation_key`` (the
    datalist's record: ``kind == "ct_projection"``, ``pixel_mm`` and the :class:`common.physics.CTAcquisition`
    fields), as the embedded CT datasets write them. Items without them pass unchanged (no fresh noise for them).
    The clean sinograms cost ``Z * n_views * N`` float32 values (about 9 MB for 24 slices of 128 x 128).
    """

    def __init__(
        self,
        source_key: str = "phantom_hu",
        simulation_key: str = "simulation",
        simulator_key: str = "ct_simulator",
        label_key: str = "label",
    ) -> None:
        super().__init__(keys=[source_key], allow_missing_keys=True)
        self.source_key, self.simulation_key = source_key, simulation_key
        self.simulator_key, self.label_key = simulator_key, label_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        record, source = d.get(self.simulation_key), d.get(self.source_key)
        if not isinstance(record, Mapping) or record.get("kind") != "ct_projection" or not source:
            return d
        hu, _ = load_nifti(source, check_finite=True)
        label = d.get(self.label_key)
        if label is not None and tuple(hu.shape) != tuple(label.shape[1:]):
            raise InputDataError(source, f"phantom shape {hu.shape} differs from the label's {tuple(label.shape[1:])}")
        try:
            acquisition = CTAcquisition(**{k: record[k] for k in _ACQUISITION_FIELDS})
            pixel_mm = float(record["pixel_mm"])
        except (KeyError, TypeError, ValueError) as err:
            raise InputDataError(source, f"datalist 'simulation' record unusable for CT noise: {err}") from None
        d[self.simulator_key] = CTLowDoseSimulator(hu, pixel_mm, acquisition)
        return d


class RandCTLowDosePatchesd(Randomizable, MapTransform):
    """``num_samples`` random 2D axial patch pairs of a ``(1, X, Y, Z)`` image / label pair, in HU.

    Each patch picks a slice and an in-plane corner uniformly (as ``RandSpatialCropSamplesd`` with ``roi_size
    (P, P, 1)``); with probability ``prob`` (and a simulator in the item) its image is a fresh realisation at the
    item's dose (or, with ``dose_range = (low, high)``, at a dose drawn log-uniformly there, written to
    ``dose_key``), reconstructed for the patch's pixels only (about 30 ms for 64 x 64 at 720 views on one core).

    With ``context = c > 0`` the image holds the patch's slice and its ``c`` neighbours on either side,
    ``(2c + 1, P, P)`` (slice offset ``j - c`` in channel ``j``; the first / last slice repeated beyond the volume's
    ends, as :class:`common.inferers.SliceWiseInferer` does), each neighbour with its own fresh realisation at the
    same dose; the label stays the centre slice.

    Returns:
        a list of ``num_samples`` dicts with ``image`` ``(2c + 1, P, P)`` and ``label`` ``(1, P, P)`` float32 tensors
        (other keys copied, the simulator dropped).
    """

    def __init__(
        self,
        keys: Sequence[str] = ("image", "label"),
        patch_size: int = 64,
        num_samples: int = 8,
        prob: float = 1.0,
        simulator_key: str = "ct_simulator",
        dose_key: str = "dose",
        dose_range: Sequence[float] | None = None,
        context: int = 0,
    ) -> None:
        super().__init__(keys=keys)
        if len(self.keys) != 2:
            raise ValueError(f"keys must be (image, label), got {keys!r}")
        if int(patch_size) < 1 or int(num_samples) < 1:
            raise ValueError(f"patch_size and num_samples must be >= 1, got {patch_size}, {num_samples}")
        if not 0.0 <= float(prob) <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        if int(context) < 0:
            raise ValueError(f"context must be >= 0, got {context}")
        self.patch_size, self.num_samples, self.prob = int(patch_size), int(num_samples), float(prob)
        self.context = int(context)
        self.simulator_key, self.dose_key = simulator_key, dose_key
        self.dose_range = None
        if dose_range is not None:
            low, high = (check_dose(v) for v in dose_range)
            if low > high:
                raise ValueError(f"dose_range must be (low, high), got {dose_range!r}")
            self.dose_range = (low, high)
        self._warned = False

    def randomize(self, data: Any = None) -> None:  # the draws are made per patch in __call__
        return None

    def _dose(self, item_dose: Any) -> float:
        if self.dose_range is None:
            return check_dose(item_dose)
        low, high = np.log(self.dose_range[0]), np.log(self.dose_range[1])
        return float(np.exp(self.R.uniform(low, high)))

    def __call__(self, data: Mapping[Hashable, Any]) -> list[dict[Hashable, Any]]:
        d = dict(data)
        simulator: CTLowDoseSimulator | None = d.pop(self.simulator_key, None)
        image_key, label_key = self.keys
        image, label = torch.as_tensor(d[image_key]), torch.as_tensor(d[label_key])
        _, x_size, y_size, z_size = label.shape
        p = self.patch_size
        if min(x_size, y_size) < p:
            raise InputDataError(None, f"slices {x_size}x{y_size} smaller than the {p}x{p} training patch")
        if simulator is None and self.prob > 0 and not self._warned:
            _LOG.info("CT items without a noise-free phantom: training on their stored low-dose images")
            self._warned = True
        out = []
        for _ in range(self.num_samples):
            x0, y0 = int(self.R.randint(x_size - p + 1)), int(self.R.randint(y_size - p + 1))
            z = int(self.R.randint(z_size))
            sample = {k: v for k, v in d.items() if k not in self.keys}
            sample[label_key] = label[:, x0 : x0 + p, y0 : y0 + p, z].float().clone()
            slices = neighbour_slices(torch.tensor([z]), z_size, self.context)[0].tolist()
            if simulator is not None and self.R.rand() < self.prob:
                dose = self._dose(d.get(self.dose_key))
                rng = np.random.default_rng(int(self.R.randint(0, 2**31 - 1)))
                patches = [simulator.simulate_patch(dose, rng, zi, (x0, y0), (p, p)) for zi in slices]
                sample[image_key] = torch.from_numpy(np.stack(patches))
                if self.dose_range is not None:
                    sample[self.dose_key] = dose
            else:
                sample[image_key] = image[0, x0 : x0 + p, y0 : y0 + p, slices].movedim(-1, 0).float().clone()
            out.append(sample)
        return out
