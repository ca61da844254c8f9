"""The protocol's split (spec, section 3): each user's interactions shuffled and cut 8:1:1 into
train / valid / test, with at least one train row per user. Used by the real-data filter and the
synthetic generator alike."""
from __future__ import annotations

import numpy as np


def split_sizes(n: int) -> tuple[int, int]:
    """(valid, test) counts for a user with n interactions: n < 10 -> 1 + 1, else 20% half each."""
    if n < 10:
        return 1, 1
    held = int(round(0.2 * n))
    return held // 2, held - held // 2


def split_per_user(users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """x_label (0/1/2) for interaction rows grouped by user, shuffled within each user."""
    labels = np.zeros(len(users), dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    for start, end in zip(starts, ends):
        order = start + rng.permutation(end - start)
        n_valid, n_test = split_sizes(end - start)
        labels[order[:n_valid]] = 1
        labels[order[n_valid:n_valid + n_test]] = 2
    return labels

