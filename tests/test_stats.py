"""ufpa.stats: the t quantile against printed tables, intervals, the paired permutation test, Holm, and every
docstring example (the module's doctests run here)."""

import doctest
import math

import numpy as np
import pandas as pd
import pytest

from ufpa import stats


def test_the_docstring_examples_hold():
    result = doctest.testmod(stats, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 10 and result.failed == 0


@pytest.mark.parametrize("df,expected", [(1, 12.7062047), (2, 4.3026527), (4, 2.7764451), (10, 2.2281389),
                                         (1000, 1.9623391)])
def test_t_quantile_matches_the_tables(df, expected):
    assert stats.t_quantile(0.975, df) == pytest.approx(expected, abs=1e-6)
    assert stats.t_quantile(0.025, df) == pytest.approx(-expected, abs=1e-6)


def test_mean_ci():
    mean, half, n = stats.mean_ci([1.0, 2.0, 3.0])
    assert (mean, n) == (2.0, 3) and half == pytest.approx(4.3026527 * 1 / math.sqrt(3), rel=1e-6)
    assert math.isnan(stats.mean_ci([5.0])[1]) and stats.mean_ci([])[2] == 0
    with pytest.raises(ValueError, match="df >= 1"):
        stats.t_quantile(0.9, 0)




def test_sign_flip_test_is_exact_for_few_pairs_and_never_zero_by_sampling():
    # 4 positive pairs: only the all-plus and all-minus sign patterns are as extreme -> 2 / 16
    assert stats.sign_flip_test([0.2, 0.4, 0.1, 0.3]) == pytest.approx(2 / 16)
    # three seeds cannot reach 0.05, however large the effect: the study's power problem in one line
    assert stats.sign_flip_test([5.0, 6.0, 7.0]) == pytest.approx(0.25)
    p = stats.sign_flip_test(np.full(30, 1.0), resamples=2000, seed=1)
    assert 0 < p <= 1 / 2001 + 1e-12
    assert stats.sign_flip_test([1.0, -1.0, 2.0, -2.0]) == pytest.approx(1.0)


def test_holm_matches_the_step_down_rule():
    # m = 4: sorted p 0.001, 0.01, 0.02, 0.04 -> x4, x3, x2, x1 = 0.004, 0.03, 0.04, 0.04
    assert stats.holm([0.04, 0.001, 0.02, 0.01]) == pytest.approx([0.04, 0.004, 0.04, 0.03])
    assert stats.holm([0.3, 0.9]) == pytest.approx([0.6, 0.9])
    assert stats.holm([]) == []


def test_bootstrap_is_seeded_and_brackets_the_mean():
    x = [0.1, 0.4, 0.35, 0.8, 0.2, 0.55]
    lo, hi = stats.bootstrap_ci(x, seed=3)
    assert (lo, hi) == stats.bootstrap_ci(x, seed=3)
    assert lo < np.mean(x) < hi
    assert hi - lo < 2 * stats.mean_ci(x)[1]  # narrower than the t interval, as the docstring warns


def test_paired_matches_on_every_key_but_the_arm():
    f = pd.DataFrame({"size": ["a", "a", "b", "b", "a", "b"], "arm": ["c", "c", "c", "t", "t", "t"],
                      "seed": [0, 1, 0, 0, 1, 1], "x": [1.0, 2.0, 10.0, 13.0, 2.5, 50.0]})
    out = stats.paired(f, ["size", "arm"], ["x"], "arm", "c").set_index("size")
    assert out.loc["a", "pairs"] == 1 and out.loc["a", "d_x"] == pytest.approx(0.5)
    assert out.loc["b", "seeds"] == [0] and out.loc["b", "d_x"] == pytest.approx(3.0)  # seed 1 of b has no control
    assert math.isnan(out.loc["a", "d_x_ci"])


@pytest.mark.parametrize("df", [1, 2, 5, 30])
def test_t_cdf_inverts_the_quantile_and_the_t_test_uses_it(df):
    for p in (0.01, 0.2, 0.5, 0.9, 0.995):
        assert stats.t_cdf(stats.t_quantile(p, df), df) == pytest.approx(p, abs=1e-9)
    # mean 1.25, sd 0.645 of 4 differences: t = 3.873 on 3 df, two-sided p = 0.0305 (printed tables)
    assert stats.t_test([0.5, 1.0, 1.5, 2.0]) == pytest.approx(0.0305, abs=5e-4)
    assert math.isnan(stats.t_test([1.0])) and stats.t_test([0.2, 0.2]) == 0.0


def test_seeds_for_power_grows_with_the_family_and_shrinks_with_the_effect():
    # the pilot's ufpa_any at 96x64 (issue 21): ΔAP +0.017, paired SD 0.0058 -> about 4 seeds, 5 under Holm over 4
    assert stats.seeds_for_power(0.017, 0.0058) == 4
    assert stats.seeds_for_power(0.017, 0.0058, alpha=0.05 / 4) == 5
    assert stats.seeds_for_power(0.0, 1.0) == 10_000  # no effect: no number of seeds finds it
