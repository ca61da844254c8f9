"""Property-based tests of the dataset loader (issue 15 item 6): generated malformed folders and files.

Each example starts from a valid tiny dataset folder (generated: 1-4 users, 1-4 items, optional rating /
timestamp columns, optional feature files) and applies ONE mutation: a truncation, a field replaced by
generated text, dropped / duplicated rows, an id gap or a huge id, a changed header, an odd encoding, extra
fields, a broken / wrong-dtype / wrong-shape / pickled / huge-claiming `.npy`, a broken `features.json`, a
missing or doubled `.inter`. The property, for every example:

- `load_dataset(folder)` returns a Dataset that passes its own checks, or raises the clear error of item 1:
  an error the command boundary turns into one `error:` line and exit 3 (pipeline/errors.py), whose message
  names the file at fault; never any other exception;
- what it does is what the reader's contract says: for a changed `.inter`, an independent reference reader
  (`reference_inter`, written from models/data.py's docstrings and pandas' reading of a table, not from the
  loader's code) says whether the file is valid and what it holds; the other mutations say by construction
  whether they leave the data valid;
- a message that names a line ("line N (data row k), column 'c' ... got 'v'") names the line that holds 'v';
- no warning (a line on stderr besides the `error:` line), no hang (a deadline per example and an alarm), and
  nothing is created or changed in the folder (a pickled `.npy` carries an object that would create a file when
  unpickled).

How many inputs each property tried and the count of each outcome: `OUTCOMES`, printed and checked by
`test_outcome_summary` (run with `-s` or `-rP` to see it), and `hypothesis.event` (`--hypothesis-show-statistics`).
The command boundary itself (a subprocess per example): tests/integration/test_loaders_property_cli.py.
"""
from __future__ import annotations

import ast
import io
import json
import re
import signal
import tempfile
import warnings
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from models.data import MAX_ID, STANDIN_DIMS, DataError, Dataset, load_dataset
from pipeline.errors import EXIT_DATA, exit_code, one_line

REQUIRED = ("userID", "itemID", "x_label")
MODALITIES = ("image", "text")
DIR = "<a directory>"  # a folder entry that is a directory, not a file
HANG_SECONDS = 20  # an alarm: a load of these tiny folders takes milliseconds
# derandomize: the same examples on every run (CI is reproducible); database=None: no example database kept
SETTINGS = {"derandomize": True, "database": None, "deadline": timedelta(seconds=5), "print_blob": True}
OUTCOMES: Counter = Counter()  # (property, family, mutation, outcome) -> examples; outcome "loaded" or the error class
MUTATIONS: dict[str, set[str]] = {"inter": set(), "features": set(), "folder": set()}  # kinds each property has


# -- the valid folder each example starts from ------------------------------------------------------------------

@dataclass
class Case:
    """A dataset folder to write: file name -> bytes, DIR, or a function of the folder's path giving the bytes."""

    files: dict[str, bytes | str | Callable[[Path], bytes]]
    inter: str  # the .inter's file name
    n_items: int  # of the valid base (what its feature files have)
    standin: bool = False  # load_dataset(standin=...)
    family: str = "none"  # the mutation
    kind: str = "none"  # the mutation in detail
    expect: str = "valid"  # "valid", "invalid" or "either" (the contract leaves it open)
    culprit: str | None = None  # for "invalid": the file (name in the folder; "" = the folder) the message names
    reference: Reference | None = None  # for "valid": what the dataset holds
    folder_missing: bool = False  # load a path that does not exist
    notes: list[str] = field(default_factory=list)


@dataclass
class Reference:
    n_users: int
    n_items: int
    splits: dict[str, list[tuple[int, int]]]


@st.composite
def valid_cases(draw) -> Case:
    n_users, n_items = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    labels: dict[tuple[int, int], int] = {}
    for user in range(n_users):  # every user has a train row
        labels[(user, draw(st.integers(0, n_items - 1)))] = 0
    for item in range(n_items):  # every item is used
        if not any(i == item for _, i in labels):
            labels[(draw(st.integers(0, n_users - 1)), item)] = draw(st.integers(0, 2))
    for user, item, label in draw(st.lists(st.tuples(st.integers(0, n_users - 1), st.integers(0, n_items - 1),
                                                     st.integers(0, 2)), max_size=4)):
        labels.setdefault((user, item), label)
    order = draw(st.permutations(sorted(labels)))
    extra = draw(st.sampled_from([(), ("rating",), ("rating", "timestamp")]))
    lines = ["\t".join((*REQUIRED, *extra))]
    for row, (user, item) in enumerate(order):
        lines.append("\t".join(map(str, (user, item, labels[(user, item)], 5, 1_700_000_000 + row)[:3 + len(extra)])))
    name = draw(st.sampled_from(["toy", "baby", "a b", "bébé"])) + ".inter"
    files: dict = {name: ("\n".join(lines) + "\n").encode()}
    for modality in draw(st.sets(st.sampled_from(MODALITIES))):
        width = draw(st.integers(1, 3))
        files[f"{modality}_feat.npy"] = npy(np.arange(n_items * width, dtype=np.float32).reshape(n_items, width) / 7)
    if draw(st.booleans()):
        files["features.json"] = json.dumps({"standin": sorted(m for m in MODALITIES if f"{m}_feat.npy" in files)
                                             }).encode()
    case = Case(files=files, inter=name, n_items=n_items, standin=draw(st.booleans()))
    return judge_inter(case)


