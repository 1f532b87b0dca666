"""Where a feature sits: the position algebra of ufpa.

Coordinate convention (the only one used anywhere in ufpa)
---------------------------------------------------------
Index space. Sample ``i`` of one axis of an image or feature map is centred at coordinate ``x = i``; it covers
``[i - 0.5, i + 0.5]``. An axis of ``n`` samples has its first and last centres at ``0`` and ``n - 1`` and spans
``[-0.5, n - 0.5]``. This is the convention of UDP (Huang et al., CVPR 2020) and of the unbiased affine transform,
whose unit length is ``n - 1``.

A :class:`PositionMap` describes one op along one axis: for every output index ``o`` it gives the coordinate, in the
op's *input* index space, on which that output is centred. ``a.then(b)`` composes in data-flow order (``a`` runs
first), so the map of a whole path gives the position of every feature in input-image pixels. All ops here act on
each axis independently; a 2-D op is one map per axis.

"Centred on" means: for a convolution or pooling, the centre of the kernel window; for a transposed convolution, the
centre of its window in the zero-inserted input; for linear interpolation, the sampling coordinate; for nearest
interpolation, the index it copies; for pixel shuffle, the sub-pixel centre ``i - 0.5 + (t + 0.5) / r`` of sub-position
``t`` inside input pixel ``i``. ``ufpa.probe`` checks every map against the real torch op.

Border rule. ``positions`` is the nominal grid; ``sampled_positions`` is what the op really reads after clamping
(linear interpolation reads ``clip(x, 0, n_in - 1)``, nearest ``min(index, n_in - 1)``), and ``clamped(n_in)`` marks
where the two differ: that is where the border cost of a map shows, and what fusion statistics call border.
``interior(n_in)`` is stricter, for single ops: outputs whose taps all read real samples (no padding, no clamping).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

__all__ = [
    "PositionMap",
    "conv",
    "transposed_conv",
    "resize",
    "nearest",
    "pixel_shuffle",
    "aligned_upsample",
    "pad",
    "identity",
    "FusionShift",
    "fusion_shift",
    "aligned_grid",
    "downsample_path",
    "branch_sizes",
    "upsample",
    "UPSAMPLE_MODES",
    "multiscale_fusion_shift",
    "upsample_shift_closed_form",
    "total_stride",
    "is_aligned_size",
    "is_fusion_aligned",
    "aligned_size",
    "nearest_aligned_sizes",
    "check_aligned_size",
    "upsampled_size",
    "mirror",
    "mirror_index",
    "sample_linear",
]


def _as_index(n: int, what: str = "n") -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"{what} must be a non-negative integer, got {n!r}")
    return int(n)


class PositionMap:
    """Positions of an op's outputs in its input index space, along one axis.

    Subclasses give the nominal grid (``_at``), the output size, the input indices each output reads (``taps``) and
    the border rule. ``scale``/``offset`` exist for affine maps (``x = scale * o + offset``) and are ``None`` otherwise.
    """

    name: str = "map"
    scale: float | None = None
    offset: float | None = None

    @property
    def is_affine(self) -> bool:
        return self.scale is not None

    # --- what subclasses define -------------------------------------------------------------------------------
    def _at(self, coords: np.ndarray) -> np.ndarray:
        return self.scale * coords + self.offset

    def out_size(self, n_in: int) -> int:
        raise NotImplementedError

    def taps(self, n_in: int) -> tuple[np.ndarray, np.ndarray]:
        """First and last input index read by each of the ``out_size(n_in)`` outputs (unclamped, may fall outside)."""
        raise NotImplementedError

    def interior(self, n_in: int) -> np.ndarray:
        lo, hi = self.taps(n_in)
        return (lo >= 0) & (hi <= n_in - 1)

    def _sampled_at(self, coords: np.ndarray, n_in: int) -> np.ndarray:
        return self._at(coords)

    # --- public API -------------------------------------------------------------------------------------------
    def at(self, coords) -> np.ndarray:
        """Nominal input coordinate of (possibly fractional, for affine maps) output coordinates."""
        return self._at(np.asarray(coords, dtype=np.float64))

    def positions(self, n: int) -> np.ndarray:
        """Input-space coordinate (float64) of output indices ``0 .. n-1``."""
        return self.at(np.arange(_as_index(n), dtype=np.float64))

    def sampled_positions(self, n_in: int) -> np.ndarray:
        """What each of the ``out_size(n_in)`` outputs really reads, after the op's own clamping."""
        o = np.arange(self.out_size(n_in), dtype=np.float64)
        return self._sampled_at(o, n_in)

    def clamped(self, n_in: int) -> np.ndarray:
        """Outputs whose sampled position differs from the nominal one: some step clamped or extrapolated."""
        n = self.out_size(n_in)
        return np.abs(self.sampled_positions(n_in) - self.positions(n)) > 1e-9

    def then(self, other: PositionMap) -> PositionMap:
        """Compose in data-flow order: ``self`` runs first, ``other`` on its output."""
        if not isinstance(other, PositionMap):
            raise TypeError(f"then() takes a PositionMap, got {type(other).__name__}")
        return Composite(self, other)

    def __repr__(self) -> str:
        if self.is_affine:
            return f"{self.name}(x = {self.scale:g}*o + {self.offset:g})"
        return f"{self.name}(not affine)"


