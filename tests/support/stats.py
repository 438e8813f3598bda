"""Statistics for weighted answers: is a split of answers the one asked for?"""

from __future__ import annotations

# Chi-square critical value, 1 degree of freedom, p = 1e-9: a right split fails
# once in a billion runs (p = 0.001 failed a correct server one run in a thousand,
# per check), while a wrong one (10/90 served as 50/50, or not drawn per query)
# still lands in the hundreds or thousands with these sample sizes.
CHI2_1DF_P1E9 = 37.32


def chi2(counts: dict[str, int], expected_share: dict[str, float]) -> float:
    n = sum(counts.values())
    return sum((counts.get(k, 0) - n * p) ** 2 / (n * p) for k, p in expected_share.items())