def npy(array: np.ndarray, **kwargs) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, **kwargs)
    return buffer.getvalue()


# -- the reference reader of the .inter contract ------------------------------------------------------------------

def data_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the lines a reader sees: lines end at \\n, \\r\\n or \\r; a blank line (empty or
    spaces only) is no row."""
    return [(number, line) for number, line in enumerate(re.split(r"\r\n|\r|\n", text), start=1) if line.strip(" ")]


def reference_inter(data: bytes) -> Reference | str | None:
    """What an `.inter` holds by the contract of models/data.py: UTF-8 (a leading BOM allowed), tab-separated, a
    header naming userID, itemID and x_label (other columns allowed, a row may leave trailing ones out, never
    has more fields than the header), every id and x_label plain digits, ids at most MAX_ID and contiguous
    0..n-1, x_label 0/1/2, each (user, item) pair once, every user with a train row.

    A Reference when valid, the reason (a string) when not, None where the contract is silent (a '"': CSV
    quoting is the parser's business)."""
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        return "not UTF-8"
    if '"' in text:
        return None
    lines = data_lines(text)
    if not lines:
        return "empty"
    header = lines[0][1].split("\t")
    if not set(REQUIRED) <= set(header):
        return "missing column"
    if len(lines) == 1:
        return "header only"
    columns = [header.index(name) for name in REQUIRED]
    rows = []
    for _, line in lines[1:]:
        fields = line.split("\t")
        if len(fields) > len(header):
            return "more fields than the header"
        fields += [""] * (len(header) - len(fields))
        values = [fields[c] for c in columns]
        if not all(re.fullmatch(r"[0-9]+", value) for value in values):
            return "not plain digits"
        user, item, label = map(int, values)
        if max(user, item) > MAX_ID or label not in (0, 1, 2):
            return "out of range"
        rows.append((user, item, label))
    users, items = {r[0] for r in rows}, {r[1] for r in rows}
    if len(users) != max(users) + 1 or len(items) != max(items) + 1:  # distinct ids >= 0: 0..n-1 (no set of size n)
        return "ids not contiguous"
    if len({r[:2] for r in rows}) != len(rows):
        return "duplicate pair"
    if users != {r[0] for r in rows if r[2] == 0}:
        return "a user without train row"
    splits = {split: [r[:2] for r in rows if r[2] == code] for split, code in (("train", 0), ("valid", 1), ("test", 2))}
    return Reference(max(users) + 1, max(items) + 1, splits)


def judge_inter(case: Case) -> Case:
    """The expectation of a case whose .inter may have changed (its other files as in the valid base)."""
    reference = reference_inter(case.files[case.inter])
    if reference is None:
        return replace(case, expect="either", reference=None, culprit=None)
    if isinstance(reference, str):
        return replace(case, expect="invalid", culprit=case.inter, reference=None, notes=[reference])
    for modality in MODALITIES:  # the base's feature files have the base's item count
        if f"{modality}_feat.npy" in case.files and reference.n_items != case.n_items:
            return replace(case, expect="invalid", culprit=f"{modality}_feat.npy", reference=None)
    return replace(case, expect="valid", reference=reference, culprit=None)


# -- mutations of the .inter ----------------------------------------------------------------------------------------

FIELD_TEXTS = {  # what replaces a field: each kind parametrizes the property
    "small integer": st.integers(-5, 10).map(str),
    "huge number": st.one_of(st.integers(0, 10**30).map(str),  # past int64
                             st.sampled_from(["2147483647", "2147483648", "4294967296", "9223372036854775808",
                                              "2000000000", "007", "00"])),
    "float": st.floats(allow_nan=True, allow_infinity=True).map(repr),
    "odd spelling": st.sampled_from(["1e0", "1E2", "+1", "-0", " 1", "1 ", "0x1", "1_0", "1,0", "1.", ".5", "NaN",
                                     "NA", "null", "", "  ", "１", "١", "²", "0\x00", "\x001", "1\x0c", "\ufeff1",
                                     "0\u2028"]),
    "other digits": st.text(st.characters(categories=["Nd"]), min_size=1, max_size=3),  # digits of other scripts
    "any text": st.text(st.characters(exclude_characters="\t\r\n\""), max_size=6),
}
FIELD_TEXT = st.one_of(*FIELD_TEXTS.values())


def rows_of(case: Case) -> tuple[str, list[str]]:
    header, *rows = case.files[case.inter].decode().rstrip("\n").split("\n")
    return header, rows


def with_inter(case: Case, kind: str, header: str, rows: list[str]) -> Case:
    text = "\n".join([header, *rows]) + "\n"
    return judge_inter(replace(case, kind=kind, files={**case.files, case.inter: text.encode()}))


def with_inter_bytes(case: Case, kind: str, data: bytes) -> Case:
    return judge_inter(replace(case, kind=kind, files={**case.files, case.inter: data}))


@st.composite
def truncated_inter(draw, base: Case, change: None = None) -> Case:
    data = base.files[base.inter]
    return with_inter_bytes(base, "truncate", data[:draw(st.integers(0, len(data) - 1))])


@st.composite
def replaced_field(draw, base: Case, change: str | None = None) -> Case:
    header, rows = rows_of(base)
    row = draw(st.integers(0, len(rows) - 1))
    fields = rows[row].split("\t")
    fields[draw(st.integers(0, len(fields) - 1))] = draw(FIELD_TEXTS[change] if change else FIELD_TEXT)
    rows[row] = "\t".join(fields)
    return with_inter(base, f"field {change or 'text'}", header, rows)


HEADER_CHANGES = ["drop", "case", "spaces", "reorder", "duplicate", "empty", "rename", "extra"]


@st.composite
def changed_header(draw, base: Case, change: str | None = None) -> Case:
    names = rows_of(base)[0].split("\t")
    change = change or draw(st.sampled_from(HEADER_CHANGES))
    if change == "drop":
        names.pop(draw(st.integers(0, len(names) - 1)))
    elif change == "case":
        index = draw(st.integers(0, len(names) - 1))
        names[index] = names[index].lower()
    elif change == "spaces":
        index = draw(st.integers(0, len(names) - 1))
        names[index] = draw(st.sampled_from([" ", "  "])) + names[index] + draw(st.sampled_from(["", " "]))
    elif change == "reorder":
        names = draw(st.permutations(names))
    elif change == "duplicate":
        names.append(draw(st.sampled_from(names)))
    elif change == "empty":
        names = [""]
    elif change == "rename":
        names[draw(st.integers(0, len(names) - 1))] = draw(FIELD_TEXT)
    else:  # a named column the rows leave out
        names.append(draw(st.sampled_from(["rating", "timestamp", "note"])))
    return with_inter(base, f"header {change}", "\t".join(names), rows_of(base)[1])


@st.composite
def dropped_or_duplicated_rows(draw, base: Case, change: str | None = None) -> Case:
    header, rows = rows_of(base)
    if (change or draw(st.sampled_from(["drop rows", "duplicate row"]))) == "drop rows":
        keep = draw(st.lists(st.booleans(), min_size=len(rows), max_size=len(rows)))
        return with_inter(base, "drop rows", header, [r for r, k in zip(rows, keep) if k])
    row = draw(st.sampled_from(rows))
    fields = row.split("\t")
    if draw(st.booleans()):  # the same pair with another label
        fields[2] = str((int(fields[2]) + draw(st.integers(1, 2))) % 3)
    rows.insert(draw(st.integers(0, len(rows))), "\t".join(fields))
    return with_inter(base, "duplicate row", header, rows)


@st.composite
def id_gap(draw, base: Case, change: None = None) -> Case:
    header, rows = rows_of(base)
    column = draw(st.integers(0, 1))
    table = [r.split("\t") for r in rows]
    ids = sorted({int(f[column]) for f in table})
    start, shift = draw(st.sampled_from(ids)), draw(st.sampled_from([1, 2, 1000, 2_000_000_000, MAX_ID]))
    for fields in table:
        if int(fields[column]) >= start:
            fields[column] = str(min(int(fields[column]) + shift, MAX_ID))
    return with_inter(base, "id gap", header, ["\t".join(f) for f in table])


ENCODINGS = ["crlf", "cr", "utf-8 bom", "utf-16", "utf-16-le", "latin-1", "nul", "blank lines", "no final newline",
             "random bytes", "unicode line separator"]


@st.composite
def odd_encoding(draw, base: Case, change: str | None = None) -> Case:
    data = base.files[base.inter]
    text = data.decode()
    change = change or draw(st.sampled_from(ENCODINGS))
    at = draw(st.integers(0, len(data)))
    if change == "crlf":
        data = text.replace("\n", "\r\n").encode()
    elif change == "cr":
        data = text.replace("\n", "\r").encode()
    elif change == "utf-8 bom":
        data = b"\xef\xbb\xbf" + data
    elif change == "utf-16":
        data = text.encode("utf-16")
    elif change == "utf-16-le":
        data = text.encode("utf-16-le")
    elif change == "latin-1":
        data = data[:at] + draw(st.sampled_from([b"\xe9", b"\xb2", b"\xa0", b"\xff"])) + data[at:]
    elif change == "nul":
        data = data[:at] + b"\x00" + data[at:]
    elif change == "blank lines":
        data = with_blank_lines(draw, text, most=3)
    elif change == "no final newline":
        data = data.rstrip(b"\n")
    elif change == "random bytes":
        data = data[:at] + draw(st.binary(min_size=1, max_size=4)) + data[at:]
    else:
        data = data[:at] + draw(st.sampled_from(["\u2028", "\x85", "\x0b", "\x1c"])).encode() + data[at:]
    return with_inter_bytes(base, f"encoding {change}", data)


def with_blank_lines(draw, text: str, most: int) -> bytes:
    """`text` with 1 to `most` empty or whitespace-only lines inserted at drawn places."""
    lines = text.split("\n")
    for _ in range(draw(st.integers(1, most))):
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(["", " ", "   "])))
    return "\n".join(lines).encode()


