"""Statistics over seeds: a summary of one set of runs, and whether two sets differ."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    sd: float  # sample standard deviation (n - 1)
    min: float
    max: float
    ci_low: float  # the mean's confidence interval (Student's t), `level` two-sided
    ci_high: float
    level: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def summarize(values: Sequence[float], *, level: float = 0.95) -> Summary:
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        raise ValueError("no values to summarize")
    mean = float(x.mean())
    sd = float(x.std(ddof=1)) if len(x) > 1 else math.nan
    half = float(stats.t.ppf((1 + level) / 2, len(x) - 1) * sd / math.sqrt(len(x)))
    if len(x) < 2:
        half = math.nan
    return Summary(
        len(x), mean, sd, float(x.min()), float(x.max()), mean - half, mean + half, level
    )


@dataclass(frozen=True)
class Comparison:
    """B against A: the difference of the means, Welch's test and an exact permutation test."""

    mean_a: float
    mean_b: float
    diff: float  # mean_b - mean_a
    ci_low: float  # Welch's interval for the difference, `level` two-sided
    ci_high: float
    p_welch: float
    p_permutation: float
    level: float

    @property
    def significant(self) -> bool:
        """Both tests reject "no difference" at 1 - level (the permutation test assumes
        nothing about the distribution; with 5 seeds a side its smallest p is 2/252)."""
        alpha = 1 - self.level
        return self.p_welch < alpha and self.p_permutation < alpha

    def verdict(self) -> str:
        if not self.significant:
            return "not distinguishable from seed noise"
        return "B is better than A" if self.diff > 0 else "B is worse than A"

    def as_dict(self) -> dict[str, float | bool | str]:
        return {**asdict(self), "significant": self.significant, "verdict": self.verdict()}


def compare(a: Sequence[float], b: Sequence[float], *, level: float = 0.95) -> Comparison:
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(xa) < 2 or len(xb) < 2:
        raise ValueError("each side needs at least 2 runs (seeds)")
    diff = float(xb.mean() - xa.mean())
    va, vb = xa.var(ddof=1) / len(xa), xb.var(ddof=1) / len(xb)
    se = math.sqrt(va + vb)
    if se == 0:
        p_welch = 1.0 if diff == 0 else 0.0
        half = 0.0
    else:
        dof = (va + vb) ** 2 / (va**2 / (len(xa) - 1) + vb**2 / (len(xb) - 1))
        p_welch = float(stats.ttest_ind(xb, xa, equal_var=False).pvalue)
        half = float(stats.t.ppf((1 + level) / 2, dof) * se)
    perm = stats.permutation_test(
        (xb, xa),
        lambda u, v: np.mean(u) - np.mean(v),
        permutation_type="independent",
        n_resamples=20_000,  # exact (all splits) whenever there are fewer
        alternative="two-sided",
        rng=np.random.default_rng(0),
    )
    return Comparison(
        float(xa.mean()),
        float(xb.mean()),
        diff,
        diff - half,
        diff + half,
        p_welch,
        float(perm.pvalue),
        level,
    )
