"""The `validate` stage: Great Expectations suites over a prepared dataset, a gate before training.

Reads `<prepared>/NAME/`: `NAME.inter`, `u_id_mapping.csv`, `i_id_mapping.csv` (tab-separated),
`image_feat.npy`, `text_feat.npy` and `features.json`. Each file becomes a pandas frame and gets its
own expectation suite (GX Core 1.x, an ephemeral context):

1. schema (strings as read): columns present, ids and x_label are non-negative integers, ratings
   numbers; the mappings have their two columns. A schema failure stops here: nothing else is
   meaningful on a table that cannot be typed.
2. values: userID in [0, n_users) and itemID in [0, n_items) (n = rows of the mapping), x_label in
   {0, 1, 2}, each (user, item) pair once; the mappings number 0..n-1, each id and key once.
3. `users` / `items` (one row per id, derived from NAME.inter): every id 0..n-1 has interactions
   (contiguity), the k-core holds over all interactions before the split (>= k per user and per
   item), and every user has >= 1 train, >= 1 valid and >= 1 test row (the spec's per-user split
   holds out 1 + 1 below 10 interactions and round(20%) >= 2, half each, from 10 on).
4. features: one row per item, the expected width (params.yaml `validate:`), a float dtype, every
   value finite.

Success writes `<out>/NAME/validation.json` (every expectation: name, success, observed value or
unexpected count and sample); failure writes `<out>/NAME/failures.json`, removes a stale
validation.json, prints which expectation failed on which file with the offending rows, and exits
3 (bad data: pipeline/errors.py). Either way the data docs are rebuilt: `<docs>/NAME/index.html`.

The data docs are our own page, not Great Expectations' site (issue 17). GX 1.x's SiteBuilder does
store and render every validation result, but its pages take all of their styling and behaviour from
CDNs (bootstrap, bootstrap-table, jQuery, popper, font-awesome, vega) and its index table is filled in
by bootstrap-table from a JavaScript array: without a network the index lists nothing and no page is
styled. The package ships none of those assets (render/view/static/ holds fonts, images and its two own
stylesheets); its one hook, template overrides in a file-backed context's plugins/custom_data_docs/views,
could change the links but not supply the libraries, so an offline GX site would mean vendoring and
version-pinning a dozen third-party JS/CSS files and overriding GX's templates across GX upgrades.
Instead `<docs>/NAME/index.html` is one self-contained file rendered from the report: inline CSS,
no script, no external link; per suite, each expectation with pass/fail, its arguments, the observed
value or unexpected count, and the sample offending rows (params.yaml `validate: sample_rows`).

    python -m tasks.validate --dataset NAME [--params params.yaml] [--prepared data/prepared]
                             [--out data/validated] [--docs reports/validation]
"""
from __future__ import annotations

import argparse
import html
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from config.params import dataset_config, load_params
from config.sections import ValidateConfig
from models.data import SPLITS, DataError, read_feature_record
from pipeline.errors import EXIT_DATA, run_command
from pipeline.io import setup_logging, write_json, write_text

log = logging.getLogger(__name__)
# GX logs ~200 "Skipping registering function" lines at INFO on its first import: quiet before any import
# of it (the suites import it too); --verbose puts them back
logging.getLogger("great_expectations").setLevel(logging.WARNING)

INTEGER = r"^[0-9]{1,18}$"  # plain digits, as models.data reads them (no sign, exponent or spaces); fits int64
INTEGER_TEXT = "`{}` is a non-negative integer in plain digits 0-9 (at most 18)"
NUMBER = r"^\s*-?\d+(\.\d*)?([eE][-+]?\d+)?\s*$"
FLOAT_DTYPES = ["float16", "float32", "float64"]
MAPPINGS = {"user": ("u_id_mapping.csv", "user_id", "userID"), "item": ("i_id_mapping.csv", "asin", "itemID")}
CHUNK_ROWS = 4096  # feature rows checked at a time (bounds memory on 4096-d features)


@dataclass
class Table:
    """One frame under one expectation suite; `line_offset` turns a data row into a file line."""

    suite: str
    file: Path
    frame: pd.DataFrame
    expectations: list = field(default_factory=list)
    line_offset: int | None = None  # 2 for a file with a header line; None: the index is an id


