"""The study's statistics, on numbers and frames only: no files, no plots (``report`` draws and writes with them).

Conventions: an interval is two-sided at ``level`` (0.95 by default) and given as its half-width around the mean
(Student t; NaN for one value) or as its two ends (bootstrap). A *paired* difference is a condition minus its control
on the same seed (the same data order and initial weights), so seed-to-seed spread shared by both cancels. Every
function is deterministic: resampling takes an explicit ``seed``.

>>> round(t_quantile(0.975, 2), 4)
4.3027
>>> [round(v, 4) for v in mean_ci([1.0, 2.0, 3.0])]
[2.0, 2.4841, 3]
"""

from __future__ import annotations

import functools
import math
from itertools import product

import numpy as np
import pandas as pd


def _betacf(a, b, x):
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > 1e-300 else 1e-300)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > 1e-300 else 1e-300)
            c = 1.0 + aa / c if abs(1.0 + aa / c) > 1e-300 else 1e-300
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def _incbeta(a, b, x):
    if x <= 0 or x >= 1:
        return float(x >= 1)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1 - x) / b


def t_cdf(t: float, df: int) -> float:
    """CDF of Student's t distribution (no scipy): the regularised incomplete beta function by its continued fraction
    (Numerical Recipes' betacf, accurate to ~1e-12).

    >>> round(t_cdf(2.0, 10), 6), t_cdf(0.0, 3)
    (0.963306, 0.5)
    """
    tail = 0.5 * _incbeta(df / 2, 0.5, df / (df + t * t))
    return 1 - tail if t > 0 else tail


