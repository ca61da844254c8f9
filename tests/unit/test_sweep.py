"""The synthetic benchmark's sweep knobs, its grid and its statistics (the sweep stages:
tests/integration/test_sweep_stage.py)."""
import hashlib
import json

import numpy as np
import pytest

from config.params import ParamsError, load_params
from config.sections import SyntheticConfig
from pipeline.stats import paired_interval
from pipeline.stats import paired_verdict as verdict
from pipeline.sweep import variant_params
from pipeline.synthetic import MODALITY_BLOCKS, generate, item_latents, mix_features

REPO_PARAMS = "params.yaml"


def digest(cfg: SyntheticConfig, seed: int) -> str:
    frame, arrays, _ = generate(cfg, seed)
    h = hashlib.sha256(frame.to_csv(index=False).encode())
    for key in ("image", "text", "factors"):
        h.update(np.ascontiguousarray(arrays[key]).tobytes())
    return h.hexdigest()


def test_knobs_at_their_defaults_give_the_linear_generators_data_bit_for_bit():
    # the digest of the generator before the knobs existed (git c3d504d), same config and seed
    cfg = SyntheticConfig(n_users=50, n_items=80, image_dim=8, text_dim=8)
    assert cfg.nonlinearity == 0 and cfg.interactions_per_item is None
    assert digest(cfg, 1) == "d8e40e0cff8ec2c62becd52757981b5490b81e4087f9e9dadc2c99ec55e1a26f"


def test_nonlinearity_changes_the_features_only():
    cfg = SyntheticConfig(n_users=50, n_items=80, image_dim=8, text_dim=8)
    linear, warped = generate(cfg, 1), generate(cfg.model_copy(update={"nonlinearity": 0.5}), 1)
    assert linear[0].equals(warped[0])                                  # interactions and split unchanged
    assert np.array_equal(linear[1]["factors"], warped[1]["factors"])
    assert not np.allclose(linear[1]["image"], warped[1]["image"])
    assert np.isclose(warped[1]["image"].std(), linear[1]["image"].std(), rtol=0.05)  # noise keeps its share


def ridge_r2(x: np.ndarray, y: np.ndarray, lam: float = 1.0) -> float:
    """R^2 on the second half of a ridge regression fit on the first half."""
    half = len(x) // 2
    mx, my = x[:half].mean(0), y[:half].mean(0)
    xt = x[:half] - mx
    w = np.linalg.solve(xt.T @ xt + lam * np.eye(x.shape[1]), xt.T @ (y[:half] - my))
    pred = (x[half:] - mx) @ w + my
    return float(1 - ((y[half:] - pred) ** 2).sum() / ((y[half:] - y[half:].mean(0)) ** 2).sum())


def probe_clutter(nonlinearity: float, seed: int = 0) -> float:
    """Ridge probe from the image features to the image clutter block, on 1500 items."""
    cfg = SyntheticConfig(n_items=1500, image_dim=128, nonlinearity=nonlinearity)
    rng = np.random.default_rng(seed)
    latents = item_latents(cfg, rng)
    blocks = [latents[b] for b in MODALITY_BLOCKS["image"]]
    features = mix_features(blocks, cfg.image_dim, cfg.feature_noise, rng, nonlinearity, cfg.nonlinear_gain,
                            np.random.default_rng(seed + 100))
    return ridge_r2(features.astype(np.float64), latents["nuisance_visual"].astype(np.float64))


def test_nonlinearity_makes_the_clutter_less_linearly_recoverable():
    linear, half, full = probe_clutter(0.0), probe_clutter(0.5), probe_clutter(1.0)
    assert linear > 0.97          # today's data: a linear probe recovers the clutter
    assert half < linear - 0.08   # measured ~0.85
    assert full < 0.8             # measured ~0.70


