"""Inferers that accept any input shape.

MONAI's ``SlidingWindowInferer`` already blends overlapping windows with a Gaussian importance map; networks
with ``k`` pooling levels additionally need every spatial size to be a multiple of ``2**k``.
:class:`PaddedSlidingWindowInferer` pads the input to that multiple (replicate padding, so no artificial edge is
created), clamps the window to the padded volume (a small volume is not inflated to a large ROI), runs MONAI's
sliding window, and crops the result back to the input's exact shape. Extra positional/keyword arguments (e.g. the
dose metadata tensor of shape ``(1, M)``) are passed to the network for every window, as MONAI does.

:class:`SliceWiseInferer` runs a 2D network over every slice of a 3D volume (2D-on-3D inference): the slices become
the batch, each is padded to the network's multiple and cropped back, so the output has the volume's exact shape.
MONAI's ``SliceInferer`` instead runs a 2D sliding window with constant padding only when a slice is smaller than
the window, which leaves sizes that are not a multiple of the network's stride to fail inside the network.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.inferers import Inferer, SlidingWindowInferer
from monai.utils import convert_to_dst_type

__all__ = [
    "ConditionedInferer",
    "FlipEnsembleInferer",
    "PaddedSlidingWindowInferer",
    "SliceWiseInferer",
    "crop_to_shape",
    "pad_to_multiple",
]


def pad_to_multiple(
    x: torch.Tensor, multiple: int | Sequence[int], mode: str = "replicate"
) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Pad the spatial dims of ``x`` (B, C, *spatial) at the end up to a multiple of ``multiple``.

    Returns the padded tensor and the original spatial shape (for :func:`crop_to_shape`).
    """
    spatial = tuple(int(s) for s in x.shape[2:])
    mult = [int(multiple)] * len(spatial) if isinstance(multiple, int) else [int(m) for m in multiple]
    extra = [(-s) % m for s, m in zip(spatial, mult, strict=True)]
    if not any(extra):
        return x, spatial
    pad: list[int] = []
    for e in reversed(extra):  # F.pad wants the last dim first
        pad += [0, e]
    return F.pad(x, pad, mode=mode), spatial


def crop_to_shape(x: torch.Tensor, spatial: Sequence[int], scale: Sequence[int] | None = None) -> torch.Tensor:
    """Crop the spatial dims of ``x`` back to ``spatial`` (times ``scale`` per axis for up-sampling networks)."""
    scale = [1] * len(spatial) if scale is None else list(scale)
    slices = tuple(slice(0, int(s) * int(f)) for s, f in zip(spatial, scale, strict=True))
    return x[(slice(None), slice(None), *slices)]


