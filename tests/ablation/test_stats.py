"""Tests for npmaskrcnn/ablation/stats.py: mean ± std over seeds, the paired t interval."""

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from npmaskrcnn.ablation.stats import mean_std, paired_interval, t_quantile


def test_mean_std_hand_computed():
    m, s = mean_std([1.0, 2.0, 3.0, 4.0])
    assert m == pytest.approx(2.5)
    # sample std: sum of squares 2.25 + 0.25 + 0.25 + 2.25 = 5, over n - 1 = 3
    assert s == pytest.approx(math.sqrt(5 / 3))


def test_mean_std_one_seed_has_no_std():
    m, s = mean_std([0.3])
    assert m == pytest.approx(0.3) and math.isnan(s)
    assert all(math.isnan(x) for x in mean_std([]))


@pytest.mark.parametrize("p", [0.9, 0.975, 0.995])
def test_t_quantile_closed_forms(p):
    # df = 1 is Cauchy: tan(pi (p - 1/2)); df = 2: (2p - 1) / sqrt(2 p (1 - p))
    got1, got2 = t_quantile(p, 1), t_quantile(p, 2)
    print(f"p={p}: t1 {got1:.8f}, t2 {got2:.8f}")
    assert got1 == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-7)
    assert got2 == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-7)


def test_t_quantile_tends_to_the_normal():
    # printed tables: t(0.975, 30) = 2.0423, t(0.975, 1000) = 1.9623; normal 1.95996
    assert t_quantile(0.975, 30) == pytest.approx(2.0423, abs=1e-4)
    assert t_quantile(0.975, 1000) == pytest.approx(1.9623, abs=1e-4)
    with pytest.raises(ValueError):
        t_quantile(0.4, 3)


@settings(max_examples=15, deadline=None)
@given(st.integers(1, 40), st.floats(0.6, 0.995))
def test_t_quantile_decreases_with_dof(df, p):
    assert t_quantile(p, df + 1) < t_quantile(p, df)


def test_paired_interval_hand_computed():
    # d = [2, 3, 4]: mean 3, s_d = 1, half-width t(0.975, 2) / sqrt(3)
    t2 = 0.95 / math.sqrt(2 * 0.975 * 0.025)
    m, lo, hi = paired_interval([3.0, 4.0, 5.0], [1.0, 1.0, 1.0])
    print(f"paired interval {m} [{lo}, {hi}]")
    assert m == pytest.approx(3.0)
    assert lo == pytest.approx(3.0 - t2 / math.sqrt(3), rel=1e-7)
    assert hi == pytest.approx(3.0 + t2 / math.sqrt(3), rel=1e-7)


def test_paired_interval_one_seed_has_no_interval():
    m, lo, hi = paired_interval([0.30], [0.25])
    assert m == pytest.approx(0.05) and math.isnan(lo) and math.isnan(hi)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=2, max_size=6))
def test_paired_interval_properties(pairs):
    a, b = (list(x) for x in zip(*pairs))
    m, lo, hi = paired_interval(a, b)
    assert lo - 1e-12 <= m <= hi + 1e-12
    assert hi - m == pytest.approx(m - lo, abs=1e-9)
    m2, lo2, hi2 = paired_interval(b, a)  # swapping the arms negates the interval
    assert (m2, lo2, hi2) == pytest.approx((-m, -hi, -lo), abs=1e-9)
