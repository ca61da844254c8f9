"""Graph builders on small hand-made cases, and blocked computations against dense brute force."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from models.graph import (
    degree_sensitive_edges,
    interest_item_graphs,
    knn_graph,
    normalized_bipartite,
    row_softmax,
    second_order_interest,
    topk_per_row,
    user_cooccurrence_graph,
)


def random_features(n, d, seed):
    return torch.as_tensor(np.random.default_rng(seed).normal(size=(n, d)), dtype=torch.float32)


def cosine(x: torch.Tensor) -> np.ndarray:
    x = x.numpy().astype(np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return x @ x.T


def dense_knn(x: torch.Tensor, k: int, self_loops: bool) -> np.ndarray:
    sim = cosine(x)
    if not self_loops:
        np.fill_diagonal(sim, -np.inf)
    keep = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    out = np.zeros_like(sim)
    np.put_along_axis(out, keep, np.take_along_axis(sim, keep, axis=1), axis=1)
    return out


PAIRS = np.array([[0, 0], [0, 1], [0, 2], [1, 1], [1, 2], [2, 2], [2, 3], [3, 4]])  # 4 users, 5 items


@pytest.mark.parametrize("self_loops", [True, False])
def test_blocked_knn_equals_dense(self_loops):
    x = random_features(23, 6, seed=0)
    blocked = knn_graph(x, 4, weighted=True, normalization="none", self_loops=self_loops, block_size=5).toarray()
    assert np.allclose(blocked, dense_knn(x, 4, self_loops), atol=1e-5)


@pytest.mark.parametrize("self_loops", [True, False])
def test_knn_exactly_k_neighbours_and_self_loops(self_loops):
    graph = knn_graph(random_features(17, 5, seed=1), 3, weighted=False, normalization="none", self_loops=self_loops)
    assert (np.diff(graph.indptr) == 3).all()
    assert (graph.diagonal() == (1.0 if self_loops else 0.0)).all()


def test_knn_symmetric_normalisation_uses_row_degrees():
    x = random_features(12, 4, seed=2)
    raw = knn_graph(x, 3, weighted=True, normalization="none").toarray()
    sym = knn_graph(x, 3, weighted=True, normalization="sym").toarray()
    degree = raw.sum(1)
    assert np.allclose(sym, raw / np.sqrt(np.outer(degree, degree)), atol=1e-6)
    binary = knn_graph(x, 3, weighted=False, normalization="sym").toarray()
    assert np.allclose(binary[binary > 0], 1 / 3)                   # FREEDOM: every row degree is k
    assert np.allclose(knn_graph(x, 3, weighted=True, normalization="row").sum(1), 1.0)


def test_normalized_bipartite_is_symmetric():
    graph = normalized_bipartite(4, 5, PAIRS)
    assert abs(graph - graph.T).max() < 1e-7


def test_user_cooccurrence_counts_and_top_k():
    full = user_cooccurrence_graph(4, 5, PAIRS, k=10).toarray()
    expected = np.array([[0, 2, 1, 0], [2, 0, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
    assert np.array_equal(full, expected)                           # symmetric, no self-loops
    top1 = user_cooccurrence_graph(4, 5, PAIRS, k=1, block_size=1).toarray()
    assert np.array_equal(top1, [[0, 2, 0, 0], [2, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])  # tie -> smaller id


def test_user_cooccurrence_blocked_equals_dense():
    rng = np.random.default_rng(3)
    pairs = np.unique(np.stack([rng.integers(0, 30, 200), rng.integers(0, 25, 200)], 1), axis=0)
    r = sp.csr_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(30, 25)).toarray()
    counts = r @ r.T
    np.fill_diagonal(counts, 0)
    graph = user_cooccurrence_graph(30, 25, pairs, k=5, block_size=7).toarray()
    for u in range(30):
        row = counts[u]
        order = np.lexsort((np.arange(30), -row))[:5]
        expected = np.zeros(30)
        expected[order] = row[order]
        assert np.array_equal(graph[u], expected)


def test_row_softmax():
    m = sp.csr_matrix(np.array([[0.0, 2.0, 1.0], [0.0, 0.0, 0.0], [3.0, 0.0, 0.0]]))
    out = row_softmax(m).toarray()
    e = np.exp([2.0, 1.0])
    assert np.allclose(out[0], [0, e[0] / e.sum(), e[1] / e.sum()])
    assert np.allclose(out[1], 0) and np.allclose(out[2], [1, 0, 0])


def test_topk_per_row_breaks_ties_by_column():
    rows, cols, values = topk_per_row(np.array([0, 0, 0, 1]), np.array([5, 2, 3, 0]), np.array([1.0, 1.0, 2.0, 1.0]), 2)
    assert list(zip(rows, cols)) == [(0, 3), (0, 2), (1, 0)]


def brute_second_order(pairs, n_users, n_items, features, k):
    sim = np.prod([cosine(x) for x in features], axis=0)
    out = np.zeros((n_users, n_items))
    for u in range(n_users):
        history = pairs[pairs[:, 0] == u, 1]
        score = sim[history].max(0)
        score[history] = -np.inf
        best = np.argsort(-score, kind="stable")[:k]
        out[u, best] = score[best]
    return out


def test_second_order_interest_matches_brute_force():
    rng = np.random.default_rng(4)
    pairs = np.unique(np.stack([rng.integers(0, 8, 40), rng.integers(0, 20, 40)], 1), axis=0)
    features = [random_features(20, 5, seed=5), random_features(20, 3, seed=6)]
    graph = second_order_interest(8, 20, pairs, features, k=3, block_size=6).toarray()
    assert np.allclose(graph, brute_second_order(pairs, 8, 20, features, 3), atol=1e-5)
    assert (np.count_nonzero(graph, axis=1) == 3).all()
    assert not graph[pairs[:, 0], pairs[:, 1]].any()                # never a train item of the user


def test_interest_item_graphs_match_brute_force():
    rng = np.random.default_rng(7)
    pairs = np.unique(np.stack([rng.integers(0, 6, 30), rng.integers(0, 15, 30)], 1), axis=0)
    features = {"image": random_features(15, 5, seed=8), "text": random_features(15, 4, seed=9)}
    graphs = interest_item_graphs(6, 15, pairs, features, k=3)
    sims = {m: cosine(x) for m, x in features.items()}
    expected = {m: np.zeros((15, 15)) for m in features}
    for u in range(6):
        history = pairs[pairs[:, 0] == u, 1]
        chosen = set()
        for s in sims.values():
            chosen |= set(np.argsort(-s[history].sum(0))[:3])
        for m, s in sims.items():
            for c in chosen:
                expected[m][history, c] += s[history, c]
    for m in features:
        assert np.allclose(graphs[m].toarray(), expected[m], atol=1e-5)


def test_degree_sensitive_edges():
    rng = np.random.default_rng(10)
    pairs = np.unique(np.stack([rng.integers(0, 20, 150), rng.integers(0, 30, 150)], 1), axis=0)
    def draw(seed):
        return degree_sensitive_edges(20, 30, pairs, 0.2, torch.Generator().manual_seed(seed))

    kept = draw(0)
    assert len(kept) == int(len(pairs) * 0.2)
    assert len(np.unique(kept, axis=0)) == len(kept)                # without replacement
    assert set(map(tuple, kept)) <= set(map(tuple, pairs))
    assert np.array_equal(kept, draw(0)) and not np.array_equal(kept, draw(1))
