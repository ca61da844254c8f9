"""Generated malformed dataset folders through the real command (issue 15 item 6, the command boundary):
`python -m tasks.train --data-dir <folder>` exits 3 with exactly one `error:` line on stderr naming the file at
fault, no traceback, no metrics.json, and nothing created or changed in the data folder.

Each example is a subprocess (a few seconds), so each kind of mutation gets only EXAMPLES examples (the first the
simplest, by Hypothesis's design; derandomized, so the same on every run). Every mutation here makes the folder
invalid by construction; the in-process properties, with hundreds of inputs and valid ones too, are
tests/unit/test_loaders_property.py. The count of each outcome: `OUTCOMES`, printed by `test_outcome_summary`.
"""
from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import EXIT_DATA

REPO = Path(__file__).resolve().parents[2]
HEADER = "userID\titemID\tx_label"
ROWS = ["0\t0\t0", "0\t1\t1", "0\t2\t2", "1\t1\t0", "1\t2\t0", "1\t0\t2", "2\t2\t0", "2\t0\t1"]  # 3 users, 3 items
MAX_ID = 2**31 - 1
EXAMPLES = 2
OUTCOMES: Counter = Counter()  # (kind, exit code, stderr lines) -> examples


def inter(rows: list[str], header: str = HEADER) -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()


def npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


