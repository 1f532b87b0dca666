"""Symbolic derivation of feature positions and the fusion shift error (sympy).

Each function derives one result from first principles under the convention of ``ufpa.geometry`` (sample ``i`` at
``x = i``) and returns a sympy expression; notebook 01 shows the steps and ``max_deviation`` checks every result
against ``ufpa.geometry`` on sample values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import sympy as sp

o, j = sp.symbols("o j", integer=True, nonnegative=True)  # output index, kernel tap
k, s, d = sp.symbols("k s d", integer=True, positive=True)  # kernel, stride, dilation
p = sp.symbols("p", integer=True, nonnegative=True)  # padding
n_in, n_out = sp.symbols("n_in n_out", integer=True, positive=True)
K = sp.symbols("K", integer=True, positive=True)  # levels between the fused branches (upsampling by 2^K)
S = sp.symbols("S", positive=True)  # stride of the fusion target, in input pixels
n_hi, n_lo = sp.symbols("n_hi n_lo", integer=True, positive=True)  # target / source sizes along the axis
m = sp.symbols("m", integer=True, positive=True)
x = sp.symbols("x", real=True)


def conv_tap() -> sp.Expr:
    """Input index read by tap ``j`` of output ``o``: cross-correlation with stride, padding and dilation."""
    return o * s - p + j * d


def conv_centre() -> sp.Expr:
    """Centre of the window: the mean of the k tap coordinates."""
    return sp.simplify(sp.summation(conv_tap(), (j, 0, k - 1)) / k)


def transposed_conv_centre() -> sp.Expr:
    """Output o of a transposed conv sees the zero-inserted input (sample i at i*s) through the window
    [o + p - d(k-1), o + p]; its centre in input units."""
    first, last = o + p - d * (k - 1), o + p
    return sp.simplify((first + last) / 2 / s)


def _affine_through(points: Iterable[tuple[sp.Expr, sp.Expr]]) -> sp.Expr:
    a, b = sp.symbols("a b")
    sol = sp.solve([a * u + b - v for u, v in points], [a, b], dict=True)[0]
    return sp.simplify(sol[a] * o + sol[b])


def resize_grid(align_corners: bool) -> sp.Expr:
    """Linear-interpolation grid. align_corners=False maps the outer pixel *edges* onto each other (-1/2 -> -1/2,
    n_out - 1/2 -> n_in - 1/2); align_corners=True maps the corner pixel *centres* (0 -> 0, n_out-1 -> n_in-1)."""
    half = sp.Rational(1, 2)
    if align_corners:
        return _affine_through([(0, 0), (n_out - 1, n_in - 1)])
    return _affine_through([(-half, -half), (n_out - half, n_in - half)])


def nearest_grid(exact: bool = False) -> sp.Expr:
    """'nearest' copies index floor(o * n_in/n_out); 'nearest-exact' floor((o + 1/2) * n_in/n_out)."""
    return sp.floor((o + (sp.Rational(1, 2) if exact else 0)) * n_in / n_out)


def compose(first: sp.Expr, second: sp.Expr) -> sp.Expr:
    """Data-flow composition: ``first`` runs, then ``second``; substitute second's position into first's map."""
    return sp.simplify(first.subs(o, second))


def strided_chain(levels: int | sp.Symbol) -> sp.Expr:
    """A chain of 3x3 / stride-2 / padding-1 convs: each is x = 2o (offset d(k-1)/2 - p = 0), so ``levels`` of
    them give x = 2**levels * o."""
    step = conv_centre().subs({k: 3, s: 2, p: 1, d: 1})
    if isinstance(levels, int):
        expr = o
        for _ in range(levels):
            expr = compose(step, expr)
        return expr
    return 2 ** levels * o


def fusion_error(mode: str) -> sp.Expr:
    """Shift (input px) of a branch upsampled by 2^K into a target branch of stride S, at target index o.

    Both branches sit on offset-free strided grids: target x = S*o, source x = 2^K*S*i. The upsampling picks the
    source coordinate i(o); the error is 2^K*S*i(o) - S*o.
    """
    factor = 2 ** K
    if mode == "nearest":
        src = sp.floor(o / factor)
    elif mode == "bilinear":  # align_corners=False with scale factor 2^K: n_in/n_out = 2^-K
        src = resize_grid(False).subs(n_in, n_out / factor)
    elif mode == "bilinear_corners":
        src = resize_grid(True).subs({n_in: n_lo, n_out: n_hi})
    elif mode == "aligned":
        src = o / factor
    else:
        raise ValueError(f"unknown mode {mode!r}; choose nearest, bilinear, bilinear_corners or aligned")
    return sp.simplify(factor * S * src - S * o)


def nearest_error_closed_form() -> sp.Expr:
    """-S (o mod 2^K): the nearest error is a sawtooth, largest (S (2^K - 1)) at the last copy of each sample."""
    return -S * sp.Mod(o, 2 ** K)


def corner_alignment_condition() -> sp.Expr:
    """align_corners=True fuses without shift for every o iff this expression is zero: n_hi - 1 = 2^K (n_lo - 1)."""
    return sp.factor(sp.simplify(fusion_error("bilinear_corners") / (S * o) * (n_hi - 1)))


def halving_size(n: sp.Expr) -> sp.Expr:
    """Samples after a 3x3 / stride-2 / padding-1 conv: floor((n + 2 - 3)/2) + 1."""
    return sp.floor((n - 1) / 2) + 1


def max_deviation(expr: sp.Expr, numeric: Callable[..., np.ndarray], samples: Iterable[dict]) -> float:
    """Largest |expr - numeric| over ``samples`` (dicts of symbol values; ``o`` runs over ``range(count)``).

    ``numeric(**sample)`` returns the geometry's values for ``o = 0 .. count-1``.
    """
    worst = 0.0
    fn = sp.lambdify([o, *sorted(expr.free_symbols - {o}, key=str)], expr, modules="numpy")
    for sample in samples:
        sample = dict(sample)
        count = sample.pop("count")
        args = [sample[str(sym)] for sym in sorted(expr.free_symbols - {o}, key=str)]
        sym_vals = np.broadcast_to(np.asarray(fn(np.arange(count), *args), dtype=np.float64), (count,))
        worst = max(worst, float(np.max(np.abs(sym_vals - np.asarray(numeric(**sample), dtype=np.float64)))))
    return worst


def aligned_border_error() -> sp.Expr:
    """Size-free aligned upsampling past the last source sample reads min(o/2^K, n_lo - 1): the error there is
    -S * max(0, o - 2^K (n_lo - 1)); zero on the interior."""
    factor = 2 ** K
    return sp.simplify(factor * S * sp.Min(o / factor, n_lo - 1) - S * o)


def bilinear_border_error() -> sp.Expr:
    """Bilinear x2^K with align_corners=False reads source index clip((o + 1/2)/2^K - 1/2, 0, n_lo - 1): on the
    interior the error is the constant -S (2^K - 1)/2; where the clamp bites it runs from 0 at o = 0 (left) and down to
    -S (2^K - 1) at the right end, the same worst case as nearest."""
    factor = 2 ** K
    read = sp.Min(sp.Max((o + sp.Rational(1, 2)) / factor - sp.Rational(1, 2), 0), n_lo - 1)
    return factor * S * read - S * o


def show(label: str, expr) -> None:
    """Render ``label = expr`` as math in a notebook."""
    from IPython.display import Math, display

    display(Math(f"{label} = {sp.latex(expr)}"))


# --- the checks and tables notebook 01 shows --------------------------------------------------------------------------

def grid_checks(pairs) -> dict:
    """Largest |sympy - geometry| of each interpolation grid over (n_in, n_out) ``pairs`` (exact arithmetic)."""
    from . import geometry as g

    samples = [dict(n_in=a, n_out=b, count=b) for a, b in pairs]
    return {
        "align_corners=False": max_deviation(resize_grid(False), lambda n_in, n_out: g.resize(
            n_in, n_out, False).positions(n_out), samples),
        "align_corners=True": max_deviation(resize_grid(True), lambda n_in, n_out: g.resize(
            n_in, n_out, True).positions(n_out), samples),
        "nearest (exact math)": max_deviation(nearest_grid(False), lambda n_in, n_out: g.nearest(
            n_in, n_out, arithmetic="rational").positions(n_out), samples),
        "nearest-exact (exact math)": max_deviation(nearest_grid(True), lambda n_in, n_out: g.nearest(
            n_in, n_out, exact=True, arithmetic="rational").positions(n_out), samples),
    }


def fusion_shift_table(sizes, levels, target_stride, errors: dict):
    """One row per (input size, level K, upsampling mode): the worst fusion shift (input px) and how far the sympy
    expression in ``errors`` (plus nearest's closed form) is from ``ufpa.geometry``. Modes that cannot fuse at a size
    (torch would fail the add) are left out."""
    import pandas as pd

    from . import geometry as g

    rows = []
    for n in sizes:
        n_branch = g.branch_sizes(n)
        for level in levels:
            for mode, expr in list(errors.items()) + [("nearest (closed form)", nearest_error_closed_form())]:
                try:
                    fs = g.multiscale_fusion_shift(n, level, 0, mode.split(" ")[0])
                except ValueError:
                    continue
                values = dict(K=level, S=target_stride, n_hi=n_branch[0], n_lo=n_branch[level], count=len(fs.shift))
                dev = max_deviation(expr, lambda fs=fs, **_: fs.shift, [values])
                rows.append(dict(size=n, K=level, mode=mode, max_abs_shift_px=fs.max_abs, sympy_vs_geometry=dev))
    return pd.DataFrame(rows)


def aligned_size_table(sizes, levels):
    """Per input size: whether it is 32m+1, the next such size, and the worst align_corners=True fusion shift."""
    import pandas as pd

    from . import geometry as g

    rows = []
    for n in sizes:
        worst = max(g.multiscale_fusion_shift(n, level, 0, "bilinear_corners").max_abs for level in levels)
        rows.append(dict(size=n, aligned=g.is_aligned_size(n), next_aligned=g.aligned_size(n),
                         worst_corner_shift_px=round(worst, 9)))
    return pd.DataFrame(rows)


def bilinear_border_table(sizes, levels, target_stride):
    """Bilinear align_corners=False per (size, K): the interior shift, the border outputs and their worst shift,
    checked against :func:`bilinear_border_error` (what the op really reads, clamping included)."""
    import pandas as pd

    from . import geometry as g

    rows = []
    for n in sizes:
        n_branch = g.branch_sizes(n)
        for level in levels:
            try:
                fs = g.multiscale_fusion_shift(n, level, 0, "bilinear")
            except ValueError:
                continue  # fixed-factor upsampling cannot reach branch 0's size here
            values = dict(K=level, S=target_stride, n_lo=n_branch[level], count=len(fs.shift))
            dev = max_deviation(bilinear_border_error(), lambda fs=fs, **_: fs.sampled_shift, [values])
            rows.append(dict(size=n, K=level, interior_max_px=fs.max_abs, border_outputs=fs.border_width,
                             border_max_px=fs.border_max_abs, sympy_vs_geometry=dev))
    return pd.DataFrame(rows)


def aligned_border_table(sizes, levels, target_stride):
    """The size-free aligned upsampling per (size, K): interior and border shift, checked against
    :func:`aligned_border_error`."""
    import pandas as pd

    from . import geometry as g

    rows = []
    for n in sizes:
        n_branch = g.branch_sizes(n)
        for level in levels:
            fs = g.multiscale_fusion_shift(n, level, 0, "aligned")
            values = dict(K=level, S=target_stride, n_lo=n_branch[level], count=len(fs.shift))
            dev = max_deviation(aligned_border_error(), lambda fs=fs, **_: fs.sampled_shift, [values])
            rows.append(dict(size=n, K=level, interior_max_px=fs.max_abs, border_outputs=fs.border_width,
                             border_max_px=fs.border_max_abs, sympy_vs_geometry=dev))
    return pd.DataFrame(rows)


def derivation_findings(table, bilinear, aligned, sizes) -> str:
    """Notebook 01's closing summary, every number read from its tables (worst shift per level, input px)."""
    def worst(frame, size, column, **where):
        rows = frame[frame["size"] == size]
        for key, value in where.items():
            rows = rows[rows[key] == value]
        return " / ".join(f"{v:g}" for v in rows.sort_values("K")[column]) or "-"

    even = next((n for n in sorted(sizes, reverse=True) if n % 32 == 0), None)
    odd = next((n for n in sorted(sizes, reverse=True) if n % 32 == 1), None)
    lines = []
    if even is not None:
        lines.append(f"At {even} px, fusing levels 1 / 2 / 3 into branch 0: nearest "
                     f"{worst(table, even, 'max_abs_shift_px', mode='nearest')} px (sawtooth); bilinear "
                     f"align_corners=False {worst(bilinear, even, 'interior_max_px')} px on the interior and up to "
                     f"{worst(bilinear, even, 'border_max_px')} px at the borders; align_corners=True "
                     f"{worst(table, even, 'max_abs_shift_px', mode='bilinear_corners')} px (growing across the "
                     f"image); size-free aligned {worst(aligned, even, 'interior_max_px')} px inside, up to "
                     f"{worst(aligned, even, 'border_max_px')} px at the far border.")
    if odd is not None:
        lines.append(f"At {odd} px (32m+1): align_corners=True "
                     f"{worst(table, odd, 'max_abs_shift_px', mode='bilinear_corners')} px: exactly aligned.")
    dev = max(table["sympy_vs_geometry"].max(), bilinear["sympy_vs_geometry"].max(), aligned["sympy_vs_geometry"].max())
    lines.append(f"Every sympy result agrees with ufpa.geometry to {dev:.1e} px.")
    return "\n".join(lines)
