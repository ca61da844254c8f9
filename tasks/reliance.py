"""Modality reliance: what a trained model loses when one modality's item features carry no information.

    python -m tasks.reliance --params params.yaml --runs runs --data-root data/prepared --graphs-root data/graphs \
        --out reports/reliance.json --markdown reports/reliance.md --metrics reports/metrics/reliance

For every multimodal run RUNS/<dataset>/<backbone>-<variant>/seed<S>/ the model is rebuilt from its
best.pt (pipeline/latents.py, as the probe and the report's t-SNE do) and evaluated on validation and test
(full ranking, as the train stage) three times: intact, then with the image features of every item
replaced by their mean over items, then the same for the text features (one modality at a time, the
other intact). The drop = intact - replaced, for Recall@20 and NDCG@20 on each split; per dataset /
backbone / variant the mean ± std over seeds, and MRdIB - base of each drop paired by seed with a
t-interval over seeds (pipeline.stats.paired_interval).

Reading it: on data where one modality is pure clutter (the real datasets here: stand-in image
features), a model that ignores the clutter loses nothing when it is removed (drop ≈ 0), while the
drop for the informative modality is what the model takes from it. A negative drop means the model
ranks better without that modality. The mean replaces the features the model reads at evaluation:
the dataset's table (VBPR, MMGCN, DualGNN, SOIL) or the fine-tuned copy (FREEDOM, MGCN). Item-item
graphs built from the features before training (FREEDOM, MGCN, SOIL's kNN and interest graphs) are
part of the trained model and are kept: for FREEDOM, whose score reads the features only through that
graph, the drop is ~0 by construction and says nothing about its reliance (the table marks it).

Seconds per model (three full evaluations); writes OUT, MARKDOWN (the report's "Modality
reliance" section) and, for `dvc metrics show` / `dvc metrics diff`, METRICS/<dataset>-<backbone>-<modality>.json
(the drop in test Recall@20, with the keys of Table 1's metric files: metric_files); runs without best.pt or of
ID-only backbones are skipped and named.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from config.metrics import HEADLINE
from config.params import Params, load_params
from config.sections import VARIANTS
from models.base import FeatureTable, Recommender
from models.evaluation import Evaluator, summarize
from models.registry import get_backbone
from pipeline.errors import run_command
from pipeline.io import setup_logging, write_json_files, write_text
from pipeline.latents import load_run_model, run_dataset
from pipeline.runs import Run, load_runs
from pipeline.stats import mean_and_std, paired_interval

log = logging.getLogger("tasks.reliance")

MODALITIES = ("image", "text")          # replaced one at a time, in this order
METRICS = HEADLINE
SPLITS = ("valid", "test")
GRAPH_ONLY = {"freedom": "score reads the features only through the frozen kNN graph (kept): drop ~0 by design"}


@contextmanager
def mean_features(model: Recommender, modality: str):
    """Within the block, every item's `modality` features are their mean over items (the tables the model
    reads at evaluation: ctx.features and any FeatureTable of that modality); restored afterwards."""
    saved_ctx = model.ctx.features
    table = saved_ctx[modality]
    model.ctx.features = {**saved_ctx, modality: table.mean(0, keepdim=True).expand_as(table).contiguous()}
    saved_tables = []
    for name, module in model.named_modules():
        if isinstance(module, FeatureTable) and name.rsplit(".", 1)[-1] == modality:
            values = module.all().detach()
            mean = values.mean(0, keepdim=True).expand_as(values).contiguous()
            if module.trainable:
                saved_tables.append((module, "weight", module.weight.data))
                module.weight.data = mean
            else:
                saved_tables.append((module, "frozen", module.frozen))
                module.frozen = mean
    try:
        yield model
    finally:
        model.ctx.features = saved_ctx
        for module, attribute, values in saved_tables:
            if attribute == "weight":
                module.weight.data = values
            else:
                module.frozen = values


@torch.no_grad()
def scores(model: Recommender, evaluator: Evaluator) -> dict[str, dict[str, float]]:
    """{split: {metric: mean}} of the model as it is now (prepare_eval: caches rebuilt)."""
    model.eval()
    model.prepare_eval()
    means = summarize(evaluator.per_user(model.full_scores, SPLITS))
    return {split: {m: float(means[split][m]) for m in METRICS} for split in SPLITS}


def run_reliance(params: Params, data_root: Path, graphs_root: Path, run: Run) -> dict:
    """{"intact": scores, "<modality>": scores with it replaced, "drop": {modality: {split: {metric}}}, ...}."""
    start = time.perf_counter()
    dataset = run_dataset(data_root, run)
    model = load_run_model(params, data_root, graphs_root, run, dataset)
    train = params.for_dataset(run.dataset, run.backbone).train
    evaluator = Evaluator(dataset.n_users, dataset.n_items, dataset.train,
                          {"valid": dataset.valid, "test": dataset.test},
                          batch_size=train.eval_batch_size, device=model.ctx.device)
    record = {"intact": scores(model, evaluator)}
    for modality in (m for m in MODALITIES if m in model.modalities):
        with mean_features(model, modality):
            record[modality] = scores(model, evaluator)
    model.prepare_eval()  # the intact model's caches again (a caller may keep using it)
    record["drop"] = {m: {s: {k: record["intact"][s][k] - record[m][s][k] for k in METRICS} for s in SPLITS}
                      for m in MODALITIES if m in record}
    record["standin"] = list(run.metrics.get("standin_features") or [])
    record["seconds"] = time.perf_counter() - start
    return record


def aggregate(per_run: dict[tuple, dict]) -> dict:
    """{dataset: {backbone: {variant: {seeds, intact, drop (mean, std)}, "mrdib_minus_base": intervals}}}."""

    out: dict = {}
    for (dataset, backbone, variant, seed), record in sorted(per_run.items()):
        cell = out.setdefault(dataset, {}).setdefault(backbone, {}).setdefault(variant, {"seeds": [], "runs": []})
        cell["seeds"].append(seed)
        cell["runs"].append(record)
    for backbones in out.values():
        for variants in backbones.values():
            for cell in variants.values():
                runs = cell.pop("runs")
                cell["standin"] = runs[0]["standin"]
                cell["seconds_per_model"] = float(np.mean([r["seconds"] for r in runs]))
                cell["intact"] = {s: {k: _mean_std([r["intact"][s][k] for r in runs]) for k in METRICS}
                                  for s in SPLITS}
                cell["drop"] = {m: {s: {k: _mean_std([r["drop"][m][s][k] for r in runs]) for k in METRICS}
                                    for s in SPLITS} for m in runs[0]["drop"]}
                cell["per_seed_drop"] = {m: {s: {k: [r["drop"][m][s][k] for r in runs] for k in METRICS}
                                             for s in SPLITS} for m in runs[0]["drop"]}
            base, mrdib = variants.get("base"), variants.get("mrdib")
            if base and mrdib and base["seeds"] == mrdib["seeds"] and len(base["seeds"]) >= 2:
                variants["mrdib_minus_base"] = {
                    m: {s: {k: _interval(paired_interval(base["per_seed_drop"][m][s][k],
                                                         mrdib["per_seed_drop"][m][s][k])) for k in METRICS}
                        for s in SPLITS} for m in base["per_seed_drop"] if m in mrdib["per_seed_drop"]}
            if backbone in GRAPH_ONLY:
                variants["note"] = GRAPH_ONLY[backbone]
    return out


def _mean_std(values: list[float]) -> dict:
    mean, std = mean_and_std(values)
    return {"mean": mean, "std": std}


def _interval(interval: dict) -> dict:
    return {k: interval[k] for k in ("n", "mean", "low", "high")}


def markdown(record: dict) -> str:
    """The drop table: a row per (dataset, backbone, replaced modality), base and MRdIB side by side."""
    if not record["datasets"]:
        return "_No multimodal runs to diagnose._"
    lines = [RELIANCE_GUIDE, "",
             "| dataset | backbone | replaced by its mean | seeds | base: test R@20 | base: drop valid R@20 | "
             "base: drop test R@20 | base: drop test N@20 | MRdIB: test R@20 | MRdIB: drop valid R@20 | "
             "MRdIB: drop test R@20 | MRdIB: drop test N@20 | MRdIB − base, drop test R@20 (95% CI) |",
             "|---|---|---|---|" + "---|" * 9]
    fmt = lambda v: f"{v['mean']:+.4f} ± {v['std']:.4f}"  # noqa: E731
    notes = []
    for dataset, backbones in record["datasets"].items():
        for backbone, variants in backbones.items():
            if "note" in variants:
                notes.append(f"{dataset}/{backbone}: {variants['note']}")
            for modality in MODALITIES:
                cells = []
                seeds = None
                for variant in VARIANTS:
                    cell = variants.get(variant)
                    if not cell or modality not in cell["drop"]:
                        cells += ["–"] * 4
                        continue
                    seeds = len(cell["seeds"])
                    drop = cell["drop"][modality]
                    cells += [f"{cell['intact']['test']['recall@20']['mean']:.4f}", fmt(drop["valid"]["recall@20"]),
                              fmt(drop["test"]["recall@20"]), fmt(drop["test"]["ndcg@20"])]
                diff = variants.get("mrdib_minus_base", {}).get(modality, {}).get("test", {}).get("recall@20")
                cells.append(f"{diff['mean']:+.4f} [{diff['low']:+.4f}, {diff['high']:+.4f}]" if diff else "–")
                standin = " (stand-in)" if modality in (variants.get("base") or variants.get("mrdib") or {}).get(
                    "standin", []) else ""
                lines.append(f"| {dataset} | {backbone} | {modality}{standin} | {seeds} | " + " | ".join(cells) + " |")
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    if record.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(record["skipped"])]
    lines += ["", f"{record['models']} models, {record['seconds']:.1f} s in all "
                  f"({record['seconds'] / max(record['models'], 1):.2f} s per model: three full evaluations)."]
    return "\n".join(lines)


def metric_files(record: dict, split: str = "test", metric: str = METRICS[0]) -> dict[str, dict]:
    """{file name: values} for `dvc metrics`, one file per (dataset, backbone, replaced modality), with the keys of
    Table 1's metric files (tasks/table1.py): seeds; base and mrdib, each variant's mean drop of test Recall@20;
    ci_lower and ci_upper, the 95% t-interval of MRdIB - base of that drop (paired by seed). No verdict: a
    drop's sign says more or less reliance, not better or worse. The same numbers as reliance.json."""
    files = {}
    for dataset, backbones in record["datasets"].items():
        for backbone, variants in backbones.items():
            for modality in MODALITIES:
                values = {}
                for variant in VARIANTS:
                    cell = variants.get(variant)
                    if cell and modality in cell["drop"]:
                        values["seeds"] = len(cell["seeds"])
                        values[variant] = cell["drop"][modality][split][metric]["mean"]
                if not values:
                    continue
                interval = variants.get("mrdib_minus_base", {}).get(modality, {}).get(split, {}).get(metric)
                if interval:
                    values |= {"ci_lower": interval["low"], "ci_upper": interval["high"]}
                files[f"{dataset}-{backbone}-{modality}.json"] = values
    return files