@functools.lru_cache(maxsize=4096)  # the report asks for the same few quantiles thousands of times
def t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t distribution: bisection on ``t_cdf``.

    >>> round(t_quantile(0.975, 1), 4), round(t_quantile(0.975, 30), 4), round(t_quantile(0.025, 30), 4)
    (12.7062, 2.0423, -2.0423)
    """
    if df < 1:
        raise ValueError(f"t distribution needs df >= 1, got {df}")
    if not 0 < p < 1:
        raise ValueError(f"quantile needs 0 < p < 1, got {p}")
    lo, hi = -1e4, 1e4
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2


def t_test(differences) -> float:
    """Two-sided p-value of the one-sample (paired) t-test that the mean difference is 0; NaN below 2 values, 0 when
    every difference is the same non-zero number.

    >>> round(t_test([0.01, 0.02, 0.03]), 4)
    0.0742
    """
    d = finite(differences)
    if len(d) < 2:
        return float("nan")
    sd = d.std(ddof=1)
    if sd == 0:
        return 0.0 if d.mean() != 0 else 1.0
    t = d.mean() / (sd / math.sqrt(len(d)))
    return float(2 * (1 - t_cdf(abs(t), len(d) - 1)))


def seeds_for_power(effect: float, sd: float, alpha: float = 0.05, power: float = 0.8, most: int = 10_000) -> int:
    """Paired seeds a two-sided t-test at ``alpha`` needs to find a true mean difference ``effect`` with probability
    ``power`` when the per-seed differences spread by ``sd`` (the usual t approximation:
    n >= ((t_{1-alpha/2, n-1} + t_{power, n-1}) * sd / effect)^2, smallest n that satisfies it). Pass alpha / m for a
    family of m comparisons under Bonferroni (Holm needs at most that many).

    >>> seeds_for_power(1.0, 1.0), seeds_for_power(0.5, 1.0), seeds_for_power(0.5, 1.0, alpha=0.05 / 4)
    (10, 34, 48)
    """
    if not effect or not np.isfinite(effect) or not np.isfinite(sd):
        return most

    def enough(n):
        return n >= ((t_quantile(1 - alpha / 2, n - 1) + t_quantile(power, n - 1)) * sd / abs(effect)) ** 2

    # the need falls as n grows (t quantiles shrink with df), so the smallest n that meets it is found by bisection:
    # ~2 log2(most) quantiles instead of one pair per n (thousands where the effect is small)
    lo, hi = 2, most - 1
    if not enough(hi):
        return most
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid + 1, hi)
    return lo


def finite(values) -> np.ndarray:
    """The finite numbers of ``values`` as floats (None and NaN dropped).

    >>> finite([1, None, float("nan"), 2.5]).tolist()
    [1.0, 2.5]
    """
    return np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)


def mean_ci(values, level: float = 0.95) -> tuple[float, float, int]:
    """Mean, confidence half-width (Student t over the values) and count; the half-width is NaN for one value.

    >>> mean_ci([5.0])
    (5.0, nan, 1)
    >>> mean_ci([])
    (nan, nan, 0)
    """
    x = finite(values)
    n = len(x)
    if n == 0:
        return float("nan"), float("nan"), 0
    if n == 1:
        return float(x[0]), float("nan"), 1
    half = t_quantile(0.5 + level / 2, n - 1) * x.std(ddof=1) / math.sqrt(n)
    return float(x.mean()), float(half), n


def bootstrap_ci(values, level: float = 0.95, resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (its two ends): no normality assumed, but with few values it is too
    narrow (it cannot see beyond the values drawn); prefer ``mean_ci`` below ~10 seeds.

    >>> bootstrap_ci([1.0, 2.0, 3.0, 4.0], resamples=2000)
    (1.5, 3.5)
    >>> bootstrap_ci([2.0, 2.0])
    (2.0, 2.0)
    """
    x = finite(values)
    if len(x) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def hierarchical_bootstrap(sizes, statistic, level: float = 0.95, resamples: int = 2000,
                           seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the mean over groups (seeds) of ``statistic(group, rows)``, resampling both levels: the
    groups with replacement, then within each drawn group its rows (val images) with replacement. ``sizes``: each
    group's row count; ``statistic(g, rows)`` returns a number for group ``g`` on the row indices ``rows`` (repeats
    allowed), e.g. a paired difference of two arms on the same images. It carries the image sampling that an interval
    over seeds alone does not; with few groups it shares ``bootstrap_ci``'s narrowness at the seed level.

    >>> sizes = [4, 4]
    >>> values = [np.array([1.0, 1.0, 1.0, 1.0]), np.array([3.0, 3.0, 3.0, 3.0])]
    >>> hierarchical_bootstrap(sizes, lambda g, rows: values[g][rows].mean(), resamples=500)
    (1.0, 3.0)
    """
    rng = np.random.default_rng(seed)
    n = len(sizes)
    if n == 0:
        return float("nan"), float("nan")
    means = np.empty(resamples)
    for r in range(resamples):
        groups = rng.integers(0, n, n)
        means[r] = np.mean([statistic(int(g), rng.integers(0, sizes[g], sizes[g])) for g in groups])
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def sign_flip_test(differences, resamples: int = 100_000, seed: int = 0) -> float:
    """Two-sided p-value of the paired permutation test that the mean difference is 0: under that null each seed's
    difference is as likely with either sign. Exact (all 2**n signs) up to 2**n <= ``resamples``; else a Monte Carlo
    estimate counting the observed signs too, so it is never 0. With n pairs the smallest p possible is 2 / 2**n:
    three seeds can never reach 0.05.

    >>> sign_flip_test([1.0, 2.0, 3.0])
    0.25
    >>> sign_flip_test([0.5, -0.5])
    1.0
    """
    d = finite(differences)
    n = len(d)
    if n == 0:
        return float("nan")
    observed = abs(d.mean()) - 1e-12 * max(1.0, float(np.abs(d).max()))  # ties count as extreme
    if 2 ** n <= resamples:
        signs = np.array(list(product((1.0, -1.0), repeat=n)))
        return float(np.mean(np.abs(signs @ d / n) >= observed))
    rng = np.random.default_rng(seed)
    signs = rng.choice((1.0, -1.0), size=(resamples, n))
    hits = int(np.sum(np.abs(signs @ d / n) >= observed))
    return (hits + 1) / (resamples + 1)


def holm(p_values) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (controls the family-wise error rate at any dependence):
    the i-th smallest is multiplied by (m - i), then made non-decreasing and capped at 1; NaN stays NaN and does not
    count in the family.

    >>> holm([0.01, 0.04, 0.03])
    [0.03, 0.06, 0.06]
    >>> holm([0.5, float("nan")])
    [0.5, nan]
    """
    p = np.asarray(p_values, dtype=float)
    out = np.full(len(p), np.nan)
    index = [i for i in np.argsort(p, kind="stable") if np.isfinite(p[i])]
    m, running = len(index), 0.0
    for rank, i in enumerate(index):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = round(running, 15)
    return out.tolist()


