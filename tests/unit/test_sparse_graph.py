"""SparseGraph: the sparse product and its gradient equal the dense computation."""
import numpy as np
import torch

from models.graph import SparseGraph, normalized_bipartite


def test_product_and_gradient_match_dense():
    pairs = np.array([[0, 0], [0, 2], [1, 1], [2, 2], [2, 0]])
    matrix = normalized_bipartite(3, 3, pairs)
    dense = torch.as_tensor(matrix.toarray())
    assert torch.allclose(dense, dense.T)
    x = torch.randn(6, 4, requires_grad=True, generator=torch.Generator().manual_seed(0))
    weights = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    graph = SparseGraph(matrix)
    out = graph @ (graph @ x)
    (out * weights).sum().backward()
    expected_x = x.detach().clone().requires_grad_(True)
    expected = dense @ (dense @ expected_x)
    (expected * weights).sum().backward()
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.allclose(x.grad, expected_x.grad, atol=1e-6)


def test_normalized_bipartite_degrees():
    pairs = np.array([[0, 0], [0, 1], [1, 1]])
    matrix = normalized_bipartite(2, 2, pairs).toarray()
    # user 0 (degree 2) - item 1 (degree 2): 1/sqrt(2*2); user 1 (degree 1) - item 1: 1/sqrt(1*2)
    assert np.isclose(matrix[0, 3], 0.5) and np.isclose(matrix[1, 3], 1 / np.sqrt(2))
    assert np.allclose(np.diag(matrix), 0)
