"""The probe of the latents: ridge / R² / CCA against hand-computed and constructed cases, and the planted
blocks the generator saves (the stage on real tiny trained models: tests/integration/test_probe_stage.py)."""
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from config.params import load_params
from config.sections import SyntheticConfig
from models.data import load_dataset
from pipeline.synthetic import generate, informative_factors, write_dataset
from pipeline.training import build_model
from tasks import probe

REPO = Path(__file__).resolve().parents[2]


# -- numerics ---------------------------------------------------------------------------------------
def test_r_squared_hand_computed():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert probe.r_squared(y, np.array([1.0, 2.0, 3.0, 5.0])) == pytest.approx(1 - 1 / 5)  # SST 5, SSE 1
    assert probe.r_squared(y, np.full(4, 2.5)) == pytest.approx(0.0)                    # the mean: 0
    assert probe.r_squared(y, np.full(4, 0.0)) == pytest.approx(1 - 30 / 5)             # worse than the mean
    both = np.c_[y, [0.0, 0.0, 2.0, 2.0]], np.c_[[1.0, 2.0, 3.0, 5.0], [1.0, 0.0, 2.0, 2.0]]
    assert probe.r_squared(*both) == pytest.approx(1 - (1 + 1) / (5 + 4))               # sums over columns
    assert np.isnan(probe.r_squared(np.ones(3), np.zeros(3)))


def test_ridge_path_is_the_closed_form_on_standardised_inputs():
    rng = np.random.default_rng(0)
    x, y, x_new = rng.normal(2.0, 3.0, size=(30, 4)), rng.normal(size=(30, 2)), rng.normal(size=(5, 4))
    mean, std = x.mean(0), x.std(0)
    xs = (x - mean) / std
    for penalty in (0.0, 0.7, 50.0):
        w = np.linalg.solve(xs.T @ xs + penalty * np.eye(4), xs.T @ (y - y.mean(0)))
        expected = y.mean(0) + ((x_new - mean) / std) @ w
        assert np.allclose(probe.ridge_path(x, y, x_new, [penalty])[0], expected)


def test_ridge_probe_linear_target_noise_and_a_known_share():
    rng = np.random.default_rng(1)
    n = 3000
    x = rng.normal(size=(n, 20))
    targets = {"linear": x[:, :3] @ np.array([[1.0, -2.0], [0.5, 0.0], [0.0, 3.0]]) + 4.0,
               "noise": rng.normal(size=(n, 3)),
               "half": x[:, :1] + rng.normal(size=(n, 1))}     # var 1 of 2 explained: R² 0.5
    train, test = probe.split_items(n, 0.3, 0)
    out = probe.ridge_probe(x, targets, train, test, probe.folds_of(n, 5, 0))
    assert out["linear"]["r2"] > 0.9999
    assert -0.02 < out["noise"]["r2"] < 0.01 and out["noise"]["penalty"] >= 10.0  # nothing to learn: shrunk to the mean
    assert out["half"]["r2"] == pytest.approx(0.5, abs=0.05)


def test_the_penalty_is_chosen_on_probe_train_only():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 10))
    y = x[:, :2] @ np.ones((2, 1)) + rng.normal(size=(400, 1))
    train, test = probe.split_items(400, 0.3, 0)
    folds = probe.folds_of(400, 5, 0)
    spoiled = y.copy()
    spoiled[test] = rng.normal(size=(len(test), 1)) * 100  # the held-out targets must not steer the fit
    a = probe.ridge_probe(x, {"y": y}, train, test, folds)["y"]
    b = probe.ridge_probe(x, {"y": spoiled}, train, test, folds)["y"]
    assert a["penalty"] == b["penalty"] and a["r2"] > 0.5 > b["r2"]


def test_split_and_folds_are_seeded_disjoint_and_balanced():
    train, test = probe.split_items(100, 0.3, 7)
    assert len(test) == 30 and not set(train) & set(test) and sorted([*train, *test]) == list(range(100))
    assert np.array_equal(probe.split_items(100, 0.3, 7)[1], test)
    assert not np.array_equal(probe.split_items(100, 0.3, 8)[1], test)
    folds = probe.folds_of(103, 5, 7)
    assert sorted(np.bincount(folds)) == [20, 20, 21, 21, 21]
    with pytest.raises(ValueError, match="cannot be split"):
        probe.split_items(3, 0.3, 0)


def correlated_pair(n, rho, rng, extra=(20, 12)):
    """Two views sharing len(rho) latent pairs with correlations rho, padded with noise and mixed linearly."""
    z = rng.normal(size=(n, len(rho)))
    partner = rho * z + np.sqrt(1 - np.square(rho)) * rng.normal(size=z.shape)
    a = np.c_[z, rng.normal(size=(n, extra[0]))]
    b = np.c_[partner, rng.normal(size=(n, extra[1]))]
    return a @ rng.normal(size=(a.shape[1],) * 2), b @ rng.normal(size=(b.shape[1],) * 2)


def test_cca_recovers_constructed_correlations_on_held_out_items():
    rng = np.random.default_rng(3)
    n = 6000
    a, b = correlated_pair(n, np.array([0.9, 0.5]), rng)
    train, test = probe.split_items(n, 0.3, 0)
    out = probe.redundancy(a, b, train, test, probe.folds_of(n, 5, 0), k=2)
    assert out["cca_first"] == pytest.approx(0.9, abs=0.02) and out["k"] == 2
    assert out["cca_top_k"] == pytest.approx(0.7, abs=0.03)
    independent = probe.redundancy(a, rng.normal(size=(n, 12)), train, test, probe.folds_of(n, 5, 0), k=2)
    assert abs(independent["cca_first"]) < 0.08 and abs(independent["cca_top_k"]) < 0.08