class PaddedSlidingWindowInferer(Inferer):
    """Sliding-window inference with Gaussian blending on any input shape.

    Args:
        roi_size: window size (each a multiple of ``divisor``); clamped to the padded input size; a non-positive
            entry takes the whole axis (MONAI's convention).
        sw_batch_size: windows per network call.
        overlap: fraction of window overlap (0.5 = half).
        mode: blending, ``"gaussian"`` (default) or ``"constant"``.
        divisor: the network's size multiple (``2**levels``), one for all axes or one per axis.
        output_scale: for up-sampling networks, output size / input size per axis (e.g. ``(1, 1, 4)`` for x4
            through-plane SR): MONAI stitches the larger windows at ``start * scale`` and resizes the blending map to
            them; the result is cropped to ``input shape * scale``.
        pad_mode: ``torch.nn.functional.pad`` mode for the divisor padding.
        sw_device / device: as MONAI's ``SlidingWindowInferer`` (e.g. windows on GPU, stitching on CPU).
    """

    def __init__(
        self,
        roi_size: Sequence[int] | int,
        sw_batch_size: int = 1,
        overlap: float = 0.5,
        mode: str = "gaussian",
        divisor: int | Sequence[int] = 16,
        pad_mode: str = "replicate",
        sigma_scale: float = 0.125,
        output_scale: Sequence[int] | None = None,
        sw_device: str | torch.device | None = None,
        device: str | torch.device | None = None,
        progress: bool = False,
    ) -> None:
        super().__init__()
        self.roi_size = roi_size
        self.divisor = int(divisor) if isinstance(divisor, int) else tuple(int(d) for d in divisor)
        self.output_scale = None if output_scale is None else tuple(int(f) for f in output_scale)
        self.pad_mode = pad_mode
        self.kwargs = dict(
            sw_batch_size=sw_batch_size,
            overlap=overlap,
            mode=mode,
            sigma_scale=sigma_scale,
            sw_device=sw_device,
            device=device,
            progress=progress,
        )

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        """``inputs`` (B, C, *spatial) -> output of the same spatial shape (times ``output_scale``)."""
        padded, spatial = pad_to_multiple(inputs, self.divisor, self.pad_mode)
        n = len(spatial)
        roi = [int(self.roi_size)] * n if isinstance(self.roi_size, int) else [int(r) for r in self.roi_size]
        roi = [min(r, s) for r, s in zip(roi, padded.shape[2:], strict=True)]
        inferer = SlidingWindowInferer(roi_size=roi, **self.kwargs)
        out = inferer(padded, network, *args, **kwargs)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"network output must be a tensor in inference, got {type(out)}")
        return crop_to_shape(out, spatial, self.output_scale)


def neighbour_slices(index: torch.Tensor, n_slices: int, context: int) -> torch.Tensor:
    """Slice indices ``(N,)`` -> ``(N, 2c + 1)``: each slice and its ``c = context`` neighbours on either side, in
    order of offset ``-c .. c``, the first / last slice repeated beyond the volume's ends. The one rule of the 2.5D
    stacks, shared by :class:`SliceWiseInferer` and the training patches
    (:class:`common.transforms.RandCTLowDosePatchesd`), so that both see the same neighbours."""
    offsets = torch.arange(-context, context + 1, device=index.device)
    return (index[:, None] + offsets[None]).clamp(0, n_slices - 1)


