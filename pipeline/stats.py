"""The statistics every table uses: mean and sample std over seeds, the two-way (seeds x users) paired
bootstrap of Table 1 and 2, and the paired t-interval over seeds of the sweep and the reliance table."""
from __future__ import annotations

import numpy as np

LEVEL = 0.95


def mean_and_std(values) -> tuple[float, float]:
    """Mean and sample std (ddof 1) over seeds, the one spread every table prints; std 0 for one seed."""
    values = np.asarray(values, dtype=float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0



def two_way_bootstrap(differences: np.ndarray, n_boot: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean of differences [n_seeds, n_users], resampling seeds and users.

    Each replicate draws n_seeds seeds and n_users users with replacement, independently, and
    averages the differences over that grid: mean = w_s' D c_u / (n_seeds n_users) with w, c the
    draw counts. With one seed it is the users-only bootstrap."""
    n_seeds, n_users = differences.shape
    rng = np.random.default_rng(seed)
    seed_counts = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=n_boot)   # [B, S]
    user_counts = rng.multinomial(n_users, np.full(n_users, 1 / n_users), size=n_boot)   # [B, U]
    means = np.einsum("bs,su,bu->b", seed_counts, differences, user_counts) / (n_seeds * n_users)
    tail = 100 * (1 - level) / 2
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def bootstrap_verdict(low: float, high: float) -> str:
    """'better' / 'worse' when the interval excludes 0, else 'inconclusive'."""
    return "better" if low > 0 else "worse" if high < 0 else "inconclusive"


MARKS = {"better": " ▲", "worse": " ▼", "inconclusive": ""}



# -- statistics ---------------------------------------------------------------------------------
def paired_interval(base, mrdib, level: float = LEVEL) -> dict:
    """MRdIB - base per seed (paired), its mean and the two-sided t-interval of the mean:
    mean +- t_{(1 + level) / 2, n - 1} * sd / sqrt(n), sd with n - 1 degrees of freedom."""
    diffs = np.asarray(mrdib, dtype=float) - np.asarray(base, dtype=float)
    n = len(diffs)
    if n < 2:
        raise ValueError(f"a paired interval needs at least 2 seeds, got {n}")
    mean, sd = float(diffs.mean()), float(diffs.std(ddof=1))
    from scipy import stats  # only the commands that need it pay its import

    half = float(stats.t.ppf((1 + level) / 2, n - 1)) * sd / np.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "low": mean - half, "high": mean + half, "level": level,
            "diffs": diffs.tolist()}


def paired_verdict(interval: dict) -> str:
    return "helps" if interval["low"] > 0 else "hurts" if interval["high"] < 0 else "n.s."