EXTRA_WHERE = ["first row", "a row", "every row", "every line"]


@st.composite
def extra_fields(draw, base: Case, where: str | None = None) -> Case:
    header, rows = rows_of(base)
    extra = "\t" + draw(st.sampled_from(["", "0", "1\t2", "x"]))
    where = where or draw(st.sampled_from(EXTRA_WHERE))
    if where == "first row":
        rows[0] += extra
    elif where == "a row":
        rows[draw(st.integers(0, len(rows) - 1))] += extra
    else:
        rows = [r + extra for r in rows]
        header += extra if where == "every line" else ""
    return with_inter(base, f"extra fields {where}", header, rows)


LINE_CHANGES = ["blank lines", "crlf", "cr", "utf-8 bom"]


@st.composite
def lines_moved(draw, base: Case, change: str | None = None) -> Case:
    """Blank lines (gaps), CRLF or CR line ends, or a BOM, in a file already changed by another mutation: what
    the message says of a line must still be that line."""
    changed = draw(st.one_of(replaced_field(base), id_gap(base), dropped_or_duplicated_rows(base), extra_fields(base)))
    text = changed.files[base.inter].decode()
    change = change or draw(st.sampled_from(LINE_CHANGES))
    if change == "blank lines":
        data = with_blank_lines(draw, text, most=4)
    elif change == "crlf":
        data = text.replace("\n", "\r\n").encode()
    elif change == "cr":
        data = text.replace("\n", "\r").encode()
    else:
        data = b"\xef\xbb\xbf" + text.encode()
    return with_inter_bytes(base, f"{changed.kind} + {change}", data)