class SliceWiseInferer(Inferer):
    """Apply a 2D network to every slice of ``(B, C, X, Y, Z)`` volumes along ``spatial_dim`` (2 = axial z).

    Slices are stacked into batches of ``slice_batch_size``, padded at the end to a multiple of ``divisor``
    (replicate) and cropped back, or, when ``roi_size`` is given, processed by a 2D
    :class:`PaddedSlidingWindowInferer` (for slices too large for memory). Tensor arguments whose first dimension is
    ``B`` (e.g. dose metadata ``(B, M)``) are repeated for every slice of their volume; other arguments are passed
    through. A 4D input ``(B, C, H, W)`` is treated as a batch of slices.

    Args:
        spatial_dim: index of the slicing axis among the 3 spatial axes (0, 1 or 2).
        slice_batch_size: slices per network call.
        divisor: the network's size multiple (e.g. 4 for two stride-2 levels, 8 for three).
        roi_size: optional 2D window for a sliding window over each slice; ``None`` = whole slices.
        overlap: sliding-window overlap (only with ``roi_size``).
        pad_mode: ``torch.nn.functional.pad`` mode.
        context: ``c`` > 0 gives the network each slice with its ``c`` neighbours on either side (2.5D):
            ``(N, C * (2c + 1), H, W)``, channel ``i * (2c + 1) + j`` = channel ``i`` at slice offset ``j - c``, the
            volume's first / last slice repeated beyond its ends (as the training patches do). Needs a 5D input.
    """

    def __init__(
        self,
        spatial_dim: int = 2,
        slice_batch_size: int = 8,
        divisor: int = 4,
        roi_size: Sequence[int] | int | None = None,
        overlap: float = 0.25,
        pad_mode: str = "replicate",
        context: int = 0,
    ) -> None:
        super().__init__()
        if spatial_dim not in (0, 1, 2):
            raise ValueError(f"spatial_dim must be 0, 1 or 2, got {spatial_dim}")
        if slice_batch_size < 1:
            raise ValueError(f"slice_batch_size must be >= 1, got {slice_batch_size}")
        if int(context) < 0:
            raise ValueError(f"context must be >= 0, got {context}")
        self.spatial_dim = int(spatial_dim)
        self.context = int(context)
        self.slice_batch_size = int(slice_batch_size)
        self.divisor = int(divisor)
        self.pad_mode = pad_mode
        self.window = (
            None
            if roi_size is None
            else PaddedSlidingWindowInferer(roi_size, sw_batch_size=slice_batch_size, overlap=overlap, divisor=divisor)
        )

    def _run_slices(self, slices: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.window is not None:
            return self.window(slices, network, *args, **kwargs)
        padded, spatial = pad_to_multiple(slices, self.divisor, self.pad_mode)
        out = network(padded, *args, **kwargs)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"network output must be a tensor in inference, got {type(out)}")
        return crop_to_shape(out, spatial)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        """``inputs`` (B, C, X, Y, Z) -> (B, C_out, X, Y, Z); or (B, C, H, W) -> (B, C_out, H, W)."""
        # plain tensors inside (slicing a batched MetaTensor along a new batch axis confuses its metadata); the
        # result gets the input's metadata back (affine etc.), as MONAI's sliding_window_inference does
        raw = inputs.as_tensor() if isinstance(inputs, MetaTensor) else inputs
        out = self._slices_or_volume(raw, network, *args, **kwargs)
        return convert_to_dst_type(out, inputs)[0] if isinstance(inputs, MetaTensor) else out

    def _slices_or_volume(
        self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        if inputs.ndim == 4:
            if self.context:
                raise ValueError("a slice-context inferer needs (B, C, X, Y, Z) volumes, got 2D slices")
            return self._run_slices(inputs, network, *args, **kwargs)
        if inputs.ndim != 5:
            raise ValueError(f"expected a (B, C, X, Y, Z) volume or (B, C, H, W) slices, got {tuple(inputs.shape)}")
        b = inputs.shape[0]
        axis = 2 + self.spatial_dim
        moved = inputs.movedim(axis, 2)  # (B, C, S, H, W)
        n_slices, plane = moved.shape[2], moved.shape[3:]

        def per_slice(value: Any) -> tuple[Any, bool]:
            if isinstance(value, torch.Tensor) and value.ndim >= 1 and value.shape[0] == b:
                return value.repeat_interleave(n_slices, dim=0), True
            return value, False

        rep_args = [per_slice(a) for a in args]
        rep_kwargs = {k: per_slice(v) for k, v in kwargs.items()}
        outputs = []
        for s0 in range(0, b * n_slices, self.slice_batch_size):
            s1 = min(b * n_slices, s0 + self.slice_batch_size)
            sub_args = [v[s0:s1] if sliced else v for v, sliced in rep_args]
            sub_kwargs = {k: (v[s0:s1] if sliced else v) for k, (v, sliced) in rep_kwargs.items()}
            outputs.append(self._run_slices(self._with_context(moved, s0, s1), network, *sub_args, **sub_kwargs))
        out = torch.cat(outputs, dim=0)
        c_out = out.shape[1]
        out = out.reshape(b, n_slices, c_out, *plane).permute(0, 2, 1, 3, 4)
        return out.movedim(2, axis)

    def _with_context(self, moved: torch.Tensor, s0: int, s1: int) -> torch.Tensor:
        """Slices ``s0:s1`` of the volume-major order of ``moved`` (B, C, S, H, W) -> (s1 - s0, C * (2c + 1), H, W)."""
        n_slices = moved.shape[2]
        index = torch.arange(s0, s1, device=moved.device)
        vol = index // n_slices
        neighbours = neighbour_slices(index % n_slices, n_slices, self.context)  # (N, 2c + 1)
        picked = moved[vol[:, None], :, neighbours]  # (N, 2c + 1, C, H, W)
        return picked.transpose(1, 2).reshape(len(index), -1, *moved.shape[3:])


class FlipEnsembleInferer(Inferer):
    """Test-time flip ensemble around another inferer: the mean of ``flip(inferer(flip(x)))`` over ``flips``.

    Use flips the network was trained to be equivariant to (those of its flip augmentation). Each entry of ``flips``
    is a list of SPATIAL axes (0 = X) to flip together; ``[]`` is the unflipped input. Cost: ``len(flips)`` runs.

    Args:
        inferer: the inner inferer (e.g. :class:`PaddedSlidingWindowInferer`).
        flips: e.g. ``[[], [0], [2], [0, 2]]``.
    """

    def __init__(self, inferer: Inferer, flips: Sequence[Sequence[int]] = ((), (0,))) -> None:
        super().__init__()
        if not flips:
            raise ValueError("flips must hold at least one entry ([] = the unflipped input)")
        self.inferer = inferer
        self.flips = [tuple(int(a) for a in f) for f in flips]

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        """``inputs`` (B, C, *spatial) -> mean output over the flips, same shape as the inner inferer's output."""
        total: torch.Tensor | None = None
        for axes in self.flips:
            dims = [2 + a for a in axes]
            x = torch.flip(inputs, dims) if dims else inputs
            y = self.inferer(x, network, *args, **kwargs)
            y = torch.flip(y, dims) if dims else y
            total = y if total is None else total + y
        assert total is not None
        return total / len(self.flips)


class ConditionedInferer(Inferer):
    """Run ``inferer(inputs, network, condition)`` with the conditioning vector carried by the input itself.

    Conditioned networks (e.g. FiLM on the dose) take ``network(x, condition)``. MONAI's engines can pass the
    condition with ``PrepareBatchExtraInput``, but MONAI Label and plain inference scripts call only
    ``inferer(inputs, network)``. Here the condition travels in ``inputs.meta[meta_key]`` (written by
    ``common.transforms.EncodeDosed(attach_to="image")``), so both callers run the same path. A condition passed
    explicitly (extra positional / keyword arguments) is used as given.

    Args:
        inferer: the inner inferer, called as ``inferer(inputs, network, condition)``.
        meta_key: key of the condition in the input's meta data: ``(M,)`` for one item, ``(B, M)`` once batched.
    """

    def __init__(self, inferer: Inferer, meta_key: str = "meta") -> None:
        super().__init__()
        self.inferer, self.meta_key = inferer, meta_key

    def condition(self, inputs: torch.Tensor) -> torch.Tensor:
        """The ``(B, M)`` float condition of ``inputs`` (B, C, *spatial), on the inputs' device."""
        meta = inputs.meta if isinstance(inputs, MetaTensor) else {}
        if self.meta_key not in meta:
            source = meta.get("filename_or_obj", "the input")
            raise ValueError(
                f"{source}: no conditioning value '{self.meta_key}' in the image meta data; the preprocessing must "
                f"attach it (common.transforms.EncodeDosed(attach_to='image')) or the caller must pass it"
            )
        cond = torch.as_tensor(meta[self.meta_key], dtype=torch.float32)
        cond = cond.as_tensor() if isinstance(cond, MetaTensor) else cond
        batch = inputs.shape[0]
        if cond.ndim == 1:  # one item (MONAI Label adds the batch dim to the image only)
            cond = cond.unsqueeze(0).expand(batch, -1)
        if cond.ndim != 2 or cond.shape[0] != batch:
            raise ValueError(f"condition '{self.meta_key}' has shape {tuple(cond.shape)}, expected ({batch}, M)")
        return cond.to(inputs.device)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> torch.Tensor:
        """``inputs`` (B, C, *spatial) -> the inner inferer's output for ``network(x, condition)``."""
        if args or kwargs:
            return self.inferer(inputs, network, *args, **kwargs)
        return self.inferer(inputs, network, self.condition(inputs))