def test_cca_in_sample_equals_the_classical_solution():
    """Without shrinkage, the fitted pairs' correlations on the fitting rows are the cosines of the
    principal angles between the two column spaces (QR + SVD)."""
    a, b = correlated_pair(500, np.array([0.8, 0.3]), np.random.default_rng(4), extra=(5, 3))
    ours = probe.cca_heldout(a, b, a, b, 3, (1e-12,))[0]
    qa, qb = np.linalg.qr(a - a.mean(0))[0], np.linalg.qr(b - b.mean(0))[0]
    assert np.allclose(ours, np.linalg.svd(qa.T @ qb, compute_uv=False)[:3], atol=1e-6)


# -- the planted blocks ------------------------------------------------------------------------------
def test_item_latents_npz_holds_every_planted_block_of_the_kept_items(tiny_synthetic):
    data = load_dataset(tiny_synthetic)
    with np.load(tiny_synthetic / "item_latents.npz") as archive:
        blocks = {name: archive[name] for name in archive.files}
    structure = json.loads((tiny_synthetic / "structure.json").read_text())
    assert set(blocks) == {"unique_visual", "unique_text", "redundant", "synergy_visual", "synergy_text",
                           "nuisance_visual", "nuisance_text"}
    assert all(len(b) == data.n_items for b in blocks.values())
    for sizes in structure["modality_latent_blocks"].values():
        assert all(blocks[name].shape[1] == k for name, k in sizes.items())
    # rows line up with item_factors.npy (itemID order): the informative factors recomputed from them match
    assert np.allclose(informative_factors(blocks), np.load(tiny_synthetic / "item_factors.npy"))


def test_saving_the_blocks_leaves_the_dataset_bit_identical(tmp_path):
    """Digests of the files the generator wrote before item_latents.npz existed (same config, seed 3): the
    blocks are saved without a random draw, so the interactions and features are unchanged."""
    cfg = SyntheticConfig(n_users=120, n_items=150, image_dim=48, text_dim=32, mean_interactions=10)
    write_dataset(tmp_path / "tiny", *generate(cfg, seed=3))
    inter = (tmp_path / "tiny" / "tiny.inter").read_bytes()
    assert hashlib.sha256(inter).hexdigest() == "0b1679f473a30f36b7d00453dd34bfb871e42ca3b7921b97a29f8ae27deefac4"
    image, text = np.load(tmp_path / "tiny" / "image_feat.npy"), np.load(tmp_path / "tiny" / "text_feat.npy")
    assert image.shape == (147, 48) and text.shape == (147, 32)
    assert np.allclose(image[0, :4], [2.1604311, 1.4814105, 0.308694, -1.0637454], atol=1e-6)
    assert np.allclose(text[-1, :4], [0.06673268, -0.03870747, -0.30502075, 0.13498402], atol=1e-7)
    assert image.astype(np.float64).sum() == pytest.approx(-9.11962377159216, abs=1e-3)
    first = (tmp_path / "tiny" / "item_latents.npz").read_bytes()
    write_dataset(tmp_path / "tiny", *generate(cfg, seed=3))
    assert (tmp_path / "tiny" / "item_latents.npz").read_bytes() == first  # no timestamps: DVC sees no change


def test_raw_features_carry_their_own_blocks_only(tiny_synthetic):
    """The reference row on the planted data: the image features hold unique-visual and visual clutter
    but not unique-text, and the other way round; the product a_v·a_t is out of a linear map's reach."""
    planted = probe.planted_blocks(tiny_synthetic)
    features = load_dataset(tiny_synthetic).features
    n = len(features["image"])
    train, test = probe.split_items(n, 0.3, 0)
    out = probe.probe_latents(features, planted, train, test, probe.folds_of(n, 5, 0), k=4)
    image, text = out["latents"]["image"]["r2"], out["latents"]["text"]["r2"]
    assert image["unique_visual"] > 0.6 and image["nuisance_visual"] > 0.6 and image["unique_text"] < 0.2
    assert text["unique_text"] > 0.6 and text["nuisance_text"] > 0.6 and text["unique_visual"] < 0.2
    assert image["synergistic"] < 0.2 and text["synergistic"] < 0.2
    shares = out["latents"]["image"]["variance_explained"]
    assert shares["clutter"] > shares["informative"]   # 16 clutter dims of std 2 against 10 factors of std 1
    assert shares["planted"] > 0.9
    assert out["redundancy"]["cca_first"] > 0.5       # the shared redundant factors


def test_scoring_items_of_an_id_only_reference(tiny_synthetic):
    params = load_params(REPO / "params.yaml", ["train.device=cpu"])
    dataset = load_dataset(tiny_synthetic)
    model = build_model(params, dataset, "bprmf", "base", torch.device("cpu"))
    assert probe.scoring_items(model).shape == (dataset.n_items, params.train.embedding_dim)
    with pytest.raises(probe.LatentsUnavailable):
        probe.scoring_items(build_model(params, dataset, "pop", "base", torch.device("cpu")))
    assert [probe.has_item_representation(b) for b in ("pop", "bprmf", "lightgcn", "vbpr")] == [False, True, True, True]