# family -> (strategy of a mutated case from a base and a change, the changes: each parametrizes the property)
INTER_MUTATIONS = {"none": (lambda base, _: st.just(base), [None]), "truncate": (truncated_inter, [None]),
                   "field": (replaced_field, list(FIELD_TEXTS)), "header": (changed_header, HEADER_CHANGES),
                   "rows": (dropped_or_duplicated_rows, ["drop rows", "duplicate row"]), "id gap": (id_gap, [None]),
                   "encoding": (odd_encoding, ENCODINGS), "extra fields": (extra_fields, EXTRA_WHERE),
                   "lines moved": (lines_moved, LINE_CHANGES)}
INTER_CHANGES = [(family, change) for family, (_, changes) in INTER_MUTATIONS.items() for change in changes]
MUTATIONS["inter"] = {f"{family} {change}" if change else family for family, change in INTER_CHANGES}


def inter_cases(family: str, change: str | None) -> st.SearchStrategy[Case]:
    mutate, _ = INTER_MUTATIONS[family]
    name = f"{family} {change}" if change else family
    return valid_cases().flatmap(lambda base: mutate(base, change)).map(lambda case: replace(case, family=name))


# -- mutations of the feature files --------------------------------------------------------------------------------

class Unpickled:
    """Pickled into an object .npy: unpickling it creates the file `marker` (which the property forbids)."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def pickled_npy(shape: tuple[int, int]) -> Callable[[Path], bytes]:
    def make(folder: Path) -> bytes:
        array = np.empty(shape, dtype=object)
        array.fill(Unpickled(str(folder / "UNPICKLED")))
        buffer = io.BytesIO()
        np.lib.format.write_array(buffer, array, allow_pickle=True)
        return buffer.getvalue()
    return make


def npy_header(shape: tuple, descr: str = "<f4", version: tuple[int, int] = (1, 0), data: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    write = np.lib.format.write_array_header_1_0 if version == (1, 0) else np.lib.format.write_array_header_2_0
    write(buffer, header)
    return buffer.getvalue() + data


@st.composite
def feature_cases(draw, change: str) -> Case:
    base = draw(valid_cases())
    modality = draw(st.sampled_from(MODALITIES))
    name = f"{modality}_feat.npy"
    n, width = base.n_items, draw(st.integers(1, 3))
    good = (np.arange(n * width).reshape(n, width) / 3).astype(np.float64)
    expect = "invalid"
    if change == "truncate":
        data = npy(good.astype(np.float32))
        content = data[:draw(st.integers(0, len(data) - 1))]
    elif change == "empty":
        content = b""
    elif change == "dtype":
        dtype = draw(st.sampled_from(["int8", "int64", "uint8", "bool", "complex64", "U3", "float16", "float64", ">f8",
                                      "<f4", "datetime64[s]", "V4", "f4,f4"]))
        expect = "valid" if dtype in ("float16", "float64", ">f8", "<f4") else "invalid"
        content = npy(good.astype(dtype) if expect == "valid" else np.zeros((n, width), dtype=dtype))
    elif change == "shape":
        shape = draw(st.sampled_from([(n * width,), (n, width, 1), (n + 1, width), (max(n - 1, 0), width), (1, n),
                                      (n, 0), (), (0, 0)]))
        content = npy(np.zeros(shape, dtype=np.float32))
        expect = "valid" if len(shape) == 2 and shape[0] == n else "invalid"
    elif change == "huge header":
        huge = draw(st.sampled_from([10**6, 2**31, 50_000_000_000, 10**18, 2**63 - 1]))
        shape = draw(st.sampled_from([(n, huge), (huge, width), (n, huge // max(n, 1) + 1)]))
        content = npy_header(shape, descr=draw(st.sampled_from(["<f4", "<f8"])),
                             version=draw(st.sampled_from([(1, 0), (2, 0)])),
                             data=b"\0" * draw(st.integers(0, 64)))
    elif change == "negative shape":
        content = npy_header((n, -draw(st.integers(1, 10**6))), data=b"\0" * 64)
    elif change == "non-finite":
        values = good.astype(np.float32)
        values.flat[draw(st.integers(0, values.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        content = npy(values)
    elif change == "overflow":  # finite in float64, not in float32
        values = good.copy()
        values.flat[draw(st.integers(0, values.size - 1))] = draw(st.sampled_from([1e300, -1e39, 3.5e38]))
        content = npy(values)
    elif change == "garbage":
        content = draw(st.binary(min_size=1, max_size=64))
    elif change == "corrupt header":
        data = npy(good.astype(np.float32))
        at = draw(st.integers(0, 60))
        content = data[:at] + draw(st.binary(min_size=1, max_size=3)) + data[at + 1:]
        expect = "either"  # a byte of the header's padding may change harmlessly
    elif change == "pickled":
        content = pickled_npy((n, width))
    elif change == "fortran order":
        content = npy(np.asfortranarray(good.astype(np.float32)))
        expect = "valid"
    elif change == "version":
        content = npy(good.astype(np.float32), version=draw(st.sampled_from([(1, 0), (2, 0), (3, 0)])))
        expect = "valid"
    elif change == "trailing bytes":
        content = npy(good.astype(np.float32)) + draw(st.binary(min_size=1, max_size=16))
        expect = "either"  # the contract says nothing of bytes past the array
    elif change == "directory":
        content = DIR
    else:
        content = None
        expect = "valid"
    files = {k: v for k, v in base.files.items() if k != name}
    if content is not None:
        files[name] = content
    return replace(base, family=f"npy {change}", kind=f"npy {change}", files=files, expect=expect,
                   culprit=name if expect == "invalid" else None)


FEATURE_CHANGES = ["truncate", "empty", "dtype", "shape", "huge header", "negative shape", "non-finite", "overflow",
                   "garbage", "corrupt header", "pickled", "fortran order", "version", "trailing bytes", "directory",
                   "missing"]
MUTATIONS["features"] = {f"npy {change}" for change in FEATURE_CHANGES}


# -- mutations of the folder and of features.json -------------------------------------------------------------------

JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                        max_size=3), max_leaves=6)
STANDIN_VALUES = st.one_of(st.lists(st.sampled_from([*MODALITIES, "sound", "Image", ""]), max_size=3),
                           st.lists(JSON_VALUES, max_size=3), JSON_VALUES)


def reference_record(data: bytes) -> str | None:
    """Why a features.json is refused (None: accepted): UTF-8 JSON, an object whose 'standin' (if any) is a
    list of modality names."""
    try:
        record = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):
        return "not JSON"
    if not isinstance(record, dict):
        return "not an object"
    standin = record.get("standin", [])
    if not isinstance(standin, list) or not all(isinstance(m, str) and m in MODALITIES for m in standin):
        return "bad standin"
    return None


@st.composite
def folder_cases(draw, change: str) -> Case:
    base = draw(valid_cases())
    files = dict(base.files)
    case = replace(base, family=change, kind=change, expect="invalid", culprit=base.inter)
    if change == "no inter":
        del files[base.inter]
        case.culprit = ""
    elif change == "two inter":
        files[draw(st.sampled_from(["other.inter", "toy.inter.inter", ".inter", "z.inter"]))] = files[base.inter]
        case.culprit = ""
    elif change == "inter directory":
        files[base.inter] = DIR
    elif change == "inter renamed":
        new = draw(st.sampled_from(["toy.INTER", "toy.inter.bak", "toy.inter ", "toy", "toy.int"]))
        files[new] = files.pop(base.inter)
        case.culprit = ""
    elif change == "folder missing":
        case.folder_missing = True
        case.culprit = ""
    elif change == "json directory":
        files["features.json"] = DIR
        case.culprit = "features.json"
    else:
        if change == "json text":
            data = draw(st.text(max_size=20)).encode()
        elif change == "json value":
            data = json.dumps(draw(st.one_of(JSON_VALUES, st.fixed_dictionaries({"standin": STANDIN_VALUES}))),
                              ensure_ascii=draw(st.booleans())).encode()
        elif change == "json bytes":
            data = draw(st.binary(max_size=20))
        else:
            depth = draw(st.sampled_from([10, 1000, 100_000]))
            data = ('{"standin": ' + "[" * depth + "]" * depth + "}").encode()
        files["features.json"] = data
        reason = reference_record(data)
        case.expect, case.culprit = ("invalid", "features.json") if reason else ("valid", None)
    case.files = files
    return case


FOLDER_CHANGES = ["no inter", "two inter", "inter directory", "inter renamed", "folder missing", "json text",
                  "json value", "json bytes", "json nested", "json directory"]
MUTATIONS["folder"] = set(FOLDER_CHANGES)


# -- writing, loading and judging -------------------------------------------------------------------------------------

def write_folder(case: Case, folder: Path) -> None:
    if case.folder_missing:
        return
    folder.mkdir()
    for name, content in case.files.items():
        if content == DIR:
            (folder / name).mkdir()
            (folder / name / "inside").write_bytes(b"x")
        else:
            (folder / name).write_bytes(content(folder) if callable(content) else content)


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


class Hang(Exception):
    """The alarm rang: load_dataset ran for HANG_SECONDS."""


@contextmanager
def alarm(seconds: int):
    def ring(signum, frame):
        raise Hang(f"load_dataset still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def check_dataset(data: Dataset, case: Case) -> None:
    """The loader's own guarantees about what it returns."""
    pairs = [data.train, data.valid, data.test]
    assert all(p.dtype == np.int64 and p.ndim == 2 and p.shape[1] == 2 for p in pairs)
    every = np.concatenate(pairs)
    assert len({tuple(p) for p in every.tolist()}) == len(every), "a pair twice"
    assert data.n_users <= len(every) and data.n_items <= len(every)  # before any range of that size
    assert set(every[:, 0].tolist()) == set(range(data.n_users)) == set(data.train[:, 0].tolist())
    assert set(every[:, 1].tolist()) == set(range(data.n_items))
    for modality, matrix in data.features.items():
        assert matrix.dtype == np.float32 and matrix.ndim == 2 and matrix.shape[0] == data.n_items
        assert np.isfinite(matrix).all()
        if modality in data.standin_features and f"{modality}_feat.npy" not in case.files:
            assert matrix.shape[1] == STANDIN_DIMS[modality]
    assert set(data.features) == {m for m in MODALITIES if f"{m}_feat.npy" in case.files or case.standin}


