"""Numerical verification of ``ufpa.geometry`` against the real torch ops.

A coordinate ramp (sample ``i`` holds the value ``i``) pushed through an op reads back, at every output, the input
coordinate that output realises. Each op family reads it back in the way that makes the answer exact in float64:

- interpolation (linear, nearest, aligned upsampling): a linear ramp is reproduced exactly by linear interpolation, so
  the output *is* the sampled coordinate;
- convolution and transposed convolution: one run per tap with a one-hot kernel, over a ramp and over ones, reads the
  input index each tap touches (and whether it touches one at all); the window centre is the mean tap coordinate. At
  the border the same readings are checked against the padding rule (zeros read nothing, replicate the clamped index,
  reflect the mirrored index; a transposed conv's taps that fall between or beyond input samples read nothing);
- pooling: avg pooling returns the mean in-window coordinate, max/min pooling of the ramp its last/first tap;
- pixel shuffle: a ramp and a channel code read back the source pixel and its sub-position.

Deviations are reported separately for interior outputs (against ``positions``) and border outputs (against the
documented border rule). One configuration is excluded, with its reason in ``EXCLUDED``: float32 'nearest' with a
scale factor whose output size is exactly 1x or 2x the input but which is not itself 1 or 2. There torch's own 2-D
kernels disagree: those for channels_last and small NCHW tensors take a shortcut (copy, ``o >> 1``), those for larger
NCHW tensors apply the formula. No model upsamples that way.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from . import geometry, ops

FAMILIES = ("conv", "avg_pool", "max_pool", "transposed_conv", "linear", "nearest", "nearest-exact",
            "pixel_shuffle", "aligned_upsample", "pad")

BORDER_RULES = {
    "conv": "taps in padding read per padding_mode (zeros: nothing; replicate: clamped; reflect: mirrored)",
    "avg_pool": "mean of the in-range taps (count_include_pad=False)",
    "max_pool": "first/last in-range tap",
    "transposed_conv": "taps between or beyond input samples read nothing",
    "linear": "reads clip(x, 0, n_in - 1)",
    "nearest": "reads min(index, n_in - 1)",
    "nearest-exact": "reads min(index, n_in - 1)",
    "pixel_shuffle": "no border: every output reads a real pixel",
    "aligned_upsample": "reads clip(o / factor, 0, n_in - 1)",
    "pad": "added samples read per mode (zeros: nothing; replicate: clamped; reflect: mirrored)",
}


EXCLUDED = {
    "nearest-float32-shortcut-sizes": "float32 'nearest' whose scale_factor gives out = in or 2*in without being 1 "
    "or 2: torch's 2-D kernels take a shortcut or apply the formula depending on memory format and tensor size",
}


def excluded_reason(case: ProbeCase) -> str | None:
    """Why ``case`` is left out of sweeps, or None."""
    sf = case.params.get("scale_factor")
    if (case.family == "nearest" and case.dtype == "float32" and sf is not None and sf not in (1.0, 2.0)
            and math.floor(case.n_in * sf) in (case.n_in, 2 * case.n_in)):
        return EXCLUDED["nearest-float32-shortcut-sizes"]
    return None


@dataclass(frozen=True)
class ProbeCase:
    """One op configuration probed along one axis (``axis`` -1 = width, -2 = height of a 2-D op)."""

    family: str
    n_in: int
    params: dict = field(default_factory=dict)
    dims: int = 1
    axis: int = -1
    dtype: str = "float64"

    def label(self) -> str:
        inner = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.family}{self.dims}d[{inner}] n_in={self.n_in} axis={self.axis} {self.dtype}"


@dataclass(frozen=True)
class ProbeResult:
    family: str
    label: str
    n_out: int
    n_interior: int
    n_border: int
    interior_max_dev: float  # px, against geometry positions
    border_max_dev: float  # px, against the border rule; nan when there is no border output

    def as_row(self) -> dict:
        return asdict(self)


def geometry_map(case: ProbeCase) -> geometry.PositionMap:
    p = case.params
    fam = case.family
    if fam in ("conv", "max_pool"):
        return geometry.conv(p["kernel"], p["stride"], p["padding"], p.get("dilation", 1))
    if fam == "avg_pool":
        return geometry.conv(p["kernel"], p["stride"], p["padding"])
    if fam == "transposed_conv":
        return geometry.transposed_conv(p["kernel"], p["stride"], p["padding"], p["dilation"], p["output_padding"])
    if fam == "linear":
        return geometry.resize(case.n_in, p.get("size"), p["align_corners"], p.get("scale_factor"))
    if fam in ("nearest", "nearest-exact"):
        return geometry.nearest(case.n_in, p.get("size"), p.get("scale_factor"), exact=fam == "nearest-exact",
                                arithmetic=case.dtype)
    if fam == "pixel_shuffle":
        return geometry.pixel_shuffle(p["factor"])
    if fam == "aligned_upsample":
        return geometry.aligned_upsample(p["factor"], case.n_in, p["size"])
    if fam == "pad":
        return geometry.pad(p["before"], p["after"])
    raise ValueError(f"unknown probe family {fam!r}; choose one of {FAMILIES}")


# --- tensors along one axis -----------------------------------------------------------------------------------

def _dtype(case):
    return {"float64": torch.float64, "float32": torch.float32}[case.dtype]


def _embed(values: np.ndarray, case: ProbeCase, channels: int = 1) -> torch.Tensor:
    """(1, channels, n) for 1-D ops; for 2-D ops the values vary along ``axis`` and are constant along the other."""
    t = torch.as_tensor(values, dtype=_dtype(case))
    if case.dims == 1:
        return t.view(1, 1, -1).expand(1, channels, -1).contiguous()
    n = len(values)
    grid = t.view(1, -1).expand(n, n) if case.axis == -1 else t.view(-1, 1).expand(n, n)
    return grid.view(1, 1, n, n).expand(1, channels, n, n).contiguous()


def _line(y: torch.Tensor, case: ProbeCase, row: int = 0) -> np.ndarray:
    """The probed axis of output ``y``, at index ``row`` of the other axis."""
    y = y[0, 0]
    if case.dims == 2:
        y = y[row] if case.axis == -1 else y[:, row]
    return y.detach().to(torch.float64).numpy()


def _pair(case, value, other):
    """A per-axis argument: ``value`` on the probed axis, ``other`` (an identity setting) on the other one."""
    if case.dims == 1:
        return value
    return (other, value) if case.axis == -1 else (value, other)


def _ramp_and_ones(case):
    n = case.n_in
    return _embed(np.arange(n, dtype=np.float64), case), _embed(np.ones(n), case)


# --- readers: each returns (|realised - nominal position|, |reading - border rule|) per output, in px ------------

def _conv_reads(case, pm):
    p = case.params
    k, s, pad, d, mode = p["kernel"], p["stride"], p["padding"], p["dilation"], p["padding_mode"]
    conv_cls = torch.nn.Conv1d if case.dims == 1 else torch.nn.Conv2d
    ramp, ones = _ramp_and_ones(case)
    n, n_out = case.n_in, pm.out_size(case.n_in)
    o = np.arange(n_out)
    readings, rule_dev = [], np.zeros(n_out)
    for j in range(k):
        layer = conv_cls(1, 1, _pair(case, k, 1), stride=_pair(case, s, 1), padding=_pair(case, pad, 0),
                         dilation=_pair(case, d, 1), padding_mode=mode, bias=False).to(_dtype(case))
        with torch.no_grad():
            layer.weight.zero_()
            layer.weight.view(-1)[j] = 1.0
            got, hit = _line(layer(ramp), case), _line(layer(ones), case)
        want, want_hit = _padding_rule(o * s - pad + j * d, n, mode)
        rule_dev = np.maximum(rule_dev, np.maximum(np.abs(got - want), np.abs(hit - want_hit)))
        readings.append(got)
    return np.abs(np.mean(readings, axis=0) - pm.positions(n_out)), rule_dev


def _padding_rule(index: np.ndarray, n: int, mode: str):
    """What an index outside ``[0, n-1]`` reads under a padding mode: (value of a ramp, value of ones)."""
    inside = (index >= 0) & (index <= n - 1)
    if mode == "zeros":
        return np.where(inside, index, 0), inside.astype(float)
    if mode == "replicate":
        return np.clip(index, 0, n - 1), np.ones(len(index))
    mirrored = np.abs(index)
    return np.where(mirrored > n - 1, 2 * (n - 1) - mirrored, mirrored), np.ones(len(index))


def _pad_reads(case, pm):
    p = case.params
    ramp, ones = _ramp_and_ones(case)
    if case.dims == 1:
        pads = (p["before"], p["after"])
    else:  # (left, right, top, bottom)
        pads = (p["before"], p["after"], 0, 0) if case.axis == -1 else (0, 0, p["before"], p["after"])
    mode = {"zeros": "constant"}.get(p["mode"], p["mode"])
    got, hit = _line(F.pad(ramp, pads, mode=mode), case), _line(F.pad(ones, pads, mode=mode), case)
    index = np.arange(pm.out_size(case.n_in)) - p["before"]
    want, want_hit = _padding_rule(index, case.n_in, p["mode"])
    return np.abs(got - pm.positions(len(got))), np.maximum(np.abs(got - want), np.abs(hit - want_hit))


def _pool_reads(case, pm):
    p = case.params
    k, s, pad = p["kernel"], p["stride"], p["padding"]
    ramp, _ = _ramp_and_ones(case)
    n = case.n_in
    lo, _ = pm.taps(n)
    if case.family == "avg_pool":
        pool = F.avg_pool1d if case.dims == 1 else F.avg_pool2d
        got = _line(pool(ramp, _pair(case, k, 1), _pair(case, s, 1), _pair(case, pad, 0), count_include_pad=False),
                    case)
        windows = lo[:, None] + np.arange(k)[None, :]
        want = np.array([np.mean(t[(t >= 0) & (t <= n - 1)]) for t in windows])
        return np.abs(got - pm.positions(len(got))), np.abs(got - want)
    d = p["dilation"]
    pool = F.max_pool1d if case.dims == 1 else F.max_pool2d
    args = (_pair(case, k, 1), _pair(case, s, 1), _pair(case, pad, 0), _pair(case, d, 1))
    last = _line(pool(ramp, *args), case)
    first = -_line(pool(-ramp, *args), case)

    def in_range(t, pick):  # first/last tap of the window that lands on a real sample
        taps = t + d * np.arange(k)
        return pick(taps[(taps >= 0) & (taps <= n - 1)])

    want_first = np.array([in_range(t, np.min) for t in lo])
    want_last = np.array([in_range(t, np.max) for t in lo])
    dev = np.maximum(np.abs(first - want_first), np.abs(last - want_last))
    return np.abs((first + last) / 2 - pm.positions(len(first))), dev


def _transposed_reads(case, pm):
    p = case.params
    k, s, pad, d, op = p["kernel"], p["stride"], p["padding"], p["dilation"], p["output_padding"]
    conv_t = F.conv_transpose1d if case.dims == 1 else F.conv_transpose2d
    ramp, ones = _ramp_and_ones(case)
    n, n_out = case.n_in, pm.out_size(case.n_in)
    o = np.arange(n_out)
    est_dev, rule_dev = np.zeros(n_out), np.zeros(n_out)
    for j in range(k):
        w = torch.zeros((1, 1) + ((k,) if case.dims == 1 else _pair(case, k, 1)), dtype=_dtype(case))
        w.view(-1)[j] = 1.0
        kw = dict(stride=_pair(case, s, 1), padding=_pair(case, pad, 0), output_padding=_pair(case, op, 0),
                  dilation=_pair(case, d, 1))
        got, hit = _line(conv_t(ramp, w, **kw), case), _line(conv_t(ones, w, **kw), case)
        t = o + pad - j * d
        lands = (t % s == 0) & (t >= 0) & (t <= (n - 1) * s)
        want = np.where(lands, t // s, 0)
        rule_dev = np.maximum(rule_dev, np.maximum(np.abs(got - want), np.abs(hit - lands)))
        # Each landing tap j sees the window centre shifted by (j - (k-1)/2) d / s.
        est = got + (j - (k - 1) / 2) * d / s
        est_dev = np.where(lands, np.maximum(est_dev, np.abs(est - pm.positions(n_out))), est_dev)
    # Outputs that no tap reaches have nothing to read back; the rule check above still covers them.
    return est_dev, rule_dev


def _interp_reads(case, pm):
    p = case.params
    # A 2-D tensor with one channel is also channels_last-contiguous and torch then takes that kernel; feature maps
    # have many channels, so probe with several.
    ramp = _embed(np.arange(case.n_in, dtype=np.float64), case, channels=1 if case.dims == 1 else 4)
    if case.family == "aligned_upsample":
        y = ops.aligned_upsample(ramp, p["factor"], p["size"])
    else:
        kw = {"size": p["size"]} if p.get("size") is not None else {"scale_factor": p["scale_factor"]}
        if case.family == "linear":
            kw.update(mode="linear" if case.dims == 1 else "bilinear", align_corners=p["align_corners"])
        else:
            kw.update(mode=case.family)
        if case.dims == 2:  # the other axis keeps its size, so only the probed axis resamples
            key = "size" if "size" in kw else "scale_factor"
            other = case.n_in if key == "size" else 1.0
            kw[key] = (other, kw[key]) if case.axis == -1 else (kw[key], other)
        y = F.interpolate(ramp, **kw)
    got = _line(y, case)
    return np.abs(got - pm.positions(len(got))), np.abs(got - pm.sampled_positions(case.n_in))


def _pixel_shuffle_reads(case, pm):
    r = case.params["factor"]
    n = case.n_in
    ramp = _embed(np.arange(n, dtype=np.float64), case, channels=r * r)
    code = torch.arange(r * r, dtype=_dtype(case)).view(1, r * r, 1, 1)
    sub = (code % r if case.axis == -1 else code // r).expand(1, r * r, n, n).contiguous()
    pixel, subpos = _line(F.pixel_shuffle(ramp, r), case), _line(F.pixel_shuffle(sub, r), case)
    got = pixel + (subpos + 0.5) / r - 0.5
    return np.abs(got - pm.positions(len(got))), np.zeros_like(got)


_READERS = {"conv": _conv_reads, "avg_pool": _pool_reads, "max_pool": _pool_reads,
            "transposed_conv": _transposed_reads, "linear": _interp_reads, "nearest": _interp_reads,
            "nearest-exact": _interp_reads, "aligned_upsample": _interp_reads, "pixel_shuffle": _pixel_shuffle_reads,
            "pad": _pad_reads}


def run_case(case: ProbeCase) -> ProbeResult:
    """Push ramps through the torch op of ``case`` and compare with ``ufpa.geometry``."""
    pm = geometry_map(case)
    n_out = pm.out_size(case.n_in)
    dev, rule_dev = _READERS[case.family](case, pm)
    if len(dev) != n_out:
        raise AssertionError(f"{case.label()}: torch made {len(dev)} outputs, geometry says {n_out}")
    inner = pm.interior(case.n_in)
    interior_dev = float(np.max(np.maximum(dev, rule_dev)[inner])) if inner.any() else 0.0
    border_dev = float(np.max(rule_dev[~inner])) if (~inner).any() else float("nan")
    return ProbeResult(case.family, case.label(), n_out, int(inner.sum()), int((~inner).sum()), interior_dev,
                       border_dev)


# --- random sweeps ----------------------------------------------------------------------------------------------

def _scale_or_size(rng, n_in, max_out=140):
    """Either an output size or a scale factor (integer, reciprocal, arbitrary, two-decimal, size-keeping)."""
    if rng.random() < 0.5:
        return {"size": int(rng.integers(1, max_out + 1))}
    kind = rng.integers(5)
    sf = [float(rng.integers(1, 5)), 1.0 / float(rng.integers(1, 5)), float(rng.uniform(0.3, 4.0)),
          round(float(rng.uniform(0.3, 4.0)), 2),
          1.0 + float(rng.uniform(0, 1 / n_in))][kind]  # last: a factor that leaves the size unchanged
    if math.floor(n_in * sf) < 1:
        sf = 1.0
    return {"scale_factor": sf}


def _draw(family: str, rng: np.random.Generator) -> ProbeCase:
    n_in = int(rng.integers(5, 71))
    dims = int(rng.integers(1, 3))
    axis = int(rng.choice([-1, -2])) if dims == 2 else -1
    dtype = "float64"
    k, s, d = int(rng.integers(1, 8)), int(rng.integers(1, 5)), int(rng.integers(1, 4))
    if family == "conv":
        mode = str(rng.choice(["zeros", "replicate", "reflect"]))
        pad = int(rng.integers(0, d * (k - 1) + 1))
        if mode == "reflect":
            pad = min(pad, n_in - 1)
        params = dict(kernel=k, stride=s, padding=pad, dilation=d, padding_mode=mode)
    elif family == "avg_pool":
        params = dict(kernel=k, stride=s, padding=int(rng.integers(0, k // 2 + 1)))
    elif family == "max_pool":
        params = dict(kernel=k, stride=s, padding=int(rng.integers(0, k // 2 + 1)), dilation=d)  # torch: pad <= k/2
    elif family == "transposed_conv":
        params = dict(kernel=k, stride=s, padding=int(rng.integers(0, d * (k - 1) + 1)), dilation=d,
                      output_padding=int(rng.integers(0, max(s, d))))
    elif family == "linear":
        params = dict(align_corners=bool(rng.integers(2)), **_scale_or_size(rng, n_in))
    elif family in ("nearest", "nearest-exact"):
        params = _scale_or_size(rng, n_in)
        # geometry.nearest models two torch paths: the 2-D kernels at float32 (what models run) and 1-D at float64.
        dtype = str(rng.choice(["float64", "float32"]))
        dims, axis = (2, int(rng.choice([-1, -2]))) if dtype == "float32" else (1, -1)
    elif family == "pixel_shuffle":
        dims, axis = 2, int(rng.choice([-1, -2]))
        n_in = int(rng.integers(5, 31))
        params = dict(factor=int(rng.integers(1, 5)))
    elif family == "pad":
        mode = str(rng.choice(["zeros", "replicate", "reflect"]))
        limit = n_in - 1 if mode == "reflect" else 6
        params = dict(before=int(rng.integers(0, limit + 1)), after=int(rng.integers(0, limit + 1)), mode=mode)
    elif family == "aligned_upsample":
        f = int(rng.integers(1, 9))
        params = dict(factor=f, size=int(rng.integers(max(1, f * (n_in - 2)), f * n_in + 2)))
    else:
        raise ValueError(f"unknown probe family {family!r}; choose one of {FAMILIES}")
    return ProbeCase(family, n_in, params, dims, axis, dtype)


def random_cases(n: int, seed: int = 0, families=FAMILIES) -> list[ProbeCase]:
    """``n`` configurations drawn round-robin over ``families``; ones torch would reject, and ``EXCLUDED`` ones,
    are redrawn."""
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < n:
        family = families[len(cases) % len(families)]
        case = _draw(family, rng)
        try:
            geometry_map(case).out_size(case.n_in)
        except ValueError:
            continue  # e.g. a kernel wider than the padded input: no output to probe
        if excluded_reason(case):
            continue
        cases.append(case)
    return cases


def sweep(n: int = 1200, seed: int = 0, families=FAMILIES, progress: bool = False) -> pd.DataFrame:
    """Probe ``n`` random configurations; one row per configuration."""
    cases = random_cases(n, seed, families)
    if progress:
        from tqdm import tqdm
        cases = tqdm(cases, desc="probe", mininterval=1.0)
    return pd.DataFrame([run_case(c).as_row() for c in cases])


def summarize(results: pd.DataFrame, resolution: float = 1e-12) -> pd.DataFrame:
    """Worst deviations per op family, rounded to ``resolution`` px so the table is identical on every machine."""
    def worst(col):
        return lambda s: float(np.round(np.nanmax(s) / resolution) * resolution) if s.notna().any() else float("nan")

    table = results.groupby("family", sort=False).agg(
        configs=("label", "size"),
        outputs=("n_out", "sum"),
        interior_outputs=("n_interior", "sum"),
        border_outputs=("n_border", "sum"),
        worst_interior_px=("interior_max_dev", worst("interior_max_dev")),
        worst_border_px=("border_max_dev", worst("border_max_dev")),
    )
    table["border_rule"] = [BORDER_RULES[f] for f in table.index]
    return table


def verification_summary(results: pd.DataFrame, tolerance: float = 1e-9) -> dict:
    """What a verification record holds: pass/fail against ``tolerance`` and the worst deviation per family."""
    table = summarize(results).reset_index()
    worst_interior = float(np.nanmax(results["interior_max_dev"]))
    worst_border = float(np.nanmax(results["border_max_dev"])) if results["border_max_dev"].notna().any() else 0.0
    return {
        "configs": int(len(results)),
        "tolerance_px": tolerance,
        "worst_interior_px": worst_interior,
        "worst_border_px": worst_border,
        "passed": bool(worst_interior <= tolerance and worst_border <= tolerance),
        "per_family": table.to_dict("records"),
        "excluded": dict(EXCLUDED),
    }


def run_verification(n_cases: int = 2400, seed: int = 0, record_path=None, progress: bool = False):
    """Sweep, summarise and (when ``record_path`` is given) write the results record. Returns (results, summary)."""
    from . import records

    results = sweep(n_cases, seed, progress=progress)
    summary = verification_summary(results)
    if record_path is not None:
        records.write_record(record_path, "numerical_verification", {"n_cases": n_cases, "seed": seed,
                                                                     "families": list(FAMILIES)}, summary, seed)
    return results, summary
