"""Every interval and test tlres reports, once: plain numbers in, plain numbers out.

Intervals: `wilson_interval` (one accuracy, correct of n), `newcombe_interval` (two accuracies on
independent test sets), `welch_interval` (two means over seeds), `t_interval` (one mean over
seeds), `contrast` (a weighted sum of group means, e.g. an interaction); `difference` picks Welch
or Newcombe for two groups of runs. Tests: `holm` (family-wise adjusted p-values),
`mcnemar_exact` (paired per-example correctness on one test set). Power: `detectable_welch`,
`detectable_proportions`, `detectable_contrast`, `detectable` (the smallest difference a design
detects with 80% power). `summary`: mean, sd, min, median and max of a group's values.
scipy (its quantiles) is imported by the functions that need it: it takes about a second to
import, and the runner's command line does not wait for it.
"""

import math

import numpy as np

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(correct, n, z=Z95):
    """Wilson score interval for a binomial proportion (Wilson, 1927)."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (centre - half, centre + half)


def newcombe_interval(correct_a, n_a, correct_b, n_b, z=Z95):
    """p_a - p_b and its 95% interval for two independent proportions.

    Newcombe (1998), method 10: the hybrid score interval built from the two
    Wilson intervals. Used for two single runs scored on independent samples
    (e.g. tlres' whole test split against the paper's one batch of 64).
    """
    pa, pb = correct_a / n_a, correct_b / n_b
    la, ua = wilson_interval(correct_a, n_a, z)
    lb, ub = wilson_interval(correct_b, n_b, z)
    d = pa - pb
    return d, (d - math.sqrt((pa - la) ** 2 + (ub - pb) ** 2),
               d + math.sqrt((ua - pa) ** 2 + (pb - lb) ** 2))


def _welch_terms(a, b):
    """(s_a^2/n_a, s_b^2/n_b, Welch-Satterthwaite df) of two samples of two or more values."""
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    if va + vb == 0:
        return va, vb, float("inf")
    return va, vb, (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))


def welch_interval(a, b, level=0.95):
    """mean(a) - mean(b) over seeds, its Welch t interval and degrees of freedom.

    Unequal variances, Welch-Satterthwaite degrees of freedom. Needs two or
    more values on each side (else the interval is (nan, nan)); zero spread on
    both sides gives a zero-width interval.
    """
    from scipy import stats

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return d, (float("nan"), float("nan")), float("nan")
    va, vb, df = _welch_terms(a, b)
    if va + vb == 0:
        return d, (d, d), float("inf")
    half = float(stats.t.ppf(0.5 + level / 2, df)) * math.sqrt(va + vb)
    return d, (d - half, d + half), float(df)


def t_interval(values, level=0.95):
    """mean(values) and its Student t interval over two or more values (e.g. seeds)."""
    from scipy import stats

    a = np.asarray(values, np.float64)
    half = float(stats.t.ppf(0.5 + level / 2, a.size - 1)) * a.std(ddof=1) / math.sqrt(a.size)
    return float(a.mean()), (a.mean() - half, a.mean() + half)


def contrast(samples, weights, level=0.95):
    """sum_i w_i mean(samples_i), its Welch t interval at `level`, df and two-sided p.

    Variance sum_i w_i^2 s_i^2 / n_i; Welch-Satterthwaite df
    (sum v_i)^2 / sum v_i^2 / (n_i - 1). With weights (1, -1) it is `welch_interval`;
    with (1, -1, -1, 1) an interaction of two changes. Each sample needs two or more values.
    """
    from scipy import stats

    xs = [np.asarray(x, np.float64) for x in samples]
    est = float(sum(w * x.mean() for w, x in zip(weights, xs)))
    v = [w * w * x.var(ddof=1) / len(x) for w, x in zip(weights, xs)]
    if sum(v) == 0:
        return est, (est, est), float("inf"), 0.0 if est else 1.0
    df = sum(v) ** 2 / sum(vi ** 2 / (len(x) - 1) for vi, x in zip(v, xs))
    se = math.sqrt(sum(v))
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    p = float(2 * stats.t.sf(abs(est) / se, df))
    return est, (est - half, est + half), float(df), p


def detectable_contrast(samples, weights, power=0.8, level=0.95):
    """`detectable_welch` for a `contrast`: (t_{(1+level)/2, df} + t_{power, df}) * its se."""
    from scipy import stats

    est, (lo, hi), df, _ = contrast(samples, weights, level)
    if hi == lo:
        return 0.0
    se = (hi - est) / float(stats.t.ppf(0.5 + level / 2, df))
    return float((stats.t.ppf(0.5 + level / 2, df) + stats.t.ppf(power, df)) * se)


def holm(pvalues):
    """Holm's (1979) step-down adjusted p-values, in the order given.

    Sorted ascending, the k-th smallest (k = 1..m) becomes max over j <= k of
    min(1, (m - j + 1) p_(j)): rejecting where it is below alpha holds the
    family-wise error rate at alpha over all m comparisons.
    """
    m = len(pvalues)
    out, running = [0.0] * m, 0.0
    for j, i in enumerate(sorted(range(m), key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - j) * pvalues[i]))
        out[i] = running
    return out


def difference(a, b, counts=None):
    """mean(a) - mean(b) for two groups of runs' values, with the 95% interval the design allows.

    Returns (d, (lo, hi) or None, method, df): method "welch" (Welch's t over runs) when both
    sides have two or more values; "newcombe" (Newcombe's score interval) when both have one
    and `counts` gives their ((correct_a, n_a), (correct_b, n_b)) (an accuracy); else None,
    with no interval. df is Welch's degrees of freedom (nan otherwise).
    """
    if len(a) >= 2 and len(b) >= 2:
        d, ci, df = welch_interval(a, b)
        return d, ci, "welch", df
    if len(a) == 1 and len(b) == 1 and counts is not None:
        (ca, na), (cb, nb) = counts
        d, ci = newcombe_interval(ca, na, cb, nb)
        return d, ci, "newcombe", float("nan")
    return float(np.mean(a) - np.mean(b)), None, None, float("nan")


def detectable_welch(a, b, power=0.8, level=0.95):
    """The smallest true difference of means a Welch test over these seeds detects with `power`.

    (t_{(1+level)/2, df} + t_{power, df}) * sqrt(s_a^2/n_a + s_b^2/n_b), with the observed
    sample sds and Welch-Satterthwaite df: the usual normal-shift approximation to the
    noncentral t (e.g. Chow, Shao & Wang, Sample Size Calculations, sec. 3.2). A
    "no difference found" then reads "none larger than this". nan with fewer than two
    values a side.
    """
    from scipy import stats

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    va, vb, df = _welch_terms(a, b)
    if va + vb == 0:
        return 0.0
    return float((stats.t.ppf(0.5 + level / 2, df) + stats.t.ppf(power, df)) * math.sqrt(va + vb))


def detectable_proportions(p, n_a, n_b, power=0.8, level=0.95):
    """The smallest difference of two accuracies near `p`, on test sets of n_a and n_b
    images, that a two-sided z test at `level` detects with `power`:
    (z_{(1+level)/2} + z_{power}) * sqrt(p (1-p) (1/n_a + 1/n_b)) (normal approximation)."""
    from scipy import stats

    z = stats.norm.ppf(0.5 + level / 2) + stats.norm.ppf(power)
    return float(z * math.sqrt(p * (1 - p) * (1 / n_a + 1 / n_b)))


def detectable(a, b, sizes=None):
    """The smallest difference the comparison `difference(a, b)` detects with 80% power at the
    5% level: over seeds (Welch) when each side has two or more values, else, given the two
    test-set sizes (n_a, n_b) of accuracies, between two proportions at the pooled accuracy;
    nan otherwise."""
    if len(a) >= 2 and len(b) >= 2:
        return detectable_welch(a, b)
    if sizes is not None:
        return detectable_proportions((np.mean(a) + np.mean(b)) / 2, *sizes)
    return float("nan")


def binom_cdf_half(k, n):
    """P(X <= k) for X ~ Binomial(n, 1/2), exact in rationals then as float."""
    if k < 0:
        return 0.0
    return sum(math.comb(n, i) for i in range(0, min(k, n) + 1)) / 2 ** n


def mcnemar_exact(correct_a, correct_b):
    """Two-sided exact McNemar test on paired per-example correctness.

    b = examples A gets right and B wrong, c = the reverse. Returns
    (b, c, p) with p = min(1, 2 * P(X <= min(b, c))), X ~ Bin(b + c, 1/2);
    p = 1 when b + c = 0.
    """
    a = np.asarray(correct_a, bool)
    bb = np.asarray(correct_b, bool)
    if a.shape != bb.shape:
        raise ValueError(f"paired predictions differ in length: {a.shape} vs {bb.shape}")
    b = int(np.sum(a & ~bb))
    c = int(np.sum(~a & bb))
    if b + c == 0:
        return b, c, 1.0
    return b, c, min(1.0, 2.0 * binom_cdf_half(min(b, c), b + c))


def summary(values):
    """mean, sd (sample; None for one value), min, median, max and n of `values`."""
    v = np.asarray(values, np.float64)
    return {"mean": float(v.mean()), "sd": float(v.std(ddof=1)) if v.size > 1 else None,
            "min": float(v.min()), "median": float(np.median(v)), "max": float(v.max()),
            "n": int(v.size)}