def check_named_line(message: str, data: bytes) -> None:
    """A message "line N (data row k), column 'c': expected ..., got 'v' (...)" names the line that holds v (a
    missing trailing field reads as ''); "the largest, M, is on line N" the line that holds the id M."""
    found = re.search(r"line (\d+) \(data row \d+\), column '([^']+)': expected .*, got (.+) \(\d+ bad row", message)
    largest = re.search(r"the largest, (\d+), is on line (\d+)", message)
    if not found and not largest:
        return
    text = data.decode("utf-8").removeprefix("\ufeff")  # the message came after the file was read as UTF-8
    if '"' in text:
        return
    lines = re.split(r"\r\n|\r|\n", text)
    number = int(found.group(1) if found else largest.group(2))
    assert number <= len(lines), f"{message}: the file has {len(lines)} lines"
    header = data_lines(text)[0][1].split("\t")
    fields = lines[number - 1].split("\t")
    fields += [""] * (len(header) - len(fields))
    if found:
        holds = all(value in fields for value in ast.literal_eval(found.group(3)).split(","))
    else:
        holds = any(re.fullmatch(r"[0-9]+", f) and int(f) == int(largest.group(1)) for f in fields)
    assert holds, f"{message}: line {number} is {lines[number - 1]!r}"


def run_property(prop: str, case: Case) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "data"
        write_folder(case, folder)
        before = snapshot(Path(tmp))
        try:
            with alarm(HANG_SECONDS), warnings.catch_warnings(record=True) as warned:
                warnings.simplefilter("always")
                data = load_dataset(folder, standin=case.standin)
        except Hang:
            raise
        except Exception as err:
            assert not warned, f"{case.kind}: warned (lines on stderr besides the error): {warned[0].message}"
            outcome = type(err).__name__
            OUTCOMES[(prop, case.family, case.kind, outcome)] += 1
            event(f"{case.kind}: {outcome}")
            assert exit_code(err) == EXIT_DATA, f"{case.kind}: not the clear error of bad data: {err!r}"
            line = one_line(err)
            assert "\n" not in line and line.startswith("error: ") and len(line) < 2000
            named = str(folder / case.culprit) if case.culprit else str(folder)
            assert named in line, f"{case.kind}: the message does not name {named}: {line}"
            assert case.expect != "valid", f"{case.kind}: a valid folder was refused: {line}"
            if case.inter in case.files and not case.folder_missing and case.files[case.inter] != DIR:
                check_named_line(str(err), case.files[case.inter])
        else:
            assert not warned, f"{case.kind}: warned (lines on stderr): {warned[0].message}"
            OUTCOMES[(prop, case.family, case.kind, "loaded")] += 1
            event(f"{case.kind}: loaded")
            assert case.expect != "invalid", f"{case.kind}: loaded, but {case.culprit or 'the folder'} is invalid " \
                                             f"({case.notes})"
            check_dataset(data, case)
            if case.reference is not None:
                ref = case.reference
                assert (data.n_users, data.n_items) == (ref.n_users, ref.n_items)
                for split, pairs in ref.splits.items():
                    assert getattr(data, split).tolist() == [list(p) for p in pairs], split
        after = snapshot(Path(tmp))
        assert after == before, f"{case.kind}: the folder changed: {sorted(set(after) ^ set(before))}"


