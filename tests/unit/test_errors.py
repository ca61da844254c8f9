"""The one error boundary of every command (pipeline/errors.py): a known error is one `error:` line and the
exit code of its kind; a bug keeps its traceback (the subprocess runs: tests/integration/test_errors_cli.py)."""
import ast
from pathlib import Path

import pytest

from config.strict import ParamsError
from models.data import DataError
from models.graph import GraphFileError
from models.trainer import CheckpointRefused
from pipeline.errors import (
    EXIT_CHECKPOINT,
    EXIT_DATA,
    EXIT_FAILED,
    EXIT_SOURCE,
    EXIT_USAGE,
    DownloadError,
    Refusal,
    exit_code,
    one_line,
    run_command,
)
from pipeline.runs import RunError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("error,code", [
    (ParamsError("params.yaml: train.lr: bad"), EXIT_USAGE),
    (DataError("x.inter: line 2"), EXIT_DATA),
    (RunError("runs/a/b-c/seed1: no metrics.json"), EXIT_DATA),
    (GraphFileError("g.npz: stale"), EXIT_DATA),
    (FileNotFoundError(2, "No such file or directory", "x.inter"), EXIT_DATA),
    (PermissionError(13, "Permission denied", "x.inter"), EXIT_DATA),
    (IsADirectoryError(21, "Is a directory", "x.inter"), EXIT_DATA),
    (DownloadError("http://x/y.gz: HTTP 404"), EXIT_SOURCE),
    (CheckpointRefused("last.pt: refused to resume"), EXIT_CHECKPOINT),
    (Refusal("--ablation applies to --variant mrdib only", EXIT_USAGE), EXIT_USAGE),
    (RuntimeError("a bug"), None),
    (ValueError("a bug too"), None),
    (KeyError("a bug"), None),
])
def test_every_known_error_has_its_exit_code_and_a_bug_none(error, code):
    assert exit_code(error) == code


def test_the_message_is_one_line_naming_the_file():
    assert one_line(FileNotFoundError(2, "No such file or directory", "data/x.inter")) == \
        "error: data/x.inter: No such file or directory"
    assert one_line(DataError("a.json: bad\n  first\n\n  second")) == "error: a.json: bad; first; second"
    assert one_line(Refusal("error: already prefixed", EXIT_DATA)) == "error: already prefixed"


def test_a_known_error_exits_with_its_code_and_one_line(capsys):
    def main():
        raise DataError("d/toy.inter: line 5 (data row 3), column 'itemID': expected digits, got '1e2'")

    with pytest.raises(SystemExit) as stop:
        run_command(main)
    assert stop.value.code == EXIT_DATA
    err = capsys.readouterr().err
    assert err.splitlines() == ["error: d/toy.inter: line 5 (data row 3), column 'itemID': expected digits, got '1e2'"]


@pytest.mark.parametrize("returned,code", [(None, 0), (0, 0), (99, 99)])
def test_main_returning_sets_the_exit_code(returned, code):
    with pytest.raises(SystemExit) as stop:
        run_command(lambda: returned)
    assert stop.value.code == code


def test_a_refusal_and_a_plain_systemexit_message_are_one_line(capsys):
    def refused():
        raise Refusal("runs: no runs found", EXIT_DATA)

    def plain():
        raise SystemExit("study x: no trial completed")

    for main, code, line in ((refused, EXIT_DATA, "error: runs: no runs found"),
                             (plain, EXIT_FAILED, "error: study x: no trial completed")):
        with pytest.raises(SystemExit) as stop:
            run_command(main)
        assert stop.value.code == code and capsys.readouterr().err.splitlines() == [line]


def test_an_exit_code_passes_through_untouched(capsys):
    def usage():
        raise SystemExit(2)  # argparse, after printing its usage

    with pytest.raises(SystemExit) as stop:
        run_command(usage)
    assert stop.value.code == 2 and capsys.readouterr().err == ""


def test_a_bug_propagates_with_its_traceback(capsys):
    def main():
        raise RuntimeError("a bug")

    with pytest.raises(RuntimeError, match="a bug"):
        run_command(main)
    assert capsys.readouterr().err == ""


def entry_points() -> list[Path]:
    return sorted(p for folder in ("tasks", "tools", "benchmarks") for p in (REPO / folder).glob("*.py")
                  if p.name != "__init__.py")


@pytest.mark.parametrize("path", entry_points(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_command_ends_in_the_boundary(path):
    tree = ast.parse(path.read_text())
    blocks = [node for node in tree.body if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)]
    assert [ast.unparse(b).splitlines()[1].strip() for b in blocks] == ["run_command(main)"], (
        f"{path.name}: end with `if __name__ == \"__main__\": run_command(main)` (pipeline/errors.py)")
