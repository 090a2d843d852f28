"""NAFNet building blocks and the anatomy-aware teacher / dose-conditioned student of ``ct_lowdose_anatomy_distill``.

NAFBlock (Chen et al., "Simple Baselines for Image Restoration", 2022): ``y = x + beta * conv1x1(SCA(SimpleGate(
dwconv3x3(conv1x1(LN(x))))))``, ``out = y + gamma * conv1x1(SimpleGate(conv1x1(LN(y))))`` with ``beta``, ``gamma``
zero-initialised (every block starts as the identity), SimpleGate = split channels in two halves and multiply, SCA =
simplified channel attention (global average pool, 1x1 conv, multiply).

Encoder (bundles/ct_lowdose_anatomy_distill/docs/README.md): conv3 ``1 -> 32``; three stride-2 conv3
``32 -> 64 -> 128 -> 256``; 8 NAFBlocks at width 256 (1/8 resolution); 1x1 conv ``256 -> 512`` = latent ``z``
``(B, 512, H/8, W/8)``. It also returns the feature maps at 1, 1/2, 1/4 and 1/8 (after the blocks) resolution for
feature distillation. The student encoder adds dose conditioning: the dose fraction ``d`` (0.25 = 25 %) -> MLP
``1 -> 64 -> 64`` (ReLU) -> per body block an SFT layer (``Linear 64 -> 2 * 256`` -> scale, shift;
``x * (1 + scale) + shift``, zero-initialised) applied before the block.

Decoder (shared by teacher and student): 1x1 ``512 -> 256``, 8 NAFBlocks, three transposed conv (k3, s2)
``256 -> 128 -> 64 -> 32``, conv3 ``32 -> 1``, tanh (images in [-1, 1]).

Spatial sizes must be multiples of 8 (:class:`common.inferers.SliceWiseInferer` pads and crops back).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .args import require_bool
from .film import film_modulate
from .frozen import freeze

__all__ = [
    "ConditionedNAFBlock",
    "DoseEmbedding",
    "LayerNorm2d",
    "NAFBlock",
    "NAFDecoder",
    "NAFEncoder",
    "NAFAutoencoder",
    "NAFStudent",
    "SimpleGate",
    "StudentWithIntermediates",
    "TANH_INVERSE_COEFFS",
    "load_teacher_into_student",
    "student_param_groups",
]


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel axis of ``(B, C, H, W)`` (per pixel), with a learnable per-channel affine."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return y.permute(0, 3, 1, 2)


class SimpleGate(nn.Module):
    """Split the channels in two halves and multiply them: ``(B, 2C, H, W)`` -> ``(B, C, H, W)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