# One property per file kind, run once per mutation family (parametrized: each family gets its examples, where one
# strategy sampling the families would give a few of them almost none).
@pytest.mark.parametrize("family,change", INTER_CHANGES, ids=[f"{f}-{c}" if c else f for f, c in INTER_CHANGES])
@settings(max_examples=15, **SETTINGS)
@given(data=st.data())
def test_any_inter_file_loads_as_its_contract_says_or_is_refused_naming_it(family, change, data):
    run_property("inter", data.draw(inter_cases(family, change), label="case"))


@pytest.mark.parametrize("change", FEATURE_CHANGES)
@settings(max_examples=20, **SETTINGS)
@given(data=st.data())
def test_any_feature_file_loads_as_float32_items_by_d_or_is_refused_naming_it(change, data):
    run_property("features", data.draw(feature_cases(change), label="case"))


@pytest.mark.parametrize("change", FOLDER_CHANGES)
@settings(max_examples=20, **SETTINGS)
@given(data=st.data())
def test_any_folder_or_feature_record_loads_or_is_refused_naming_it(change, data):
    run_property("folder", data.draw(folder_cases(change), label="case"))


def test_outcome_summary():
    """How many generated inputs each property tried, and the count of each outcome (issue 15 item 6)."""
    ran = {key[0] for key in OUTCOMES}
    if not ran:
        pytest.skip("run with the properties above (the summary counts their examples)")
    lines = []
    for prop in sorted(ran):
        mine = {key[1:]: n for key, n in OUTCOMES.items() if key[0] == prop}
        by_outcome: Counter = Counter()
        lines.append(f"{prop}: {sum(mine.values())} generated inputs")
        for (_, kind, outcome), n in sorted(mine.items(), key=lambda item: item[0][1:]):
            by_outcome[outcome] += n
            lines.append(f"    {kind:40} {outcome:18} {n}")
        lines.append("    outcomes: " + ", ".join(f"{outcome} {n}" for outcome, n in by_outcome.most_common()))
        untried = MUTATIONS[prop] - {family for family, _, _ in mine}
        assert not untried, f"{prop}: mutations never generated: {sorted(untried)}"
        assert set(by_outcome) <= {"loaded", "DataError", "IsADirectoryError"}, by_outcome
    print("\n".join(lines))


