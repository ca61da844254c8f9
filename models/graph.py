"""Shared graph machinery: sparse CSR adjacencies built once, used by every graph backbone."""
from __future__ import annotations

import warnings

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
    with warnings.catch_warnings():  # torch calls CSR "beta" on every construction; it is what we use
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            torch.as_tensor(matrix.indptr, dtype=torch.int64), torch.as_tensor(matrix.indices, dtype=torch.int64),
            torch.as_tensor(matrix.data, dtype=torch.float32), size=matrix.shape, check_invariants=True).to(device)


# -- normalisations -----------------------------------------------------------------------------
def bipartite(n_users: int, n_items: int, r: sp.spmatrix) -> sp.csr_matrix:
    """The symmetric [(U+I), (U+I)] adjacency of a user x item matrix r [U, I], users first."""
    return sp.bmat([[sp.csr_matrix((n_users, n_users)), r], [r.T, sp.csr_matrix((n_items, n_items))]],
                   format="csr")


def row_normalize(adjacency: sp.spmatrix) -> sp.csr_matrix:
    """D^-1 A (mean over a node's neighbours); rows with no positive sum stay zero."""
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    inverse = np.zeros_like(degree, dtype=np.float64)
    inverse[degree > 0] = 1.0 / degree[degree > 0]
    return (sp.diags(inverse) @ adjacency).tocsr().astype(np.float32)


def normalize(adjacency: sp.spmatrix, kind: str) -> sp.csr_matrix:
    """kind: "sym" D^-1/2 A D^-1/2 with D the row sums, "row" D^-1 A, "none" A unchanged."""
    if kind == "sym":
        return symmetric_normalize(adjacency)
    if kind == "row":
        return row_normalize(adjacency)
    if kind == "none":
        return sp.csr_matrix(adjacency, dtype=np.float32)
    raise ValueError(f"unknown normalization {kind!r}; expected sym, row or none")


def row_softmax(matrix: sp.spmatrix) -> sp.csr_matrix:
    """Softmax over the stored entries of each row (empty rows stay empty)."""
    matrix = sp.csr_matrix(matrix, dtype=np.float64)
    matrix.sort_indices()
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    nonempty = np.flatnonzero(np.diff(matrix.indptr))
    row_max = np.full(matrix.shape[0], -np.inf)
    row_max[nonempty] = np.maximum.reduceat(matrix.data, matrix.indptr[nonempty])
    exp = np.exp(matrix.data - row_max[rows])
    row_sum = np.zeros(matrix.shape[0])
    np.add.at(row_sum, rows, exp)
    return sp.csr_matrix((exp / row_sum[rows], matrix.indices, matrix.indptr), shape=matrix.shape,
                         dtype=np.float32)


def topk_per_row(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, k: int):
    """Keep per row the k entries of largest value (ties: smaller column first) -> (rows, cols, values)."""
    order = np.lexsort((cols, -values, rows))
    rows, cols, values = rows[order], cols[order], values[order]
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows, side="left")
    keep = rank < k
    return rows[keep], cols[keep], values[keep]


# -- item-item kNN graphs (LATTICE / FREEDOM / MGCN style) --------------------------------------
def l2_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length (zero rows stay zero): [n, d] -> [n, d]."""
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


def topk_similar(features: list[torch.Tensor], k: int, exclude_self: bool,
                 block_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Per row the k largest values of prod_m cos(x_m[i], x_m[j]), computed in row blocks.

    features: one or more [n, d_m] tables with the same rows (one table: plain cosine). At most
    block_size x n similarities exist at a time. Returns (neighbours [n, k] int64, values [n, k]
    float32), largest first; k is capped at the number of candidates.
    """
    normed = [l2_rows(f.float()) for f in features]
    n = normed[0].shape[0]
    k = min(k, n - 1 if exclude_self else n)
    neighbours, values = [], []
    for start in range(0, n, block_size):
        stop = min(start + block_size, n)
        sim = normed[0][start:stop] @ normed[0].T                       # [b, n]
        for x in normed[1:]:
            sim = sim * (x[start:stop] @ x.T)
        if exclude_self:
            local = torch.arange(stop - start, device=sim.device)
            sim[local, local + start] = -torch.inf
        top_values, top_index = torch.topk(sim, k, dim=1)
        neighbours.append(top_index.cpu())
        values.append(top_values.cpu())
    return torch.cat(neighbours).numpy().astype(np.int64), torch.cat(values).numpy().astype(np.float32)


