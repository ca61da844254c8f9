"""tasks.features: metadata literals, image .b records, keyword files (the real MiniLM encoder:
tests/integration/test_minilm.py)."""
import gzip
import json

import numpy as np
import pytest
from pydantic import ValidationError

from models.data import DataError, load_dataset
from tasks.features import (
    IMAGE_DIM,
    FeaturesConfig,
    build_features,
    item_text,
    keyword_texts,
    read_image_features,
    read_metadata,
)

ASINS = ["B000000001", "B000000002", "B000000003", "B000000004"]
META = {
    "B000000001": {"asin": "B000000001", "title": "Soft Bottle", "brand": "Acme", "price": 9.99,
                   "categories": [["Baby", "Feeding", "Bottles"], ["Baby", "Gifts"]],
                   "description": "A bottle.\nDishwasher safe.", "related": {"also_bought": ["B000000002"]}},
    "B000000002": {"asin": "B000000002", "title": "Crib Sheet", "categories": [["Baby", "Nursery"]]},
    "B000000003": {"asin": "B000000003", "description": "Only a description, with 'quotes'"},
}


def write_meta(path, lines):
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in lines))
    return path


def write_images(path, records):
    """McAuley's layout: per record 10 ASCII bytes of asin, then 4096 little-endian float32."""
    with open(path, "wb") as handle:
        for asin, vector in records:
            handle.write(asin.encode("ascii") + np.asarray(vector, dtype="<f4").tobytes())
    return path


@pytest.fixture
def make_dataset(write_inter):
    def make(folder, asins=ASINS):
        """A tiny dataset folder: i_id_mapping.csv + a .inter using every item."""
        rows = [(0, i, 0) for i in range(len(asins))] + [(1, 0, 1), (1, 1, 0), (1, 2, 2)]
        write_inter(folder, rows, name=folder.name)
        (folder / "i_id_mapping.csv").write_text("asin\titemID\n" + "".join(f"{a}\t{i}\n"
                                                                           for i, a in enumerate(asins)))
        return folder

    return make


def test_metadata_literals_are_parsed_and_composed(tmp_path):
    other = {"asin": "B999999999", "title": "another category's item"}
    path = write_meta(tmp_path / "meta_Toy.json.gz", [repr(other)] + [repr(META[a]) for a in ASINS[:3]])
    records = read_metadata(path, set(ASINS))
    assert set(records) == set(ASINS[:3]) and records["B000000001"]["price"] == 9.99
    assert item_text(records["B000000001"]) == "Soft Bottle Acme Baby Feeding Bottles A bottle. Dishwasher safe."
    assert item_text(records["B000000002"]) == "Crib Sheet Baby Nursery"
    assert item_text(records["B000000003"]) == "Only a description, with 'quotes'"
    assert item_text({}) == ""


@pytest.mark.parametrize("bad", ["{'asin': 'B000000001', 'title': 'unclosed'",
                                 "__import__('os').system('echo never run')"])
