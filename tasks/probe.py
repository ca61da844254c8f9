"""Probe of the latents: how much of each planted block a trained model's item latents carry, linearly.

    python -m tasks.probe --params params.yaml --runs runs --ablations ablations --references references \
        --data-root data/prepared --raw-root data/raw --graphs-root data/graphs \
        --out reports/probe.json --markdown reports/probe.md --figure reports/probe.png

On a dataset with planted structure (the synthetic generator's `item_latents.npz`: unique-visual,
unique-text, redundant, the synergy halves a_v and a_t, clutter of each modality; the synergistic
product a_v * a_t from `item_factors.npy`), every trained model of runs/, ablations/ and references/ is
rebuilt from its best.pt (pipeline/latents.py) and its item latents are read: per modality what `encode`
returns (the projection h for base, mu for MRdIB), and the item representation it scores with
("item"). The raw feature matrices are probed the same way, as the reference row "features".
Items are split once per dataset, seeded by `seed`, into probe-train and probe-test parts; then

- R² of a linear probe latent -> block, for every planted block: ridge regression on standardised
  latents, its penalty chosen per block by K-fold cross-validation on probe-train only, the R² on
  probe-test (multi-output: 1 - SSE / SST summed over the block's columns; SST about the test mean);
- the share of the latent's variance that clutter explains: the same probe reversed, latent <- own
  clutter, beside latent <- informative blocks (unique, redundant, synergy and its halves) and latent <-
  every planted block (1 - that is what no linear map of the planted structure explains);
- cross-modal redundancy: regularised canonical correlation between the image and text latents (each
  covariance shrunk towards the identity, the shrinkage chosen by cross-validation on probe-train),
  fitted on probe-train, the correlations of its first k pairs measured on probe-test: the first, and
  the mean of the first k, k = the number of planted redundant factors.

Writes OUT (mean ± std over seeds of every number, per dataset / backbone / setting, with the seeds),
MARKDOWN (the tables of the report's "Probe of the latents" section) and FIGURE, and logs them with every
mean as a metric in one MLflow run per dataset (stage `probe`). Datasets without item_latents.npz (real
data) are skipped with a log line and named in OUT; the outputs are written even when none has it.

Builds on linear probes of learnt representations (Alain & Bengio, "Understanding intermediate layers
using linear classifier probes", 2016), ridge regression (Hoerl & Kennard, 1970) with cross-validated
penalty, and canonical correlation analysis (Hotelling, "Relations between two sets of variates", 1936)
in its regularised form (Vinod, 1976); the blocks follow the Partial Information Decomposition
(Williams & Beer, 2010) as pipeline/synthetic.py plants them.
"""
from __future__ import annotations

import argparse
import functools
import json
import logging
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only
import matplotlib.lines
import matplotlib.patches
import matplotlib.pyplot as plt
import numpy as np
from threadpoolctl import threadpool_limits

from config.params import Params, load_params
from config.sections import ABLATIONS, VARIANTS
from models.base import Recommender
from models.data import load_dataset
from models.registry import get_backbone
from pipeline.errors import EXIT_DATA, Refusal, run_command
from pipeline.io import save_figure, setup_logging, write_text
from pipeline.latents import LatentsUnavailable, item_latents, load_run_model, run_dataset, scoring_items
from pipeline.runs import Run, RunError, load_runs
from pipeline.stats import mean_and_std

log = logging.getLogger("tasks.probe")

# Every default of the stage, in one place (the command-line flags start from these).
TEST_SHARE = 0.3                                   # share of the items held out for the probe's R² and CCA
FOLDS = 5                                          # cross-validation folds inside probe-train
PENALTIES = tuple(10.0 ** np.arange(-8.0, 3.5))        # ridge penalty per probe-train row (x n rows)
SHRINKAGES = (1e-9, 1e-4, 1e-2, 0.1, 0.5)          # CCA: covariance C -> (1 - r) C + r I, r by CV

# Target blocks in the order of the tables; labels for tables and figure.
BLOCKS = ("unique_visual", "unique_text", "redundant", "synergistic", "synergy_visual", "synergy_text",
          "nuisance_visual", "nuisance_text")
