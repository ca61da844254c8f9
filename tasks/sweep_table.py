"""Stage `sweep_table`: the parts of the sweep@<backbone> stages merged into the sweep's table and plot.

    python -m tasks.sweep_table --parts reports/sweep --json reports/sweep.json \
        --markdown reports/sweep.md --plot reports/sweep.png
"""
from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from config.params import load_params
from pipeline.errors import run_command
from pipeline.io import setup_logging, write_text
from pipeline.sweep_report import combine, markdown, plot

log = logging.getLogger("tasks.sweep_table")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--parts", type=Path, default=Path("reports/sweep"),
                        help="the folder of <backbone>.json, one per backbone of sweep.backbones")
    parser.add_argument("--json", type=Path, default=Path("reports/sweep.json"))
    parser.add_argument("--markdown", type=Path, default=Path("reports/sweep.md"))
    parser.add_argument("--plot", type=Path, default=Path("reports/sweep.png"))
    args = parser.parse_args(argv)
    setup_logging()
    record = combine(load_params(args.params, args.overrides), args.parts)
    write_text(args.json, json.dumps(record, indent=2))
    plot(record, args.plot)
    write_text(args.markdown, markdown(record, os.path.relpath(args.plot, args.markdown.parent)) + "\n")
    log.info("wrote %s, %s, %s (%.0fs of training)", args.json, args.markdown, args.plot, record["seconds"])


if __name__ == "__main__":
    run_command(main)