class Unpickled:
    """In an object .npy: unpickling it would create the file `marker`."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


NOT_PLAIN = st.one_of(  # never plain digits 0..MAX_ID: an id or x_label the reader must refuse
    st.sampled_from(["1e0", "+1", "-1", " 1", "1 ", "1.0", "", "0x1", "١", "１", "NaN", "1\x00"]),
    st.integers(MAX_ID + 1, 10**30).map(str),
    st.floats().map(repr),
    st.text(st.characters(exclude_characters="\t\r\n\""), min_size=1, max_size=5).filter(
        lambda text: not re.fullmatch(r"[0-9]+", text)),
)


@st.composite
def inter_field(draw):
    rows = list(ROWS)
    row, column = draw(st.integers(0, len(rows) - 1)), draw(st.integers(0, 2))
    fields = rows[row].split("\t")
    fields[column] = draw(NOT_PLAIN)
    rows[row] = "\t".join(fields)
    return {"toy.inter": inter(rows)}, "toy.inter"


@st.composite
def inter_truncated(draw):
    data = inter(ROWS)
    if draw(st.booleans()):  # inside the header: a column goes missing
        return {"toy.inter": data[:draw(st.integers(0, len(HEADER) - 1))]}, "toy.inter"
    row = draw(st.integers(0, len(ROWS) - 1))
    start = len(inter(ROWS[:row]))  # where the row begins
    cut = start + draw(st.sampled_from([1, 2, 3, 4]))  # after "0", "0\t", "0\t0" or "0\t0\t": x_label goes missing
    return {"toy.inter": data[:cut]}, "toy.inter"


@st.composite
def inter_encoding(draw):
    change = draw(st.sampled_from(["utf-16", "latin-1", "nul"]))
    if change == "utf-16":
        return {"toy.inter": inter(ROWS).decode().encode("utf-16")}, "toy.inter"
    rows = list(ROWS)
    row = draw(st.integers(0, len(rows) - 1))
    at = draw(st.integers(0, len(rows[row])))
    data = (inter(rows[:row]) + rows[row][:at].encode() + (b"\xe9" if change == "latin-1" else b"\x00")
            + rows[row][at:].encode() + b"\n" + "".join(r + "\n" for r in rows[row + 1:]).encode())
    return {"toy.inter": data}, "toy.inter"


@st.composite
def inter_rows(draw):
    rows = list(ROWS)
    change = draw(st.sampled_from(["duplicate", "id gap", "extra field", "no train row"]))
    if change == "duplicate":
        rows.insert(draw(st.integers(0, len(rows))), draw(st.sampled_from(ROWS)))
    elif change == "id gap":
        row, column = draw(st.integers(0, len(rows) - 1)), draw(st.integers(0, 1))
        fields = rows[row].split("\t")
        fields[column] = str(draw(st.integers(4, MAX_ID)))  # 3 is the next id: 4 or more leaves a gap
        rows[row] = "\t".join(fields)
    elif change == "extra field":
        row = draw(st.sampled_from([0, draw(st.integers(0, len(rows) - 1))]))
        rows[row] += "\t" + draw(st.sampled_from(["0", "", "1\t2"]))
    else:  # user 2's train row becomes a valid row
        rows = [r if r != "2\t2\t0" else "2\t2\t" + draw(st.sampled_from(["1", "2"])) for r in rows]
    return {"toy.inter": inter(rows)}, "toy.inter"


@st.composite
def feature_file(draw):
    name = draw(st.sampled_from(["image_feat.npy", "text_feat.npy"]))
    good = np.arange(6, dtype=np.float32).reshape(3, 2)
    change = draw(st.sampled_from(["truncated", "huge header", "pickled", "int dtype", "rows", "nan", "overflow"]))
    if change == "truncated":
        data = npy(good)
        content = data[:draw(st.integers(0, len(data) - 1))]
    elif change == "huge header":
        buffer = io.BytesIO()
        np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False,
                                                      "shape": (3, draw(st.integers(10**6, 10**15)))})
        content = buffer.getvalue() + b"\0" * 64
    elif change == "pickled":
        content = None  # made once the folder exists: the marker is a path inside it
    elif change == "int dtype":
        content = npy(good.astype(draw(st.sampled_from(["int64", "uint8", "bool"]))))
    elif change == "rows":
        content = npy(np.ones((draw(st.sampled_from([1, 2, 4, 100])), 2), dtype=np.float32))
    else:
        values = good.astype(np.float64)
        values.flat[draw(st.integers(0, 5))] = np.nan if change == "nan" else draw(st.sampled_from([1e300, -1e39]))
        content = npy(values)
    return {"toy.inter": inter(ROWS), name: content}, name


@st.composite
def feature_record(draw):
    content = draw(st.one_of(st.binary(min_size=1, max_size=8).filter(lambda b: not is_utf8_json_object(b)),
                             st.sampled_from([b"[]", b'"standin"', b'{"standin": "image"}', b'{"standin": [["image"]]}',
                                              b'{"standin": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"])))
    return {"toy.inter": inter(ROWS), "features.json": content}, "features.json"


def is_utf8_json_object(data: bytes) -> bool:
    try:
        return isinstance(json.loads(data.decode("utf-8")), dict)
    except ValueError:
        return False


@st.composite
def folder(draw):
    if draw(st.booleans()):
        return {"toy.inter.bak": inter(ROWS)}, ""
    return {"toy.inter": inter(ROWS), draw(st.sampled_from(["other.inter", ".inter"])): inter(ROWS)}, ""


KINDS = {"inter field": inter_field, "inter truncated": inter_truncated, "inter encoding": inter_encoding,
         "inter rows": inter_rows, "feature file": feature_file, "features.json": feature_record, "folder": folder}


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("kind", list(KINDS))
@settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None)
@given(data=st.data())
def test_train_on_a_malformed_folder_exits_3_with_one_error_line(kind, data):
    files, culprit = data.draw(KINDS[kind](), label="folder")
    with tempfile.TemporaryDirectory() as tmp:
        folder, out = Path(tmp) / "data", Path(tmp) / "run"
        folder.mkdir()
        for name, content in files.items():
            if content is None:  # the pickled array
                array = np.empty((3, 2), dtype=object)
                array.fill(Unpickled(str(folder / "UNPICKLED")))
                content = npy(array, allow_pickle=True)
            (folder / name).write_bytes(content)
        before = snapshot(folder)
        result = subprocess.run(
            [sys.executable, "-m", "tasks.train", "--data-dir", str(folder), "--backbone", "bprmf", "--variant", "base",
             "--epochs", "1", "--out", str(out), "--set", "tracking.enabled=false", "--set", "train.device=cpu"],
            cwd=REPO, capture_output=True, text=True, timeout=120)
        lines = result.stderr.splitlines()
        OUTCOMES[(kind, result.returncode, len(lines))] += 1
        output = result.stdout + result.stderr
        assert "Traceback" not in output, output
        assert result.returncode == EXIT_DATA, output
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert str(folder / culprit) in lines[0], lines[0]
        assert not (out / "metrics.json").exists()
        assert snapshot(folder) == before, "the data folder changed"


def test_outcome_summary():
    """How many malformed folders went through the command, and what came of them (issue 15 item 6)."""
    if not OUTCOMES:
        pytest.skip("run with the property above (the summary counts its examples)")
    print(f"\n{sum(OUTCOMES.values())} malformed folders through `python -m tasks.train`:")
    for (kind, code, lines), n in sorted(OUTCOMES.items()):
        print(f"    {kind:16} exit {code}, {lines} stderr line(s): {n}")
    assert {kind for kind, _, _ in OUTCOMES} == set(KINDS)
    assert {(code, lines) for _, code, lines in OUTCOMES} == {(EXIT_DATA, 1)}
