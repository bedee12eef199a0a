"""Statistics over seeds: mean ± sample standard deviation, and paired intervals.

A contrast A − B is the paired difference d_k = A_k − B_k over seeds k, with the Student-t
interval d̄ ± t(0.975, n-1) s_d / √n. With one seed there is no standard deviation and no
interval (NaN, printed "n/a"). SciPy is not a dependency of the package, so the t quantile
is computed here (Simpson's rule and bisection) and tested against closed forms and printed
tables (``tests/ablation/test_stats.py``).
"""

from __future__ import annotations

import math

import numpy as np


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (divisor n − 1); the std is NaN for one value."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return math.nan, math.nan
    return float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else math.nan


def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with ``df`` degrees of freedom (p in (0.5, 1)).

    F(t) = 1/2 + ∫_0^t f, f(u) = Γ((ν+1)/2) / (√(νπ) Γ(ν/2)) (1 + u²/ν)^(-(ν+1)/2), by
    Simpson's rule on 4000 intervals, inverted by bisection (``scipy.stats.t.ppf``).
    """
    if not 0.5 < p < 1 or df < 1:
        raise ValueError(f"need 0.5 < p < 1 and df >= 1, got p={p}, df={df}")
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def cdf(t):
        u = np.linspace(0.0, t, 4001)
        f = c * (1 + u * u / df) ** (-(df + 1) / 2)
        return 0.5 + (u[1] - u[0]) / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())

    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        lo, hi = hi, 2 * hi
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


def paired_interval(a, b, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of d = a − b over paired seeds, a Student-t interval with n − 1
    degrees of freedom; low and high are NaN for one pair."""
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    mean, sd = mean_std(d)
    if d.size < 2:
        return mean, math.nan, math.nan
    half = t_quantile(0.5 + level / 2, d.size - 1) * sd / math.sqrt(d.size)
    return mean, mean - half, mean + half
