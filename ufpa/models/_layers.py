"""Building blocks shared by the architectures: alignment-aware resampling and convolutions."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import geometry, ops

# How each alignment variant upsamples where paths meet (a geometry / ops mode name). 'learned' starts from the
# baseline's nearest grid and moves it by offsets it learns (LearnedResample).
UPSAMPLE_MODE = {"baseline": "nearest", "bilinear": "bilinear", "bilinear_corners": "bilinear_corners",
                 "ufpa": "bilinear_corners", "ufpa_any": "aligned", "learned": "nearest"}
# The paper's strategy pads 3x3 convs by replicating the border; the other variants keep zeros.
PADDING_MODE = {"baseline": "zeros", "bilinear": "zeros", "bilinear_corners": "zeros", "ufpa": "replicate",
                "ufpa_any": "zeros", "learned": "zeros"}
BN_MOMENTUM = 0.1
PADDINGS = ("replicate", "zeros")


def padding_mode(alignment: str, padding: str | None = None) -> str:
    """How 3x3 convs pad: ``padding`` when given (the study's padding ablation), else the variant's own mode.
    Padding never moves a sample (the grid is the same either way); it only changes what border outputs read."""
    if padding is None:
        return PADDING_MODE[alignment]
    if padding not in PADDINGS:
        raise ValueError(f"padding={padding!r}: choose one of {PADDINGS} (or None for the variant's own: "
                         f"{PADDING_MODE[alignment]!r} for {alignment!r})")
    return padding


class _ReplicatePad(torch.autograd.Function):
    """One replicated sample on every side of the last two axes. Forward is ``F.pad(mode='replicate')``; the backward
    is slicing and adds instead of torch's scatter loop, summing each border gradient in the same order as torch's CPU
    kernel (raster order over the padded grid), so results are bit-identical to it (tested)."""

    @staticmethod
    def forward(ctx, x):
        return F.pad(x, (1, 1, 1, 1), mode="replicate")

    @staticmethod
    def backward(ctx, g):
        gi = g[..., 1:-1, 1:-1].clone()
        gi[..., 0, 1:-1] = g[..., 0, 2:-2] + g[..., 1, 2:-2]
        gi[..., -1, 1:-1] = g[..., -2, 2:-2] + g[..., -1, 2:-2]
        gi[..., 1:-1, 0] = g[..., 2:-2, 0] + g[..., 2:-2, 1]
        gi[..., 1:-1, -1] = g[..., 2:-2, -2] + g[..., 2:-2, -1]
        gi[..., 0, 0] = ((g[..., 0, 0] + g[..., 0, 1]) + g[..., 1, 0]) + g[..., 1, 1]
        gi[..., 0, -1] = ((g[..., 0, -2] + g[..., 0, -1]) + g[..., 1, -2]) + g[..., 1, -1]
        gi[..., -1, 0] = ((g[..., -2, 0] + g[..., -2, 1]) + g[..., -1, 0]) + g[..., -1, 1]
        gi[..., -1, -1] = ((g[..., -2, -2] + g[..., -2, -1]) + g[..., -1, -2]) + g[..., -1, -1]
        return gi


def replicate_pad1(x: torch.Tensor) -> torch.Tensor:
    """``F.pad(x, (1, 1, 1, 1), mode='replicate')`` with the faster backward (needs >= 2 samples per axis)."""
    if min(x.shape[-2:]) < 2:
        return F.pad(x, (1, 1, 1, 1), mode="replicate")
    return _ReplicatePad.apply(x)


class ReplicateConv2d(nn.Conv2d):
    """A 3x3 ``Conv2d(padding=1, padding_mode='replicate')`` computing exactly what torch's does, through
    :func:`replicate_pad1`. Any other setting (e.g. the audit switching ``padding_mode`` to zeros) runs torch's."""

    def forward(self, x):
        fast = x.is_cuda if FAST_REPLICATE is None else FAST_REPLICATE
        if self.padding_mode == "replicate" and self.padding == (1, 1) and fast:
            return F.conv2d(replicate_pad1(x), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)
        return super().forward(x)


# None: the slicing backward on CUDA only (torch's CUDA pad backward scatters with atomics; on CPU torch's own loop
# measured as fast or faster, issue 10's note); True / False force it on or off (tests, A/B benchmarks).
FAST_REPLICATE: bool | None = None


def _conv(cin, cout, kernel, stride, padding_mode, bias) -> nn.Conv2d:
    cls = ReplicateConv2d if padding_mode == "replicate" and kernel == 3 else nn.Conv2d
    return cls(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=bias, padding_mode=padding_mode)


def conv3x3(cin: int, cout: int, stride: int = 1, padding_mode: str = "zeros", bias: bool = False) -> nn.Conv2d:
    return _conv(cin, cout, 3, stride, padding_mode, bias)


def conv_bn(cin, cout, kernel, stride=1, padding_mode="zeros", relu=True) -> nn.Sequential:
    layers = [_conv(cin, cout, kernel, stride, padding_mode, bias=False),
              nn.BatchNorm2d(cout, momentum=BN_MOMENTUM)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Resample(nn.Module):
    """Parameter-free upsampling by ``factor``, onto the grid of a target tensor (``like``) when given.

    ``mode`` is a ``geometry.UPSAMPLE_MODES`` name; :meth:`position_map` gives the ``ufpa.geometry`` map of one
    axis, which the audit uses, so the model and the algebra name the same grid. Without ``like`` the output has
    ``factor * n`` samples, or ``factor * (n - 1) + 1`` when ``corners=True`` (the 32m+1 size convention).
    """

    def __init__(self, mode: str, factor: int, corners: bool = False):
        super().__init__()
        if mode not in geometry.UPSAMPLE_MODES:
            raise ValueError(f"unknown upsample mode {mode!r}; choose one of {geometry.UPSAMPLE_MODES}")
        self.mode, self.factor, self.corners = mode, int(factor), bool(corners)

    def forward(self, x: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
        if like is not None:
            size = like.shape[-2:]
        else:
            size = [geometry.upsampled_size(n, self.factor, self.corners) for n in x.shape[-2:]]
        return ops.upsample(x, self.mode, self.factor, size)

    def position_map(self, in_size: int, out_size: int) -> geometry.PositionMap:
        return geometry.upsample(self.mode, in_size, out_size, self.factor)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, factor={self.factor}, corners={self.corners}"


class LearnedResample(nn.Module):
    """Learned alignment (issue 22): upsampling by ``factor`` that samples the coarse map at the baseline's nearest
    position plus an offset the network predicts, ``floor(o / factor) + delta(o)`` in coarse samples, bilinearly
    (``grid_sample``, reads clamped to the map: the border rule of every ufpa resample).

    The offset is DySample's point sampling with FaPN's two inputs: ``delta = shuffle(W_c x + b) + W_f like``. The
    coarse term predicts ``factor**2`` offsets per coarse sample and pixel-shuffles them onto the fine grid, one per
    sub-pixel phase: that is what lets it represent the shift the geometry predicts, which depends on ``o mod factor``
    (the sawtooth of nearest upsampling) and which no convolution of the fine map alone can produce (it has no phase).
    The fine term lets content move the grid, as FaPN's offsets do. Every parameter starts at zero, so the variant
    starts as the baseline (same outputs, and the same initial weights elsewhere: zeros draw no random numbers).
    ``position_map`` is the zero-offset grid (the audit's view); ``ufpa.learned`` reads what was learned.
    """

    def __init__(self, channels: int, factor: int, like_channels: int):
        super().__init__()
        self.mode, self.factor, self.corners = "nearest", int(factor), False
        phases = self.factor ** 2
        self.coarse_weight = nn.Parameter(torch.zeros(2 * phases, channels, 1, 1))
        self.coarse_bias = nn.Parameter(torch.zeros(2 * phases))
        self.fine_weight = nn.Parameter(torch.zeros(2, like_channels, 1, 1))

    def offsets(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """(N, 2, H, W) offsets on ``like``'s grid, in samples of ``x``: channel 0 along the height, 1 the width."""
        h, w = like.shape[-2:]
        coarse = F.pixel_shuffle(F.conv2d(x, self.coarse_weight, self.coarse_bias), self.factor)[..., :h, :w]
        return coarse + F.conv2d(like, self.fine_weight)

    def _positions(self, x: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Where each output samples ``x``, in its samples: (N, H, W) rows and columns, before clamping."""
        delta = self.offsets(x, like).float()  # positions in fp32 whatever the features' dtype
        h, w = like.shape[-2:]
        rows = torch.div(torch.arange(h, device=x.device), self.factor, rounding_mode="floor").float()
        cols = torch.div(torch.arange(w, device=x.device), self.factor, rounding_mode="floor").float()
        return rows.view(1, h, 1) + delta[:, 0], cols.view(1, 1, w) + delta[:, 1]

    def sampled_offsets(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """The offsets as the sampler realises them, reads clamped to the map: (N, 2, H, W) in samples of ``x``."""
        rows, cols = self._positions(x, like)
        h, w = like.shape[-2:]
        base_rows = torch.div(torch.arange(h, device=x.device), self.factor, rounding_mode="floor").view(1, h, 1)
        base_cols = torch.div(torch.arange(w, device=x.device), self.factor, rounding_mode="floor").view(1, 1, w)
        return torch.stack((rows.clamp(0, x.shape[-2] - 1) - base_rows, cols.clamp(0, x.shape[-1] - 1) - base_cols), 1)

    def forward(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        rows, cols = self._positions(x, like)
        # grid_sample (align_corners=True) puts -1 and 1 on the first and last sample centres, as geometry does
        gy = rows * (2.0 / max(x.shape[-2] - 1, 1)) - 1.0
        gx = cols * (2.0 / max(x.shape[-1] - 1, 1)) - 1.0
        grid = torch.stack((gx, gy), dim=-1).to(x.dtype)  # grid_sample's last axis is (width, height)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)

    def position_map(self, in_size: int, out_size: int) -> geometry.PositionMap:
        return geometry.upsample("nearest", in_size, out_size, self.factor)

    def extra_repr(self) -> str:
        coarse, fine = self.coarse_weight.shape[1], self.fine_weight.shape[1]
        return f"factor={self.factor}, learned offsets from {coarse}+{fine} channels"


def make_resample(alignment: str, factor: int, channels: int, like_channels: int) -> nn.Module:
    """The fusion upsampling of ``alignment``: a parameter-free :class:`Resample`, or a :class:`LearnedResample`."""
    if alignment == "learned":
        return LearnedResample(channels, factor, like_channels)
    return Resample(UPSAMPLE_MODE[alignment], factor)


def check_input_size(alignment: str, input_size, total_stride: int, what: str,
                     fixed_factor=("baseline", "bilinear", "learned")) -> None:
    """Raise a ValueError naming valid sizes when ``input_size`` (H, W) cannot work with ``alignment``.

    Every model: at least one sample at ``total_stride``. 'ufpa': sizes total_stride*m + 1 (``geometry``'s aligned
    sizes). Variants in ``fixed_factor`` upsample by fixed factors, so sizes must be multiples of the total stride.
    """
    levels = int(math.log2(total_stride // 4)) + 1  # geometry counts stride-2 levels below a stride-4 stem
    for axis, n in zip(("height", "width"), input_size):
        if n < total_stride:
            raise ValueError(f"input {axis} {n} is too small for {what} (total stride {total_stride}); use >= "
                             f"{total_stride}")
        if alignment == "ufpa" and not geometry.is_aligned_size(n, levels):
            below, above = geometry.nearest_aligned_sizes(n, levels)
            valid = f"{below} or {above}" if below else f"{above}"
            raise ValueError(f"alignment 'ufpa' needs input sizes {total_stride}m+1; input {axis} {n} is not: use "
                             f"{valid} (only there do convolution and interpolation agree)")
        if alignment in fixed_factor and n % total_stride:
            above = total_stride * -(-n // total_stride)
            valid = f"{above - total_stride} or {above}" if above > total_stride else f"{above}"
            raise ValueError(f"alignment {alignment!r} upsamples by fixed factors, so input sizes must be multiples "
                             f"of {total_stride}; input {axis} {n} is not: use {valid}, or alignment "
                             "'bilinear_corners' / 'ufpa_any' for any size")
