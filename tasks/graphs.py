"""The graphs stage: the fixed graphs a backbone needs, built once per dataset, as an explicit file.

    python -m tasks.graphs --dataset NAME --backbone B [--data-dir data/prepared/NAME] \
        [--out data/graphs/NAME/B.npz] [--params params.yaml] [--set key=value ...]

Item-item kNN graphs from feature cosine similarity (FREEDOM, MGCN, SOIL), the normalised
user-item graph (every graph backbone), DualGNN's user-user co-occurrence graph and SOIL's
second-order user-item and interest-aware item graphs (models/graph.py). The file records a
key of every input it was built from (backbone, the config keys the graphs read, the train
pairs, the features): `tasks.train --graphs FILE` refuses a file built for anything else.
Backbones without fixed graphs (VBPR) get a file with no graphs, so every train stage
depends on one file uniformly.
"""
from __future__ import annotations

import argparse
import json
import logging
import resource
import time
from pathlib import Path

import torch

from config.params import load_params
from models.data import load_dataset
from models.graph import save_graphs
from models.registry import get_backbone
from pipeline.errors import run_command
from pipeline.io import setup_logging
from pipeline.training import model_context

log = logging.getLogger("tasks.graphs")


def build(params, data_dir: Path, backbone: str, out: Path) -> dict:
    """Build and save the backbone's graphs; returns a summary (nnz per graph, seconds, peak RSS)."""
    dataset = load_dataset(data_dir, standin=params.data.standin_features, seed=params.seed)
    params = params.for_dataset(dataset.name, backbone)
    model_class, config = get_backbone(backbone), params.backbone_config(backbone)
    # Graphs are built on the CPU from the frozen features: the same file serves CPU and GPU training.
    ctx = model_context(params, dataset, "base", torch.device("cpu"))
    started = time.perf_counter()
    graphs = model_class.build_graphs(ctx, config)
    seconds = time.perf_counter() - started
    out.parent.mkdir(parents=True, exist_ok=True)
    save_graphs(out, graphs, model_class.graph_key(ctx, config))
    summary = {"backbone": backbone, "dataset": dataset.name, "seconds": round(seconds, 3),
               "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
               "graphs": {name: {"shape": list(g.shape), "nnz": int(g.nnz)} for name, g in graphs.items()}}
    log.info("%s on %s: %s in %.2fs", backbone, dataset.name,
             ", ".join(f"{n} {s['shape'][0]}x{s['shape'][1]} nnz {s['nnz']}" for n, s in summary["graphs"].items())
             or "no fixed graphs", seconds)
    return summary


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Build a backbone's fixed graphs for one dataset.")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--data-dir", type=Path, help="default: data/prepared/<dataset>")
    parser.add_argument("--out", type=Path, help="default: data/graphs/<dataset>/<backbone>.npz")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging()
    params = load_params(args.params, args.overrides)
    data_dir = args.data_dir or Path("data/prepared") / args.dataset
    out = args.out or Path("data/graphs") / args.dataset / f"{args.backbone}.npz"
    summary = build(params, data_dir, args.backbone, out)
    print(json.dumps(summary))


if __name__ == "__main__":
    run_command(main)
