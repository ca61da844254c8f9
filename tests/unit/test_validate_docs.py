"""tasks.validate's data docs page, rendered from a hand-made report (no Great Expectations run)."""
import re
from html.parser import HTMLParser

from tasks.validate import MAX_VALUE_CHARS, render_docs, write_docs

# a stylesheet, script, font or image from another host: <link href=https://..>, <script src=//..>, @import, url()
REMOTE = re.compile(r"""(?:\b(?:src|href)\s*=\s*["']?|@import\s*["']?|url\(\s*["']?)\s*(?:https?:)?//""", re.I)


def record(suite, expectation, success, **extra):
    return {"file": f"/data/prepared/toy/{suite.removesuffix('.schema')}", "suite": suite,
            "expectation": expectation, "kwargs": extra.pop("kwargs", {"column": "x_label"}),
            "description": extra.pop("description", "a check"), "success": success, **extra}


def report(records, counts=None, **extra):
    return {"dataset": "toy", "folder": "data/prepared/toy", "success": all(r["success"] for r in records),
            "evaluated": len(records), "failed": sum(not r["success"] for r in records), "counts": counts,
            "expected": {"text_dim": 4, "image_dim": 8}, "standin_features": [], "great_expectations": "1.x",
            **extra, "expectations": records}


class Page(HTMLParser):
    """The suites table's data- attributes, every tag and link, and whether the page is well nested."""

    def __init__(self):
        super().__init__()
        self.suites, self.stack, self.tags, self.links = {}, [], set(), []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.add(tag)
        self.links += [attrs[k] for k in ("src", "href") if k in attrs]
        if tag == "tr" and "data-suite" in attrs:
            self.suites[attrs["data-suite"]] = tuple(int(attrs[f"data-{k}"]) for k in ("evaluated", "passed", "failed"))
        if tag not in ("meta", "br"):
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack.pop() == tag


def parse(page: str) -> Page:
    parser = Page()
    parser.feed(page)
    assert parser.stack == []
    return parser


FAILED = [
    record("toy.inter.schema", "expect_column_to_exist", True, kwargs={"column": "userID"}),
    record("toy.inter", "expect_column_values_to_be_in_set", False,
           kwargs={"column": "x_label", "value_set": [0, 1, 2]}, checked_rows=100, unexpected_count=7,
           unexpected_rows=[{"row": 3, "line": 5, "userID": 1, "itemID": 2, "x_label": 9}]),
    record("toy.inter", "expect_compound_columns_to_be_unique", True, kwargs={"column_list": ["userID", "itemID"]},
           checked_rows=100, unexpected_count=0, unexpected_rows=[]),
    record("text_feat.npy", "expect_table_row_count_to_equal", False, kwargs={"value": 10}, observed=9),
    record("features.json", "file_is_readable", False, kwargs={}, error="features.json: missing"),
]


def test_lists_every_suite_with_its_counts_and_the_failures():
    page = render_docs(report(FAILED, counts={"users": 3, "items": 10, "interactions": 100}))
    parsed = parse(page)
    assert parsed.suites == {"toy.inter.schema": (1, 1, 0), "toy.inter": (2, 1, 1), "text_feat.npy": (1, 0, 1),
                             "features.json": (1, 0, 1)}
    assert not REMOTE.search(page) and "http" not in page and "script" not in parsed.tags
    assert "FAILED: 2 of 5 expectations passed, 3 failed, in 4 suites." in page
    assert "7 of 100 rows unexpected" in page and "the first 1 of 7" in page
    assert "<th>line</th>" in page and "<td>5</td>" in page and "<td>9</td>" in page  # the offending row
    assert "observed: <code>9</code>" in page and "features.json: missing" in page
    assert page.count('class="expectation failed"') == 3
    assert '<details id="suite-1" open>' in page and '<details id="suite-0">' in page  # failed suites open
    assert "<th>interactions</th>" in page and "did not run" not in page


def test_a_passing_run_and_a_schema_stop():
    passing = [r | {"success": True} for r in FAILED[:3]]
    page = render_docs(report(passing, counts={"users": 3}))
    assert parse(page).suites == {"toy.inter.schema": (1, 1, 0), "toy.inter": (2, 2, 0)}
    assert "passed: 3 of 3 expectations passed, 0 failed, in 2 suites." in page and "FAIL" not in page
    assert "did not run" in render_docs(report(FAILED[:2]))  # counts None: the typed suites never ran


def test_self_contained_and_escaped():
    hostile = record("toy.inter", "expect_column_values_to_match_regex", False,
                     description='<script src="https://evil.example/x.js"></script>',
                     kwargs={"column": "userID", "regex": "^<b>$"}, checked_rows=2, unexpected_count=1,
                     unexpected_rows=[{"row": 0, "userID": "<img src=//evil.example/y.png>", "note": "ü"}],
                     observed="x" * (MAX_VALUE_CHARS + 50))
    page = render_docs(report([hostile]))
    parsed = parse(page)
    assert not {"script", "link", "img", "iframe"} & parsed.tags
    assert all(link.startswith("#") for link in parsed.links)  # only the suites table's anchors
    assert not REMOTE.search(page.split("</style>")[0])  # nor in the inline CSS
    assert "&lt;script" in page and "^&lt;b&gt;$" in page
    assert f"... ({MAX_VALUE_CHARS + 50} characters)" in page
    assert "<style>" in page and "<link" not in page


def test_write_docs_replaces_the_folder(tmp_path):
    docs = tmp_path / "docs"
    (docs / "validations").mkdir(parents=True)
    (docs / "validations" / "old.html").write_text("stale")
    index = write_docs(report(FAILED[:1], dataset="tëst"), docs)
    assert index == docs / "index.html" and [p.name for p in docs.iterdir()] == ["index.html"]
    text = index.read_bytes().decode("ascii")  # non-ASCII as character references: any locale writes it
    assert "t&#235;st" in text and "toy.inter.schema" in text