def knn_graph(features: torch.Tensor, k: int, *, weighted: bool, normalization: str = "sym",
              self_loops: bool = True, block_size: int = 1024) -> sp.csr_matrix:
    """Item-item graph [n, n]: row i links to its k most cosine-similar items, then normalised.

    self_loops=True ranks item i itself among the candidates; its cosine is 1, so it is kept and
    k - 1 other items join it (the top-k of the full similarity matrix, as FREEDOM's and MGCN's
    construction does). weighted: edge value = cosine similarity (MGCN, SOIL) instead of 1
    (FREEDOM). normalization: see `normalize`; "sym" uses the row sums as degrees.
    """
    neighbours, values = topk_similar([features], k, exclude_self=not self_loops, block_size=block_size)
    n, k = neighbours.shape
    data = values.ravel() if weighted else np.ones(n * k, dtype=np.float32)
    graph = sp.csr_matrix((data, (np.repeat(np.arange(n), k), neighbours.ravel())), shape=(n, n))
    return normalize(graph, normalization)


# -- DualGNN: user-user co-occurrence graph -----------------------------------------------------
def user_cooccurrence_graph(n_users: int, n_items: int, pairs: np.ndarray, k: int,
                            block_size: int = 4096) -> sp.csr_matrix:
    """[n_users, n_users] number of train items two users share, top-k per user, no self-loops.

    Computed as sparse R[block] @ R.T per block of users: no dense users x users matrix. Ties
    in the count keep the smaller user id, so the graph is deterministic.
    """
    r = interaction_matrix(n_users, n_items, pairs)
    r_t = r.T.tocsr()
    kept = []
    for start in range(0, n_users, block_size):
        counts = (r[start:start + block_size] @ r_t).tocoo()          # [b, n_users]
        rows, cols = counts.row.astype(np.int64) + start, counts.col.astype(np.int64)
        other = rows != cols
        kept.append(topk_per_row(rows[other], cols[other], counts.data[other], k))
    rows, cols, values = (np.concatenate(parts) for parts in zip(*kept))
    return sp.csr_matrix((values.astype(np.float32), (rows, cols)), shape=(n_users, n_users))


# -- FREEDOM: degree-sensitive edge pruning -----------------------------------------------------
def degree_sensitive_edges(n_users: int, n_items: int, pairs: np.ndarray, keep_ratio: float,
                           generator: torch.Generator) -> np.ndarray:
    """A keep_ratio share of the unique train edges [m, 2], drawn without replacement with
    probability proportional to 1 / sqrt(d_u d_i) (Zhou & Shen, FREEDOM, MM 2023)."""
    r = interaction_matrix(n_users, n_items, pairs).tocoo()
    d_u, d_i = np.asarray(r.sum(1)).ravel(), np.asarray(r.sum(0)).ravel()
    weight = torch.as_tensor(1.0 / np.sqrt(d_u[r.row] * d_i[r.col]))
    n_keep = max(1, int(len(weight) * keep_ratio))
    chosen = torch.multinomial(weight, n_keep, replacement=False, generator=generator).numpy()
    return np.stack([r.row[chosen], r.col[chosen]], axis=1).astype(np.int64)


# -- SOIL: second-order interest graphs ---------------------------------------------------------
def pair_cosines(normed: torch.Tensor, rows: np.ndarray, cols: np.ndarray, block_size: int = 1024) -> np.ndarray:
    """cos(x[rows[e]], x[cols[e]]) per pair e, for unit rows `normed` [n, d] -> [m] float32.

    Computed from dense [block, n] similarity blocks (one matrix product per block of rows):
    far faster than gathering two d-wide rows per pair when pairs are many and d is large.
    """
    out = np.zeros(len(rows), dtype=np.float32)
    order = np.argsort(rows, kind="stable")
    bounds = np.searchsorted(rows[order], np.arange(0, normed.shape[0] + block_size, block_size))
    for b, start in enumerate(range(0, normed.shape[0], block_size)):
        where = order[bounds[b]:bounds[b + 1]]
        if len(where):
            sim = normed[start:start + block_size] @ normed.T                       # [block, n]
            local = torch.as_tensor(rows[where] - start, device=sim.device)
            out[where] = sim[local, torch.as_tensor(cols[where], device=sim.device)].cpu().numpy()
    return out


