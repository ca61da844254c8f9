"""Stage `sweep@<backbone>`: MRdIB - base for one backbone at every point of the synthetic grid
`sweep.grids.<sweep.grid>`, paired per seed (pipeline/sweep.py says how); writes that backbone's part.

    python -m tasks.sweep --backbone vbpr --tuned-dir tuned/synthetic --json reports/sweep/vbpr.json
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
from pathlib import Path

from config.params import load_params
from pipeline.errors import run_command
from pipeline.io import quiet_loggers, setup_logging, write_text
from pipeline.sweep import sweep

log = logging.getLogger("tasks.sweep")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--backbone", action="append", required=True,
                        help="a backbone of sweep.backbones (repeatable)")
    parser.add_argument("--tuned-dir", type=Path, help="the tune stage's folder (tuned/synthetic): "
                        "<backbone>-<variant>.json per variant; absent: params.yaml values for both")
    parser.add_argument("--json", type=Path, required=True, help="the part, e.g. reports/sweep/vbpr.json")
    parser.add_argument("--work", type=Path,
                        help="keep datasets and runs here (resumable); default: a temporary folder")
    parser.add_argument("--workers", type=int, help="models at once (default: sweep.workers)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging()
    params = load_params(args.params, args.overrides)
    work = args.work or Path(tempfile.mkdtemp(prefix="sweep-"))
    try:  # per-epoch lines of dozens of models: the sweep logs per point instead
        with quiet_loggers("pipeline.training", "models.trainer"):
            record = sweep(params, args.tuned_dir, work, args.workers, args.backbone)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    write_text(args.json, json.dumps(record, indent=2))
    log.info("wrote %s in %.0fs", args.json, record["seconds"])


if __name__ == "__main__":
    run_command(main)