class _Affine(PositionMap):
    def __init__(self, name: str, scale: float, offset: float):
        self.name, self.scale, self.offset = name, float(scale), float(offset)


def _check_kernel(kernel, stride, padding, dilation):
    for value, what, low in ((kernel, "kernel", 1), (stride, "stride", 1), (padding, "padding", 0),
                             (dilation, "dilation", 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{what} must be an integer >= {low}, got {value!r}")


class Conv(_Affine):
    """Convolution or pooling: output ``o`` reads taps ``o*s - p + j*d`` (j = 0..k-1); its centre is their mean."""

    def __init__(self, kernel, stride=1, padding=0, dilation=1):
        _check_kernel(kernel, stride, padding, dilation)
        self.kernel, self.stride, self.padding, self.dilation = kernel, stride, padding, dilation
        span = dilation * (kernel - 1)
        super().__init__(f"conv(k={kernel},s={stride},p={padding},d={dilation})", stride, span / 2 - padding)

    def out_size(self, n_in):
        n_in = _as_index(n_in, "n_in")
        n = (n_in + 2 * self.padding - self.dilation * (self.kernel - 1) - 1) // self.stride + 1
        if n < 1:
            raise ValueError(f"{self.name} gives no output for an input of {n_in} samples; use a larger input")
        return n

    def taps(self, n_in):
        o = np.arange(self.out_size(n_in))
        lo = o * self.stride - self.padding
        return lo, lo + self.dilation * (self.kernel - 1)


class TransposedConv(_Affine):
    """Transposed convolution: output ``o`` receives input ``i`` through tap ``j`` when ``o = i*s - p + j*d``.

    Its window in the zero-inserted input (sample ``i`` at ``i*s``) spans ``[o + p - d(k-1), o + p]``; the centre of
    that window, in input units, is ``(o + p - d(k-1)/2) / s``: the exact adjoint of :func:`conv`.
    """

    def __init__(self, kernel, stride=1, padding=0, dilation=1, output_padding=0):
        _check_kernel(kernel, stride, padding, dilation)
        if not 0 <= output_padding < max(stride, dilation):
            raise ValueError(f"output_padding must be in [0, max(stride, dilation)), got {output_padding}")
        self.kernel, self.stride, self.padding, self.dilation = kernel, stride, padding, dilation
        self.output_padding = output_padding
        span = dilation * (kernel - 1)
        super().__init__(f"transposed_conv(k={kernel},s={stride},p={padding},d={dilation})",
                         1 / stride, (padding - span / 2) / stride)

    def out_size(self, n_in):
        n_in = _as_index(n_in, "n_in")
        n = (n_in - 1) * self.stride - 2 * self.padding + self.dilation * (self.kernel - 1) + self.output_padding + 1
        if n < 1:
            raise ValueError(f"{self.name} gives no output for an input of {n_in} samples")
        return n

    def taps(self, n_in):
        o = np.arange(self.out_size(n_in))
        first = o + self.padding - self.dilation * (self.kernel - 1)  # window ends, zero-inserted units
        last = o + self.padding
        return -((-first) // self.stride), last // self.stride

    def interior(self, n_in):
        # Interior: the whole window lies over the zero-inserted input, so no implicit zeros beyond its ends enter.
        o = np.arange(self.out_size(n_in))
        first = o + self.padding - self.dilation * (self.kernel - 1)
        return (first >= 0) & (o + self.padding <= (n_in - 1) * self.stride)


def _resize_out_size(in_size, out_size, scale_factor, what):
    in_size = _as_index(in_size, "in_size")
    if in_size < 1:
        raise ValueError(f"{what}: in_size must be >= 1")
    if scale_factor is not None:
        if not scale_factor > 0:
            raise ValueError(f"{what}: scale_factor must be > 0, got {scale_factor!r}")
        implied = math.floor(float(in_size) * float(scale_factor))  # exactly how interpolate sizes its output
        if out_size is None:
            out_size = implied
        elif out_size != implied:
            raise ValueError(f"{what}: torch makes floor({in_size} * {scale_factor}) = {implied} outputs, not "
                             f"{out_size}; pass out_size=None or the size form without scale_factor")
    if out_size is None:
        raise ValueError(f"{what}: give out_size or scale_factor")
    out_size = _as_index(out_size, "out_size")
    if out_size < 1:
        raise ValueError(f"{what}: the output would be empty (out_size={out_size})")
    return in_size, out_size


class _FixedSize(PositionMap):
    in_size: int
    _out: int

    def out_size(self, n_in):
        if _as_index(n_in, "n_in") != self.in_size:
            raise ValueError(f"{self.name} was built for an input of {self.in_size} samples, got {n_in}")
        return self._out


class Resize(_FixedSize):
    """Linear interpolation as ``torch.nn.functional.interpolate`` samples it (modes linear/bilinear/trilinear)."""

    def __init__(self, in_size, out_size, align_corners, scale_factor=None):
        self.in_size, self._out = _resize_out_size(in_size, out_size, scale_factor, "resize")
        self.align_corners, self.scale_factor = bool(align_corners), scale_factor
        if self._out == self.in_size:  # torch copies an axis whose size does not change, whatever the scale factor
            self.scale, self.offset = 1.0, 0.0
        elif self.align_corners:  # torch ignores scale_factor here
            self.scale = (self.in_size - 1) / (self._out - 1) if self._out > 1 else 0.0
            self.offset = 0.0
        else:
            ratio = 1.0 / scale_factor if scale_factor is not None else self.in_size / self._out
            self.scale, self.offset = ratio, 0.5 * ratio - 0.5
        self.name = (f"resize({self.in_size}->{self._out}, align_corners={self.align_corners}"
                     + (f", scale_factor={scale_factor}" if scale_factor is not None else "") + ")")

    def taps(self, n_in):
        x = self.at(np.arange(self.out_size(n_in)))
        return np.floor(x).astype(np.int64), np.ceil(x).astype(np.int64)

    def interior(self, n_in):
        x = self.at(np.arange(self.out_size(n_in)))
        return (x >= 0) & (x <= n_in - 1)

    def _sampled_at(self, coords, n_in):
        return np.clip(self._at(coords), 0, self.in_size - 1)


class Nearest(_FixedSize):
    """Nearest interpolation ('nearest' or 'nearest-exact'), with torch's own index arithmetic.

    Exact math gives ``floor(o * r)`` ('nearest') or ``floor((o + 0.5) * r)`` ('nearest-exact'), ``r = in/out`` or
    ``1/scale_factor``. torch computes ``r`` and the product in floating point and rounds with ``floorf``, which moves
    single indices for some sizes (about 1% of size/scale pairs up to 70 -> 280). ``arithmetic`` picks the path:

    - 'float32' (default): torch's 2-D/3-D CPU kernels for float32/bf16/fp16 NCHW tensors, i.e. what pose models
      run: a float32 ``r`` and product ('nearest-exact': a float64 product of the float32 ``r``);
    - 'float64': torch's 1-D CPU kernel for float64 tensors: a float64 ``r`` and product, rounded to float32;
    - 'rational': the exact grid, for derivations.

    Not modelled: the 1-D float32 kernel and the 2-D float64 kernel, which round a few indices differently again;
    scale factors that give ``out == in`` or ``out == 2*in`` without being 1 or 2, where torch's kernels for
    channels_last and small tensors take a shortcut (copy, ``o >> 1``) and those for larger NCHW tensors do not;
    CUDA kernels (unchecked).
    """

    ARITHMETIC = ("float32", "float64", "rational")

    def __init__(self, in_size, out_size, scale_factor=None, exact=False, arithmetic="float32"):
        self.in_size, self._out = _resize_out_size(in_size, out_size, scale_factor, "nearest")
        if arithmetic not in self.ARITHMETIC:
            raise ValueError(f"nearest: arithmetic must be one of {self.ARITHMETIC}, got {arithmetic!r}")
        self.exact, self.arithmetic, self.scale_factor = bool(exact), arithmetic, scale_factor
        mode = "nearest-exact" if exact else "nearest"
        self.name = f"{mode}({self.in_size}->{self._out}" + (
            f", scale_factor={scale_factor})" if scale_factor is not None else ")")

    def _unclamped(self, o: np.ndarray) -> np.ndarray:
        sf, n_in, n_out = self.scale_factor, self.in_size, self._out
        if self.arithmetic == "rational":
            ratio = Fraction(1) / Fraction(sf) if sf is not None else Fraction(n_in, n_out)
            half = Fraction(1, 2) if self.exact else 0
            return np.array([math.floor((Fraction(int(i)) + half) * ratio) for i in o], dtype=np.float64)
        if self.arithmetic == "float64":
            ratio = 1.0 / sf if sf is not None else n_in / n_out
            if self.exact:
                return np.floor(np.float32(np.maximum(ratio * (o + 0.5) - 0.5, 0.0) + 0.5))  # floorf takes a float
            return np.floor(np.float32(ratio * o))
        ratio32 = np.float32(1.0 / sf) if sf is not None else np.float32(n_in) / np.float32(n_out)
        if self.exact:
            return np.floor(np.float32((o + 0.5) * np.float64(ratio32)))
        return np.floor(ratio32 * o.astype(np.float32)).astype(np.float64)

    def _at(self, coords):
        o = np.asarray(coords, dtype=np.float64)
        if not np.all(o == np.round(o)):
            raise ValueError(f"{self.name} is not affine: its positions exist at integer output indices only")
        return self._unclamped(o).astype(np.float64)

    def _sampled_at(self, coords, n_in):
        return np.minimum(self._at(coords), self.in_size - 1)

    def taps(self, n_in):
        idx = self.sampled_positions(n_in).astype(np.int64)
        return idx, idx

    def interior(self, n_in):
        return self._unclamped(np.arange(self.out_size(n_in), dtype=np.float64)) <= n_in - 1


class PixelShuffle(_Affine):
    """Pixel shuffle by ``r``: output ``o`` is sub-position ``o mod r`` of input pixel ``o // r``."""

    def __init__(self, factor):
        if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
            raise ValueError(f"pixel_shuffle factor must be an integer >= 1, got {factor!r}")
        self.factor = int(factor)
        super().__init__(f"pixel_shuffle({factor})", 1 / factor, 0.5 / factor - 0.5)

    def out_size(self, n_in):
        return _as_index(n_in, "n_in") * self.factor

    def taps(self, n_in):
        src = np.arange(self.out_size(n_in)) // self.factor
        return src, src


class AlignedUpsample(_FixedSize):
    """Size-free aligned upsampling: output ``o`` samples the input linearly at ``x = o / factor``, for any sizes.

    This is the grid of a stride-``factor`` conv chain seen from its own input, so fusing a branch upsampled this way
    with the branch above it has zero shift on the interior. Outputs past the last input sample
    (``o > factor * (in_size - 1)``) read the clamped edge: that is its border cost. ``ufpa.ops.aligned_upsample``
    realises it with zero parameters.
    """

    def __init__(self, factor, in_size, out_size):
        if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
            raise ValueError(f"aligned_upsample factor must be an integer >= 1, got {factor!r}")
        self.factor = int(factor)
        self.in_size, self._out = _resize_out_size(in_size, out_size, None, "aligned_upsample")
        self.scale, self.offset = 1 / self.factor, 0.0
        self.name = f"aligned_upsample(x{factor}, {self.in_size}->{self._out})"

    taps = Resize.taps
    interior = Resize.interior
    _sampled_at = Resize._sampled_at


class Pad(_Affine):
    """Explicit padding (``F.pad`` / ``nn.ZeroPad2d`` and friends): output ``o`` is input ``o - before``."""

    def __init__(self, before: int, after: int):
        _check_kernel(1, 1, before, 1)
        _check_kernel(1, 1, after, 1)
        self.before, self.after = int(before), int(after)
        super().__init__(f"pad({before},{after})", 1.0, -float(before))

    def out_size(self, n_in):
        return _as_index(n_in, "n_in") + self.before + self.after

    def taps(self, n_in):
        o = np.arange(self.out_size(n_in)) - self.before
        return o, o


class Identity(_Affine):
    def __init__(self):
        super().__init__("identity", 1.0, 0.0)

    def out_size(self, n_in):
        return _as_index(n_in, "n_in")

    def taps(self, n_in):
        o = np.arange(self.out_size(n_in))
        return o, o


class Composite(PositionMap):
    """Two maps in data-flow order; positions are ``first.at(second.positions(...))``."""

    def __init__(self, first: PositionMap, second: PositionMap):
        self.first, self.second = first, second
        self.name = f"{first.name} -> {second.name}"
        if first.is_affine and second.is_affine:
            self.scale = first.scale * second.scale
            self.offset = first.scale * second.offset + first.offset

    def _at(self, coords):
        return self.first._at(self.second._at(coords))

    def out_size(self, n_in):
        return self.second.out_size(self.first.out_size(n_in))

    def taps(self, n_in):
        n_mid = self.first.out_size(n_in)
        lo2, hi2 = self.second.taps(n_mid)
        lo1, hi1 = self.first.taps(n_in)
        # Taps are monotone in the output index, so the composite reads from first.lo[lo2] to first.hi[hi2];
        # second-level taps in padding are extended linearly with the first map's step.
        return _extend(lo1, lo2), _extend(hi1, hi2)

    def interior(self, n_in):
        n_mid = self.first.out_size(n_in)
        inner2 = self.second.interior(n_mid)
        lo2, hi2 = self.second.taps(n_mid)
        inner1 = self.first.interior(n_in)
        ok_lo = (lo2 >= 0) & (lo2 <= n_mid - 1)
        ok_hi = (hi2 >= 0) & (hi2 <= n_mid - 1)
        # The first map's interior is one contiguous run, so checking both ends of the range covers it.
        ok_lo[ok_lo] = inner1[lo2[ok_lo]]
        ok_hi[ok_hi] = inner1[hi2[ok_hi]]
        return inner2 & ok_lo & ok_hi

    def _sampled_at(self, coords, n_in):
        n_mid = self.first.out_size(n_in)
        return self.first._sampled_at(self.second._sampled_at(coords, n_mid), n_in)


def _extend(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    n = len(values)
    step = values[-1] - values[-2] if n > 1 else 1
    out = np.empty(idx.shape, dtype=np.int64)
    inside = (idx >= 0) & (idx < n)
    out[inside] = values[idx[inside]]
    out[idx < 0] = values[0] + idx[idx < 0] * (values[1] - values[0] if n > 1 else 1)
    out[idx >= n] = values[-1] + (idx[idx >= n] - (n - 1)) * step
    return out


# --- constructors (public names are a contract: checks outside the repo call them) ---------------------------------

def conv(kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> PositionMap:
    """Convolution or pooling (max/avg): ``x = s*o - p + d*(k-1)/2``."""
    return Conv(kernel, stride, padding, dilation)


def transposed_conv(kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1,
                    output_padding: int = 0) -> PositionMap:
    """Transposed convolution: ``x = (o + p - d*(k-1)/2) / s``."""
    return TransposedConv(kernel, stride, padding, dilation, output_padding)


def resize(in_size: int, out_size: int | None, align_corners: bool, scale_factor: float | None = None) -> PositionMap:
    """Linear interpolation grid of ``F.interpolate``.

    align_corners=True: ``x = o * (in-1)/(out-1)`` (scale_factor is ignored, as torch does).
    align_corners=False: ``x = (o + 0.5) * r - 0.5`` with ``r = 1/scale_factor`` when a scale factor is given (torch
    uses it as is, not ``in/out``), else ``r = in/out``; torch reads ``clip(x, 0, in-1)``.
    An axis whose size does not change is copied (``x = o``), even when a scale factor says otherwise.
    """
    return Resize(in_size, out_size, align_corners, scale_factor)


def nearest(in_size: int, out_size: int | None, scale_factor: float | None = None, exact: bool = False,
            arithmetic: str = "float32") -> PositionMap:
    """'nearest' (``floor(o*r)``) or, with ``exact=True``, 'nearest-exact' (``floor((o+0.5)*r)``), clamped to in-1,
    in torch's floating-point arithmetic (see :class:`Nearest`)."""
    return Nearest(in_size, out_size, scale_factor, exact, arithmetic)


def pixel_shuffle(factor: int) -> PositionMap:
    """Pixel shuffle: ``x = (o + 0.5)/r - 0.5``, the sub-pixel centres of each input pixel."""
    return PixelShuffle(factor)


def aligned_upsample(factor: int, in_size: int, out_size: int) -> PositionMap:
    """Size-free aligned upsampling: ``x = o / factor`` (clamped to in-1 past the last sample)."""
    return AlignedUpsample(factor, in_size, out_size)


def pad(before: int, after: int) -> PositionMap:
    """Explicit padding of one axis: ``x = o - before``; added samples read padding (zeros or the clamped edge)."""
    return Pad(before, after)


def identity() -> PositionMap:
    return Identity()


# --- fusion ------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FusionShift:
    """Shift of a source path against the fusion target, per fused output index, in input pixels.

    ``shift`` uses the nominal grids; ``sampled_shift`` what the ops really read. Interior outputs are those whose
    samples lie inside the maps they read on both paths (no step clamped); border outputs are the rest, reported with
    the sampled shift, so nothing is hidden. Conv padding does not count as border: it changes a window's content,
    not its centre.
    """

    shift: np.ndarray
    sampled_shift: np.ndarray
    interior: np.ndarray

    @property
    def max_abs(self) -> float:
        inner = self.shift[self.interior]
        return float(np.max(np.abs(inner))) if inner.size else float("nan")

    @property
    def mean_abs(self) -> float:
        inner = self.shift[self.interior]
        return float(np.mean(np.abs(inner))) if inner.size else float("nan")

    @property
    def border_width(self) -> int:
        return int(np.count_nonzero(~self.interior))

    @property
    def border_max_abs(self) -> float:
        edge = self.sampled_shift[~self.interior]
        return float(np.max(np.abs(edge))) if edge.size else 0.0


def fusion_shift(target: PositionMap, source: PositionMap, n_in: int) -> FusionShift:
    """Source minus target position at every fused output, for an input of ``n_in`` samples along this axis."""
    n_target, n_source = target.out_size(n_in), source.out_size(n_in)
    if n_target != n_source:
        raise ValueError(f"cannot fuse maps of {n_source} and {n_target} samples (input {n_in}): torch would refuse "
                         "the add/concat; upsample the source to the target size")
    interior = ~target.clamped(n_in) & ~source.clamped(n_in)
    return FusionShift(
        shift=source.positions(n_target) - target.positions(n_target),
        sampled_shift=source.sampled_positions(n_in) - target.sampled_positions(n_in),
        interior=interior,
    )


def aligned_grid(target: PositionMap, source: PositionMap, n: int) -> np.ndarray:
    """Source-map coordinates at which to sample so that ``n`` fused outputs land exactly on the target positions."""
    if not source.is_affine:
        raise ValueError(f"aligned_grid needs an affine source path, got {source.name}")
    return (target.positions(n) - source.offset) / source.scale


# --- the multi-resolution setting of HRNet-like networks ---------------------------------------------------------

UPSAMPLE_MODES = ("nearest", "bilinear", "bilinear_corners", "aligned")


def downsample_path(n_convs: int, kernel: int = 3, stride: int = 2, padding: int = 1) -> PositionMap:
    """A chain of identical strided convs (HRNet's stem and branch transitions: 3x3, stride 2, padding 1)."""
    path = identity()
    for _ in range(_as_index(n_convs, "n_convs")):
        path = path.then(conv(kernel, stride, padding))
    return path


def branch_sizes(n_in: int, levels: int = 4, stem_convs: int = 2) -> list[int]:
    """Samples along one axis of each branch: branch ``l`` is ``stem_convs + l`` stride-2 convs from the input."""
    return [downsample_path(stem_convs + level).out_size(n_in) for level in range(levels)]


def upsample(mode: str, in_size: int, out_size: int, factor: int) -> PositionMap:
    """The fusion upsampling of one study variant: 'nearest' (xfactor), 'bilinear' (align_corners=False, xfactor),
    'bilinear_corners' (align_corners=True to the exact target size) or 'aligned' (x = o/factor)."""
    if mode == "nearest":
        return nearest(in_size, None, scale_factor=factor)
    if mode == "bilinear":
        return resize(in_size, None, align_corners=False, scale_factor=factor)
    if mode == "bilinear_corners":
        return resize(in_size, out_size, align_corners=True)
    if mode == "aligned":
        return aligned_upsample(factor, in_size, out_size)
    raise ValueError(f"unknown upsample mode {mode!r}; choose one of {UPSAMPLE_MODES}")


def multiscale_fusion_shift(n_in: int, source_level: int, target_level: int = 0, mode: str = "nearest",
                            stem_convs: int = 2) -> FusionShift:
    """Shift of branch ``source_level`` upsampled into branch ``target_level`` of an HRNet-like network."""
    if not 0 <= target_level < source_level:
        raise ValueError(f"upsampling fuses a lower-resolution branch into a higher one; got source {source_level}, "
                         f"target {target_level}")
    target = downsample_path(stem_convs + target_level)
    down = downsample_path(stem_convs + source_level)
    factor = 2 ** (source_level - target_level)
    n_target, n_source = target.out_size(n_in), down.out_size(n_in)
    up = upsample(mode, n_source, n_target, factor)
    if up.out_size(n_source) != n_target:
        raise ValueError(f"{mode} upsampling x{factor} of {n_source} samples gives {up.out_size(n_source)}, but the "
                         f"target branch has {n_target}: input size {n_in} is not a multiple of "
                         f"{2 ** (stem_convs + source_level)}; use mode='bilinear_corners' or 'aligned'")
    return fusion_shift(target, down.then(up), n_in)


def upsample_shift_closed_form(mode: str, levels: int, target_stride: float, n_target: int,
                               n_source: int | None = None) -> np.ndarray:
    """The paper's closed forms of the fusion shift (input px) at target indices ``0..n_target-1``.

    With ``k = levels`` and ``S = target_stride`` (both paths built of offset-free strided convs):
    nearest ``-S (o mod 2^k)``; bilinear ``-S (2^k - 1)/2``; bilinear_corners
    ``S o (2^k (n_source-1) - (n_target-1)) / (n_target-1)``; aligned ``0``. Valid on interior outputs.
    """
    o = np.arange(_as_index(n_target, "n_target"), dtype=np.float64)
    f = 2 ** levels
    if mode == "nearest":
        return -target_stride * np.mod(o, f)
    if mode == "bilinear":
        return np.full_like(o, -target_stride * (f - 1) / 2)
    if mode == "bilinear_corners":
        if n_source is None:
            raise ValueError("bilinear_corners needs n_source")
        return target_stride * o * (f * (n_source - 1) - (n_target - 1)) / (n_target - 1)
    if mode == "aligned":
        return np.zeros_like(o)
    raise ValueError(f"unknown upsample mode {mode!r}; choose one of {UPSAMPLE_MODES}")


# --- aligned sizes -----------------------------------------------------------------------------------------------

def total_stride(levels: int = 4, stem_stride: int = 4) -> int:
    """Stride of the deepest branch: HRNet's 4 branches under a stride-4 stem give 32."""
    if levels < 1 or stem_stride < 1:
        raise ValueError("levels and stem_stride must be >= 1")
    return stem_stride * 2 ** (levels - 1)


def is_aligned_size(n: int, levels: int = 4, stem_stride: int = 4) -> bool:
    """True when every stride-2 step halves ``n - 1`` exactly: ``(n - 1)`` is a multiple of the total stride
    (input 32m+1 for HRNet). Then every branch spans the input exactly (``S_l (n_l - 1) = n - 1``), so
    align_corners=True fusion has zero shift *and* the unbiased (size - 1) heatmap mapping is exact.
    Fusion alone is aligned on a slightly wider set: see :func:`is_fusion_aligned`."""
    return n >= 1 and (n - 1) % total_stride(levels, stem_stride) == 0


def is_fusion_aligned(n: int, levels: int = 4, stem_convs: int = 2) -> bool:
    """True when align_corners=True upsampling between all branches has zero shift: ``n_0 - 1 = 2^l (n_l - 1)``.
    For HRNet that is n = 32m+1 .. 32m+4 (branch 0 then has 8m+1 samples); only 32m+1 also aligns with the input."""
    sizes = branch_sizes(n, levels, stem_convs)
    return all(sizes[0] - 1 == 2 ** level * (size - 1) for level, size in enumerate(sizes))


def aligned_size(request: int, levels: int = 4, stem_stride: int = 4) -> int:
    """Smallest aligned input size >= ``request`` (e.g. 257 for 256 with HRNet's 4 levels)."""
    if isinstance(request, bool) or not isinstance(request, (int, np.integer)) or request < 1:
        raise ValueError(f"input size {request!r}: an image size is an integer >= 1 (e.g. 256)")
    s = total_stride(levels, stem_stride)
    return 1 + s * max(1, math.ceil((request - 1) / s))


def nearest_aligned_sizes(n: int, levels: int = 4, stem_stride: int = 4) -> tuple[int | None, int]:
    """The aligned sizes just below (None if there is none >= 1 + stride) and at or above ``n``."""
    s = total_stride(levels, stem_stride)
    above = aligned_size(n, levels, stem_stride)
    below = above - s if above - s > 1 else None
    return below, above


def check_aligned_size(n: int, levels: int = 4, stem_stride: int = 4, what: str = "input size") -> int:
    """Return ``n`` if aligned, else raise a ValueError naming the nearest valid sizes."""
    if is_aligned_size(n, levels, stem_stride):
        return n
    s = total_stride(levels, stem_stride)
    below, above = nearest_aligned_sizes(n, levels, stem_stride)
    valid = f"{below} or {above}" if below else f"{above}"
    raise ValueError(f"{what} {n} is not aligned for {levels} levels (total stride {s}): (n - 1) must be a multiple "
                     f"of {s}; nearest valid sizes: {valid}")


# --- sizes, mirrors and resampling used by models, codecs and data ---------------------------------------------------

def upsampled_size(n: int, factor: int, corners: bool) -> int:
    """Samples after upsampling ``n`` by ``factor``: ``factor * (n - 1) + 1`` when the end centres stay on the ends
    (``corners``: align_corners=True, the 32m+1 convention), else ``factor * n`` (the extent scales)."""
    return factor * (n - 1) + 1 if corners else factor * n


def mirror(x, n: int):
    """Coordinates ``x`` of an axis of ``n`` samples, mirrored about its centre: sample centres 0 .. n-1 swap ends."""
    return (n - 1) - x


def mirror_index(scale: float, offset: float, n_in: int) -> float:
    """For a grid ``x = scale * o + offset`` over an input of ``n_in`` samples: the ``c`` for which output ``c - o``
    sits at ``mirror(x(o), n_in)``, i.e. the index about which a flipped output must be read back."""
    return ((n_in - 1) - 2 * offset) / scale


def sample_linear(values: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``values`` (..., n) read at fractional ``positions`` along the last axis by linear interpolation, clamped to
    [0, n - 1] (the border rule of linear interpolation); the weights are float32, as the codecs' outputs are."""
    n = values.shape[-1]
    src = np.clip(positions, 0, n - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n - 1)
    frac = (src - lo).astype(np.float32)
    return values[..., lo] * (1 - frac) + values[..., hi] * frac
