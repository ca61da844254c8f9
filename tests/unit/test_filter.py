"""tasks.filter on hand-made 2014 review files."""
import gzip
import json

import numpy as np
import pandas as pd
import pytest

from config.sections import FilterConfig
from models.data import DataError, load_dataset
from pipeline.split import split_sizes
from tasks.filter import filter_reviews, k_core, read_reviews

CORE_USERS = [f"U{u}" for u in range(6)]
CORE_ITEMS = [f"I{i}" for i in range(6)]


def review(user, item, time=1_400_000_000, rating=5.0):
    return {"reviewerID": user, "asin": item, "overall": rating, "unixReviewTime": time, "reviewText": "ok"}


def cascade_reviews() -> list[dict]:
    """A 6 x 6 dense core, plus a fringe that only repeated passes remove.

    Z has 4 reviews (out in pass 1); then item X has 4 (out in pass 2); then W0..W3, who had X plus
    4 core items, have 4 (out in pass 3); pass 4 changes nothing. One pass would keep X and the W's.
    """
    rows = [review(u, i, time=1_400_000_000 + k) for k, (u, i) in
            enumerate((u, i) for u in CORE_USERS for i in CORE_ITEMS)]
    rows += [review(f"W{w}", item) for w in range(4) for item in ["X", *CORE_ITEMS[:4]]]
    rows += [review("Z", item) for item in ["X", *CORE_ITEMS[:3]]]
    rows.append(review("U0", "I0", time=1_500_000_000, rating=1.0))  # a repeated pair: the earliest is kept
    return rows


def write_reviews(folder, rows, category="Toy", raw_lines=()):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"reviews_{category}_5.json.gz"
    with gzip.open(path, "wt") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
        for line in raw_lines:
            handle.write(line + "\n")
    return path


def test_iterative_k_core_needs_several_passes(tmp_path):
    frame = read_reviews(write_reviews(tmp_path, cascade_reviews()[:-1]))
    kept, passes = k_core(frame, 5)
    assert passes == 4
    assert set(kept["user"]) == set(CORE_USERS) and set(kept["item"]) == set(CORE_ITEMS) and len(kept) == 36
    counts = {c: frame[c].map(frame[c].value_counts()) for c in ("user", "item")}
    one_pass = frame[(counts["user"] >= 5) & (counts["item"] >= 5)]
    assert "X" in set(one_pass["item"])  # what a single pass would have kept


def test_stage_writes_contiguous_ids_counts_and_a_loadable_split(tmp_path):
    write_reviews(tmp_path / "raw", cascade_reviews())
    out = tmp_path / "toy"
    out.mkdir()
    np.save(out / "text_feat.npy", np.ones((6, 3), np.float32))  # another stage's output
    stats = filter_reviews(tmp_path / "raw", out, FilterConfig(), seed=7)
    assert stats == {"users": 6, "items": 6, "interactions": 36, "train": 24, "valid": 6, "test": 6,
                     "reviews_read": 61, "duplicates_dropped": 1, "k_core": 5, "k_core_passes": 4}
    inter = pd.read_csv(out / "toy.inter", sep="\t")
    assert list(inter.columns) == ["userID", "itemID", "x_label", "rating", "timestamp"]
    assert sorted(inter["userID"].unique()) == list(range(6)) and sorted(inter["itemID"].unique()) == list(range(6))
    users = pd.read_csv(out / "u_id_mapping.csv", sep="\t")
    items = pd.read_csv(out / "i_id_mapping.csv", sep="\t")
    assert list(users.columns) == ["user_id", "userID"] and users["user_id"].tolist() == CORE_USERS
    assert list(items.columns) == ["asin", "itemID"] and items["asin"].tolist() == CORE_ITEMS
    assert inter.loc[(inter.userID == 0) & (inter.itemID == 0), "rating"].item() == 5.0  # earliest review
    data = load_dataset(out)
    assert data.features["text"].shape == (6, 3)  # the other stage's file survived the rename
    per_user = np.bincount(data.valid[:, 0], minlength=6), np.bincount(data.test[:, 0], minlength=6)
    assert all((per_user[0][u], per_user[1][u]) == split_sizes(6) for u in range(6))
    assert not (tmp_path / "toy.filter-tmp").exists()


def test_split_is_seeded(tmp_path):
    write_reviews(tmp_path / "raw", cascade_reviews())
    labels = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        filter_reviews(tmp_path / "raw", tmp_path / name, seed=seed)
        labels[name] = pd.read_csv(tmp_path / name / f"{name}.inter", sep="\t")["x_label"].tolist()
    assert labels["a"] == labels["b"] != labels["c"]


def test_corrupt_gzip_names_the_file(tmp_path):
    (tmp_path / "reviews_Bad_5.json.gz").write_bytes(b"this is not gzip at all")
    with pytest.raises(DataError, match=r"reviews_Bad_5\.json\.gz: not a readable gzip file"):
        filter_reviews(tmp_path, tmp_path / "out")
    good = gzip.compress(("\n".join(json.dumps(r) for r in cascade_reviews()) + "\n").encode())
    (tmp_path / "reviews_Bad_5.json.gz").write_bytes(good[: len(good) // 2])  # truncated download
    with pytest.raises(DataError, match="corrupt or truncated"):
        filter_reviews(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_non_json_line_names_file_and_line(tmp_path):
    write_reviews(tmp_path, cascade_reviews()[:2], raw_lines=["{'reviewerID': 'python literal, not JSON'}"])
    with pytest.raises(DataError, match=r"reviews_Toy_5\.json\.gz: line 3: not a JSON object"):
        filter_reviews(tmp_path, tmp_path / "out")
    write_reviews(tmp_path, [{"reviewerID": "U0", "asin": "I0"}])
    with pytest.raises(DataError, match=r"line 1: missing field\(s\) \['overall', 'unixReviewTime'\]"):
        filter_reviews(tmp_path, tmp_path / "out")


def test_dataset_emptied_by_the_filter(tmp_path):
    write_reviews(tmp_path, [review(f"U{u}", f"I{i}") for u in range(3) for i in range(4)])
    with pytest.raises(DataError, match=r"the 5-core filter removed every interaction \(12 reviews of 3 users"):
        filter_reviews(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_reviews_file(tmp_path):
    with pytest.raises(DataError, match=r"found none \(run tasks.download"):
        filter_reviews(tmp_path, tmp_path / "out")
