"""SparseGraph: the sparse product and its gradient equal the dense computation; the fixed-order
form (a GPU's) is bitwise repeatable. MRDIB_TEST_DEVICE=cuda runs the repeatability check on a GPU."""
import os

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from models.graph import SparseGraph, normalized_bipartite
from models.trainer import pick_device

DEVICE = pick_device(os.environ.get("MRDIB_TEST_DEVICE", "cpu"))


@pytest.mark.parametrize("fixed_order", [False, True])
def test_product_and_gradient_match_dense(fixed_order):
    pairs = np.array([[0, 0], [0, 2], [1, 1], [2, 2], [2, 0]])
    matrix = normalized_bipartite(3, 3, pairs)
    dense = torch.as_tensor(matrix.toarray())
    assert torch.allclose(dense, dense.T)
    x = torch.randn(6, 4, requires_grad=True, generator=torch.Generator().manual_seed(0))
    weights = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    graph = SparseGraph(matrix, fixed_order=fixed_order)
    out = graph @ (graph @ x)
    (out * weights).sum().backward()
    expected_x = x.detach().clone().requires_grad_(True)
    expected = dense @ (dense @ expected_x)
    (expected * weights).sum().backward()
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.allclose(x.grad, expected_x.grad, atol=1e-6)


@pytest.mark.parametrize("fixed_order", [False, True])
def test_rectangular_product_with_empty_rows_matches_dense(fixed_order):
    """A [4, 3] with an empty row and an empty column: A @ x and the gradient A^T @ g (the GPU's
    gather and segment sum, and the CSR kernel alike)."""
    matrix = sp.csr_matrix(np.array([[0.5, 0, 2], [0, 0, 0], [1, 0, -1], [0, 0, 3]], dtype=np.float32))
    dense = torch.as_tensor(matrix.toarray())
    x = torch.randn(3, 5, requires_grad=True, generator=torch.Generator().manual_seed(2))
    out = SparseGraph(matrix, fixed_order=fixed_order) @ x
    out.sum().backward()
    assert torch.allclose(out, dense @ x.detach(), atol=1e-6) and not out[1].any()
    assert torch.allclose(x.grad, dense.T @ torch.ones(4, 5), atol=1e-6)


def test_normalized_bipartite_degrees():
    pairs = np.array([[0, 0], [0, 1], [1, 1]])
    matrix = normalized_bipartite(2, 2, pairs).toarray()
    # user 0 (degree 2) - item 1 (degree 2): 1/sqrt(2*2); user 1 (degree 1) - item 1: 1/sqrt(1*2)
    assert np.isclose(matrix[0, 3], 0.5) and np.isclose(matrix[1, 3], 1 / np.sqrt(2))
    assert np.allclose(np.diag(matrix), 0)


def test_fixed_order_products_are_bitwise_repeatable():
    """cuSPARSE's CSR product gave different last bits call to call on an H200; the fixed-order form
    (the default on a GPU) must not, forward or backward. Rows of 1 to 400 entries. On the CPU this
    checks only the default and the code path; its point is MRDIB_TEST_DEVICE=cuda."""
    matrix = sp.random(3000, 3000, density=0.02, random_state=4, format="csr", dtype=np.float32)
    matrix = matrix + sp.diags(np.ones(3000, dtype=np.float32)) + sp.csr_matrix(
        (np.ones(400, dtype=np.float32), (np.zeros(400, dtype=int), np.arange(400))), shape=(3000, 3000))
    graph = SparseGraph(matrix, DEVICE)
    assert graph.fixed_order == (DEVICE.type == "cuda")
    graph.fixed_order = True
    x = torch.randn(3000, 64, device=DEVICE, requires_grad=True)
    results = []
    for _ in range(3):
        out = graph @ x
        (out * out).sum().backward()
        results.append((out.detach().clone(), x.grad.clone()))
        x.grad = None
    assert all(torch.equal(results[0][0], o) and torch.equal(results[0][1], g) for o, g in results[1:])
