"""The real MiniLM text encoder of tasks.features: offline, deterministic, and (where ../shared/data holds
Sports) row i of the features stage's text_feat.npy = MiniLM(keywords of item i)."""
import csv
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from config.params import load_params
from tasks.features import build_features, encode_texts

REPO = Path(__file__).resolve().parents[2]


def test_minilm_encodes_offline_deterministically():  # ~12 s, mostly importing sentence-transformers
    texts = ["baby bottle for newborns", "infant feeding bottle", "mountain bike tire"]
    start = time.perf_counter()
    first = encode_texts(texts, batch_size=2, device="cpu", progress=False)
    again = encode_texts(texts[::-1], batch_size=3, device="cpu", progress=False)[::-1]
    assert first.shape == (3, 384) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(first, again, atol=1e-5)  # independent of order and batching
    similarity = first @ first.T
    assert similarity[0, 1] > similarity[0, 2] + 0.2  # the two bottles are closer than the tire
    print(f"MiniLM load + encode x2: {time.perf_counter() - start:.1f} s")


def test_sports_text_rows_are_minilm_of_the_keywords(tmp_path, shared_data):  # MiniLM: ~15 s to load and encode
    """Row i of the features stage's text_feat.npy = MiniLM(keywords of the item whose itemID is i): a few
    items, in a shuffled itemID order, through the stage with params.yaml's own `sports` config."""
    sports = shared_data / "sports"
    if not (sports / "item_keywords.tsv").is_file():
        pytest.skip(f"{sports} not present")
    cfg = load_params(REPO / "params.yaml").datasets["sports"].features
    assert cfg.text == "keywords" and (REPO / cfg.keywords_file).resolve() == (sports / "item_keywords.tsv").resolve()
    mapping = pd.read_csv(sports / "i_id_mapping.csv", sep="\t", dtype=str)
    with open(sports / "item_keywords.tsv", newline="") as handle:  # read independently of tasks.features
        keywords = {row["asin"]: row for row in csv.DictReader(handle, delimiter="\t")}
    assert len(keywords) == len(mapping) == 18357
    assert all(keywords[a]["itemID"] == i for a, i in zip(mapping["asin"], mapping["itemID"]))  # same itemIDs
    chosen = mapping.iloc[[18356, 0, 9000, 1]]  # a new dataset with these items as itemIDs 0..3
    folder = tmp_path / "few"
    folder.mkdir()
    (folder / "i_id_mapping.csv").write_text("asin\titemID\n" + "".join(f"{a}\t{i}\n"
                                                                       for i, a in enumerate(chosen["asin"])))
    build_features(cfg.model_copy(update={"keywords_file": str(sports / "item_keywords.tsv"), "device": "cpu"}),
                   tmp_path / "raw", folder, progress=False)
    rows = np.load(folder / "text_feat.npy")
    direct = encode_texts([keywords[a]["keywords"] for a in chosen["asin"]], device="cpu", progress=False)
    np.testing.assert_allclose(rows, direct, atol=1e-5)
    assert np.abs(rows @ direct.T - np.eye(4)).max() > 0.05  # the rows differ: a permutation would be caught
    prepared_rows = REPO / "data" / "prepared" / "sports" / "text_feat.npy"
    if prepared_rows.is_file():  # a pipeline run's own file: the same rows at the original itemIDs
        full = np.load(prepared_rows, mmap_mode="r")
        np.testing.assert_allclose(full[chosen["itemID"].astype(int).to_numpy()], direct, atol=1e-5)
