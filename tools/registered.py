"""Registered model versions side by side: base vs MRdIB, seed by seed, the `champion` marked.

    python -m tools.registered --dataset D [--backbones B ...] [--out reports/registered_D.md] [--all]

Every tracked training run registers its model as a version of `<dataset>-<backbone>`
(pipeline/tracking.py). For each such registered model this prints one row per version (variant,
ablation, seed, tuned or params.yaml alphas, the validation score that elects the champion, test
metrics, run id) and, per variant, the mean ± std over seeds with MRdIB's change against base.
A model trained again registers a new version: by default the table shows the newest version of
each (variant, ablation, seed) and the champion; --all shows every version. The table goes to
stdout and to OUT (markdown), with OUT's .json beside it. The store is the one of `tracking:` in
params.yaml (or MLFLOW_TRACKING_URI).
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from config.metrics import BRIEF, metric_key
from config.params import load_params
from pipeline.errors import run_command
from pipeline.io import setup_logging
from pipeline.stats import mean_and_std
from pipeline.tracking import CHAMPION, resolve_store

COLUMNS = list(BRIEF)


def collect(client, dataset: str, backbones: list[str] | None, newest_only: bool) -> dict[str, list[dict]]:
    """Registered model name -> rows (one per version), sorted by variant, ablation, seed."""
    names = sorted(m.name for m in client.search_registered_models(f"name LIKE '{dataset}-%'"))
    if backbones:
        names = [n for n in names if n.split("-", 1)[1] in backbones]
    tables = {}
    for name in names:
        champion = client.get_registered_model(name).aliases.get(CHAMPION)
        rows = []
        for version in client.search_model_versions(f"name='{name}'"):
            run_id = version.tags.get("run_id", version.run_id)  # the run that trained and registered it
            tags, metrics = version.tags, client.get_run(run_id).data.metrics
            rows.append({"version": int(version.version), "champion": str(version.version) == str(champion),
                         "variant": tags.get("variant", "?"), "ablation": tags.get("ablation", ""),
                         "seed": tags.get("seed", "?"), "alphas": tags.get("tuned_source", "params.yaml")
                         if tags.get("variant") == "mrdib" else "", "valid_metric": tags.get("valid_metric"),
                         "valid": float(tags.get("valid_score", "nan")),
                         "test": {c: metrics.get(f"test_{metric_key(c)}", float("nan")) for c in COLUMNS},
                         "run_id": run_id})
        if newest_only:
            newest = {}
            for row in sorted(rows, key=lambda r: r["version"]):
                newest[(row["variant"], row["ablation"], row["seed"])] = row
            rows = [r for r in rows if r["champion"] or r is newest[(r["variant"], r["ablation"], r["seed"])]]
        tables[name] = sorted(rows, key=lambda r: (r["variant"], r["ablation"], str(r["seed"]), r["version"]))
    return tables


def markdown(tables: dict[str, list[dict]]) -> str:
    lines = []
    for name, rows in tables.items():
        metric = next((r["valid_metric"] for r in rows if r["valid_metric"]), "valid")
        lines += [f"## {name}", "", f"| version | variant | seed | alphas | valid {metric} | "
                  + " | ".join(f"test {c}" for c in COLUMNS) + " | run |", "|" + "---|" * (len(COLUMNS) + 6)]
        for r in rows:
            variant = r["variant"] + (f" ({r['ablation']})" if r["ablation"] else "")
            mark = f"{r['version']} ({CHAMPION})" if r["champion"] else str(r["version"])
            lines.append(f"| {mark} | {variant} | {r['seed']} | {r['alphas']} | {r['valid']:.4f} | "
                         + " | ".join(f"{r['test'][c]:.4f}" for c in COLUMNS) + f" | {r['run_id'][:8]} |")
        lines += ["", *summary_lines(rows, metric), ""]
    return "\n".join(lines) if lines else "no registered models found"


def summary_lines(rows: list[dict], metric: str) -> list[str]:
    """Mean ± std over seeds per variant; MRdIB's relative change against base."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["variant"] + (f" ({r['ablation']})" if r["ablation"] else ""), []).append(r)
    lines = [f"| variant | seeds | valid {metric} | " + " | ".join(f"test {c}" for c in COLUMNS) + " |",
             "|" + "---|" * (len(COLUMNS) + 3)]
    means = {}
    for variant, members in groups.items():
        cells = [np.array([m["valid"] for m in members])] + [np.array([m["test"][c] for m in members])
                                                            for c in COLUMNS]
        means[variant] = [float(np.nanmean(c)) for c in cells]
        lines.append(f"| {variant} | {len(members)} | "
                     + " | ".join("{:.4f} ± {:.4f}".format(*mean_and_std(c[~np.isnan(c)])) for c in cells) + " |")
    if "base" in means and "mrdib" in means:
        change = [(m / b - 1) * 100 if b else float("nan") for m, b in zip(means["mrdib"], means["base"])]
        lines.append("| mrdib vs base | | " + " | ".join(f"{c:+.1f}%" for c in change) + " |")
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--backbones", nargs="+", help="default: every registered backbone of the dataset")
    parser.add_argument("--out", type=Path, help="markdown file (default: reports/registered_<dataset>.md)")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--all", action="store_true", help="every version, not only the newest per variant and seed")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    setup_logging(logging.WARNING)
    from mlflow import MlflowClient

    uri, _ = resolve_store(load_params(args.params, args.overrides).tracking)
    tables = collect(MlflowClient(tracking_uri=uri), args.dataset, args.backbones, newest_only=not args.all)
    text = markdown(tables)
    out = args.out or Path("reports") / f"registered_{args.dataset}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# Registered models of {args.dataset} ({uri})\n\n{text}\n")
    out.with_suffix(".json").write_text(json.dumps(tables, indent=2))
    print(text)


if __name__ == "__main__":
    run_command(main)
