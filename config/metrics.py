"""The metric vocabulary: names, their MLflow keys, and the metrics each table prints."""
from __future__ import annotations

from collections.abc import Sequence

KS = (5, 10, 20, 50)
METRICS = ("recall", "precision", "map", "ndcg")


def metric_names(ks: Sequence[int] = KS, kinds: Sequence[str] = METRICS) -> list[str]:
    return [f"{m}@{k}" for k in ks for m in kinds]


TABLE1 = metric_names((5, 10, 20))                         # Table 1: every metric at 5, 10, 20
TABLE2 = metric_names((5, 10, 20), ("recall", "ndcg"))     # Table 2, the ablation
HEADLINE = ("recall@20", "ndcg@20")                        # summaries, intervals, reliance
BRIEF = ("recall@5", "ndcg@5", "recall@20", "ndcg@20")     # one-line tools (registered, compare)


def metric_key(name: str) -> str:
    """MLflow refuses `@` in metric names: recall@20 -> recall_at_20 (also the JSON keys of the tables)."""
    return name.replace("@", "_at_")


def metric_name(key: str) -> str:
    """The inverse of metric_key: recall_at_20 -> recall@20."""
    return key.replace("_at_", "@")