LABELS = {"unique_visual": "unique-visual", "unique_text": "unique-text", "redundant": "redundant",
          "synergistic": "synergy a_v·a_t", "synergy_visual": "a_v (half)", "synergy_text": "a_t (half)",
          "nuisance_visual": "clutter-visual", "nuisance_text": "clutter-text"}
CLUTTER = ("nuisance_visual", "nuisance_text")
OWN_CLUTTER = {"image": ("nuisance_visual",), "text": ("nuisance_text",), "item": CLUTTER}
SHARES = ("clutter", "informative", "planted")     # latent <- own clutter / informative blocks / all blocks
LATENTS = ("image", "text", "item")
FEATURES = "features"                              # the reference row: the raw feature matrices


# -- numerics -------------------------------------------------------------------------------------
def one_blas_thread(fn):
    """Run fn with one BLAS thread: the probe's matrices are small (hundreds of rows), and OpenBLAS's
    threads on a busy 2-core machine made a 600 x 64 SVD 300 times slower (1.4 s against 5 ms)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with threadpool_limits(limits=1, user_api="blas"):
            return fn(*args, **kwargs)
    return wrapper


def standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Centre and scale by probe-train's mean and std (a constant column is only centred)."""
    mean, std = train.mean(0), train.std(0)
    std = np.where(std > 1e-12 * max(1.0, float(np.abs(train).max(initial=0.0))), std, 1.0)
    return [(a - mean) / std for a in (train, *others)]


def ridge_path(x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, penalties) -> np.ndarray:
    """[n_penalties, n_eval, k] predictions of ridge regressions of y on standardised x with an intercept,
    one per absolute penalty λ (min |y - b - Xw|² + λ|w|²), through one SVD of x_train."""
    xs, xe = standardise(x_train, x_eval)
    y_mean = y_train.mean(0)
    u, s, vt = np.linalg.svd(xs, full_matrices=False)
    uty = u.T @ (y_train - y_mean)                                   # [r, k]
    shrink = s / (s ** 2 + np.asarray(penalties, dtype=float)[:, None])  # [p, r]
    return y_mean + np.einsum("er,pr,rk->pek", xe @ vt.T, shrink, uty, optimize=True)


