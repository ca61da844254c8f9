"""Full-ranking evaluation: Recall, Precision, MAP and NDCG at K, exactly as in the spec.

Every item is ranked for every user, the user's train items are masked, and the top max(K)
are compared with the held-out items T_u. With rel_r the hit at rank r (averaged over users
that have at least one held-out item):

    Recall@K    = hits@K / |T_u|
    Precision@K = hits@K / K
    NDCG@K      = sum_{r<=K} rel_r / log2(r+1)  /  sum_{r<=min(|T_u|,K)} 1 / log2(r+1)
    MAP@K       = 1/min(|T_u|,K) * sum_{r<=K} P@r * rel_r

Users are scored in batches, so memory is bounded by batch x n_items, not users x items.
Scores for valid and test come from one pass (one matrix product, one top-k).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

KS = (5, 10, 20, 50)
METRICS = ("recall", "precision", "map", "ndcg")

ScoreFn = Callable[[torch.Tensor], torch.Tensor]  # user ids [b] -> scores [b, n_items]


def metric_names(ks: Sequence[int] = KS) -> list[str]:
    return [f"{m}@{k}" for k in ks for m in METRICS]


class CSR:
    """Per-user item lists as CSR arrays on a device, with vectorised row gathering."""

    def __init__(self, pairs: np.ndarray, n_users: int, device: torch.device):
        order = np.lexsort((pairs[:, 1], pairs[:, 0]))
        counts = np.bincount(pairs[:, 0], minlength=n_users)
        self.indptr = torch.as_tensor(np.concatenate([[0], np.cumsum(counts)]), device=device)
        self.indices = torch.as_tensor(pairs[order, 1], device=device)
        self.counts = torch.as_tensor(counts, device=device)
        self.n_items = int(pairs[:, 1].max()) + 1 if len(pairs) else 1
        self.keys = self.indptr.new_tensor(np.sort(pairs[:, 0] * self.n_items + pairs[:, 1]))  # sorted user*n+item

    def contains(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Whether (users[r], items[r, c]) is listed: [b], [b, k] -> bool [b, k], by binary search."""
        if len(self.keys) == 0:
            return torch.zeros_like(items, dtype=torch.bool)
        keys = users[:, None] * self.n_items + items
        where = torch.searchsorted(self.keys, keys).clamp(max=len(self.keys) - 1)
        return (self.keys[where] == keys) & (items < self.n_items)

    def rows_of(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch row, item) index pairs of every item listed for `users` [b]."""
        counts = self.counts[users]
        rows = torch.repeat_interleave(torch.arange(len(users), device=users.device), counts)
        starts = torch.repeat_interleave(self.indptr[users], counts)
        offsets = torch.arange(len(rows), device=users.device) - torch.repeat_interleave(
            torch.cumsum(counts, 0) - counts, counts)
        return rows, self.indices[starts + offsets]


def metrics_from_hits(hits: torch.Tensor, n_relevant: torch.Tensor, ks: Sequence[int] = KS) -> dict[str, torch.Tensor]:
    """Per-user metrics from a ranked hit matrix.

    hits: [b, max_k] 0/1, rank order; n_relevant: [b] |T_u| (>= 1).
    Returns {"recall@5": [b], ...} as float64.
    """
    hits = hits.double()
    max_k = hits.shape[1]
    ranks = torch.arange(1, max_k + 1, dtype=torch.float64, device=hits.device)
    discount = 1.0 / torch.log2(ranks + 1)
    cum_hits = hits.cumsum(1)                               # [b, max_k] hits@r
    dcg = (hits * discount).cumsum(1)                       # [b, max_k]
    ideal = discount.cumsum(0)                              # [max_k] IDCG for |T_u| >= r
    ap_sum = (cum_hits / ranks * hits).cumsum(1)            # sum_{r'<=r} P@r' * rel_r'
    n = n_relevant.double()
    out = {}
    for k in ks:
        capped = torch.clamp(n, max=k)
        out[f"recall@{k}"] = cum_hits[:, k - 1] / n
        out[f"precision@{k}"] = cum_hits[:, k - 1] / k
        out[f"map@{k}"] = ap_sum[:, k - 1] / capped
        out[f"ndcg@{k}"] = dcg[:, k - 1] / ideal[capped.long() - 1]
    return {name: out[name] for name in metric_names(ks)}


def summarize(per_user: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]) -> dict[str, dict[str, float]]:
    """Means over users of Evaluator.per_user's result: {split: {metric: mean}}."""
    return {split: {m: float(v.mean()) for m, v in values.items()} for split, (_, values) in per_user.items()}


class Evaluator:
    """Ranks all items for the users of the held-out splits and computes the metrics."""

    def __init__(self, n_users: int, n_items: int, train: np.ndarray, heldout: dict[str, np.ndarray],
                 ks: Sequence[int] = KS, batch_size: int = 4096, device: torch.device | str = "cpu"):
        if max(ks) > n_items:
            raise ValueError(f"cannot rank top {max(ks)} of only {n_items} items")
        self.n_items, self.ks, self.batch_size = n_items, tuple(ks), batch_size
        self.device = torch.device(device)
        self.train = CSR(train, n_users, self.device)
        self.heldout = {split: CSR(pairs, n_users, self.device) for split, pairs in heldout.items()}
        self.users = {split: torch.as_tensor(np.unique(pairs[:, 0]), device=self.device)
                      for split, pairs in heldout.items()}

    @torch.no_grad()
    def per_user(self, score_fn: ScoreFn, splits: Sequence[str]) -> dict[str, tuple[np.ndarray, dict[str, np.ndarray]]]:
        """{split: (user ids, {metric: per-user values})} for the users with held-out items."""
        users = torch.unique(torch.cat([self.users[s] for s in splits]))
        collected: dict[str, list] = {s: [] for s in splits}
        for start in range(0, len(users), self.batch_size):
            batch = users[start:start + self.batch_size]
            top = self._top_items(score_fn, batch)
            for split in splits:
                collected[split].append(self._batch_metrics(batch, top, self.heldout[split]))
        result = {}
        for split, parts in collected.items():
            ids = torch.cat([p[0] for p in parts]).cpu().numpy()
            result[split] = (ids, {m: torch.cat([p[1][m] for p in parts]).cpu().numpy() for m in parts[0][1]})
        return result

    def evaluate(self, score_fn: ScoreFn, splits: Sequence[str] = ("valid",)) -> dict[str, dict[str, float]]:
        """{split: {"recall@5": mean over users, ...}}."""
        return summarize(self.per_user(score_fn, splits))

    def _top_items(self, score_fn: ScoreFn, batch: torch.Tensor) -> torch.Tensor:
        scores = score_fn(batch).to(self.device, torch.float32)  # [b, n_items]
        if scores.shape != (len(batch), self.n_items):
            raise ValueError(f"score function returned shape {list(scores.shape)}, "
                             f"expected [{len(batch)}, {self.n_items}]")
        rows, items = self.train.rows_of(batch)
        scores[rows, items] = -torch.inf
        return torch.topk(scores, max(self.ks), dim=1, sorted=True).indices  # [b, max_k]

    def _batch_metrics(self, batch: torch.Tensor, top: torch.Tensor, heldout: CSR):
        n_relevant = heldout.counts[batch]
        keep = n_relevant > 0
        batch, top, n_relevant = batch[keep], top[keep], n_relevant[keep]
        return batch, metrics_from_hits(heldout.contains(batch, top), n_relevant, self.ks)
