"""One error boundary for every command (`python -m tasks.*`, `tools.*`, `benchmarks.*`).

Each module ends in `if __name__ == "__main__": run_command(main)`; `main(argv)` itself raises as usual
(tests call it). `run_command` turns a known error into ONE line on stderr, `error: <message>` (the
message names the file, line/column or key, and what was expected), and exits with the code of its kind:

    0  success
    1  any other failure: an unexpected error (a bug: its traceback is kept), or a refusal of no kind below
       (a plain `SystemExit("message")`: printed as one `error:` line)
    2  bad parameters or usage: ParamsError (params.yaml, --set, an unknown dataset or backbone), argparse's
       usage errors, LatentsUnavailable, a `Refusal(..., EXIT_USAGE)`
    3  bad or missing input data: DataError (a dataset folder, .inter, .npy, raw file), RunError (a run
       folder), GraphFileError, a refused tuned file, FileNotFoundError / PermissionError /
       IsADirectoryError / NotADirectoryError, a failed validation (tasks.validate)
    4  unreachable source: DownloadError (a URL that fails after its retries, HTTP 4xx, a checksum mismatch)
    5  refused checkpoint: CheckpointRefused (a `last.pt` that cannot be loaded safely; never run nor replaced)

tools.orchestrate keeps its own codes (2 refused parameters, 99 nothing to do: the Airflow DAG reads them).

The error classes stay where they are raised (config/ is a leaf and models/ does not import the pipeline);
the boundary finds them by name in the modules already imported, so it imports no model code: a command
that never imported `models.data` cannot raise a DataError.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DATA = 3
EXIT_SOURCE = 4
EXIT_CHECKPOINT = 5


class DownloadError(RuntimeError):
    """A download that could not be completed; the message names the URL and the cause."""


class Refusal(SystemExit):
    """`raise Refusal(message, EXIT_DATA)`: stop a command with one message line and the exit code of its kind.

    A SystemExit (what `raise SystemExit(message)` did before, and what tests catch), so a `main()` called
    outside the boundary still stops with the message."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED):
        super().__init__(message)
        self.exit_code = exit_code


# (module, class name, exit code): matched by isinstance against the class of a module already imported
KNOWN_ERRORS = (
    ("config.strict", "ParamsError", EXIT_USAGE),
    ("pipeline.latents", "LatentsUnavailable", EXIT_USAGE),
    ("models.data", "DataError", EXIT_DATA),
    ("pipeline.runs", "RunError", EXIT_DATA),
    ("models.graph", "GraphFileError", EXIT_DATA),
    ("models.trainer", "CheckpointRefused", EXIT_CHECKPOINT),
)
INPUT_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def exit_code(err: BaseException) -> int | None:
    """The documented exit code of a known error; None for anything else (a bug)."""
    if isinstance(err, Refusal):
        return err.exit_code
    if isinstance(err, DownloadError):
        return EXIT_SOURCE
    if isinstance(err, INPUT_ERRORS):
        return EXIT_DATA
    for module, name, code in KNOWN_ERRORS:
        cls = getattr(sys.modules.get(module), name, None)
        if isinstance(cls, type) and isinstance(err, cls):
            return code
    return None


def one_line(err: BaseException) -> str:
    """`error: <message>` on one line (an OSError as `<file>: <reason>`)."""
    if isinstance(err, OSError) and err.filename is not None:
        text = f"{err.filename}: {err.strerror or err}"
    elif isinstance(err, SystemExit):
        text = str(err.code)
    else:
        text = str(err) or type(err).__name__
    text = "; ".join(part.strip() for part in text.splitlines() if part.strip())
    return text if text.startswith("error: ") else f"error: {text}"


def run_command(main: Callable[[], int | None]) -> NoReturn:
    """Run `main()` and exit: its return value as the exit code, a known error as one `error:` line and
    the code of its kind, a `SystemExit("message")` as one `error:` line and 1. Anything else propagates
    with its traceback."""
    try:
        code = main()
    except SystemExit as stop:
        if isinstance(stop, Refusal) or isinstance(stop.code, str):
            print(one_line(stop), file=sys.stderr, flush=True)
            sys.exit(exit_code(stop) or EXIT_FAILED)
        raise  # an exit code (argparse's 2 after its usage line, parser.exit(...)): already said
    except Exception as err:
        code = exit_code(err)
        if code is None:
            raise
        print(one_line(err), file=sys.stderr, flush=True)
        sys.exit(code)
    sys.exit(code or 0)
