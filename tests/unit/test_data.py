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


# -- issue 15: inputs that used to fail without naming the file, or were read silently -------------
H = "userID\titemID\tx_label\n"


def test_an_empty_inter_file_names_the_file_and_the_header_expected(tmp_path):
    (tmp_path / "toy.inter").write_text("")
    with pytest.raises(DataError, match=r"toy\.inter: empty file; expected a tab-separated header line "
                                        r"userID itemID x_label"):
        load_dataset(tmp_path)


def test_a_header_only_inter_file_names_the_file(tmp_path):
    (tmp_path / "toy.inter").write_text(H)
    with pytest.raises(DataError, match=r"toy\.inter: header only, no interactions; expected one row per interaction"):
        load_dataset(tmp_path)


@pytest.mark.parametrize("value", ["999999999999", "2147483648", "9" * 30])
def test_an_id_too_large_is_refused_before_anything_of_its_size_is_allocated(tmp_path, good_rows, write_inter,
                                                                              value):
    path = write_inter(tmp_path / "bad", good_rows + [(2, value, 1)])
    with pytest.raises(DataError, match=rf"line 10 \(data row 8\), column 'itemID': expected an id below 2\^31 = "
                                        rf"2147483648 .*got '{value}'") as err:
        load_dataset(tmp_path / "bad")
    assert str(path) in str(err.value)


def test_an_id_gap_of_two_billion_is_found_without_an_array_of_that_size(tmp_path, good_rows, write_inter):
    import tracemalloc

    write_inter(tmp_path / "bad", good_rows + [(2000000000, 0, 0)])
    tracemalloc.start()  # numpy reports its allocations to tracemalloc
    try:
        with pytest.raises(DataError, match=r"column 'userID': ids must be contiguous 0\.\.2000000000 \(the "
                                            r"largest, 2000000000, is on line 10\), but 1999999997 are missing, "
                                            r"e\.g\. \[3, 4, 5, 6, 7, 8, 9, 10, 11, 12\]"):
            load_dataset(tmp_path / "bad")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20  # the old check made a 2 GB array of flags


@pytest.mark.parametrize("text,column", [("1e2", "itemID"), ("1.0", "itemID"), ("+1", "userID"), (" 1", "userID"),
                                         ("1 ", "itemID"), ("0x1", "itemID"), ("", "x_label"), ("0.0", "x_label")])
def test_ids_and_labels_must_be_plain_digits(tmp_path, good_rows, write_inter, text, column):
    """`1e2` was read as 100 without a word; now any spelling but plain digits is refused, naming it."""
    row = {"userID": 1, "itemID": 1, "x_label": 0} | {column: text}
    path = write_inter(tmp_path / "bad", good_rows[:3] + [tuple(row.values())] + good_rows[4:])
    with pytest.raises(DataError, match=rf"line 5 \(data row 3\), column '{column}': expected a plain-digit \(0-9\) "
                                        rf"non-negative integer, got {text!r}".replace("+", r"\+")) as err:
        load_dataset(tmp_path / "bad")
    assert str(path) in str(err.value)


def test_leading_zeros_are_plain_digits(tmp_path, good_rows, write_inter):
    write_inter(tmp_path / "ok", [(f"0{u}", i, x) for u, i, x in good_rows])
    assert load_dataset(tmp_path / "ok").train.tolist() == [[0, 0], [1, 1], [1, 2], [2, 2]]


def _npy_with_header(path, shape, descr="<f4", data=b"", version=(1, 0)):
    write = np.lib.format.write_array_header_1_0 if version == (1, 0) else np.lib.format.write_array_header_2_0
    with open(path, "wb") as handle:
        write(handle, {"descr": descr, "fortran_order": False, "shape": shape})
        handle.write(data)


@pytest.mark.parametrize("version", [(1, 0), (2, 0)])
def test_an_npy_header_claiming_200_gb_is_refused_from_the_header(toy_folder, version):
    _npy_with_header(toy_folder / "image_feat.npy", (3, 50_000_000_000 // 3), data=b"\0" * 64, version=version)
    with pytest.raises(DataError, match=r"image_feat\.npy: the header claims shape \[3, 16666666666\] of float32 = "
                                        r"199999999992 bytes, but the file holds 64 bytes after its header"):
        load_dataset(toy_folder)


def test_an_npy_header_of_another_item_count_is_refused_before_loading(toy_folder):
    _npy_with_header(toy_folder / "text_feat.npy", (4_000_000_000, 8))  # no data at all: never read
    with pytest.raises(DataError, match=r"text_feat\.npy: expected shape \[3 items, d\], got \[4000000000, 8\]"):
        load_dataset(toy_folder)


@pytest.mark.parametrize("content", [b"", b"\x93NUMPY", b"not an array at all"])
def test_a_file_that_is_no_npy_names_the_file(toy_folder, content):
    (toy_folder / "image_feat.npy").write_bytes(content)
    with pytest.raises(DataError, match=r"image_feat\.npy: not a readable \.npy array"):
        load_dataset(toy_folder)


def test_an_npy_file_holding_exactly_its_header_loads(toy_folder):
    _npy_with_header(toy_folder / "image_feat.npy", (3, 2), data=np.arange(6, dtype="<f4").tobytes(), version=(2, 0))
    assert load_dataset(toy_folder).features["image"].tolist() == [[0, 1], [2, 3], [4, 5]]