# ---------------------------------------------------------------- reading

def read_table(path: Path) -> pd.DataFrame:
    """A tab-separated file as strings, index = data row (file line - 2)."""
    if not path.exists():
        raise DataError(f"{path}: missing (written by the filter stage)")
    try:
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise DataError(f"{path}: not a tab-separated table with a header: {err}") from None
    frame.index.name = "row"
    return frame


def feature_rows(path: Path) -> pd.DataFrame:
    """One row per feature row (index itemID): width, dtype, non-finite count, first non-finite column."""
    if not path.exists():
        raise DataError(f"{path}: missing (written by the features stage)")
    try:
        matrix = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as err:
        raise DataError(f"{path}: not a readable .npy array: {err}") from None
    if matrix.ndim != 2:
        raise DataError(f"{path}: expected a 2-d array [n_items, d], got shape {list(matrix.shape)}")
    nonfinite = np.zeros(len(matrix), dtype=np.int64)
    first = np.full(len(matrix), -1, dtype=np.int64)
    is_float = np.issubdtype(matrix.dtype, np.floating)
    for start in range(0, len(matrix) if is_float else 0, CHUNK_ROWS):
        bad = ~np.isfinite(matrix[start:start + CHUNK_ROWS])
        nonfinite[start:start + len(bad)] = bad.sum(axis=1)
        first[start:start + len(bad)] = np.where(bad.any(axis=1), bad.argmax(axis=1), -1)
    return pd.DataFrame({"width": matrix.shape[1], "dtype": str(matrix.dtype), "nonfinite": nonfinite,
                         "first_nonfinite_column": first}, index=pd.RangeIndex(len(matrix), name="itemID"))


def typed(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """The integer columns of a frame that passed its schema suite."""
    return pd.DataFrame({c: frame[c].str.strip().astype(np.int64) for c in columns}, index=frame.index)


def per_id_counts(inter: pd.DataFrame, column: str, n: int) -> pd.DataFrame:
    """[n] rows (index = the id): interactions in all, and per split."""
    ids = inter[column].to_numpy()
    inside = ids < n  # ids out of range are the values suite's finding, not a crash here
    counts = {"n_interactions": np.bincount(ids[inside], minlength=n)}
    for split, code in SPLITS.items():
        chosen = inside & (inter["x_label"].to_numpy() == code)
        counts[f"n_{split}"] = np.bincount(ids[chosen], minlength=n)
    return pd.DataFrame(counts, index=pd.RangeIndex(n, name=column))


# ---------------------------------------------------------------- suites

def schema_tables(folder: Path, name: str) -> tuple[dict[str, Table], list[dict]]:
    """Suites on the text files as read (strings): columns and number formats.

    Returns ({"inter" | "user" | "item": table}, failures of files that could not be read).
    """
    paths = {"inter": folder / f"{name}.inter", **{kind: folder / file for kind, (file, _, _) in MAPPINGS.items()}}
    tables, failures = {}, []
    for kind, path in paths.items():
        try:
            frame = read_table(path)
        except DataError as err:
            failures.append(structural_failure(path, err))
            continue
        checks = inter_schema(frame) if kind == "inter" else mapping_schema(*MAPPINGS[kind][1:])
        tables[kind] = Table(f"{path.name}.schema", path, frame, checks, line_offset=2)
    return tables, failures


def inter_schema(frame: pd.DataFrame) -> list:
    """The .inter header names userID, itemID, x_label; they (and a timestamp) are integers, a rating a number."""
    import great_expectations.expectations as gxe

    checks = [gxe.ExpectColumnToExist(column=c, description=f"the header names a `{c}` column")
              for c in ("userID", "itemID", "x_label")]
    integers = ["userID", "itemID", "x_label"] + (["timestamp"] if "timestamp" in frame.columns else [])
    checks += [gxe.ExpectColumnValuesToMatchRegex(column=c, regex=INTEGER, description=INTEGER_TEXT.format(c))
               for c in integers]
    if "rating" in frame.columns:
        checks.append(gxe.ExpectColumnValuesToMatchRegex(column="rating", regex=NUMBER,
                                                         description="`rating` is a number"))
    return checks


def mapping_schema(key: str, ident: str) -> list:
    """A mapping file has the header `key ident` and integer ids."""
    import great_expectations.expectations as gxe

    return [gxe.ExpectTableColumnsToMatchOrderedList(column_list=[key, ident], description=f"header `{key} {ident}`"),
            gxe.ExpectColumnValuesToMatchRegex(column=ident, regex=INTEGER, description=INTEGER_TEXT.format(ident))]


def value_tables(schema: dict[str, Table], cfg: ValidateConfig) -> list[Table]:
    """Suites on the typed interactions and mappings, and on the per-user / per-item counts."""
    import great_expectations.expectations as gxe

    n = {kind: len(schema[kind].frame) for kind in MAPPINGS}  # the mappings' rows define n_users, n_items
    source = schema["inter"]
    inter = typed(source.frame, ["userID", "itemID", "x_label"])
    tables = [Table(source.file.name, source.file, inter, [
        *(gxe.ExpectColumnValuesToBeBetween(column=f"{kind}ID", min_value=0, max_value=n[kind] - 1,
                                            description=f"{kind}ID in [0, {n[kind]}): the rows of {MAPPINGS[kind][0]}")
          for kind in MAPPINGS),
        gxe.ExpectColumnValuesToBeInSet(column="x_label", value_set=sorted(SPLITS.values()),
                                        description="x_label is 0 (train), 1 (valid) or 2 (test)"),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["userID", "itemID"],
                                            description="each (userID, itemID) pair once"),
    ], line_offset=2)]
    for kind, (file, key, ident) in MAPPINGS.items():
        raw = schema[kind].frame
        tables.append(Table(file, schema[kind].file, typed(raw, [ident]).assign(**{key: raw[key]}), [
            gxe.ExpectColumnValuesToBeBetween(column=ident, min_value=0, max_value=n[kind] - 1,
                                              description=f"{ident} in [0, {n[kind]}): one per row"),
            gxe.ExpectColumnValuesToBeUnique(column=ident, description=f"each {ident} once: 0..{n[kind] - 1}"),
            gxe.ExpectColumnValuesToBeUnique(column=key, description=f"each {key} once"),
        ], line_offset=2))
    tables.append(count_table("user", inter, n["user"], cfg.user_k_core, source.file, split=True))
    tables.append(count_table("item", inter, n["item"], cfg.item_k_core, source.file, split=False))
    return tables


