"""Shared graph machinery: sparse CSR adjacencies built once, used by every graph backbone."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch


def interaction_matrix(n_users: int, n_items: int, pairs: np.ndarray) -> sp.csr_matrix:
    """Binary user x item matrix [n_users, n_items] of the (user, item) pairs."""
    values = np.ones(len(pairs), dtype=np.float32)
    matrix = sp.csr_matrix((values, (pairs[:, 0], pairs[:, 1])), shape=(n_users, n_items))
    matrix.data[:] = 1.0  # repeated pairs count once
    return matrix


def normalized_bipartite(n_users: int, n_items: int, pairs: np.ndarray) -> sp.csr_matrix:
    """D^-1/2 A D^-1/2 of the symmetric user-item graph, [(U+I), (U+I)], users first.

    Nodes with no edge keep a zero row (no division by zero). He et al., LightGCN, SIGIR 2020.
    """
    r = interaction_matrix(n_users, n_items, pairs)
    adjacency = sp.bmat([[None, r], [r.T, None]], format="csr")
    return symmetric_normalize(adjacency)


def symmetric_normalize(adjacency: sp.spmatrix) -> sp.csr_matrix:
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    inv_sqrt = np.zeros_like(degree, dtype=np.float64)
    inv_sqrt[degree > 0] = degree[degree > 0] ** -0.5
    scale = sp.diags(inv_sqrt)
    return (scale @ adjacency @ scale).tocsr().astype(np.float32)


def to_torch_csr(matrix: sp.spmatrix, device: torch.device | str = "cpu") -> torch.Tensor:
    """A scipy sparse matrix as a torch sparse CSR tensor (fastest for sparse @ dense on CPU)."""
    matrix = matrix.tocsr()
    matrix.sort_indices()
    return torch.sparse_csr_tensor(
        torch.as_tensor(matrix.indptr, dtype=torch.int64), torch.as_tensor(matrix.indices, dtype=torch.int64),
        torch.as_tensor(matrix.data, dtype=torch.float32), size=matrix.shape).to(device)
