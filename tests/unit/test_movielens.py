"""MovieLens as a pipeline dataset: RecBole atomic files -> download -> filter (implicit, 5-core, ids, split)
-> features ("title (year): genres"); the GroupLens archive conversion; errors naming file, line, column.
Also the real data here (skipped where ../shared/data is absent): ML-100K counts. (Sports' text rows being
the MiniLM encoding of its item keywords, row i = item i: tests/integration/test_minilm.py.)"""
import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from config.sections import DownloadConfig, FeaturesConfig, FilterConfig
from models.data import DataError, load_dataset
from pipeline.movielens import grouplens_to_atomic, item_text, read_items, read_ratings
from pipeline.split import split_sizes
from tasks.download import DownloadError, download
from tasks.features import build_features
from tasks.filter import filter_ratings

INTER_HEADER = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
ITEM_HEADER = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"


def ratings_rows():
    """A 6 x 6 dense core (users 1..6, movies 10..15, ratings 1 to 5: all implicit positives), user 7 with 4
    ratings and movie 99 with 2 (both removed by the 5-core), user 8 with one rating of each core movie."""
    rows = [(u, 10 + i, 1 + (u + i) % 5, 880000000 + 10 * u + i) for u in range(1, 7) for i in range(6)]
    rows += [(7, 10 + i, 5, 880000100 + i) for i in range(4)]            # 4 ratings: out
    rows += [(1, 99, 4, 880000200), (2, 99, 2, 880000201)]              # movie 99: 2 ratings: out
    rows += [(8, 10 + i % 6, 3, 880000300 + i) for i in range(6)]       # user 8: 6 core ratings
    return rows


def write_atomic(folder, inter_rows=None, item_rows=None, inter_header=INTER_HEADER, item_header=ITEM_HEADER):
    folder.mkdir(parents=True, exist_ok=True)
    inter_rows = ratings_rows() if inter_rows is None else inter_rows
    item_rows = [(10, "Toy Story", "1995", "Animation Children's Comedy"), (11, "GoldenEye", "1995", "Action"),
                 (12, "Usual Suspects, The", "1995", "Crime Thriller"), (13, "Land Before Time III", "V", "Animation"),
                 (14, "Misérables, Les", "1995", "Drama Musical"), (15, "No Genre", "1990", ""),
                 (99, "Dropped", "1999", "Drama")] if item_rows is None else item_rows
    (folder / "ml-toy.inter").write_text(inter_header + "\n" + "".join("\t".join(map(str, r)) + "\n"
                                                                     for r in inter_rows))
    (folder / "ml-toy.item").write_text(item_header + "\n" + "".join("\t".join(map(str, r)) + "\n"
                                                                   for r in item_rows), encoding="utf-8")
    return folder


def prepared(tmp_path, seed=3):
    """download (local folder) -> filter -> features (fake encoder) of the hand-made files."""
    src = write_atomic(tmp_path / "src")
    raw = download("toy", DownloadConfig(source="movielens", path=str(src)), tmp_path / "raw")
    out = tmp_path / "prepared" / "toy"
    stats = filter_ratings(raw, out, FilterConfig(k_core=5), seed)
    return raw, out, stats


def test_every_rating_is_an_interaction_then_5_core_contiguous_ids_and_the_split(tmp_path):
    raw, out, stats = prepared(tmp_path)
    assert sorted(p.name for p in raw.iterdir()) == ["ml-toy.inter", "ml-toy.item"]
    # 36 core + 6 of user 8 (a repeated pair is not possible here: 8 rates 10..15 once each) = 42 kept
    assert (stats["users"], stats["items"], stats["interactions"]) == (7, 6, 42)
    assert stats["reviews_read"] == len(ratings_rows()) and stats["duplicates_dropped"] == 0
    inter = pd.read_csv(out / "toy.inter", sep="\t")
    assert list(inter.columns) == ["userID", "itemID", "x_label", "rating", "timestamp"]
    assert set(inter["rating"]) == {1.0, 2.0, 3.0, 4.0, 5.0}  # low ratings are positives too (implicit)
    assert sorted(inter["userID"].unique()) == list(range(7)) and sorted(inter["itemID"].unique()) == list(range(6))
    users = pd.read_csv(out / "u_id_mapping.csv", sep="\t", dtype=str)
    items = pd.read_csv(out / "i_id_mapping.csv", sep="\t", dtype=str)
    assert list(users.columns) == ["user_id", "userID"] and "7" not in set(users["user_id"])
    assert list(items.columns) == ["asin", "itemID"] and set(items["asin"]) == {str(i) for i in range(10, 16)}
    for _, rows in inter.groupby("userID"):
        n_valid, n_test = split_sizes(len(rows))
        assert (rows["x_label"] == 1).sum() == n_valid and (rows["x_label"] == 2).sum() == n_test
    data = load_dataset(out)  # the field's loader accepts it
    assert (data.n_users, data.n_items, len(data.train) + len(data.valid) + len(data.test)) == (7, 6, 42)
    again = tmp_path / "again"
    filter_ratings(raw, again / "toy", FilterConfig(k_core=5), 3)
    assert (again / "toy" / "toy.inter").read_text() == (out / "toy.inter").read_text()  # seeded