# -- what the properties found (the smallest inputs Hypothesis reported), kept as plain regression tests ------------

GOOD_INTER = b"userID\titemID\tx_label\n0\t0\t0\n0\t1\t1\n1\t1\t0\n1\t0\t2\n"


@pytest.mark.parametrize("inter,message", [
    # a first row with more fields than the header: pandas made its first field the index and shifted every column
    # (this file loaded as one user, one item; others were refused naming the wrong line and column)
    (b"userID\titemID\tx_label\n0\t0\t0\t0\n", r"line 2 \(data row 0\): 4 fields, but the header names 3 columns"),
    (b"userID\titemID\tx_label\n0\t0\t0\t0\n1\t0\t0\n", r"line 2 \(data row 0\): 4 fields"),
    # blank lines are skipped, and the lines named used to be counted without them
    (b"\nuserID\titemID\tx_label\n1\t0\t0\n", r"the largest, 1, is on line 3\)"),
    (b"userID\titemID\tx_label\n\n  \n0\tx\t0\n", r"line 4 \(data row 0\), column 'itemID'.*got 'x'"),
    (b"userID\titemID\tx_label\r\n\r\n0\t0\t0\r\n0\t0\t1\r\n", r"line 4 \(data row 1\), column 'userID,itemID'"),
], ids=["long first row", "long first row, then rows", "blank line before the header", "blank lines, then a bad id",
        "crlf and a blank line, then a duplicate"])
