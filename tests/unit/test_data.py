"""The dataset loader: real files load unchanged; bad input is refused with a precise error."""
import hashlib

import numpy as np
import pytest

from models.data import DataError, load_dataset

REAL = {  # users, items, train, valid, test (../shared/data/amazon/README.md)
    "baby": (19445, 7050, 118551, 20559, 21682),
    "sports": (35598, 18357, 218409, 37899, 40029),
    "clothing": (39387, 23033, 197338, 40150, 41189),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_interactions_load_unchanged(name, shared_data):
    folder = shared_data / name
    if not folder.exists():
        pytest.skip(f"{folder} not present")
    before = hashlib.sha256((folder / f"{name}.inter").read_bytes()).hexdigest()
    data = load_dataset(folder)
    assert (data.n_users, data.n_items, len(data.train), len(data.valid), len(data.test)) == REAL[name]
    assert data.features == {} and data.standin_features == []
    assert hashlib.sha256((folder / f"{name}.inter").read_bytes()).hexdigest() == before


def test_good_folder_with_extra_columns_and_any_float_dtype(tmp_path, good_rows, write_inter):
    rows = [r + (5, 1700000000) for r in good_rows]
    folder = tmp_path / "d"
    write_inter(folder, rows, header="userID\titemID\tx_label\trating\ttimestamp", name="whatever_name")
    np.save(folder / "image_feat.npy", np.ones((3, 4), dtype=np.float64))
    data = load_dataset(folder)
    assert data.name == "whatever_name" and data.n_users == 3 and data.n_items == 3
    assert data.features["image"].dtype == np.float32 and "text" not in data.features
    assert data.train.tolist() == [[0, 0], [1, 1], [1, 2], [2, 2]]


BAD_INTERACTIONS = [  # (case, header, the rows made from the good ones, message)
    ("missing column", "userID\titemID", lambda good: good, r"missing column\(s\) \['x_label'\]"),
    ("non-integer id", None, lambda good: good[:3] + [(1, "x1", 0)] + good[4:],
     r"line 5 .*column 'itemID'.*non-negative integer, got 'x1'"),
    ("fractional id", None, lambda good: good[:3] + [(1.5, 1, 0)] + good[4:], r"line 5 .*'userID'.*got '1.5'"),
    ("negative id", None, lambda good: good + [(-1, 0, 0)], r"line 10 .*'userID'.*got '-1'"),
    ("id gap", None, lambda good: [(u if u < 2 else 3, i, x) for u, i, x in good], r"'userID'.*contiguous.*\[2\]"),
    ("bad x_label", None, lambda good: good[:2] + [(0, 2, 3)] + good[3:], r"line 4 .*'x_label'.*got '3'"),
    ("duplicate pair", None, lambda good: good + [(2, 2, 1)], r"line 10 .*each \(user, item\) pair once, got '2,2'"),
    ("user without train", None, lambda good: [r for r in good if r != (2, 2, 0)] + [(2, 1, 2)],
     r"user\(s\) \[2\] have no train row"),
]


@pytest.mark.parametrize("case,header,rows,message", BAD_INTERACTIONS, ids=[c[0] for c in BAD_INTERACTIONS])
def test_bad_interactions_are_refused_with_file_and_row(tmp_path, good_rows, write_inter, case, header, rows,
                                                        message):
    kwargs = {"header": header} if header else {}
    rows = rows(good_rows)
    if header:
        rows = [r[:2] for r in rows]
    path = write_inter(tmp_path / "bad", rows, **kwargs)
    with pytest.raises(DataError, match=message) as err:
        load_dataset(tmp_path / "bad")
    assert str(path) in str(err.value)


@pytest.mark.parametrize("array,message", [
    (np.ones((4, 5), dtype=np.float32), r"expected shape \[3 items, d\], got \[4, 5\]"),
    (np.array([[1.0, 2.0], [np.nan, 0.0], [1.0, 1.0]]),
     r"row 1 \(itemID 1\), column 0: expected a finite value, got nan"),
    (np.array([[1.0, np.inf], [0.0, 0.0], [1.0, 1.0]]), r"row 0 .*column 1.*got inf"),
    (np.ones((3, 2), dtype=np.int64), r"expected a float array"),
])
def test_bad_features_are_refused(toy_folder, array, message):
    np.save(toy_folder / "text_feat.npy", array)
    with pytest.raises(DataError, match=message) as err:
        load_dataset(toy_folder)
    assert "text_feat.npy" in str(err.value)


def test_standin_features_only_when_asked(toy_folder):
    assert load_dataset(toy_folder).features == {}
    data = load_dataset(toy_folder, standin=True, seed=5)
    assert data.standin_features == ["image", "text"]
    image, text = data.features["image"], data.features["text"]
    assert image.shape == (3, 4096) and (image >= 0).all() and image.dtype == np.float32
    assert text.shape == (3, 384) and np.allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)
    again = load_dataset(toy_folder, standin=True, seed=5)
    assert np.array_equal(again.features["text"], text)
    assert "STAND-IN" in data.summary()


def test_existing_feature_file_is_never_replaced_by_standin(toy_folder):
    np.save(toy_folder / "image_feat.npy", np.full((3, 2), 0.5))
    data = load_dataset(toy_folder, standin=True)
    assert data.standin_features == ["text"] and data.features["image"].shape == (3, 2)


def test_missing_folder_and_ambiguous_inter(tmp_path, toy_folder):
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    (toy_folder / "other.inter").write_text("userID\titemID\tx_label\n")
    with pytest.raises(DataError, match="exactly one"):
        load_dataset(toy_folder)


def test_standins_recorded_by_the_features_stage_stay_flagged(toy_folder):
    np.save(toy_folder / "image_feat.npy", np.ones((3, 2), dtype=np.float32))
    (toy_folder / "features.json").write_text('{"standin": ["image"]}')
    assert load_dataset(toy_folder).standin_features == ["image"]
    (toy_folder / "features.json").write_text('{"standin": ["sound"]}')
    with pytest.raises(DataError, match="features.json.*'standin'"):
        load_dataset(toy_folder)