def test_a_line_that_is_not_a_literal_names_file_and_line(tmp_path, bad):
    path = write_meta(tmp_path / "meta_Toy.json.gz", [repr(META["B000000002"]), bad])
    with pytest.raises(DataError, match=r"meta_Toy\.json\.gz: line 2: not a Python literal"):
        read_metadata(path, set(ASINS))
    (tmp_path / "meta_Bad.json.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match=r"meta_Bad\.json\.gz: not a readable gzip file"):
        read_metadata(tmp_path / "meta_Bad.json.gz", set(ASINS))


def test_image_records_in_chunks_with_mean_for_missing_items(tmp_path, make_dataset):
    rng = np.random.default_rng(0)
    vectors = {a: rng.random(IMAGE_DIM, dtype=np.float32) for a in ["B000000003", "XXXXXXXXXX", "B000000001"]}
    path = write_images(tmp_path / "image_features_Toy.b", list(vectors.items()))
    matrix, found = read_image_features(path, ASINS, chunk=2, progress=False)  # chunk < records: two reads
    assert found.tolist() == [True, False, True, False]
    np.testing.assert_array_equal(matrix[0], vectors["B000000001"])
    np.testing.assert_array_equal(matrix[2], vectors["B000000003"])
    make_dataset(tmp_path / "toy")
    build_features(FeaturesConfig(text="standin"), tmp_path, tmp_path / "toy", progress=False)
    image = np.load(tmp_path / "toy" / "image_feat.npy")
    mean = (vectors["B000000001"] + vectors["B000000003"]) / 2
    np.testing.assert_allclose(image[[1, 3]], np.stack([mean, mean]), rtol=1e-6)
    np.testing.assert_array_equal(image[0], vectors["B000000001"])


def test_truncated_image_file_names_the_byte_offset(tmp_path):
    path = write_images(tmp_path / "image_features_Toy.b", [("B000000001", np.ones(IMAGE_DIM))] * 2)
    with open(path, "ab") as handle:
        handle.write(b"B000000003" + b"\0" * 100)  # a third record cut short
    with pytest.raises(DataError, match=r"image_features_Toy\.b: truncated: the record at byte offset 32788 "
                                        r"has 110 of 16394 bytes"):
        read_image_features(path, ASINS, progress=False)


def test_keyword_file_path_and_features_json(tmp_path, make_dataset, fake_encoder):
    keywords = tmp_path / "item_keywords.tsv"
    keywords.write_text("itemID\tasin\tkeywords\n" + "".join(f"{i}\t{a}\tword{i} thing\n"
                                                               for i, a in enumerate(reversed(ASINS))))
    assert keyword_texts(keywords, ASINS) == ["word3 thing", "word2 thing", "word1 thing", "word0 thing"]
    with pytest.raises(DataError, match=r"no keywords for 1 of 5 items, e.g. \['B000000009'\]"):
        keyword_texts(keywords, ASINS + ["B000000009"])
    folder = make_dataset(tmp_path / "toy")
    cfg = FeaturesConfig(text="keywords", keywords_file=str(keywords), image="standin")
    record = build_features(cfg, tmp_path / "raw", folder, seed=3, encoder=fake_encoder, progress=False)
    assert record["standin"] == ["image"] and record["text"]["source"] == "keywords"
    assert json.loads((folder / "features.json").read_text()) == record
    data = load_dataset(folder)
    assert data.features["text"].shape == (4, 384) and data.features["image"].shape == (4, IMAGE_DIM)
    np.testing.assert_array_equal(data.features["text"][0], fake_encoder(["word3 thing"], 1, "cpu", False)[0])
    with pytest.raises(ValidationError, match="keywords_file"):
        FeaturesConfig(text="keywords")


def test_metadata_and_images_end_to_end_without_standins(tmp_path, make_dataset, fake_encoder):
    write_meta(tmp_path / "meta_Toy.json.gz", [repr(m) for m in META.values()])
    write_images(tmp_path / "image_features_Toy.b",
                 [(a, np.full(IMAGE_DIM, i, np.float32)) for i, a in enumerate(ASINS)])
    folder = make_dataset(tmp_path / "toy")
    seen = []
    record = build_features(FeaturesConfig(), tmp_path, folder, progress=False,
                            encoder=lambda texts, *rest: seen.extend(texts) or fake_encoder(texts, *rest))
    assert record["standin"] == [] and record["text"]["items_without_metadata"] == 1
    assert record["image"]["items_without_image"] == 0
    assert seen[0].startswith("Soft Bottle Acme Baby Feeding Bottles") and seen[3] == ""
    assert sorted(p.name for p in folder.iterdir()) == ["features.json", "i_id_mapping.csv", "image_feat.npy",
                                                       "text_feat.npy", "toy.inter"]


def test_missing_raw_files_say_how_to_get_them(tmp_path, make_dataset, fake_encoder):
    folder = make_dataset(tmp_path / "toy")
    with pytest.raises(DataError, match=r"meta_\*\.json\.gz for the text features, found none.*text: standin"):
        build_features(FeaturesConfig(), tmp_path / "raw", folder, encoder=fake_encoder, progress=False)
    with pytest.raises(DataError, match=r"image_features_\*\.b for the image features"):
        build_features(FeaturesConfig(text="standin"), tmp_path / "raw", folder, progress=False)
    assert not (folder / "text_feat.npy").exists()