def test_features_encode_title_year_genres_with_standin_images(tmp_path, fake_encoder):
    raw, out, _ = prepared(tmp_path)
    seen = []
    record = build_features(FeaturesConfig(text="movielens", image="standin"), raw, out, seed=3, progress=False,
                            encoder=lambda texts, *rest: seen.extend(texts) or fake_encoder(texts, *rest))
    asins = pd.read_csv(out / "i_id_mapping.csv", sep="\t", dtype=str).sort_values("itemID")["asin"].tolist()
    expected = {"10": "Toy Story (1995): Animation, Children's, Comedy", "11": "GoldenEye (1995): Action",
                "12": "Usual Suspects, The (1995): Crime, Thriller", "13": "Land Before Time III: Animation",
                "14": "Misérables, Les (1995): Drama, Musical", "15": "No Genre (1990)"}
    assert seen == [expected[a] for a in asins]  # row i = itemID i
    assert record["standin"] == ["image"] and record["text"]["source"] == "movielens"
    assert json.loads((out / "features.json").read_text())["text"]["recipe"] == "title (year): genres"
    data = load_dataset(out)
    assert data.standin_features == ["image"] and data.features["text"].shape == (6, 384)
    np.testing.assert_array_equal(data.features["text"], fake_encoder(seen, 1, "cpu", False))


def test_item_text_rules():
    assert item_text("Heat", "1995", "Action Crime Thriller") == "Heat (1995): Action, Crime, Thriller"
    assert item_text(" Heat ", "unknown", "") == "Heat"


@pytest.mark.parametrize("header, rows, message", [
    ("user_id:token\titem_id:token\trating:float", [(1, 2, 3)], r"line 1 \(header\): no column 'timestamp:float'"),
    ("user_id:token\titem_id:float\trating:float\ttimestamp:float", [(1, 2, 3, 4)],
     r"line 1 \(header\), column 'item_id': expected type 'token'"),
    (INTER_HEADER, [(1, 2, 3, 4), (1, 3, "five", 5)], r"line 3 \(data row 1\), column 'rating': expected a number, "
                                                      r"got 'five'"),
    (INTER_HEADER, [(1, 2, 3, 4), (1, 3, 4, 5.5)], r"line 3 \(data row 1\), column 'timestamp': expected an integer"),
    (INTER_HEADER, [(1, 2, 3, 4), ("", 3, 4, 5)], r"line 3 \(data row 1\), column 'user_id': expected a non-empty"),
    (INTER_HEADER, [], r"no ratings"),
])
def test_bad_ratings_name_file_line_and_column(tmp_path, header, rows, message):
    write_atomic(tmp_path, rows, inter_header=header)
    with pytest.raises(DataError, match=message) as err:
        read_ratings(tmp_path / "ml-toy.inter")
    assert "ml-toy.inter" in str(err.value)


def test_bad_items_and_missing_files(tmp_path, fake_encoder):
    write_atomic(tmp_path / "dup", item_rows=[(10, "A", "1995", "Drama"), (10, "B", "1996", "Drama")])
    with pytest.raises(DataError, match=r"ml-toy.item: line 3 \(data row 1\), column 'item_id': expected each "
                                        r"item_id once, got '10'"):
        read_items(tmp_path / "dup" / "ml-toy.item")
    write_atomic(tmp_path / "hdr", item_header="item_id:token\tmovie_title:token_seq")
    with pytest.raises(DataError, match=r"ml-toy.item: line 1 \(header\): no column 'release_year:token'"):
        download("x", DownloadConfig(source="movielens", path=str(tmp_path / "hdr")), tmp_path / "raw")
    assert not (tmp_path / "raw" / "x").exists()  # refused before anything is copied
    raw, out, _ = prepared(tmp_path / "ok")
    (raw / "ml-toy.item").write_text(ITEM_HEADER + "\n10\tToy Story\t1995\tComedy\n")
    with pytest.raises(DataError, match=r"ml-toy.item: no row for 5 of the dataset's 6 items, e.g. item_id \['11'"):
        build_features(FeaturesConfig(text="movielens", image="standin"), raw, out, encoder=fake_encoder,
                       progress=False)
    (raw / "ml-toy.item").unlink()
    with pytest.raises(DataError, match=r"expected exactly one RecBole atomic file \*\.item .*found none"):
        build_features(FeaturesConfig(text="movielens", image="standin"), raw, out, encoder=fake_encoder,
                       progress=False)
    with pytest.raises(DataError, match=r"expected exactly one RecBole atomic file \*\.inter"):
        filter_ratings(tmp_path / "nothing-here", tmp_path / "o", FilterConfig(), 1)
    with pytest.raises(DataError, match=r"MovieLens folder does not exist, and no `urls.archive`"):
        download("y", DownloadConfig(source="movielens", path=str(tmp_path / "absent")), tmp_path / "raw")


