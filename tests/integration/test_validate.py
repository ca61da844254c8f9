"""The validate stage: real Great Expectations suites on a tiny prepared dataset, good and broken."""
import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from config.params import ParamsError, load_params
from config.sections import ValidateConfig
from tasks.validate import format_failures, main, validate_dataset, write_report

REPO = Path(__file__).resolve().parents[2]

TINY = ValidateConfig(text_dim=32, image_dim=48, user_k_core=5, item_k_core=1)  # tiny_synthetic's layout


@pytest.fixture(scope="session")
def prepared(tiny_synthetic, tmp_path_factory):
    """tiny_synthetic through the real filter and features stages: data/prepared/tiny."""
    from tasks.features import copy_features
    from tasks.filter import copy_split

    out = tmp_path_factory.mktemp("prepared") / "tiny"
    copy_split(tiny_synthetic, out)
    copy_features(tiny_synthetic, out)
    return out


@pytest.fixture
def tiny(prepared, tmp_path):
    """A private copy to break."""
    return Path(shutil.copytree(prepared, tmp_path / "tiny"))


def read_inter(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "tiny.inter", sep="\t")


def write_inter(folder: Path, frame: pd.DataFrame) -> None:
    frame.to_csv(folder / "tiny.inter", sep="\t", index=False)


def failures(report: dict, expectation: str, file: str) -> list[dict]:
    return [r for r in report["expectations"]
            if not r["success"] and r["expectation"] == expectation and Path(r["file"]).name == file]


def check_fails(folder: Path, out: Path, expectation: str, file: str, cfg: ValidateConfig = TINY) -> dict:
    """Validate (no data docs: speed); the failure names the expectation and leaves no validation.json."""
    write_report({"success": True, "stale": True}, out)  # a stale success from an earlier run
    report = validate_dataset(folder, "tiny", cfg)
    written = write_report(report, out)
    assert not report["success"]
    assert written.name == "failures.json" and not (out / "validation.json").exists()
    found = failures(report, expectation, file)
    assert found, format_failures(report)
    assert expectation in format_failures(report) and file in format_failures(report)
    return found[0]


def test_good_dataset_passes_and_writes_summary_and_data_docs(prepared, tmp_path):
    report = validate_dataset(prepared, "tiny", TINY, docs=tmp_path / "docs")
    written = write_report(report, tmp_path / "out")
    assert report["success"], format_failures(report)
    assert written == tmp_path / "out" / "validation.json" and not (tmp_path / "out" / "failures.json").exists()
    summary = json.loads(written.read_text())
    assert summary["failed"] == 0 and summary["evaluated"] == len(summary["expectations"]) > 25
    assert summary["counts"]["users"] == 120 and summary["counts"]["interactions"] == len(read_inter(prepared))
    assert summary["standin_features"] == []
    names = {r["expectation"] for r in summary["expectations"]}
    assert {"expect_compound_columns_to_be_unique", "expect_table_row_count_to_equal",
            "expect_column_values_to_be_in_set", "expect_column_values_to_be_between"} <= names
    assert all("description" in r and "success" in r for r in summary["expectations"])
    assert report["data_docs"] == str(tmp_path / "docs" / "index.html")
    suites = docs_suites(tmp_path / "docs" / "index.html")
    assert sum(n for n, _, _ in suites.values()) == summary["evaluated"] and all(f == 0 for _, _, f in suites.values())