RELIANCE_GUIDE = ("Drop = metric with every feature intact − metric with one modality's item features replaced by "
                  "their mean over items (evaluation only, the trained model unchanged); mean ± std over seeds. "
                  "A model that ignores a modality loses nothing when it is replaced (drop ≈ 0); a negative drop "
                  "means it ranks better without it. Stand-in features are seeded noise: any reliance on them is "
                  "reliance on clutter. The last column is MRdIB's drop minus base's, paired by seed (t-interval): "
                  "below 0 = MRdIB relies less on that modality.")


def reliance(params: Params, runs_root: Path, data_root: Path, graphs_root: Path) -> dict:
    """The whole diagnostic over every multimodal run under runs_root."""
    start, per_run, skipped = time.perf_counter(), {}, []
    for run in load_runs(runs_root, VARIANTS):
        if not get_backbone(run.backbone).modalities:
            skipped.append(f"{run.folder}: {run.backbone} uses no modality features")
            continue
        if not (run.folder / "best.pt").is_file():
            skipped.append(f"{run.folder}: no best.pt")
            continue
        per_run[(run.dataset, run.backbone, run.variant, run.seed)] = record = \
            run_reliance(params, data_root, graphs_root, run)
        log.info("%s: drop (test R@20) %s in %.1f s", run.folder,
                 {m: round(d["test"]["recall@20"], 4) for m, d in record["drop"].items()}, record["seconds"])
    return {"datasets": aggregate(per_run), "skipped": skipped, "models": len(per_run),
            "seconds": time.perf_counter() - start, "metrics": list(METRICS), "splits": list(SPLITS),
            "modalities": list(MODALITIES), "replacement": "mean over items, at evaluation"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--data-root", type=Path, default=Path("data/prepared"))
    parser.add_argument("--graphs-root", type=Path, default=Path("data/graphs"))
    parser.add_argument("--out", type=Path, default=Path("reports/reliance.json"))
    parser.add_argument("--markdown", type=Path, default=Path("reports/reliance.md"))
    parser.add_argument("--metrics", type=Path, default=None,
                        help="folder of the `dvc metrics` files (default: metrics/reliance beside OUT)")
    args = parser.parse_args(argv)
    setup_logging()
    record = reliance(load_params(args.params), args.runs, args.data_root, args.graphs_root)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, json.dumps(record, indent=2) + "\n")
    write_text(args.markdown, markdown(record) + "\n")
    write_json_files(args.metrics or args.out.parent / "metrics" / "reliance", metric_files(record))
    log.info("%d models in %.1f s; wrote %s and %s", record["models"], record["seconds"], args.out, args.markdown)


if __name__ == "__main__":
    run_command(main)