def test_an_inter_file_found_by_the_properties(tmp_path, inter, message):
    (tmp_path / "toy.inter").write_bytes(inter)
    with pytest.raises(DataError, match=message) as err:
        load_dataset(tmp_path)
    assert str(tmp_path / "toy.inter") in str(err.value)


@pytest.mark.parametrize("record", [b"\x80", b'{"standin": [["image"]]}', b'{"standin": [{}]}',
                                    b'{"standin": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                                    b'{"standin": ' + b"[" * 900 + b"]" * 900 + b"}"],
                         ids=["not utf-8", "a list in the list", "an object in the list", "nested 100000 deep",
                              "nested 900 deep"])
def test_a_feature_record_found_by_the_properties(tmp_path, record):
    """A TypeError, UnicodeDecodeError or RecursionError (a traceback, exit 1) before; a message of every length."""
    (tmp_path / "toy.inter").write_bytes(GOOD_INTER)
    (tmp_path / "features.json").write_bytes(record)
    with pytest.raises(DataError, match="features.json: (key 'standin': )?expected") as err:
        load_dataset(tmp_path)
    assert len(str(err.value)) < 300


def test_an_npy_header_whose_brackets_never_close(tmp_path):
    """numpy's header tokenizer raised tokenize.TokenError (a traceback)."""
    (tmp_path / "toy.inter").write_bytes(GOOD_INTER)
    data = npy(np.zeros((2, 2), dtype=np.float32))
    (tmp_path / "image_feat.npy").write_bytes(data.replace(b"}", b" ", 1))
    with pytest.raises(DataError, match=r"image_feat\.npy: not a readable \.npy array"):
        load_dataset(tmp_path)


def test_a_float64_value_past_float32_range_is_named_as_the_file_holds_it(tmp_path):
    """It became inf in the cast: a RuntimeWarning on stderr (lines besides the `error:` line) and "got inf"."""
    (tmp_path / "toy.inter").write_bytes(GOOD_INTER)
    np.save(tmp_path / "text_feat.npy", np.array([[0.5, 1.0], [2.0, -1e300]]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError, match=r"text_feat\.npy: row 1 \(itemID 1\), column 1: expected a value within "
                                            r"float32's range \(\|x\| <= 3\.40282e\+38\), got -1e\+300"):
            load_dataset(tmp_path)