def test_config_needs_a_folder_or_an_archive():
    with pytest.raises(ValidationError, match="needs `path`"):
        DownloadConfig(source="movielens")
    with pytest.raises(ValidationError, match="takes only 'archive'"):
        DownloadConfig(source="movielens", urls={"reviews": "http://x"})


def grouplens_zip(path):
    """A two-movie ml-100k.zip in GroupLens's own layout: u.data (tab) and u.item (latin-1, '|', 19 flags)."""
    flags = lambda *on: "|".join("1" if i in on else "0" for i in range(19))  # noqa: E731
    u_item = (f"1|Toy Story (1995)|01-Jan-1995||http://x|{flags(3, 4, 5)}\n"
              f"2|Misérables, Les (1995)|01-Jan-1995||http://y|{flags(8, 12)}\n"
              f"3|Land Before Time III: The Time of the Great Giving (1995) (V)|01-Jan-1997||http://z|{flags(3)}\n")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as handle:
        handle.writestr("ml-100k/u.data", "196\t1\t3\t881250949\n186\t2\t1\t891717742\n")
        handle.writestr("ml-100k/u.item", u_item.encode("latin-1"))
        handle.writestr("ml-100k/README", "GroupLens")
    path.write_bytes(buffer.getvalue())
    return path


def test_grouplens_archive_is_fetched_checked_and_converted(tmp_path):
    archive = grouplens_zip(tmp_path / "ml-100k.zip")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    cfg = DownloadConfig(source="movielens", path=str(tmp_path / "no-folder"), urls={"archive": archive.as_uri()},
                         md5={"ml-100k.zip": md5}, retries=0)
    raw = download("ml", cfg, tmp_path / "raw", progress=False)
    assert sorted(p.name for p in raw.iterdir()) == ["checksums.json", "ml-100k.inter", "ml-100k.item"]
    ratings = read_ratings(raw / "ml-100k.inter")
    assert ratings.values.tolist() == [["196", "1", 3.0, 881250949], ["186", "2", 1.0, 891717742]]
    items = read_items(raw / "ml-100k.item")
    assert items.values.tolist() == [["1", "Toy Story", "1995", "Animation Children's Comedy"],
                                     ["2", "Misérables, Les", "1995", "Drama Musical"],
                                     ["3", "Land Before Time III: The Time of the Great Giving (1995) (V)", "1997",
                                      "Animation"]]
    assert json.loads((raw / "checksums.json").read_text())["ml-100k.zip"]["sha256"] == \
        hashlib.sha256(archive.read_bytes()).hexdigest()
    bad = cfg.model_copy(update={"md5": {"ml-100k.zip": "0" * 32}})
    with pytest.raises(DownloadError, match=f"checksum mismatch: expected md5 {'0' * 32}, got {md5}"):
        download("bad", bad, tmp_path / "raw", progress=False)
    assert not (tmp_path / "raw" / "bad").exists()


def test_grouplens_files_that_are_not_the_layout(tmp_path):
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as handle:
        handle.writestr("ml-100k/u.data", "1\t2\t3\t4\n")
    with zipfile.ZipFile(tmp_path / "a.zip") as handle:
        handle.extractall(tmp_path / "x")
    with pytest.raises(DataError, match=r"expected exactly one u.item in the GroupLens archive, found none"):
        grouplens_to_atomic(tmp_path / "x", tmp_path / "out")
    (tmp_path / "x" / "ml-100k" / "u.item").write_text("1|Title (1995)|date||url|0|1\n")
    with pytest.raises(DataError, match=r"u.item: expected 24 '\|'-separated columns"):
        grouplens_to_atomic(tmp_path / "x", tmp_path / "out")


# -- the real data here -----------------------------------------------------------------------------------
def test_real_movielens_100k_counts(tmp_path, shared_data):
    movielens = shared_data.parent / "movielens-100k"
    if not movielens.is_dir():
        pytest.skip(f"{movielens} not present")
    raw = download("ml", DownloadConfig(source="movielens", path=str(movielens)), tmp_path / "raw")
    stats = filter_ratings(raw, tmp_path / "ml", FilterConfig(k_core=5), 2024)
    # every one of the 100,000 ratings is an interaction; the 5-core drops 333 movies rated < 5 times
    assert (stats["reviews_read"], stats["users"], stats["items"], stats["interactions"]) == (100000, 943, 1349, 99287)
    assert stats["train"] + stats["valid"] + stats["test"] == 99287


def test_relative_data_paths_are_the_repositorys_inside_a_temp_experiment(tmp_path, monkeypatch):
    from pipeline.io import local_path

    repo = tmp_path / "repo"
    temp = repo / ".dvc" / "tmp" / "exps" / "standalone" / "tmpab12"
    temp.mkdir(parents=True)
    monkeypatch.chdir(temp)
    assert local_path("../shared/data/x") == repo / "../shared/data/x"
    assert local_path("/abs/x") == Path("/abs/x")
    monkeypatch.chdir(repo)
    assert local_path("../shared/data/x") == Path("../shared/data/x")
