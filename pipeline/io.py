"""Files and logs: every output is written to a temporary name and renamed (a reader, or a killed run,
never leaves half a file), and every command logs the same way."""
from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yields a temporary path beside `path` (same suffix, so writers that pick a format by suffix
    still work); renamed onto `path` when the block ends without an error, removed otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.stem}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_with(path: Path, write: Callable[[IO[bytes]], Any]) -> None:
    """write(handle) into a temporary file, then rename."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        write(handle)


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: Path, payload: Any) -> None:
    write_text(path, json.dumps(payload, indent=2, default=str) + "\n")


def write_json_files(folder: Path, files: dict[str, Any]) -> None:
    """The folder holds exactly `files` (name -> payload) afterwards: a file left from an earlier run
    would stay a DVC metric."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.json"):
        if stale.name not in files:
            stale.unlink()
    for name, payload in files.items():
        write_json(folder / name, payload)


def copy_file(source: Path, target: Path) -> None:
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def pyplot():
    """matplotlib.pyplot drawing to files only (Agg), imported when a command first draws."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: Path, dpi: int = 110) -> None:
    """A matplotlib figure to `path` (format from its suffix), then closed."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi)
    pyplot().close(fig)


def setup_logging(level: int = logging.INFO) -> None:
    """The one logging set-up of every command: time, level, message on stderr."""
    logging.basicConfig(level=level, format=LOG_FORMAT)


@contextmanager
def quiet_loggers(*names: str, level: int = logging.WARNING) -> Iterator[None]:
    """Raise these loggers to `level` for a block, then put them back: a stage that trains many models
    (tune, sweep) logs per trial or per point, and must not leave train.log empty for whoever runs
    next in the same process."""
    loggers = [logging.getLogger(name) for name in names]
    before = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, old in zip(loggers, before):
            logger.setLevel(old)


def local_path(text: str | Path) -> Path:
    """A folder or file named in params.yaml. A relative path is the repository's: inside a `dvc exp run --temp`
    workspace (<repo>/.dvc/tmp/exps/...) it is resolved against <repo>, not the temporary copy, so that
    `../shared/...` names the same folder in both."""
    path = Path(text)
    if path.is_absolute():
        return path
    parts = Path.cwd().resolve().parts
    for i in range(1, len(parts) - 2):
        if parts[i:i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i]) / path
    return path

