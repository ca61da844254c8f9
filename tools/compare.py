"""Train several backbones x variants on one dataset folder and print one comparison table.

    python -m tools.compare --data-dir data/synthetic --out runs/synthetic \
        [--models pop bprmf lightgcn vbpr vbpr:mrdib] [--seeds 2024 2025] [--set key=value ...]

Each model runs through the same `pipeline.training.run` as `python -m tasks.train`; its folder
OUT/<backbone>-<variant>/seed<seed>/ holds metrics.json, per_user_test.npz, history.json and
best.pt (the layout `tasks.table1` reads). The table goes to stdout and to OUT/table.md.
A finished model is not trained again (delete its folder to retrain).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from config.metrics import BRIEF
from config.params import load_params
from pipeline.errors import run_command
from pipeline.io import setup_logging, write_json
from pipeline.training import run

DEFAULT_MODELS = ["pop", "bprmf", "lightgcn", "vbpr", "vbpr:mrdib"]
COLUMNS = [*BRIEF, "precision@20", "map@20"]


def markdown_table(rows: dict[str, dict]) -> str:
    header = "| model | best epoch | s/epoch | " + " | ".join(f"test {c}" for c in COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 3)]
    for name, m in rows.items():
        cells = [f"{m['test'][c]:.4f}" for c in COLUMNS]
        lines.append(f"| {name} | {m['best_epoch']} | {m['seconds_per_epoch']:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("data/synthetic"))
    parser.add_argument("--out", type=Path, default=Path("runs/synthetic"))
    parser.add_argument("--seeds", type=int, nargs="+", help="default: the seed in params.yaml")
    parser.add_argument("--models", nargs="+", default=DEFAULT_MODELS, metavar="BACKBONE[:VARIANT]")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    setup_logging()
    params = load_params(args.params, args.overrides)
    rows = {}
    for seed in args.seeds or [params.seed]:
        seeded = params.model_copy(update={"seed": seed})
        for spec in args.models:
            backbone, _, variant = spec.partition(":")
            folder = Path(f"{backbone}-{variant or 'base'}", f"seed{seed}")
            done = args.out / folder / "metrics.json"
            rows[folder.as_posix()] = json.loads(done.read_text()) if done.exists() else \
                run(seeded, args.data_dir, backbone, variant or "base", args.out / folder)
    table = markdown_table(rows)
    standin = sorted({m for r in rows.values() for m in r["standin_features"]})
    if standin:
        table += f"\n\nSTAND-IN features ({', '.join(standin)}): seeded noise, not comparable to published numbers."
    (args.out / "table.md").write_text(table + "\n")
    write_json(args.out / "summary.json", rows)
    print(table)


if __name__ == "__main__":
    run_command(main)
