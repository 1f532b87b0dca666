"""Parameter-free torch ops whose sampling grids ``ufpa.geometry`` describes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def _per_axis(value, ndim: int, what: str) -> tuple[int, ...]:
    values = tuple(value) if isinstance(value, Sequence) else (value,) * ndim
    if len(values) != ndim:
        raise ValueError(f"{what} needs {ndim} values (one per spatial axis), got {value!r}")
    return tuple(int(v) for v in values)


def aligned_upsample(x: torch.Tensor, factor, size) -> torch.Tensor:
    """Upsample ``x`` (N, C, *spatial) so output ``o`` samples the input at ``o / factor`` on every axis.

    Works for any input and output size (``geometry.aligned_upsample``): the input is padded by one replicated sample
    at the far end and resized with align_corners=True to ``factor * n + 1`` samples, whose grid is exactly
    ``o * n / (factor * n) = o / factor``; the first ``size`` samples are kept. Outputs past the last input sample
    read the edge value (the border cost). Linear/bilinear/trilinear by the number of spatial axes.
    """
    ndim = x.dim() - 2
    if ndim not in (1, 2, 3):
        raise ValueError(f"aligned_upsample takes (N, C, *spatial) with 1-3 spatial axes, got shape {tuple(x.shape)}")
    factors, sizes = _per_axis(factor, ndim, "factor"), _per_axis(size, ndim, "size")
    spatial = tuple(x.shape[2:])
    for f, s, n in zip(factors, sizes, spatial):
        if f < 1:
            raise ValueError(f"factor must be >= 1, got {factor!r}")
        if not 1 <= s <= f * n + 1:
            raise ValueError(f"size {s} cannot be reached from {n} samples at factor {f}: choose 1..{f * n + 1}")
    padded = F.pad(x, _far_pad(ndim), mode="replicate")
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[ndim]
    grown = F.interpolate(padded, size=tuple(f * n + 1 for f, n in zip(factors, spatial)), mode=mode,
                          align_corners=True)
    index = (Ellipsis,) + tuple(slice(0, s) for s in sizes)
    return grown[index]


def _far_pad(ndim: int) -> list[int]:
    # F.pad lists (before, after) pairs from the last axis backwards; pad only "after" on every spatial axis.
    return [0, 1] * ndim


def upsample(x: torch.Tensor, mode: str, factor: int, size) -> torch.Tensor:
    """Upsample ``x`` by ``factor`` to spatial ``size`` with one of ``geometry.UPSAMPLE_MODES``.

    The same names select the position map in ``geometry.upsample``: 'nearest' and 'bilinear' (align_corners=False)
    scale by ``factor`` and must land on ``size``; 'bilinear_corners' resizes to ``size`` with align_corners=True;
    'aligned' samples at ``o / factor`` (:func:`aligned_upsample`).
    """
    size = tuple(int(s) for s in size)
    if mode in ("nearest", "bilinear"):
        y = F.interpolate(x, scale_factor=float(factor), mode=mode,
                          align_corners=None if mode == "nearest" else False)
        if tuple(y.shape[2:]) != size:
            raise ValueError(f"{mode} x{factor} turns {tuple(x.shape[2:])} into {tuple(y.shape[2:])}, not {size}: "
                             "the input size is not a multiple of the network's total stride")
        return y
    if mode == "bilinear_corners":
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)
    if mode == "aligned":
        return aligned_upsample(x, factor, size)
    raise ValueError(f"unknown upsample mode {mode!r}; choose nearest, bilinear, bilinear_corners or aligned")