def count_table(kind: str, inter: pd.DataFrame, n: int, k: int, file: Path, split: bool) -> Table:
    """Per-id counts: every id used, the k-core, and (users) the per-user split."""
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    present = Column("n_interactions") > 0  # an unused id is the contiguity finding, reported once
    checks = [
        gxe.ExpectColumnValuesToBeBetween(column="n_interactions", min_value=1,
                                          description=f"every {kind}ID 0..{n - 1} has an interaction (contiguous ids)"),
        gxe.ExpectColumnValuesToBeBetween(column="n_interactions", min_value=k, row_condition=present,
                                          description=f"{k}-core: every {kind} has >= {k} interactions (all splits)"),
    ]
    if split:
        checks += [gxe.ExpectColumnValuesToBeBetween(
            column=f"n_{name}", min_value=1, row_condition=present,
            description=f"every user has >= 1 {name} row (x_label {code}; spec: per-user split)")
            for name, code in SPLITS.items()]
    return Table(f"{kind}s", file, per_id_counts(inter, f"{kind}ID", n), checks)


def feature_table(path: Path, n_items: int, dim: int) -> Table:
    """The feature matrix's suite: one row per item, `dim` columns, float, finite."""
    import great_expectations.expectations as gxe

    return Table(path.name, path, feature_rows(path), [
        gxe.ExpectTableRowCountToEqual(value=n_items, description=f"one row per item: {n_items} rows"),
        gxe.ExpectColumnValuesToBeInSet(column="width", value_set=[dim], description=f"{dim} columns"),
        gxe.ExpectColumnValuesToBeInSet(column="dtype", value_set=FLOAT_DTYPES, description="a float array"),
        gxe.ExpectColumnValuesToBeInSet(column="nonfinite", value_set=[0], description="every value finite"),
    ])