class SuiteRows(HTMLParser):
    """The data docs' suites table: suite -> (expectations, passed, failed), from its rows' data- attributes."""

    def __init__(self):
        super().__init__()
        self.suites = {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and "data-suite" in attrs:
            self.suites[attrs["data-suite"]] = tuple(int(attrs[f"data-{k}"]) for k in ("evaluated", "passed", "failed"))


def docs_suites(index: Path) -> dict[str, tuple[int, int, int]]:
    parser = SuiteRows()
    parser.feed(index.read_text())
    return parser.suites


# a stylesheet, script, font or image fetched from another host: <link href=https://..>, <script src=//..>,
# @import or url(https://..) in CSS
REMOTE = re.compile(r"""(?:\b(?:src|href)\s*=\s*["']?|@import\s*["']?|url\(\s*["']?)\s*(?:https?:)?//""", re.I)


def assert_offline(docs: Path) -> None:
    """Nothing in the docs folder loads a stylesheet or script over the network (no CDN), nor runs a script."""
    files = [path for path in docs.rglob("*") if path.is_file()]
    assert files
    for path in files:
        text = path.read_text(errors="replace")
        assert not REMOTE.search(text), f"{path}: {REMOTE.search(text).group(0)}"
        assert "<script" not in text.lower(), path
        assert "http://" not in text and "https://" not in text, path


def visible_text(index: Path) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", index.read_text()).split())


def test_data_docs_list_the_results_and_render_offline(prepared, tiny, tmp_path):
    """The data docs of a good and of a broken dataset: every suite listed with its counts, failures with
    their offending rows, one self-contained page (no CDN), stale pages gone."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "stale.html").write_text('<link rel="stylesheet" href="https://cdn.example/x.css">')
    good = validate_dataset(prepared, "tiny", TINY, docs=docs)
    assert good["success"] and [p.name for p in docs.iterdir()] == ["index.html"]
    suites = docs_suites(docs / "index.html")
    assert list(suites) == ["tiny.inter.schema", "u_id_mapping.csv.schema", "i_id_mapping.csv.schema", "tiny.inter",
                            "u_id_mapping.csv", "i_id_mapping.csv", "users", "items", "image_feat.npy",
                            "text_feat.npy"]
    for suite in suites:
        records = [r for r in good["expectations"] if r["suite"] == suite]
        assert suites[suite] == (len(records), len(records), 0)
    text = visible_text(docs / "index.html")
    assert f"passed: {good['evaluated']} of {good['evaluated']} expectations passed, 0 failed, in 10 suites" in text
    assert "expect_compound_columns_to_be_unique" in text and "each (userID, itemID) pair once" in text
    assert_offline(docs)

    inter = read_inter(tiny)
    row = int(np.flatnonzero(inter["x_label"] == 0)[3])
    inter.loc[row, "x_label"] = 3
    write_inter(tiny, inter)
    image = np.load(tiny / "image_feat.npy")
    image[7, 3] = np.inf
    np.save(tiny / "image_feat.npy", image)
    bad = validate_dataset(tiny, "tiny", TINY, docs=docs)
    assert not bad["success"] and bad["failed"] >= 2
    suites = docs_suites(docs / "index.html")
    assert len(suites) == 10 and sum(f for _, _, f in suites.values()) == bad["failed"]
    evaluated, passed, failed = suites["tiny.inter"]
    assert failed >= 1 and passed == evaluated - failed
    assert suites["image_feat.npy"] == (4, 3, 1) and suites["text_feat.npy"] == (4, 4, 0)
    text = visible_text(docs / "index.html")
    assert f"FAILED: {bad['evaluated'] - bad['failed']} of {bad['evaluated']} expectations passed" in text
    assert f"1 of {len(image)} rows unexpected" in text  # the non-finite feature row, one per item
    html_text = (docs / "index.html").read_text()
    assert f"<td>{row + 2}</td>" in html_text  # the offending .inter row's file line, in its sample table
    assert html_text.count('class="expectation failed"') == bad["failed"]
    assert_offline(docs)

    (tiny / "tiny.inter").write_text("userID\titemID\tx_label\nx7\t0\t0\n")  # a schema failure
    schema_failed = validate_dataset(tiny, "tiny", TINY, docs=docs)
    assert set(docs_suites(docs / "index.html")) == {"tiny.inter.schema", "u_id_mapping.csv.schema",
                                                     "i_id_mapping.csv.schema"}
    assert "did not run" in visible_text(docs / "index.html") and not schema_failed["success"]
    assert_offline(docs)


def test_duplicate_pair(tiny, tmp_path):
    inter = read_inter(tiny)
    write_inter(tiny, pd.concat([inter, inter.iloc[[0]]], ignore_index=True))
    found = check_fails(tiny, tmp_path / "out", "expect_compound_columns_to_be_unique", "tiny.inter")
    assert {row["row"] for row in found["unexpected_rows"]} == {0, len(inter)}
    assert found["unexpected_rows"][0]["line"] == 2  # the header is line 1


def test_x_label_out_of_set(tiny, tmp_path):
    inter = read_inter(tiny)
    row = int(np.flatnonzero(inter["x_label"] == 0)[3])
    inter.loc[row, "x_label"] = 3
    write_inter(tiny, inter)
    found = check_fails(tiny, tmp_path / "out", "expect_column_values_to_be_in_set", "tiny.inter")
    assert found["unexpected_count"] == 1
    assert found["unexpected_rows"] == [{"row": row, "line": row + 2, "userID": int(inter.loc[row, "userID"]),
                                         "itemID": int(inter.loc[row, "itemID"]), "x_label": 3}]


def test_gap_in_item_ids(tiny, tmp_path):
    inter = read_inter(tiny)
    inter.loc[inter["itemID"] >= 10, "itemID"] += 1  # id 10 unused; the top id is past the mapping
    write_inter(tiny, inter)
    found = check_fails(tiny, tmp_path / "out", "expect_column_values_to_be_between", "tiny.inter")
    report = validate_dataset(tiny, "tiny", TINY)
    gap = [r for r in report["expectations"] if not r["success"] and r["suite"] == "items"]
    assert [row["itemID"] for row in gap[0]["unexpected_rows"]] == [10], format_failures(report)
    assert "contiguous" in gap[0]["description"]
    assert found["kwargs"]["column"] == "itemID"


def test_nan_in_a_feature_row(tiny, tmp_path):
    image = np.load(tiny / "image_feat.npy")
    image[7, 3] = np.nan
    np.save(tiny / "image_feat.npy", image)
    found = check_fails(tiny, tmp_path / "out", "expect_column_values_to_be_in_set", "image_feat.npy")
    assert found["kwargs"]["column"] == "nonfinite"
    assert found["unexpected_rows"] == [{"itemID": 7, "width": 48, "dtype": "float32", "nonfinite": 1,
                                         "first_nonfinite_column": 3}]


def test_wrong_feature_row_count(tiny, tmp_path):
    text = np.load(tiny / "text_feat.npy")
    np.save(tiny / "text_feat.npy", text[:-1])
    found = check_fails(tiny, tmp_path / "out", "expect_table_row_count_to_equal", "text_feat.npy")
    assert found["observed"] == len(text) - 1 and found["kwargs"]["value"] == len(text)


def test_wrong_text_dimension(tiny, tmp_path):
    np.save(tiny / "text_feat.npy", np.load(tiny / "text_feat.npy")[:, :31])
    found = check_fails(tiny, tmp_path / "out", "expect_column_values_to_be_in_set", "text_feat.npy")
    assert found["kwargs"] == {"column": "width", "value_set": [32]}
    assert found["unexpected_rows"][0]["width"] == 31


def test_user_without_train_row(tiny, tmp_path):
    inter = read_inter(tiny)
    inter.loc[(inter["userID"] == 3) & (inter["x_label"] == 0), "x_label"] = 1
    write_inter(tiny, inter)
    found = check_fails(tiny, tmp_path / "out", "expect_column_values_to_be_between", "tiny.inter")
    assert found["suite"] == "users" and found["kwargs"]["column"] == "n_train"
    assert [row["userID"] for row in found["unexpected_rows"]] == [3]


def test_user_k_core_violated(tiny, tmp_path):
    inter = read_inter(tiny)
    popular = inter["itemID"].map(inter["itemID"].value_counts()) > 1  # dropping these leaves no item unused
    user = next(u for u, rows in inter.groupby("userID")  # below 10 interactions: 1 valid + 1 test
                if len(rows) < 10 and ((rows["x_label"] == 0) & popular[rows.index]).sum() >= len(rows) - 4)
    rows = inter.index[(inter["userID"] == user) & (inter["x_label"] == 0) & popular]
    drop = rows[: (inter["userID"] == user).sum() - 4]
    write_inter(tiny, inter.drop(index=drop))
    found = check_fails(tiny, tmp_path / "out", "expect_column_values_to_be_between", "tiny.inter")
    assert found["suite"] == "users" and "5-core" in found["description"]
    assert found["unexpected_rows"] == [{"userID": user, "n_interactions": 4, "n_train": 2, "n_valid": 1,
                                         "n_test": 1}]


def test_item_k_core_is_configurable(prepared, tmp_path):
    """The synthetic generator keeps items chosen once: a 2-core on items fails and names them."""
    counts = read_inter(prepared)["itemID"].value_counts()
    found = check_fails(prepared, tmp_path / "out", "expect_column_values_to_be_between", "tiny.inter",
                        TINY.model_copy(update={"item_k_core": 2}))
    assert found["suite"] == "items" and found["unexpected_count"] == int((counts < 2).sum()) > 0
    assert all(row["n_interactions"] == 1 for row in found["unexpected_rows"])


def test_schema_failure_stops_before_the_typed_suites(tiny, tmp_path):
    text = (tiny / "tiny.inter").read_text().splitlines()
    text[5] = "x7\t" + text[5].split("\t", 1)[1]
    (tiny / "tiny.inter").write_text("\n".join(text) + "\n")
    found = check_fails(tiny, tmp_path / "out", "expect_column_values_to_match_regex", "tiny.inter")
    assert found["unexpected_rows"][0]["line"] == 6 and found["unexpected_rows"][0]["userID"] == "x7"
    report = validate_dataset(tiny, "tiny", TINY)
    assert {r["suite"] for r in report["expectations"]} == {"tiny.inter.schema", "u_id_mapping.csv.schema",
                                                            "i_id_mapping.csv.schema"}


def test_missing_feature_file(tiny, tmp_path):
    (tiny / "image_feat.npy").unlink()
    found = check_fails(tiny, tmp_path / "out", "file_is_readable", "image_feat.npy")
    assert "missing" in found["error"]


def test_cli_passes_then_fails_and_removes_the_stale_summary(prepared, tmp_path, capsys):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["validate"]["datasets"]["synthetic"] |= {"image_dim": 48, "text_dim": 32}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    folder = tmp_path / "prepared" / "synthetic"
    shutil.copytree(prepared, folder)
    (folder / "tiny.inter").rename(folder / "synthetic.inter")
    args = ["--dataset", "synthetic", "--params", str(params), "--prepared", str(tmp_path / "prepared"),
            "--out", str(tmp_path / "validated"), "--docs", str(tmp_path / "docs")]
    main(args)
    assert (tmp_path / "validated" / "synthetic" / "validation.json").exists()
    np.save(folder / "image_feat.npy", np.zeros((3, 48), dtype=np.float32))
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 3  # bad data (pipeline/errors.py)
    message = capsys.readouterr().err
    assert "image_feat.npy" in message and "expect_table_row_count_to_equal" in message and "observed: 3" in message
    assert not (tmp_path / "validated" / "synthetic" / "validation.json").exists()
    assert (tmp_path / "validated" / "synthetic" / "failures.json").exists()
    docs = docs_suites(tmp_path / "docs" / "synthetic" / "index.html")  # data docs on failure too
    assert docs["image_feat.npy"][2] == 1 and docs["text_feat.npy"] == (4, 4, 0)


def test_params_validate_section_is_strict(tmp_path):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    params = load_params(REPO / "params.yaml")
    assert params.validation.for_dataset("synthetic", 5).image_dim == raw["synthetic"]["image_dim"]
    assert params.validation.for_dataset("baby", params.filter.k_core).item_k_core == params.filter.k_core
    for bad in ({"text_dimm": 384}, {"datasets": {"synthetc": {"image_dim": 512}}},
                {"datasets": {"synthetic": {"image_dims": 512}}}):
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump(raw | {"validate": raw["validate"] | bad}))
        with pytest.raises(ParamsError, match="validate"):
            load_params(path)
