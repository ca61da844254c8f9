"""Points a copied or moved MLflow store at its own artifacts again.

    python -m tools.relocate [--store mlruns] [--from OLD_FOLDER] [--dry-run]

MLflow records every artifact location as an absolute URI (`file:///<checkout>/mlruns/artifacts/...`)
in its database, and has no command to change them (mlflow/mlflow#3144, #8226). A `mlruns/`
copied to another checkout or machine therefore still reads the old checkout's files, or none
once that is gone. This rewrites, in the store's `mlflow.db`, every recorded location under the
old store folder to the same path under STORE: experiments, runs, logged models and registered
model versions. Nothing else changes; a store already in place is left alone ("nothing to do").
OLD_FOLDER is found from the experiments' locations when not given.

The store layout is the pipeline's (pipeline/tracking.py): `<store>/mlflow.db` with artifacts in
`<store>/artifacts/<experiment>`. An artifact location outside the old store folder (a bucket, a
folder configured elsewhere) is not touched, and is listed.
"""
from __future__ import annotations

import argparse
import logging
import sqlite3
from pathlib import Path

from pipeline.errors import EXIT_DATA, Refusal, run_command
from pipeline.io import setup_logging

log = logging.getLogger("tools.relocate")
# (table, column) of every artifact location MLflow 3's sqlite store keeps.
LOCATIONS = (("experiments", "artifact_location"), ("runs", "artifact_uri"),
             ("logged_models", "artifact_location"), ("model_versions", "storage_location"),
             ("model_versions", "source"))


def recorded_store(db: sqlite3.Connection) -> Path | None:
    """The store folder the experiments' artifact locations were made under: `<folder>/artifacts/<name>`."""
    for (location,) in db.execute("SELECT artifact_location FROM experiments WHERE name != 'Default'"):
        path = Path(location.removeprefix("file://"))
        if path.parent.name == "artifacts":
            return path.parent.parent
    return None


def prefixes(folder: Path) -> list[str]:
    """How a folder starts a recorded location: as a file URI and as a plain path (MLflow writes both)."""
    return [folder.as_uri() + "/", str(folder) + "/"]


def relocate(store: Path, old: Path | None = None, dry_run: bool = False) -> dict[str, int]:
    """Rewrites locations under `old` to `store`; returns rows changed per table.column."""
    store = store.resolve()
    database = store / "mlflow.db"
    if not database.is_file():
        raise Refusal(f"{database}: no MLflow store here (expected the sqlite file mlflow.db)", EXIT_DATA)
    with sqlite3.connect(database) as db:
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "experiments" not in tables:
            raise Refusal(f"{database}: not an MLflow store (it has no experiments table)", EXIT_DATA)
        old = old.resolve() if old else recorded_store(db)
        if old is None:
            raise Refusal(f"{database}: no experiment records its artifacts under '<store>/artifacts/'; "
                          f"give the old store folder with --from", EXIT_DATA)
        changed: dict[str, int] = {}
        if old == store:
            return changed
        for table, column in LOCATIONS:
            if table not in tables:
                continue
            for before, after in zip(prefixes(old), prefixes(store)):  # table/column: the fixed names above
                rows = db.execute(f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                                  f"WHERE substr({column}, 1, ?) = ?", (after, len(before) + 1, len(before), before))
                changed[f"{table}.{column}"] = changed.get(f"{table}.{column}", 0) + rows.rowcount
        for (location,) in db.execute("SELECT artifact_location FROM experiments"):
            if not any(location.startswith(p) for p in prefixes(store)):
                log.warning("left alone (outside the store): %s", location)
        if dry_run:
            db.rollback()
    return changed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path("mlruns"), help="the store folder (holds mlflow.db)")
    parser.add_argument("--from", dest="old", type=Path, help="the folder the store was copied from (found if omitted)")
    parser.add_argument("--dry-run", action="store_true", help="count what would change; change nothing")
    args = parser.parse_args(argv)
    setup_logging()
    changed = relocate(args.store, args.old, args.dry_run)
    if not any(changed.values()):
        log.info("%s: every artifact location already points inside it; nothing to do", args.store)
        return
    verb = "would point" if args.dry_run else "now points"
    log.info("%s %s at its own artifacts: %s", args.store, verb,
             ", ".join(f"{key} {n}" for key, n in changed.items() if n))


if __name__ == "__main__":
    run_command(main)