# ---------------------------------------------------------------- running

def gx_context():
    """An in-memory GX context, quiet, without a data docs site (ours: write_docs)."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    config = DataContextConfig(store_backend_defaults=InMemoryStoreBackendDefaults(), analytics_enabled=False,
                               progress_bars=ProgressBarsConfig(globally=False), data_docs_sites={})
    return gx.get_context(project_config=config, mode="ephemeral")


def run_suites(context, tables: list[Table], run_id, sample_rows: int) -> list[dict]:
    """Validate every table against its suite; one record (summarize) per expectation."""
    import great_expectations as gx

    source = context.data_sources.add_or_update_pandas(run_id.run_name)
    result_format = {"result_format": "SUMMARY", "partial_unexpected_count": sample_rows}
    records = []
    for table in tables:
        batch = source.add_dataframe_asset(table.suite).add_batch_definition_whole_dataframe("whole file")
        suite = context.suites.add(gx.ExpectationSuite(name=table.suite, expectations=table.expectations))
        definition = context.validation_definitions.add(gx.ValidationDefinition(name=table.suite, data=batch,
                                                                                suite=suite))
        result = definition.run(batch_parameters={"dataframe": table.frame}, result_format=result_format,
                                run_id=run_id)
        records += [summarize(r.to_json_dict(), table) for r in result.results]
    return records


def summarize(result: dict, table: Table) -> dict:
    """One expectation's outcome as plain JSON: what was expected, what was found, sample rows."""
    config, found = result["expectation_config"], result.get("result") or {}
    record = {"file": str(table.file), "suite": table.suite, "expectation": config["type"],
              "kwargs": {k: v for k, v in config["kwargs"].items() if k != "batch_id"},
              "description": config.get("description"), "success": bool(result["success"])}
    if "observed_value" in found:
        record["observed"] = found["observed_value"]
    if "unexpected_count" in found:
        record |= {"checked_rows": found.get("element_count"), "unexpected_count": found["unexpected_count"],
                   "unexpected_rows": [describe_row(table, entry) for entry in
                                       found.get("partial_unexpected_index_list") or []]}
    error = exception_message(result.get("exception_info") or {})
    if error:
        record["error"] = error
    return record


def describe_row(table: Table, entry: dict) -> dict:
    """The offending row: its index (and file line), with every column of the checked frame."""
    index_name = table.frame.index.name
    index = entry[index_name]
    row = {index_name: index}
    if table.line_offset is not None:
        row["line"] = index + table.line_offset
    row |= {k: (v.item() if hasattr(v, "item") else v) for k, v in table.frame.loc[index].items()}
    return row


def exception_message(info: dict) -> str | None:
    """GX nests exception info per metric; return the first message, if any."""
    if info.get("raised_exception"):
        return info.get("exception_message")
    nested = [v.get("exception_message") for v in info.values() if isinstance(v, dict)]
    return next((m for m in nested if m), None)


# ---------------------------------------------------------------- the stage

def structural_failure(path: Path, err: Exception) -> dict:
    """A file that could not even be turned into a frame (missing, unreadable, wrong rank)."""
    return {"file": str(path), "suite": path.name, "expectation": "file_is_readable", "kwargs": {},
            "description": "the file exists and parses", "success": False, "error": str(err)}


def validate_dataset(folder: Path, name: str, cfg: ValidateConfig, docs: Path | None = None) -> dict:
    """Run every suite on the dataset folder; returns the report (report["success"] says if it passed).

    cfg: resolved for this dataset (ValidateConfig.for_dataset). docs: data docs folder, rebuilt.
    """
    from great_expectations.core.run_identifier import RunIdentifier

    folder, context, run_id = Path(folder), gx_context(), RunIdentifier(run_name=name)
    schema, records = schema_tables(folder, name)
    records += run_suites(context, list(schema.values()), run_id, cfg.sample_rows)
    counts = None
    if len(schema) == len(MAPPINGS) + 1 and all(r["success"] for r in records):  # typed suites need a clean schema
        tables = value_tables(schema, cfg)
        counts = dataset_counts(tables[0].frame, schema)
        for modality in ("image", "text"):
            path = folder / f"{modality}_feat.npy"
            try:
                tables.append(feature_table(path, len(schema["item"].frame), getattr(cfg, f"{modality}_dim")))
            except DataError as err:
                records.append(structural_failure(path, err))
        records += run_suites(context, tables, run_id, cfg.sample_rows)
    try:
        standin = read_feature_record(folder)
    except DataError as err:
        standin = None
        records.append(structural_failure(folder / "features.json", err))
    facts = {"counts": counts, "expected": cfg.model_dump(exclude={"datasets"}), "standin_features": standin}
    return make_report(name, folder, records, facts, docs)