def r_squared(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """1 - SSE / SST summed over the columns (SST about y_true's own mean); NaN when y_true is constant."""
    y_true, y_pred = np.atleast_2d(y_true.T).T, np.atleast_2d(y_pred.T).T
    sst = float(((y_true - y_true.mean(0)) ** 2).sum())
    return 1.0 - float(((y_true - y_pred) ** 2).sum()) / sst if sst > 0 else float("nan")


def folds_of(n: int, folds: int, seed: int) -> np.ndarray:
    """[n] fold number of each row, a seeded shuffle dealt round-robin (folds as equal as can be); its own
    random stream, apart from split_items' (same seed)."""
    assignment = np.empty(n, dtype=np.int64)
    assignment[np.random.default_rng((seed, 1)).permutation(n)] = np.arange(n) % folds
    return assignment


def split_items(n: int, test_share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(probe-train rows, probe-test rows), a seeded split, each sorted."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(test_share * n))
    if not 2 <= n_test <= n - 2:
        raise ValueError(f"{n} items cannot be split {1 - test_share:.0%}/{test_share:.0%} for the probe")
    return np.sort(order[n_test:]), np.sort(order[:n_test])


@one_blas_thread
def ridge_probe(x: np.ndarray, targets: dict[str, np.ndarray], train: np.ndarray, test: np.ndarray,
                folds: np.ndarray, penalties=PENALTIES) -> dict[str, dict]:
    """{block: {"r2": held-out R², "penalty": the chosen per-row penalty}} of ridge probes x -> each target.

    The penalty of each block minimises the block's summed squared error over the folds of probe-train
    (ties: the larger penalty); the probe is then refitted on all of probe-train and scored on probe-test."""
    names = list(targets)
    y = np.concatenate([np.atleast_2d(targets[b].T).T for b in names], axis=1).astype(np.float64)
    x = np.asarray(x, dtype=np.float64)
    columns, start = {}, 0
    for b in names:
        width = np.atleast_2d(targets[b].T).T.shape[1]
        columns[b], start = slice(start, start + width), start + width
    penalties = np.asarray(penalties, dtype=float)
    sse = np.zeros((len(penalties), y.shape[1]))
    fold_ids = folds[train]
    for f in np.unique(fold_ids):
        fit, held = train[fold_ids != f], train[fold_ids == f]
        pred = ridge_path(x[fit], y[fit], x[held], penalties * len(fit))
        sse += ((pred - y[held]) ** 2).sum(axis=1)
    final = ridge_path(x[train], y[train], x[test], penalties * len(train))
    out = {}
    for b in names:
        cost = sse[:, columns[b]].sum(axis=1)
        best = len(cost) - 1 - int(np.argmin(cost[::-1]))
        out[b] = {"r2": r_squared(y[test][:, columns[b]], final[best][:, columns[b]]),
                  "penalty": float(penalties[best])}
    return out


def top_singular_vectors(m: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(U [p, k], V [q, k]): the first k left and right singular vectors of m, largest first, from the top-k
    eigenvectors of the smaller Gram matrix (a full SVD of a 512 x 384 matrix costs ~5x more)."""
    import scipy.linalg

    small_left = m.shape[0] <= m.shape[1]
    gram = m @ m.T if small_left else m.T @ m
    values, vectors = scipy.linalg.eigh(gram, subset_by_index=[len(gram) - k, len(gram) - 1])
    vectors = vectors[:, ::-1]
    sigma = np.sqrt(np.clip(values[::-1], 0.0, None))
    other = (m.T @ vectors if small_left else m @ vectors) / np.where(sigma > 0, sigma, 1.0)
    return (vectors, other) if small_left else (other, vectors)


def cca_heldout(x_fit: np.ndarray, y_fit: np.ndarray, x_eval: np.ndarray, y_eval: np.ndarray, k: int,
                shrinkages=(0.1,)) -> np.ndarray:
    """[len(shrinkages), k] correlations on (x_eval, y_eval) of the first k canonical pairs of a regularised
    CCA fitted on (x_fit, y_fit): standardised columns, each covariance shrunk to (1 - r) C + r I.

    With C_x = V_x E_x V_x^T, the whitened cross-covariance C_x^-1/2 C_xy C_y^-1/2 is V_x (D_x C' D_y) V_y^T,
    C' = V_x^T C_xy V_y, D = ((1 - r) E + r)^-1/2: one eigen-decomposition per side serves every r."""
    xs, xe = standardise(np.asarray(x_fit, dtype=np.float64), np.asarray(x_eval, dtype=np.float64))
    ys, ye = standardise(np.asarray(y_fit, dtype=np.float64), np.asarray(y_eval, dtype=np.float64))
    n = len(xs) - 1
    ex, vx = np.linalg.eigh(xs.T @ xs / n)
    ey, vy = np.linalg.eigh(ys.T @ ys / n)
    rotated = vx.T @ (xs.T @ ys / n) @ vy
    xe, ye = xe @ vx, ye @ vy                      # evaluation rows in the eigen-bases
    k = min(k, xs.shape[1], ys.shape[1])
    out = np.full((len(shrinkages), k), np.nan)
    for i, r in enumerate(shrinkages):
        dx = 1.0 / np.sqrt((1.0 - r) * np.clip(ex, 0.0, None) + r)
        dy = 1.0 / np.sqrt((1.0 - r) * np.clip(ey, 0.0, None) + r)
        u, v = top_singular_vectors(dx[:, None] * rotated * dy[None, :], k)
        a, b = xe @ (dx[:, None] * u), ye @ (dy[:, None] * v)   # [n_eval, k] canonical variates
        a, b = a - a.mean(0), b - b.mean(0)
        norm = np.sqrt((a ** 2).sum(0) * (b ** 2).sum(0))
        out[i] = np.where(norm > 0, (a * b).sum(0) / np.where(norm > 0, norm, 1.0), np.nan)
    return out


@one_blas_thread
def redundancy(x: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, folds: np.ndarray, k: int,
               shrinkages=SHRINKAGES) -> dict[str, float]:
    """Cross-modal redundancy of two latents: the held-out correlations of a regularised CCA's first pair
    and the mean over its first k pairs; the shrinkage maximises that mean over the folds of probe-train."""
    fold_ids = folds[train]
    score = np.zeros(len(shrinkages))
    for f in np.unique(fold_ids):
        fit, held = train[fold_ids != f], train[fold_ids == f]
        score += np.nan_to_num(cca_heldout(x[fit], y[fit], x[held], y[held], k, shrinkages).mean(axis=1), nan=-1.0)
    best = int(np.argmax(score))
    corr = cca_heldout(x[train], y[train], x[test], y[test], k, (shrinkages[best],))[0]
    return {"cca_first": float(corr[0]), "cca_top_k": float(np.mean(corr)), "k": int(len(corr)),
            "shrinkage": float(shrinkages[best])}


# -- one model ------------------------------------------------------------------------------------
def probe_latents(latents: dict[str, np.ndarray], planted: dict[str, np.ndarray], train: np.ndarray,
                  test: np.ndarray, folds: np.ndarray, k: int) -> dict:
    """Every number of one model (or of the raw features): per latent the R² of each planted block and the
    variance shares; the image-text redundancy where both exist."""
    out: dict = {"latents": {}}
    informative = np.concatenate([planted[b] for b in planted if b not in CLUTTER], axis=1)
    everything = np.concatenate(list(planted.values()), axis=1)
    for name, z in latents.items():
        z = np.asarray(z, dtype=np.float64)
        if not np.isfinite(z).all():
            raise ValueError(f"the {name} latents hold non-finite values")
        forward = ridge_probe(z, planted, train, test, folds)
        clutter = [planted[b] for b in OWN_CLUTTER.get(name, CLUTTER) if b in planted]
        sources = {"clutter": np.concatenate(clutter, axis=1) if clutter else None,
                   "informative": informative, "planted": everything}
        shares = {s: ridge_probe(x, {"latent": z}, train, test, folds)["latent"]["r2"]
                  if x is not None else float("nan")
                  for s, x in sources.items()}
        out["latents"][name] = {"dim": int(z.shape[1]), "r2": {b: v["r2"] for b, v in forward.items()},
                                "penalty": {b: v["penalty"] for b, v in forward.items()},
                                "variance_explained": shares}
    if "image" in latents and "text" in latents:
        out["redundancy"] = redundancy(np.asarray(latents["image"], dtype=np.float64),
                                       np.asarray(latents["text"], dtype=np.float64), train, test, folds, k)
    return out


# -- planted structure, runs ---------------------------------------------------------------------
def planted_blocks(raw: Path) -> dict[str, np.ndarray] | None:
    """{block: [n_items, k]} in BLOCKS order from RAW/item_latents.npz (+ the synergistic product from
    item_factors.npy, else a_v * a_t); None where there is no item_latents.npz (no planted structure)."""
    path = Path(raw) / "item_latents.npz"
    if not path.is_file():
        return None
    with np.load(path) as archive:
        blocks = {name: archive[name].astype(np.float64) for name in archive.files}
    factors, structure = Path(raw) / "item_factors.npy", Path(raw) / "structure.json"
    if factors.is_file() and structure.is_file():
        columns = json.loads(structure.read_text())["item_factor_columns"]
        picked = [i for i, c in enumerate(columns) if c.startswith("synergistic_")]
        blocks["synergistic"] = np.load(factors)[:, picked].astype(np.float64)
    elif "synergy_visual" in blocks and "synergy_text" in blocks:
        blocks["synergistic"] = blocks["synergy_visual"] * blocks["synergy_text"]
    ordered = [b for b in BLOCKS if b in blocks] + sorted(set(blocks) - set(BLOCKS))
    return {b: blocks[b] for b in ordered if blocks[b].ndim == 2 and blocks[b].shape[1] > 0}


def model_latents(params: Params, data_root: Path, graphs_root: Path, run: Run) -> dict[str, np.ndarray]:
    """{"image", "text" (what encode returns), "item" (the scoring representation)}, those the model has."""
    dataset = run_dataset(data_root, run)
    model = load_run_model(params, data_root, graphs_root, run, dataset)
    latents = {}
    try:
        latents.update(item_latents(model, dataset.n_items))
    except LatentsUnavailable:  # ID-only references: their item embedding alone
        pass
    try:
        latents["item"] = scoring_items(model)
    except LatentsUnavailable:
        pass
    if not latents:
        raise LatentsUnavailable(f"{run.backbone} has no item representation to probe")
    return latents


def summarise(per_seed: dict[int, dict]) -> dict:
    """Same tree as one model's numbers, each leaf {"mean", "std" (sample; 0 for one seed), "values"}, + seeds."""
    seeds = sorted(per_seed)

    def merge(trees: list):
        if isinstance(trees[0], dict):
            return {key: merge([t[key] for t in trees if key in t]) for key in trees[0]}
        mean, std = mean_and_std(trees)
        return {"mean": mean, "std": std, "values": [float(v) for v in trees]}

    return {"seeds": seeds, "n_seeds": len(seeds), **merge([per_seed[s] for s in seeds])}


def probe_dataset(params: Params, name: str, runs: list[Run], roots: dict[str, Path], args) -> dict:
    """Everything for one dataset with planted structure: the features reference, then every run."""
    planted = planted_blocks(roots["raw"] / name)
    n_items = len(next(iter(planted.values())))
    features = load_dataset(roots["data"] / name).features
    if any(len(f) != n_items for f in features.values()):
        raise ValueError(f"{roots['raw'] / name}/item_latents.npz has {n_items} rows, the dataset "
                         f"{ {m: len(f) for m, f in features.items()} } items: they do not describe the same items")
    train, test = split_items(n_items, args.test_share, params.seed)
    folds = folds_of(n_items, args.folds, params.seed)
    structure = roots["raw"] / name / "structure.json"
    redundant = json.loads(structure.read_text())["config"].get("redundant", 1) if structure.is_file() else 1
    k = max(1, int(redundant))
    result = {"items": n_items, "probe_train": int(len(train)), "probe_test": int(len(test)), "cca_k": k,
              "blocks": {b: int(v.shape[1]) for b, v in planted.items()}, "models": {}, "failed": {},
              "not_probed": {}, "seconds": {}}
    start = time.perf_counter()
    raw = {m: features[m] for m in ("image", "text") if m in features}
    numbers = probe_latents(raw, planted, train, test, folds, k)
    result["models"][FEATURES] = {"raw": summarise({0: numbers}) | {"seeds": [], "n_seeds": 0}}  # not a trained model
    result["seconds"][FEATURES] = round(time.perf_counter() - start, 2)
    groups: dict[tuple[str, str], dict[int, dict]] = {}
    for run in sorted(runs, key=lambda r: (r.backbone, r.variant, r.seed)):
        if not has_item_representation(run.backbone):
            if run.backbone not in result["not_probed"]:
                log.info("%s/%s: not probed: it has no item representation (no features, no embedding)",
                         name, run.backbone)
            result["not_probed"][run.backbone] = "no item representation (no features, no embedding)"
            continue
        label = f"{run.backbone}-{run.variant}/seed{run.seed}"
        start = time.perf_counter()
        try:
            numbers = probe_latents(model_latents(params, roots["data"], roots["graphs"], run),
                                    planted, train, test, folds, k)
        except (OSError, ValueError, RuntimeError, KeyError) as err:  # one broken run: named, not fatal
            log.warning("%s/%s: not probed: %s", name, label, err)
            result["failed"][label] = f"{type(err).__name__}: {err}"
            continue
        groups.setdefault((run.backbone, run.variant), {})[run.seed] = numbers
        result["seconds"][label] = round(time.perf_counter() - start, 2)
        log.info("%s/%s probed in %.1f s", name, label, result["seconds"][label])
    for (backbone, setting), per_seed in sorted(groups.items(), key=lambda kv: (kv[0][0], setting_rank(kv[0][1]))):
        result["models"].setdefault(backbone, {})[setting] = summarise(per_seed)
    return result


def has_item_representation(backbone: str) -> bool:
    """False for a backbone with neither modality latents nor an item embedding (Pop)."""
    cls = get_backbone(backbone)
    return bool(cls.modalities) or cls.all_embeddings is not Recommender.all_embeddings


def setting_rank(setting: str) -> tuple[int, str]:
    order = {"base": 0, "mrdib": 1}
    return order.get(setting, 2), setting


# -- outputs --------------------------------------------------------------------------------------
def cell(leaf: dict | None, digits: int = 2) -> str:
    if not leaf or not np.isfinite(leaf["mean"]):
        return "–"
    return f"{leaf['mean']:.{digits}f}" + (f" ± {leaf['std']:.{digits}f}" if len(leaf["values"]) > 1 else "")


def markdown(report: dict) -> str:
    """Per dataset: the R² table (one row per model, setting, latent) and the redundancy table."""
    lines = []
    for name, reason in report["skipped"].items():
        lines.append(f"_{name}: not probed: {reason}._")
    if not report["datasets"]:
        lines.append("_No dataset with planted structure (item_latents.npz from pipeline/synthetic.py): nothing to "
                     "probe._")
    for name, data in report["datasets"].items():
        blocks = list(data["blocks"])
        lines += [f"### {name}", "",
                  f"{data['items']} items: ridge probes fitted on {data['probe_train']} (penalty by "
                  f"{report['settings']['folds']}-fold cross-validation), R² on the {data['probe_test']} held out; "
                  "mean ± std over seeds. Columns up to the bar: R² of latent → block; after it: share of the "
                  "latent's variance explained by its own modality's clutter, by the informative blocks, by every "
                  "planted block.", "",
                  "| model | setting | latent | dim | seeds | " + " | ".join(LABELS.get(b, b) for b in blocks)
                  + " | ‖ clutter share | informative share | planted share |",
                  "|---|---|---|---|---|" + "---|" * (len(blocks) + 3)]
        for backbone, settings in data["models"].items():
            for setting, numbers in settings.items():
                for latent, values in numbers["latents"].items():
                    dim = int(values["dim"]["mean"])
                    row = [backbone, setting, latent, str(dim), str(numbers["n_seeds"] or "–")]
                    row += [cell(values["r2"].get(b)) for b in blocks]
                    row += [cell(values["variance_explained"].get(s)) for s in SHARES]
                    lines.append("| " + " | ".join(row) + " |")
        lines += ["", f"Cross-modal redundancy: held-out correlation of the image and text latents' canonical "
                      f"pairs (regularised CCA fitted on probe-train); top-k mean over k = {data['cca_k']} "
                      "(the planted redundant factors).", "",
                  "| model | setting | seeds | first canonical correlation | mean of the top k |",
                  "|---|---|---|---|---|"]
        for backbone, settings in data["models"].items():
            for setting, numbers in settings.items():
                if "redundancy" in numbers:
                    r = numbers["redundancy"]
                    seeds = str(numbers["n_seeds"] or "–")
                    lines.append(f"| {backbone} | {setting} | {seeds} | {cell(r['cca_first'])} "
                                 f"| {cell(r['cca_top_k'])} |")
        if data["not_probed"]:
            lines += ["", "Nothing to probe: " + ", ".join(f"{k} ({v})" for k, v in data["not_probed"].items()) + "."]
        if data["failed"]:
            lines += ["", "**Failed to probe**: " + "; ".join(f"{k} ({v})" for k, v in data["failed"].items()) + "."]
        lines.append("")
    return "\n".join(lines).strip() + "\n"


SETTING_COLORS = {"base": "tab:gray", "mrdib": "tab:blue"}
EXTRA_COLORS = ("tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
TICKS = {"unique_visual": "unique\nvisual", "unique_text": "unique\ntext", "redundant": "redun-\ndant",
         "synergistic": "synergy\na_v·a_t", "synergy_visual": "a_v\n(half)", "synergy_text": "a_t\n(half)",
         "nuisance_visual": "clutter\nvisual", "nuisance_text": "clutter\ntext"}


def share_panel(numbers: dict, key: tuple) -> dict | None:
    """The leaf of the last column's bar `key`: (latent, share) or ("redundancy", cca_first / cca_top_k)."""
    if key[0] == "redundancy":
        return numbers.get("redundancy", {}).get(key[1])
    return numbers["latents"].get(key[0], {}).get("variance_explained", {}).get(key[1])


def plot(report: dict, path: Path) -> None:
    """A row of panels per (dataset, backbone): the held-out R² of every planted block from the image, text
    and scoring ("item") latents, then the variance shares and the redundancy; a bar per setting (whiskers:
    std over seeds), the raw features as black bars across. Without a dataset: a figure that says so."""
    rows = [(name, backbone) for name, data in report["datasets"].items() for backbone in data["models"]
            if backbone != FEATURES]
    def id_only(row) -> bool:  # ID-only references (item latent only) go last
        models = report["datasets"][row[0]]["models"][row[1]]
        return not any({"image", "text"} & set(numbers["latents"]) for numbers in models.values())

    rows = sorted(rows, key=id_only)
    if not rows:
        fig, ax = plt.subplots(figsize=(6, 1.6))
        ax.axis("off")
        ax.text(0.5, 0.5, "probe of the latents: no dataset with planted structure", ha="center", va="center")
        return save_figure(fig, path)
    every = {s for name, backbone in rows for s in report["datasets"][name]["models"][backbone]}
    settings_order = sorted(every, key=setting_rank)
    extra = iter(EXTRA_COLORS)
    colors = {s: SETTING_COLORS.get(s) or next(extra, "black") for s in settings_order}
    columns = [*LATENTS, "shares"]
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(5.2 * len(columns), 3.1 * len(rows) + 0.6),
                             squeeze=False, layout="constrained")
    for i, (name, backbone) in enumerate(rows):
        data = report["datasets"][name]
        settings, reference = data["models"][backbone], data["models"][FEATURES]["raw"]
        for j, column in enumerate(columns):
            ax = axes[i, j]
            if column == "shares":
                keys = [(m, share) for share in ("clutter", "informative") for m in ("image", "text")] + \
                       [("redundancy", "cca_first"), ("redundancy", "cca_top_k")]
                ticks = ["clutter\nshare img", "clutter\nshare txt", "inform.\nshare img", "inform.\nshare txt",
                         "CCA\n1st pair", f"CCA\ntop-{data['cca_k']}"]
                get = share_panel
                title = f"{name} / {backbone}: variance shares, redundancy"
            else:
                if not any(column in numbers["latents"] for numbers in settings.values()):
                    ax.axis("off")
                    continue
                keys, ticks = list(data["blocks"]), [TICKS.get(b, b) for b in data["blocks"]]
                get = lambda numbers, key, column=column: numbers["latents"].get(column, {}).get("r2", {}).get(key)  # noqa: E731
                title = f"{name} / {backbone}: R² of the {column} latent → block"
            if all(get(numbers, key) is None for numbers in settings.values() for key in keys):
                ax.axis("off")
                continue
            x, width = np.arange(len(keys)), 0.8 / len(settings)
            lowest = 0.0
            for s, (setting, numbers) in enumerate(settings.items()):
                leaves = [get(numbers, key) for key in keys]
                means = np.array([leaf["mean"] if leaf else np.nan for leaf in leaves], dtype=float)
                stds = np.array([leaf["std"] if leaf else 0.0 for leaf in leaves], dtype=float)
                ax.bar(x + (s - (len(settings) - 1) / 2) * width, means, width, yerr=stds, capsize=1.5,
                       color=colors[setting], error_kw={"lw": 0.8})
                lowest = min(lowest, float(np.nanmin(means, initial=0.0)))
            marks = np.array([(get(reference, key) or {}).get("mean", np.nan) for key in keys], dtype=float)
            if np.isfinite(marks).any():
                ax.hlines(marks, x - 0.45, x + 0.45, color="black", lw=1.6, zorder=3)
            ax.axhline(0, color="black", lw=0.6)
            ax.set_xticks(x, ticks, fontsize=7.5)
            ax.set_ylim(max(-0.5, lowest - 0.05), 1.05)
            ax.set_title(title, fontsize=9)
            ax.grid(axis="y", lw=0.3, alpha=0.5)
            if j == 0:
                ax.set_ylabel("held-out R² / share / corr.", fontsize=8)
    handles = [matplotlib.patches.Patch(color=colors[s], label=s) for s in settings_order]
    handles.append(matplotlib.lines.Line2D([], [], color="black", lw=1.6, label="raw features (reference)"))
    fig.legend(handles=handles, loc="outside upper center", ncol=len(handles), fontsize=9, frameon=False)
    save_figure(fig, path)


def flat_metrics(data: dict) -> dict[str, float]:
    """MLflow metrics of one dataset: every mean, keyed <backbone>-<setting>/<latent>/<quantity>."""
    out = {}
    for backbone, settings in data["models"].items():
        for setting, numbers in settings.items():
            prefix = f"{backbone}-{setting}"
            for latent, values in numbers["latents"].items():
                for kind in ("r2", "variance_explained"):
                    for key, leaf in values[kind].items():
                        tag = f"r2_{key}" if kind == "r2" else f"share_{key}"
                        if np.isfinite(leaf["mean"]):
                            out[f"{prefix}/{latent}/{tag}"] = leaf["mean"]
            for key in ("cca_first", "cca_top_k"):
                leaf = numbers.get("redundancy", {}).get(key)
                if leaf and np.isfinite(leaf["mean"]):
                    out[f"{prefix}/{key}"] = leaf["mean"]
    return out


def track(params: Params, report: dict, files: list[Path]) -> None:
    """One MLflow run per probed dataset (experiment = the dataset, stage `probe`): every mean, the files."""
    from pipeline.tracking import Tracker, git_commit

    commit, dirty = git_commit()
    for name, data in report["datasets"].items():
        tracker = Tracker.start(params.tracking, name, "probe", {"stage": "probe", "dataset": name,
                                                                  "git_commit": commit, "git_dirty": dirty})
        tracker.log_params({**{f"probe.{k}": v for k, v in report["settings"].items()},
                            "probe.items": data["items"], "probe.cca_k": data["cca_k"]})
        metrics = flat_metrics(data)
        keys = sorted(metrics)
        for start in range(0, len(keys), 500):  # MLflow takes at most 1000 metrics per batch
            tracker.log_metrics({k: metrics[k] for k in keys[start:start + 500]})
        for path in files:
            tracker.log_artifact(path)
        tracker.end("FINISHED")


def finite_or_null(tree):
    """NaN / inf (an R² of a constant target) -> null: the file stays strict JSON."""
    if isinstance(tree, dict):
        return {k: finite_or_null(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [finite_or_null(v) for v in tree]
    return None if isinstance(tree, float) and not np.isfinite(tree) else tree


def probe_all(params: Params, args) -> dict:
    roots = {"data": args.data_root, "raw": args.raw_root, "graphs": args.graphs_root}
    runs = load_runs(args.runs, VARIANTS) + load_runs(args.ablations, ABLATIONS) + \
        load_runs(args.references, ("base",))
    names = sorted({r.dataset for r in runs} | set(params.pipeline.datasets))
    report = {"settings": {"seed": params.seed, "test_share": args.test_share, "folds": args.folds,
                           "penalties_per_row": list(PENALTIES), "cca_shrinkages": list(SHRINKAGES)},
              "datasets": {}, "skipped": {}}
    for name in names:
        if planted_blocks(args.raw_root / name) is None:
            reason = (f"no {args.raw_root / name}/item_latents.npz: no planted structure (real data, or a "
                      "synthetic download older than the file)")
            log.info("probe: %s skipped: %s", name, reason)
            report["skipped"][name] = reason
            continue
        report["datasets"][name] = probe_dataset(params, name, [r for r in runs if r.dataset == name], roots, args)
    return report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--ablations", type=Path, default=Path("ablations"))
    parser.add_argument("--references", type=Path, default=Path("references"))
    parser.add_argument("--data-root", type=Path, default=Path("data/prepared"), help="<root>/<dataset>/: features")
    parser.add_argument("--raw-root", type=Path, default=Path("data/raw"),
                        help="<root>/<dataset>/item_latents.npz: the planted structure (synthetic data only)")
    parser.add_argument("--graphs-root", type=Path, default=Path("data/graphs"))
    parser.add_argument("--out", type=Path, default=Path("reports/probe.json"))
    parser.add_argument("--markdown", type=Path, default=Path("reports/probe.md"))
    parser.add_argument("--figure", type=Path, default=Path("reports/probe.png"))
    parser.add_argument("--test-share", type=float, default=TEST_SHARE)
    parser.add_argument("--folds", type=int, default=FOLDS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging()
    params = load_params(args.params)
    start = time.perf_counter()
    try:
        report = probe_all(params, args)
    except RunError as err:
        raise Refusal(str(err), EXIT_DATA) from None
    report["seconds"] = round(time.perf_counter() - start, 1)
    for path in (args.out, args.markdown, args.figure):
        path.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, json.dumps(finite_or_null(report), indent=1, allow_nan=False) + "\n")
    write_text(args.markdown, markdown(report))
    plot(report, args.figure)
    track(params, report, [args.out, args.markdown, args.figure])
    log.info("probe: %d dataset(s) probed, %d skipped, in %.1f s -> %s, %s, %s", len(report["datasets"]),
             len(report["skipped"]), report["seconds"], args.out, args.markdown, args.figure)


if __name__ == "__main__":
    run_command(main)