def second_order_interest(n_users: int, n_items: int, pairs: np.ndarray, features: list[torch.Tensor],
                          k: int, block_size: int = 1024) -> sp.csr_matrix:
    """SOIL's second-order interest [n_users, n_items]: per user u the k items j outside its train
    history H_u with the largest s(u, j) = max_{i in H_u} s_ij, s_ij = prod_m cos(x_m[i], x_m[j]);
    the stored value is s(u, j).

    Exact without a dense item x item matrix: j's rank in the similarity list of its best history
    item is at most |H_u| + k - 1, so each item's top (k + max |H_u|) list suffices.
    """
    r = interaction_matrix(n_users, n_items, pairs).tocoo()
    users, items = r.row.astype(np.int64), r.col.astype(np.int64)
    history = np.bincount(users, minlength=n_users)
    neighbours, values = topk_similar(features, k + int(history.max()), exclude_self=True, block_size=block_size)
    length = neighbours.shape[1]
    chunk = max(1, (1 << 22) // length)
    cand = []
    for start in range(0, len(users), chunk):
        u, i = users[start:start + chunk], items[start:start + chunk]
        mask = np.arange(length)[None, :] < np.minimum(k + history[u], length)[:, None]   # [c, L]
        cand.append((np.broadcast_to(u[:, None], mask.shape)[mask], neighbours[i][mask], values[i][mask]))
    u, j, v = (np.concatenate(parts) for parts in zip(*cand))
    key = u * n_items + j
    fresh = ~np.isin(key, users * n_items + items)                 # not a train item of the user
    u, j, v, key = u[fresh], j[fresh], v[fresh], key[fresh]
    order = np.lexsort((-v, key))                                 # per (u, j) the best history item first
    _, first = np.unique(key[order], return_index=True)
    best = order[first]
    u, j, v = topk_per_row(u[best], j[best], v[best], k)
    return sp.csr_matrix((v, (u, j)), shape=(n_users, n_items))


def interest_items(n_users: int, n_items: int, pairs: np.ndarray, normed: list[torch.Tensor], k: int,
                   block_size: int = 4096) -> sp.csr_matrix:
    """Binary [n_users, n_items]: the union over modalities of the k items j with the largest
    sum_{i in H_u} cos(x_m[i], x_m[j]) (= <sum_i x_m[i], x_m[j]> for unit rows), per user."""
    history = SparseGraph(interaction_matrix(n_users, n_items, pairs), normed[0].device)  # fixed order on a GPU
    rows, cols = [], []
    for x in normed:
        with torch.no_grad():
            profile = history @ x                                    # [n_users, d]
        for start in range(0, n_users, block_size):
            top = torch.topk(profile[start:start + block_size] @ x.T, min(k, n_items), dim=1).indices.cpu()
            rows.append(np.repeat(np.arange(start, start + len(top)), top.shape[1]))
            cols.append(top.numpy().ravel())
    chosen = sp.csr_matrix((np.ones(sum(map(len, rows)), dtype=np.float32),
                            (np.concatenate(rows), np.concatenate(cols))), shape=(n_users, n_items))
    chosen.data[:] = 1.0                                             # a union: chosen twice counts once
    return chosen


def interest_item_graphs(n_users: int, n_items: int, pairs: np.ndarray, features: dict[str, torch.Tensor],
                         k: int) -> dict[str, sp.csr_matrix]:
    """SOIL's interest-aware item graphs, unnormalised: per modality m, [n_items, n_items] with
    value sum over users u with i in H_u and c in C_u of cos(x_m[i], x_m[c]) = count_ic * cos_m(i, c),
    C_u = `interest_items` (shared by the modalities); count = (R^T C)_ic."""
    normed = {m: l2_rows(x.float()) for m, x in features.items()}
    chosen = interest_items(n_users, n_items, pairs, list(normed.values()), k)
    counts = (interaction_matrix(n_users, n_items, pairs).T @ chosen).tocoo()   # [n_items, n_items]
    graphs = {}
    for m, x in normed.items():
        weight = counts.data * pair_cosines(x, counts.row, counts.col)
        graphs[m] = sp.csr_matrix((weight, (counts.row, counts.col)), shape=(n_items, n_items))
    return graphs


class SparseGraph:
    """A fixed sparse matrix A that multiplies dense tensors differentiably: `graph @ x`.

    The backward pass needs A^T @ grad: A^T is built once here (or is A itself when A is
    symmetric), which spares torch's per-step transpose of a CSR tensor. On the CPU, products run
    in torch's CSR kernels, not scipy's single-threaded product (measurements: docs/experiments.md).
    On a GPU, cuSPARSE's CSR product sums each row in an order that varies from call to call: two
    runs of one seed differed in the last bits (DualGNN, SOIL on an H200; benchmarks/device_check.sh).
    There a product is a gather, a scale and a sum over each row's entries (`fixed_order`:
    torch.segment_reduce over the CSR row offsets), which adds a row's entries in the same order on
    every call, whatever torch's deterministic mode says.
    """

    def __init__(self, matrix: sp.spmatrix, device: torch.device | str = "cpu", fixed_order: bool | None = None):
        self.device = torch.device(device)
        self.fixed_order = self.device.type == "cuda" if fixed_order is None else fixed_order
        matrix = sp.csr_matrix(matrix, dtype=np.float32)
        self.shape = matrix.shape
        symmetric = matrix.shape[0] == matrix.shape[1] and (matrix != matrix.T).nnz == 0
        self.forward_matrix = to_torch_csr(matrix, self.device)
        self.backward_matrix = self.forward_matrix if symmetric else to_torch_csr(matrix.T.tocsr(), self.device)

    @property
    def nnz(self) -> int:
        return int(self.forward_matrix._nnz())

    def to_dense(self) -> torch.Tensor:
        return self.forward_matrix.to_dense()

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
        """A @ x: [n, m] x [m, d] -> [n, d], differentiable in x."""
        return _SparseProduct.apply(x, self)

    def product(self, matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """matrix @ x for matrix = A or A^T, in a fixed summation order where `fixed_order`."""
        if not self.fixed_order:
            return torch.sparse.mm(matrix, x)
        terms = matrix.values()[:, None] * x[matrix.col_indices()]                   # [nnz, d]
        # unsafe: the offsets are a valid CSR's (checked at construction); checking them again would
        # wait for the GPU on every product
        return torch.segment_reduce(terms, "sum", offsets=matrix.crow_indices(), axis=0, unsafe=True)


class _SparseProduct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, graph):
        ctx.graph = graph
        return graph.product(graph.forward_matrix, x)

    @staticmethod
    def backward(ctx, grad):
        return ctx.graph.product(ctx.graph.backward_matrix, grad), None


# -- explicit graph files (the pipeline's graphs stage) -------------------------------------------
class GraphFileError(ValueError):
    """A graph file is unreadable or was built for another dataset or configuration."""


def save_graphs(path, graphs: dict[str, sp.spmatrix], key: str) -> None:
    """Write named CSR matrices and the key of everything they were built from, atomically."""
    import os
    from pathlib import Path

    path = Path(path)
    arrays = {"__key__": np.array(key)}
    for name, matrix in graphs.items():
        matrix = sp.csr_matrix(matrix, dtype=np.float32)
        matrix.sort_indices()
        arrays.update({f"{name}:data": matrix.data, f"{name}:indices": matrix.indices,
                       f"{name}:indptr": matrix.indptr, f"{name}:shape": np.array(matrix.shape)})
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load_graphs(path, key: str) -> dict[str, sp.csr_matrix]:
    """The graphs in `path`; refused unless they were built under the same `key`."""
    try:
        stored = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise GraphFileError(f"{path}: cannot read graphs: {err}") from err
    with stored:
        found = str(stored["__key__"]) if "__key__" in stored.files else "<none>"
        if found != key:
            raise GraphFileError(f"{path}: built for key {found}, this run needs {key} (another dataset or "
                                 f"graph setting): re-run the graphs stage")
        names = sorted({f.rsplit(":", 1)[0] for f in stored.files if f != "__key__"})
        return {name: sp.csr_matrix((stored[f"{name}:data"], stored[f"{name}:indices"], stored[f"{name}:indptr"]),
                                    shape=tuple(stored[f"{name}:shape"])) for name in names}