def test_interactions_per_item_sets_the_items_side_of_the_data():
    sparse = SyntheticConfig(n_users=200, interactions_per_item=3.0)
    dense = SyntheticConfig(n_users=200, interactions_per_item=12.0)
    assert (sparse.items(), dense.items()) == (800, 200)
    per_item = {}
    for name, cfg in (("sparse", sparse), ("dense", dense)):
        frame, _, structure = generate(cfg, 5)
        per_item[name] = len(frame) / frame["itemID"].nunique()
        assert structure["interactions_per_item_kept"] == pytest.approx(per_item[name], abs=1e-3)
        assert structure["config"]["n_items"] == cfg.items()
    assert per_item["sparse"] < per_item["dense"] / 2    # fewer interactions per item, as the knob says
    with pytest.raises(ValueError, match="at least 60"):
        SyntheticConfig(n_users=50, interactions_per_item=20.0)


def test_paired_interval_against_a_hand_computed_case():
    # diffs 0.01, 0.02, 0.03: mean 0.02, sd 0.01, t_{0.975, 2} = 4.302653, half = 4.302653 * 0.01 / sqrt(3)
    iv = paired_interval([0.10, 0.20, 0.30], [0.11, 0.22, 0.33])
    assert iv["n"] == 3 and iv["mean"] == pytest.approx(0.02) and iv["sd"] == pytest.approx(0.01)
    assert iv["low"] == pytest.approx(0.02 - 0.0248413771, abs=1e-8)
    assert iv["high"] == pytest.approx(0.02 + 0.0248413771, abs=1e-8)
    assert verdict(iv) == "n.s."
    assert verdict(paired_interval([0.1, 0.1], [0.2, 0.21])) == "helps"
    assert verdict(paired_interval([0.2, 0.21, 0.2], [0.1, 0.1, 0.12])) == "hurts"
    with pytest.raises(ValueError):
        paired_interval([0.1], [0.2])


def test_the_grid_is_one_knob_at_a_time_and_validated():
    params = load_params(REPO_PARAMS)
    points = params.sweep.points(params.synthetic)
    base = points[0][2]
    assert points[0][:2] == (None, None)
    for knob, value, cfg in points[1:]:
        changed = {k for k in SyntheticConfig.model_fields if getattr(cfg, k) != getattr(base, k)}
        assert changed == {knob} and getattr(cfg, knob) == value
    assert len(points) == 1 + sum(len(v) for v in params.sweep.grids[params.sweep.grid].vary.values())
    assert len(params.sweep.seeds) >= 3 and params.seed not in params.sweep.seeds
    with pytest.raises(ParamsError, match="seed that tunes"):
        load_params(REPO_PARAMS, [f"sweep.seeds=[{params.seed}, 1]"])
    with pytest.raises(ParamsError, match="not `synthetic:` keys"):
        load_params(REPO_PARAMS, ["sweep.grids.small.vary={clutter: [1]}"])
    with pytest.raises(ParamsError, match="greater than or equal to 0"):
        load_params(REPO_PARAMS, ["sweep.grids.small.vary={nuisance_scale: [-1]}"])
    with pytest.raises(ParamsError, match="not multimodal"):
        load_params(REPO_PARAMS, ["sweep.backbones=[bprmf]"])


def test_tuned_values_only_with_equal_budgets_for_both_variants(tmp_path):
    params = load_params(REPO_PARAMS)
    by_variant, budget = variant_params(params, "vbpr", tmp_path)
    assert budget["note"].startswith("untuned (equal budget 0)") and by_variant["base"] is params
    for variant, lr in (("base", 0.02), ("mrdib", 0.005)):
        values = {"train.lr": lr} | ({"mrdib.alpha1": 0.03} if variant == "mrdib" else {})
        (tmp_path / f"vbpr-{variant}.json").write_text(json.dumps(
            {"source": "optuna", "variant": variant, "trials": 4, "values": values}))
    by_variant, budget = variant_params(params, "vbpr", tmp_path)
    assert budget["trials"] == {"base": 4, "mrdib": 4} and "tuned, 4 trials" in budget["note"]
    assert by_variant["base"].for_dataset("synthetic", "vbpr").train.lr == 0.02
    assert by_variant["mrdib"].mrdib.alpha1 == 0.03
    (tmp_path / "vbpr-base.json").write_text(json.dumps(
        {"source": "optuna", "variant": "base", "trials": 2, "values": {}}))
    with pytest.raises(SystemExit, match="unequal tuning budgets"):
        variant_params(params, "vbpr", tmp_path)