class NAFBlock(nn.Module):
    """NAFNet block, channels preserved; starts as the identity (``beta = gamma = 0``)."""

    def __init__(self, channels: int, dw_expand: int = 2, ffn_expand: int = 2) -> None:
        super().__init__()
        dw = channels * dw_expand
        ffn = channels * ffn_expand
        self.norm1 = LayerNorm2d(channels)
        self.conv1 = nn.Conv2d(channels, dw, 1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.gate = SimpleGate()
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw // 2, dw // 2, 1))
        self.conv3 = nn.Conv2d(dw // 2, channels, 1)
        self.norm2 = LayerNorm2d(channels)
        self.conv4 = nn.Conv2d(channels, ffn, 1)
        self.conv5 = nn.Conv2d(ffn // 2, channels, 1)
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.gate(self.conv2(self.conv1(self.norm1(x))))
        h = self.conv3(h * self.sca(h))
        y = x + self.beta * h
        h = self.conv5(self.gate(self.conv4(self.norm2(y))))
        return y + self.gamma * h


class DoseEmbedding(nn.Module):
    """Dose fraction ``(B, 1)`` (or ``(B,)``) -> embedding ``(B, hidden)`` by ``Linear 1 -> hidden, ReLU, Linear
    hidden -> hidden, ReLU``."""

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(1, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, hidden), nn.ReLU())

    def forward(self, dose: torch.Tensor) -> torch.Tensor:
        return self.mlp(dose.reshape(-1, 1).to(self.mlp[0].weight.dtype))


class SFT(nn.Module):
    """Spatial feature transform from a global dose: ``x * (1 + scale) + shift`` with ``(scale, shift)`` from a
    zero-initialised ``Linear(cond_dim, 2C)`` (identity at start); same modulation as FiLM
    (:func:`common.networks.film.film_modulate`)."""

    def __init__(self, cond_dim: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.channels = channels

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        p = self.proj(cond)
        return film_modulate(x, p[:, : self.channels], p[:, self.channels :])


class ConditionedNAFBlock(nn.Module):
    """A :class:`NAFBlock` preceded by an optional :class:`SFT` layer (``cond_dim`` None: no conditioning)."""

    def __init__(self, channels: int, cond_dim: int | None = None) -> None:
        super().__init__()
        self.sft = SFT(cond_dim, channels) if cond_dim else None
        self.block = NAFBlock(channels)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if self.sft is not None and cond is not None:
            x = self.sft(x, cond)
        return self.block(x)


class NAFEncoder(nn.Module):
    """Image ``(B, in_channels, H, W)`` -> latent ``(B, latent_channels, H/8, W/8)`` and the feature maps
    ``[f1 (width), f2 (2 width, 1/2), f4 (4 width, 1/4), f8 (8 width, 1/8, after the blocks)]``.

    Args:
        dose_conditioned: add the dose MLP and one SFT layer before each body block (the student); ``forward`` then
            needs ``dose``: the dose ``(B, 1)`` as a fraction in (0, 1].
    """

    def __init__(
        self,
        in_channels: int = 1,
        width: int = 32,
        num_blocks: int = 8,
        latent_channels: int = 512,
        dose_conditioned: bool = False,
        dose_hidden: int = 64,
    ) -> None:
        super().__init__()
        require_bool(dose_conditioned, "dose_conditioned")
        body = 8 * width
        self.intro = nn.Conv2d(in_channels, width, 3, padding=1)
        self.down1 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.down2 = nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1)
        self.down3 = nn.Conv2d(4 * width, body, 3, stride=2, padding=1)
        cond_dim = dose_hidden if dose_conditioned else None
        self.blocks = nn.ModuleList([ConditionedNAFBlock(body, cond_dim) for _ in range(num_blocks)])
        self.to_latent = nn.Conv2d(body, latent_channels, 1)
        self.dose_conditioned = bool(dose_conditioned)
        self.embed = DoseEmbedding(dose_hidden) if dose_conditioned else None

    def forward(self, x: torch.Tensor, dose: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        f1 = self.intro(x)
        f2 = self.down1(f1)
        f4 = self.down2(f2)
        h = self.down3(f4)
        cond: torch.Tensor | None = None
        if self.embed is not None:
            if dose is None:
                raise ValueError("this encoder is dose-conditioned: pass the dose fraction (B, 1) as `dose`")
            cond = self.embed(dose)
        for block in self.blocks:
            h = block(h, cond)
        return self.to_latent(h), [f1, f2, f4, h]


class NAFDecoder(nn.Module):
    """Latent ``(B, latent_channels, H/8, W/8)`` -> image ``(B, out_channels, H, W)`` in [-1, 1] (tanh)."""

    def __init__(self, out_channels: int = 1, width: int = 32, num_blocks: int = 8, latent_channels: int = 512) -> None:
        super().__init__()
        body = 8 * width
        self.from_latent = nn.Conv2d(latent_channels, body, 1)
        self.blocks = nn.Sequential(*[NAFBlock(body) for _ in range(num_blocks)])
        self.up = nn.Sequential(
            nn.ConvTranspose2d(body, 4 * width, 3, stride=2, padding=1, output_padding=1),
            nn.ConvTranspose2d(4 * width, 2 * width, 3, stride=2, padding=1, output_padding=1),
            nn.ConvTranspose2d(2 * width, width, 3, stride=2, padding=1, output_padding=1),
        )
        self.out = nn.Conv2d(width, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.out(self.up(self.blocks(self.from_latent(z)))))


def _write_shuffle_taps(weight: torch.Tensor, n: int) -> None:
    """Set ``weight[4c + 2a + b, c, 1 + a, 1 + b] = 1`` for ``c < n``: the 2x2 pixel <-> channel taps shared by a
    stride-2 conv (weight ``(out, in, 3, 3)``) and its transposed conv (weight ``(in, out, 3, 3)``)."""
    for c in range(n):
        for a in range(2):
            for b in range(2):
                weight[4 * c + 2 * a + b, c, 1 + a, 1 + b] = 1.0


@torch.no_grad()
def _space_to_depth_init(conv: nn.Conv2d, n_in: int) -> None:
    """Make output channels ``4c + 2a + b`` (``c < n_in``) of a 3x3 / stride-2 / padding-1 conv copy pixel
    ``(2i + a, 2j + b)`` of input channel ``c`` (an exact space-to-depth); those outputs ignore every other input."""
    conv.weight[: 4 * n_in].zero_()
    conv.bias[: 4 * n_in].zero_()
    _write_shuffle_taps(conv.weight, n_in)


@torch.no_grad()
def _depth_to_space_init(deconv: nn.ConvTranspose2d, n_out: int) -> None:
    """Inverse of :func:`_space_to_depth_init` for a 3x3 / stride-2 / padding-1 / output-padding-1 transposed conv:
    output channel ``c < n_out`` at ``(2i + a, 2j + b)`` = input channel ``4c + 2a + b`` at ``(i, j)``."""
    deconv.weight[:, :n_out].zero_()
    deconv.bias[:n_out].zero_()
    _write_shuffle_taps(deconv.weight, n_out)


@torch.no_grad()
def _copy_channels_init(conv: nn.Conv2d, n: int) -> None:
    """Output channel ``i < n`` of a conv = input channel ``i`` (centre tap); those outputs ignore other inputs."""
    k = conv.kernel_size[0] // 2
    conv.weight[:n].zero_()
    conv.bias[:n].zero_()
    for i in range(n):
        conv.weight[i, i, k, k] = 1.0


def identity_init(encoder: NAFEncoder, decoder: NAFDecoder, compensate_tanh: bool = False) -> None:
    """Initialise encoder + decoder so that the autoencoder starts as ``tanh(x)`` (our addition, for short CPU
    schedules): input channel 0 is carried losslessly through the three stride-2 convs by exact space-to-depth
    (1 -> 4 -> 16 -> 64 channels, all within the layers' widths), copied through the 1x1 convs (NAFBlocks start as
    the identity anyway) and restored by exact depth-to-space in the transposed convs; every other channel keeps its
    random initialisation and joins in as training proceeds. Needs ``width >= 1``, ``8 * width >= 64`` and
    ``latent_channels >= 64``.

    ``compensate_tanh``: also set the decoder blocks to map each carried pixel ``x`` to an odd polynomial with
    ``tanh(p(x)) ~ x`` (:func:`_tanh_compensation_init`, :data:`TANH_INVERSE_COEFFS`, the highest degree the blocks
    allow), so the autoencoder starts as the identity: with 8 blocks (degree 13) within 0.0072 on [-1, 1], 54.7 dB on
    the validation CT phantoms in the [-1000, 1000] HU window, against 22 dB for ``tanh(x)``. Needs
    ``8 * width >= 256`` and ``num_blocks >= 4``; freezes those blocks' FFN LayerNorm affine (see there)."""
    body = encoder.down3.out_channels
    if encoder.intro.in_channels != 1 or body < 64 or encoder.to_latent.out_channels < 64:
        raise ValueError("identity_init needs 1 input channel, width >= 8 and latent_channels >= 64")
    with torch.no_grad():
        encoder.intro.weight[0].zero_()
        encoder.intro.bias[0] = 0.0
        encoder.intro.weight[0, 0, 1, 1] = 1.0
    _space_to_depth_init(encoder.down1, 1)
    _space_to_depth_init(encoder.down2, 4)
    _space_to_depth_init(encoder.down3, 16)
    _copy_channels_init(encoder.to_latent, 64)
    _copy_channels_init(decoder.from_latent, 64)
    _depth_to_space_init(decoder.up[0], 16)
    _depth_to_space_init(decoder.up[1], 4)
    _depth_to_space_init(decoder.up[2], 1)
    _copy_channels_init(decoder.out, 1)
    if compensate_tanh:
        with torch.no_grad():  # latent = the carried pixels + zeros, so the decoder's structured rows see only the
            encoder.to_latent.weight[64:].zero_()  # pixels at the start (the other latent channels grow from 0
            encoder.to_latent.bias[64:].zero_()  # as training proceeds)
        m = min(max(TANH_INVERSE_COEFFS), len(decoder.blocks) - 2)
        if m not in TANH_INVERSE_COEFFS:
            raise ValueError(f"tanh compensation needs >= 4 decoder blocks, got {len(decoder.blocks)}")
        _tanh_compensation_init(decoder, 64, TANH_INVERSE_COEFFS[m])


# Odd polynomials p(x) = x q(x^2), q(u) = a0 + a1 u + ... + am u^m, with tanh(p(x)) ~ x on [-1, 1], keyed by m:
# least squares on a uniform 2001-point grid of [-1, 1] plus weight 0.1 on each clip limit x = -1, +1 (CT air and
# dense bone sit there after the HU window), coefficients rounded to 4 decimals. Max |tanh(p(x)) - x| on the grid
# (x 1000 = HU in the [-1000, 1000] window): m = 2: 28.9, 3: 17.0, 4: 10.9, 5: 7.7, 6: 7.2 (RMS 8.8 / 5.0 / 3.3 /
# 2.3 / 2.0); the largest Horner intermediate |a_k + u (...)| is 13.8 (m = 6). tests/test_anatomy_distill.py checks
# them. :func:`_tanh_compensation_init` uses the largest m that fits the decoder's blocks (m + 2 <= num_blocks).
TANH_INVERSE_COEFFS: dict[int, tuple[float, ...]] = {
    2: (1.0642, -0.2881, 1.3357),
    3: (0.9584, 0.9967, -2.2489, 2.6735),
    4: (1.0293, -0.3574, 4.3231, -8.6075, 6.2155),
    5: (0.9782, 1.0433, -5.9423, 21.0397, -30.1829, 15.8599),
    6: (0.9838, 0.7902, -3.0024, 7.3452, -0.5867, -13.7818, 11.1043),
}


def _pair_row(conv4: nn.Conv2d, row: int, channel: int | None, scale: float, zero: int) -> None:
    """Make ``conv4`` output ``row`` read ``scale * y[channel]`` from a LayerNorm'd input (``channel`` None: the
    constant 1). ``LN(y)_c - LN(y)_zero = y_c / sigma``: the exactly-zero channel ``zero`` cancels the mean, and
    ``scale`` holds the nominal ``sigma``."""
    conv4.weight[row].zero_()
    conv4.bias[row] = 1.0 if channel is None else 0.0
    if channel is not None:
        conv4.weight[row, channel] = scale
        conv4.weight[row, zero] = -scale


@torch.no_grad()
def _tanh_compensation_init(decoder: NAFDecoder, n: int, coeffs: tuple[float, ...], big: float = 1.0e5) -> None:
    """Set the FFN branches of the decoder's first ``m + 2`` NAFBlocks (``m = len(coeffs) - 1``) so that the ``n``
    carried pixel channels ``x`` become ``p(x) = x q(x^2)``, ``q(u) = sum_k coeffs[k] u^k``, before the (linear)
    up-sampling path, so the teacher starts as ``tanh(p(x)) ~ x`` instead of ``tanh(x)``.

    Channel layout of the decoder body (width ``C >= 4 n``: the last block needs ``4 n`` of its ``C`` SimpleGate
    pairs): ``x`` = ``[0, n)``, ``u`` = ``[n, 2n)``, ``v`` = ``[2n, 3n)``, a constant ``big`` at ``3n`` (makes every
    LayerNorm's sigma data-independent within ~1e-6 relative, so the per-pixel products are polynomials of the pixel
    values), an exactly-zero channel at ``3n + 1``. The default width 32 gives ``C = 256 = 4 * 64``.
    FFN of block 0: ``u += x^2``; block 1: ``v += a_m u + a_(m-1)``; blocks 2 .. m: ``v += v u - v + a_k`` (Horner,
    ``k = m - 2 .. 0``: ``v`` becomes ``q(x^2)``); block m + 1: ``x += x v - x`` and the constant channel ``-= big``
    (exactly 0 after it, so no weight outside these blocks multiplies it: one Adam step on such a weight would move
    the output by ``lr * big``). SimpleGate products of two 1x1 rows of the normalised input give the quadratic
    terms, a constant row (bias only) the linear ones. Only those channels get ``gamma = 1`` (the other channels and
    the ``beta`` branches stay as initialised: identity)."""
    body, m = decoder.from_latent.out_channels, len(coeffs) - 1
    if body < 4 * n or m < 1 or len(decoder.blocks) < m + 2:
        raise ValueError(
            f"tanh compensation needs >= {4 * n} body channels and >= {m + 2} decoder blocks for "
            f"{m + 1} coefficients, got {body} and {len(decoder.blocks)}"
        )
    xs, us, vs, k, z = range(0, n), range(n, 2 * n), range(2 * n, 3 * n), 3 * n, 3 * n + 1
    decoder.from_latent.weight[n : 3 * n + 2].zero_()
    decoder.from_latent.bias[n : 3 * n + 2].zero_()
    decoder.from_latent.bias[k] = big
    sigma = big * (body - 1) ** 0.5 / body  # LayerNorm sigma with every channel but the constant at 0

    Terms = list[tuple[range | None, range | None, float]]

    def products(block: NAFBlock, target: range, terms: Terms, bias: float, row0: int = 0) -> None:
        # target[i] += bias + sum(w * a[i] * b[i]) (a, b None = the constant 1), with SimpleGate pairs row0, row0 + 1..
        conv4, conv5, half = block.conv4, block.conv5, block.conv4.out_channels // 2
        conv5.weight[target.start : target.stop] = 0.0
        conv5.bias[target.start : target.stop] = bias
        for t, (a, b, w) in enumerate(terms):
            for i, ch in enumerate(target):
                pair = row0 + t * n + i
                _pair_row(conv4, pair, None if a is None else a[i], sigma, z)
                _pair_row(conv4, half + pair, None if b is None else b[i], sigma, z)
                conv5.weight[ch, pair] = w
        block.gamma[0, target.start : target.stop] = 1.0

    blocks = decoder.blocks
    for block in blocks[: m + 2]:  # the FFN LayerNorm's affine is redundant with the 1x1 conv4 after it; here its
        block.norm2.requires_grad_(False)  # steps would reach the products sigma-fold (one Adam step at lr 3e-5
        # moved the output by 0.5), so it stays (1, 0): trainable steps go to conv4 / conv5 instead
    products(blocks[0], us, [(xs, xs, 1.0)], 0.0)
    products(blocks[1], vs, [(us, None, coeffs[m])], coeffs[m - 1])
    for j, a in enumerate(reversed(coeffs[: m - 1])):
        products(blocks[2 + j], vs, [(vs, us, 1.0), (vs, None, -1.0)], a)
    last = blocks[m + 1]  # x <- x v; u, v and the constant are set back to 0: the up-sampling path never sees them
    products(last, xs, [(xs, vs, 1.0), (xs, None, -1.0)], 0.0)
    products(last, us, [(us, None, -1.0)], 0.0, row0=2 * n)
    products(last, vs, [(vs, None, -1.0)], 0.0, row0=3 * n)
    products(last, range(k, k + 1), [], -big)


def _check_multiple_of_8(x: torch.Tensor) -> None:
    if x.shape[-1] % 8 != 0 or x.shape[-2] % 8 != 0:
        raise ValueError(f"spatial size must be a multiple of 8, got {x.shape[-2]} x {x.shape[-1]}")


def _check_spatial_dims(spatial_dims: int) -> None:
    if spatial_dims != 2:
        raise ValueError(f"the NAFNet teacher and student are 2D networks: spatial_dims must be 2, got {spatial_dims}")


class NAFAutoencoder(nn.Module):
    """The teacher: :class:`NAFEncoder` + :class:`NAFDecoder`, trained on normal-dose images only.

    ``identity_start``: start as ``tanh(x)`` (:func:`identity_init`); False = plain random initialisation.
    ``compensate_tanh`` (with ``identity_start``): start as ``tanh(p(x)) ~ x`` instead (needs ``width >= 32`` and
    ``num_blocks >= 4``).

    ``forward(x)``: ``(B, in_channels, H, W)`` in [-1, 1], ``H`` and ``W`` multiples of 8 -> reconstruction
    ``(B, out_channels, H, W)`` in [-1, 1].

    Args:
        spatial_dims: 2 (a slice-wise network).
        in_channels / out_channels: image channels (1 for CT; equal for the identity start).
        width: channels at full resolution (x2 per down-sampling, three of them: ``8 width`` at 1/8).
        num_blocks: NAFBlocks of the body on each side of the latent.
        latent_channels: channels of the latent at 1/8 resolution.

    Example::

        net = NAFAutoencoder(spatial_dims=2, in_channels=1, out_channels=1, width=32, num_blocks=8)
        rec = net(torch.rand(2, 1, 64, 64) * 2 - 1)  # (2, 1, 64, 64), ~ the input at the start
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        width: int = 32,
        num_blocks: int = 8,
        latent_channels: int = 512,
        identity_start: bool = True,
        compensate_tanh: bool = True,
    ) -> None:
        super().__init__()
        _check_spatial_dims(spatial_dims)
        if require_bool(identity_start, "identity_start") and in_channels != out_channels:
            raise ValueError(f"the identity start needs in_channels == out_channels, got {in_channels}/{out_channels}")
        self.encoder = NAFEncoder(in_channels, width, num_blocks, latent_channels)
        self.decoder = NAFDecoder(out_channels, width, num_blocks, latent_channels)
        if require_bool(identity_start, "identity_start"):
            identity_init(self.encoder, self.decoder, require_bool(compensate_tanh, "compensate_tanh"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_multiple_of_8(x)
        return self.decoder(self.encoder(x)[0])


class NAFStudent(nn.Module):
    """The student: a (dose-conditioned) :class:`NAFEncoder` and the teacher's decoder (frozen by the training
    config). ``forward(x, dose)``: low-dose ``(B, in_channels, H, W)`` in [-1, 1] (``H``, ``W`` multiples of 8)
    and the dose fraction ``(B, 1)`` -> denoised image ``(B, out_channels, H, W)`` in [-1, 1]. :meth:`encode` exposes
    the latent and feature maps for distillation.

    Args:
        spatial_dims, in_channels, out_channels, width, num_blocks, latent_channels: as :class:`NAFAutoencoder`
            (the teacher's, whose weights the student starts from).
        dose_conditioned: False is the no-dose ablation (``dose`` is then accepted and ignored).
        freeze_decoder: the decoder's parameters get ``requires_grad=False`` (it is the teacher's decoder, loaded
            by :func:`load_teacher_into_student`), so an optimiser built from the trainable parameters skips it.
        dose_hidden: width of the dose MLP.

    Example::

        net = NAFStudent(spatial_dims=2, in_channels=1, out_channels=1, width=32, num_blocks=8)
        out = net(torch.rand(2, 1, 64, 64) * 2 - 1, torch.tensor([[0.25], [0.1]]))  # (2, 1, 64, 64)
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        width: int = 32,
        num_blocks: int = 8,
        latent_channels: int = 512,
        dose_conditioned: bool = True,
        dose_hidden: int = 64,
        freeze_decoder: bool = False,
    ) -> None:
        super().__init__()
        _check_spatial_dims(spatial_dims)
        self.encoder = NAFEncoder(in_channels, width, num_blocks, latent_channels, dose_conditioned, dose_hidden)
        self.decoder = NAFDecoder(out_channels, width, num_blocks, latent_channels)
        if require_bool(freeze_decoder, "freeze_decoder"):
            freeze(self.decoder)

    def encode(self, x: torch.Tensor, dose: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        _check_multiple_of_8(x)
        return self.encoder(x, dose)

    def forward(self, x: torch.Tensor, dose: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(self.encode(x, dose)[0])


class StudentWithIntermediates(nn.Module):
    """Training view of a :class:`NAFStudent`: ``forward(x, dose)`` returns ``{"pred", "latent", "features"}`` for
    :class:`common.losses.DistillationLoss` (the student itself returns only the image). Holds no parameters of its
    own: checkpoints and the optimiser use the wrapped student."""

    def __init__(self, student: NAFStudent) -> None:
        super().__init__()
        self.student = student

    def forward(
        self, x: torch.Tensor, dose: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        z, feats = self.student.encode(x, dose)
        return {"pred": self.student.decoder(z), "latent": z, "features": feats}


def student_param_groups(student: NAFStudent, lr: float, carry_lr_scale: float = 1.0) -> list[dict]:
    """Optimiser parameter groups for a student: the NAFBlocks, their SFT layers and the dose MLP at ``lr``; the
    encoder's carrying path (intro / stride-2 convs / 1x1 to the latent, which start as an exact space-to-depth of
    the image) at ``lr * carry_lr_scale``. Frozen parameters (the teacher's decoder) are left out. Why: the student
    starts as the teacher, near the identity (within 0.0075 on [-1, 1] by default), and Adam's first steps move
    every weight by about ``lr``, which knocks it off that start; a lower rate on the carrying path kept it closer
    (validation numbers in the bundle's docs/README.md)."""
    body, carry = [], []
    for name, p in student.encoder.named_parameters():
        if p.requires_grad:
            (body if name.startswith(("blocks.", "embed.")) else carry).append(p)
    return [{"params": body, "lr": lr}, {"params": carry, "lr": lr * carry_lr_scale}]


def load_teacher_into_student(student: NAFStudent, teacher: NAFAutoencoder, freeze_decoder: bool = True) -> NAFStudent:
    """Copy the teacher's decoder into the student (frozen when ``freeze_decoder``) and initialise the student
    encoder's shared layers from the teacher encoder (the SFT layers start as the identity, so the student starts as
    the teacher). Returns ``student``."""
    student.decoder.load_state_dict(teacher.decoder.state_dict())
    missing, unexpected = student.encoder.load_state_dict(teacher.encoder.state_dict(), strict=False)
    if unexpected or any(not (k.startswith("embed.") or ".sft." in k) for k in missing):
        raise RuntimeError(f"teacher/student encoders differ: missing {missing}, unexpected {unexpected}")
    if freeze_decoder:
        freeze(student.decoder)
    return student