def dataset_counts(inter: pd.DataFrame, schema: dict[str, Table]) -> dict:
    """users, items, interactions and rows per split."""
    splits = np.bincount(inter["x_label"].clip(0, len(SPLITS)), minlength=len(SPLITS) + 1)
    return {"users": len(schema["user"].frame), "items": len(schema["item"].frame), "interactions": len(inter),
            **{split: int(splits[code]) for split, code in SPLITS.items()}}


def make_report(name: str, folder: Path, records: list[dict], facts: dict, docs: Path | None) -> dict:
    """The run's summary and every expectation's record; writes the data docs (if `docs`)."""
    import great_expectations as gx

    report = {"dataset": name, "folder": str(folder), "success": all(r["success"] for r in records),
              "evaluated": len(records), "failed": sum(not r["success"] for r in records),
              **facts, "great_expectations": gx.__version__}
    if docs is not None:
        report["data_docs"] = str(docs / "index.html")
        write_docs(report | {"expectations": records}, docs)
    return report | {"expectations": records}


def format_failures(report: dict, rows: int = 3) -> str:
    """The failed expectations, one paragraph each: file, expectation, what was found, sample rows."""
    lines = [f"{report['dataset']}: {report['failed']} of {report['evaluated']} expectations failed"]
    for record in (r for r in report["expectations"] if not r["success"]):
        args = ", ".join(f"{k}={condition_text(v) if k == 'row_condition' else v}"
                         for k, v in record["kwargs"].items())
        lines.append(f"- {record['file']}: {record['expectation']}({args}) [{record['description']}]")
        if "error" in record:
            lines.append(f"    error: {record['error']}")
        if "observed" in record:
            lines.append(f"    observed: {record['observed']}")
        if record.get("unexpected_count"):
            lines.append(f"    {record['unexpected_count']} of {record['checked_rows']} rows unexpected, e.g.:")
            lines += [f"      {', '.join(f'{k}={v}' for k, v in row.items())}"
                      for row in record["unexpected_rows"][:rows]]
    return "\n".join(lines)


def condition_text(condition: dict) -> str:
    """`n_interactions > 0` for GX's serialised comparison condition (other kinds as they are)."""
    if condition.get("type") != "comparison":
        return str(condition)
    return f"{condition['column']['name']} {condition['operator']} {condition['parameter']}"


def write_report(report: dict, out: Path) -> Path:
    """validation.json on success (failures.json removed), failures.json otherwise (validation.json removed)."""
    keep, drop = ("validation.json", "failures.json") if report["success"] else ("failures.json", "validation.json")
    (out / drop).unlink(missing_ok=True)
    write_json(out / keep, report)
    return out / keep


# ---------------------------------------------------------------- the data docs: one self-contained page

DOCS_STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: #1f2328;
       background: #fff; max-width: 1280px; margin: 0 auto; padding: 1.5em; }