def aggregate(frame: pd.DataFrame, by, metrics, level: float = 0.95, first=()) -> pd.DataFrame:
    """Per group of ``by``: ``seeds`` (rows), the ``first`` columns' first value, and each metric's mean and
    confidence half-width (``<metric>_ci``), groups in order of appearance.

    >>> f = pd.DataFrame({"arm": ["a", "a", "b"], "x": [1.0, 3.0, 5.0], "n": [7, 7, 9]})
    >>> for row in aggregate(f, ["arm"], ["x"], first=["n"]).round(3).to_dict("records"):
    ...     print(row)
    {'arm': 'a', 'n': 7, 'seeds': 2, 'x': 2.0, 'x_ci': 12.706}
    {'arm': 'b', 'n': 9, 'seeds': 1, 'x': 5.0, 'x_ci': nan}
    """
    by = list(by)
    out = []
    for key, group in frame.groupby(by, observed=True, sort=False):
        row = dict(zip(by, key))
        row.update({c: group[c].iloc[0] for c in first}, seeds=len(group))
        for m in metrics:
            row[m], row[f"{m}_ci"], _ = mean_ci(group[m], level)
        out.append(row)
    return pd.DataFrame(out)


def paired(frame: pd.DataFrame, by, metrics, arm: str, control, pair_on: str = "seed", level: float = 0.95,
           first=()) -> pd.DataFrame:
    """Per group of ``by`` (which names the ``arm`` column) other than the control arm: its difference to the control
    row with the same values of ``by`` but the arm, and the same ``pair_on``; as mean and confidence half-width over
    the ``pairs`` both have (``d_<metric>``, ``d_<metric>_ci``), the per-pair differences (``d_<metric>_per_seed``)
    and which ``pair_on`` values paired (``seeds``). Groups without a control are left out.

    >>> f = pd.DataFrame({"arm": ["c", "c", "t", "t", "t"], "seed": [0, 1, 0, 1, 2], "x": [1.0, 2.0, 1.5, 2.5, 9.0]})
    >>> paired(f, ["arm"], ["x"], "arm", "c").to_dict("records")
    [{'arm': 't', 'pairs': 2, 'seeds': [0, 1], 'd_x': 0.5, 'd_x_ci': 0.0, 'd_x_per_seed': [0.5, 0.5]}]
    """
    by = list(by)
    match = [k for k in by if k != arm] + [pair_on]
    base = frame[frame[arm] == control].set_index(match)
    out = []
    for key, group in frame[frame[arm] != control].groupby(by, observed=True, sort=False):
        row = dict(zip(by, key))
        g = group.set_index(match)
        common = g.index.intersection(base.index)
        if len(common) == 0:
            continue
        row.update(pairs=len(common), seeds=[int(i[-1]) if isinstance(i, tuple) else int(i) for i in common])
        row.update({c: group[c].iloc[0] for c in first})
        for m in metrics:
            diff = (g.loc[common, m] - base.loc[common, m]).to_numpy(float)
            row[f"d_{m}"], row[f"d_{m}_ci"], _ = mean_ci(diff, level)
            row[f"d_{m}_per_seed"] = diff.tolist()
        out.append(row)
    return pd.DataFrame(out)
