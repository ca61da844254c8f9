"""Layers shared by the graph backbones: LightGCN propagation, MGCN-style modality views and fusion,
InfoNCE contrast. Kept here so that no backbone imports another.

He et al., "LightGCN", SIGIR 2020 (propagate); Yu et al., "MGCN", ACM MM 2023 (the modality view,
the purifier gate, the attention fuser); Oord et al., "CPC", 2018 (InfoNCE).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.graph import SparseGraph


def propagate(adjacency: SparseGraph, ego: torch.Tensor, n_layers: int) -> torch.Tensor:
    """Mean of [ego, A ego, ..., A^L ego]: [n_nodes, d] -> [n_nodes, d].

    A running sum, not a stack of the layers and its mean: the same additions in the same order (equal
    bit for bit, forward and backward), without copying every layer into one [L+1, n_nodes, d] tensor."""
    total, current = ego, ego
    for _ in range(n_layers):
        current = adjacency @ current
        total = total + current
    return total / (n_layers + 1)



def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean InfoNCE of a[i] against b[i] with the other rows of b as negatives: [n, d] x [n, d] -> []."""
    a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    logits = a @ b.T / temperature                                   # [n, n]
    return F.cross_entropy(logits, torch.arange(len(a), device=a.device))


def node_contrast(side: torch.Tensor, content: torch.Tensor, users: torch.Tensor, pos: torch.Tensor,
                  n_users: int, temperature: float) -> torch.Tensor:
    """InfoNCE of the side vs content views [U+I, d] (users first) over the distinct users and
    positive items of a batch: a node drawn twice would otherwise be its own negative."""
    items, users = n_users + pos.unique(), users.unique()
    return info_nce(side[items], content[items], temperature) + info_nce(side[users], content[users], temperature)


class AttentionFuser(nn.Module):
    """Softmax attention over modality views: list of [n, d] -> common part [n, d]."""

    def __init__(self, d: int):
        super().__init__()
        self.query = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1, bias=False))

    def forward(self, views: list[torch.Tensor]) -> torch.Tensor:
        weights = torch.softmax(torch.cat([self.query(v) for v in views], dim=-1), dim=-1)  # [n, M]
        return sum(weights[:, k:k + 1] * v for k, v in enumerate(views))


def item_graph_view(items: torch.Tensor, item_graph, user_item, n_layers: int) -> torch.Tensor:
    """Items [I, d] propagated n_layers on their item graph, users as the aggregate of their
    items -> [U+I, d], users first (MGCN's and SOIL's modality views)."""
    for _ in range(n_layers):
        items = item_graph @ items
    return torch.cat([user_item @ items, items])


def gate(d: int) -> nn.Module:
    """x [n, d] -> sigmoid(W x + b) [n, d]."""
    return nn.Sequential(nn.Linear(d, d), nn.Sigmoid())


def view_graphs(graphs: dict, ctx, modalities) -> tuple[SparseGraph, SparseGraph, dict[str, SparseGraph]]:
    """The fixed graphs of a modality-view backbone (MGCN, SOIL) on the device: the user-item graph
    [U+I, U+I], its user-to-item block [U, I] (users aggregate their items), and item_graph_<m> [I, I]."""
    graph = graphs["adjacency"]
    return (SparseGraph(graph, ctx.device), SparseGraph(graph[:ctx.n_users, ctx.n_users:], ctx.device),
            {m: SparseGraph(graphs[f"item_graph_{m}"], ctx.device) for m in modalities})