h1 { font-size: 1.6em; margin: 0 0 .4em; } h2 { font-size: 1.25em; margin: 1.4em 0 .5em; }
table { border-collapse: collapse; width: 100%; margin: .4em 0 1em; }
th, td { border: 1px solid #d0d7de; padding: .3em .55em; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
tr.failed > td { background: #fff1f0; }
code, pre { font: 12px/1.4 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
pre { margin: 0; white-space: pre-wrap; word-break: break-word; }
.badge { display: inline-block; min-width: 3.2em; text-align: center; padding: .05em .6em; border-radius: 1em;
         font-weight: 600; font-size: .85em; color: #fff; }
.pass { background: #1a7f37; } .fail { background: #cf222e; }
.muted { color: #59636e; } .note { background: #fff8c5; border: 1px solid #d4a72c; padding: .5em .8em; }
details { border: 1px solid #d0d7de; border-radius: 6px; margin: 0 0 1em; padding: .4em 1em; }
summary { cursor: pointer; font-weight: 600; padding: .2em 0; }
table.rows { width: auto; margin: .3em 0 0; } table.rows th, table.rows td { padding: .1em .45em; font-size: 12px; }
"""
MAX_VALUE_CHARS = 600  # an observed value or argument longer than this is cut (the full one: the JSON report)


def write_docs(report: dict, docs: Path) -> Path:
    """`docs` emptied (no stale pages) and `docs/index.html` written from the report."""
    shutil.rmtree(docs, ignore_errors=True)
    docs.mkdir(parents=True)
    page = render_docs(report).encode("ascii", "xmlcharrefreplace").decode("ascii")  # any locale writes it
    write_text(docs / "index.html", page)
    return docs / "index.html"


def badge(success: bool) -> str:
    return '<span class="badge pass">pass</span>' if success else '<span class="badge fail">FAIL</span>'


def value_text(value) -> str:
    """A JSON-ish rendering of a value, escaped and cut at MAX_VALUE_CHARS."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if len(text) > MAX_VALUE_CHARS:
        text = text[:MAX_VALUE_CHARS] + f" ... ({len(text)} characters)"
    return html.escape(text)


def suites_of(records: list[dict]) -> dict[str, list[dict]]:
    """The records grouped by suite, in the order the suites ran."""
    suites: dict[str, list[dict]] = {}
    for record in records:
        suites.setdefault(record["suite"], []).append(record)
    return suites


def render_docs(report: dict) -> str:
    """The data docs page: the run's verdict and facts, a table of suites, then every expectation by suite."""
    esc = html.escape
    suites = suites_of(report["expectations"])
    verdict = "passed" if report["success"] else "FAILED"
    parts = [f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
             f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
             f'<title>Validation of {esc(report["dataset"])}: {verdict}</title>\n<style>{DOCS_STYLE}</style>\n'
             f'</head>\n<body>\n<h1>{badge(report["success"])} Validation of <code>{esc(report["dataset"])}</code>'
             f'</h1>\n<p id="verdict">{verdict}: {report["evaluated"] - report["failed"]} of {report["evaluated"]} '
             f'expectations passed, {report["failed"]} failed, in {len(suites)} suites.</p>\n'
             f'<p class="muted">Folder <code>{esc(report["folder"])}</code>; Great Expectations '
             f'{esc(str(report.get("great_expectations")))}; the same results as JSON: <code>validation.json</code>'
             f' (or <code>failures.json</code>) of the validate stage.</p>\n']
    if report.get("counts") is None:
        parts.append('<p class="note">The value, count and feature suites did not run: a schema suite failed or '
                     'a file could not be read (they need typed tables).</p>\n')
    else:
        counts = report["counts"]
        parts.append("<h2>Dataset</h2>\n<table style=\"width:auto\">\n<tr>"
                     + "".join(f"<th>{esc(k)}</th>" for k in counts) + "</tr>\n<tr>"
                     + "".join(f'<td class="n">{esc(str(v))}</td>' for v in counts.values()) + "</tr>\n</table>\n")
    expected = report.get("expected") or {}
    if expected:
        parts.append('<p class="muted">Expected (params.yaml <code>validate:</code>): '
                     + ", ".join(f"<code>{esc(k)}={value_text(v)}</code>" for k, v in expected.items()) + "</p>\n")
    if report.get("standin_features"):
        parts.append(f'<p class="note">Stand-in features (features.json): '
                     f'{value_text(report["standin_features"])}</p>\n')
    parts.append('<h2>Suites</h2>\n<table id="suites">\n<tr><th>status</th><th>suite</th><th>file</th>'
                 '<th>expectations</th><th>passed</th><th>failed</th></tr>\n')
    for number, (suite, records) in enumerate(suites.items()):
        failed = sum(not r["success"] for r in records)
        parts.append(f'<tr class="suite{" failed" if failed else ""}" data-suite="{esc(suite)}" '
                     f'data-evaluated="{len(records)}" data-passed="{len(records) - failed}" data-failed="{failed}">'
                     f'<td>{badge(not failed)}</td><td><a href="#suite-{number}"><code>{esc(suite)}</code></a></td>'
                     f'<td><code>{esc(Path(records[0]["file"]).name)}</code></td><td class="n">{len(records)}</td>'
                     f'<td class="n">{len(records) - failed}</td><td class="n">{failed}</td></tr>\n')
    parts.append("</table>\n<h2>Expectations</h2>\n")
    for number, (suite, records) in enumerate(suites.items()):
        failed = sum(not r["success"] for r in records)
        parts.append(f'<details id="suite-{number}"{" open" if failed else ""}>\n<summary>{badge(not failed)} '
                     f'<code>{esc(suite)}</code> <span class="muted">({esc(records[0]["file"])}): '
                     f'{len(records) - failed} of {len(records)} passed</span></summary>\n'
                     '<table>\n<tr><th>status</th><th>expectation</th><th>arguments</th><th>result</th></tr>\n')
        parts += [expectation_row(record) for record in records]
        parts.append("</table>\n</details>\n")
    parts.append("</body>\n</html>\n")
    return "".join(parts)


def expectation_row(record: dict) -> str:
    """One expectation: status, type and description, arguments, and what was found (sample rows)."""
    esc = html.escape
    args = "<br>".join(f"<code>{esc(k)}={esc(condition_text(v)) if k == 'row_condition' else value_text(v)}</code>"
                       for k, v in record["kwargs"].items())
    found = []
    if "error" in record:
        found.append(f"<b>error:</b> <pre>{value_text(record['error'])}</pre>")
    if "observed" in record:
        found.append(f"observed: <code>{value_text(record['observed'])}</code>")
    if "unexpected_count" in record:
        found.append(f"{record['unexpected_count']} of {record['checked_rows']} rows unexpected")
        if record.get("unexpected_rows"):
            found.append(rows_table(record["unexpected_rows"], record["unexpected_count"]))
    description = f'<br><span class="muted">{esc(record["description"])}</span>' if record.get("description") else ""
    return (f'<tr class="expectation{"" if record["success"] else " failed"}">'
            f'<td>{badge(record["success"])}</td><td><code>{esc(record["expectation"])}</code>{description}</td>'
            f'<td>{args}</td><td>{"<br>".join(found) or "&mdash;"}</td></tr>\n')


def rows_table(rows: list[dict], unexpected: int) -> str:
    """The sample offending rows (every column of the checked frame; `line` is the file's line)."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{value_text(row.get(c, ''))}</td>" for c in columns) + "</tr>"
                   for row in rows)
    more = f'<br><span class="muted">the first {len(rows)} of {unexpected}</span>' if unexpected > len(rows) else ""
    return f'<table class="rows"><tr>{head}</tr>{body}</table>{more}'


def main(argv: list[str] | None = None) -> None:

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="a name under `datasets:` in params.yaml")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--prepared", type=Path, default=Path("data/prepared"), help="holds NAME/NAME.inter ...")
    parser.add_argument("--out", type=Path, default=Path("data/validated"), help="NAME/validation.json goes here")
    parser.add_argument("--docs", type=Path, default=Path("reports/validation"), help="NAME/index.html goes here")
    parser.add_argument("--verbose", action="store_true", help="Great Expectations' own INFO logging too")
    args = parser.parse_args(argv)
    setup_logging()
    if args.verbose:
        logging.getLogger("great_expectations").setLevel(logging.NOTSET)
    params = load_params(args.params)  # a ParamsError ends the command through run_command (exit 2)
    dataset_config(params, args.dataset)
    cfg = params.validation.for_dataset(args.dataset, params.filter.k_core)
    report = validate_dataset(args.prepared / args.dataset, args.dataset, cfg, args.docs / args.dataset)
    written = write_report(report, args.out / args.dataset)
    if not report["success"]:
        parser.exit(EXIT_DATA, f"{parser.prog}: error: {format_failures(report)}\n(report: {written}; "
                       f"data docs: {report.get('data_docs')})\n")
    log.info("%s: all %d expectations passed; wrote %s and %s", args.dataset, report["evaluated"], written,
             report["data_docs"])


if __name__ == "__main__":
    run_command(main)
