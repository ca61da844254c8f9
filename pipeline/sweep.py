"""The sweep: MRdIB - base across the synthetic benchmark's knobs - when does the bottleneck help?

    python -m tasks.sweep --backbone vbpr --json reports/sweep/vbpr.json     # stage sweep@vbpr
    python -m tasks.sweep_table --parts reports/sweep --json reports/sweep.json  # stage sweep_table

The DVC pipeline runs one stage per backbone (sweep@<backbone>: its params are that backbone's only)
and sweep_table, which merges them into the table and the plot.

The grid is `sweep.grids.<sweep.grid>` in params.yaml: a base point (`synthetic:` keys) and values
of some knobs (nonlinearity, interactions_per_item, nuisance_scale, ...), each varied alone with the
others at the base (one at a time: a line per knob through one shared point, at 1 + sum(values)
points instead of the product's). At every point and for every seed s in sweep.seeds, the dataset is
generated with seed s (pipeline/synthetic.py) and each backbone of sweep.backbones is trained as base and
as MRdIB with seed s (pipeline.training.run: the pipeline's trainer, early stopping on validation, test
at the best-validation epoch), at most sweep.epochs epochs. The difference MRdIB - base of test
Recall@20 and NDCG@20 is paired per seed (same data, same seed); its mean over seeds gets a 95%
t-interval (paired_interval).

Hyper-parameters: the same treatment for both variants. With --tuned-dir, the tune stage's files
`<backbone>-base.json` and `<backbone>-mrdib.json` (tasks/tune.py: `values`, `trials`) give each variant
its tuned values (on the main pipeline's dataset, transferred to every point); their budgets must be
equal. Without both files, both variants train with params.yaml's values: "untuned (equal budget 0)".

Writes --json (everything: grid, seeds, budgets, per-seed metrics, differences, intervals), --markdown
(the table, wins and losses, a reading guide) and --plot (MRdIB - base against each knob, a line per
backbone, 95% intervals, a zero line). Models train in a temporary folder (--work keeps them there,
and a killed sweep started again with the same --work resumes; delete it after changing models/).
"""
from __future__ import annotations

import concurrent.futures as futures
import hashlib
import json
import logging
import multiprocessing
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from config.metrics import HEADLINE
from config.params import Params
from config.sections import VARIANTS, SyntheticConfig
from pipeline.errors import EXIT_DATA, EXIT_USAGE, Refusal
from pipeline.io import setup_logging
from pipeline.stats import LEVEL, paired_interval, paired_verdict
from pipeline.sweep_report import point_label
from pipeline.synthetic import generate, write_dataset

log = logging.getLogger("pipeline.sweep")
METRICS = HEADLINE
DATASET = "synthetic"  # every point's folder is named so: `datasets.synthetic.train` (lr, patience) applies


@dataclass(frozen=True)
class Point:
    knob: str | None   # None: the base point
    value: Any
    config: SyntheticConfig

    @property
    def label(self) -> str:
        return point_label(self.knob, self.value)

    def key(self) -> str:
        """Folder name: a hash of the data config, so other data never resumes a run of this one."""
        return hashlib.sha256(json.dumps(self.config.model_dump(), sort_keys=True).encode()).hexdigest()[:12]


def grid_points(params: Params) -> list[Point]:
    return [Point(k, v, c) for k, v, c in params.sweep.points(params.synthetic)]


# -- hyper-parameters ----------------------------------------------------------------------------
def variant_params(params: Params, backbone: str, tuned_dir: Path | None) -> tuple[dict[str, Params], dict]:
    """{variant: params to train it with} and the budget record. Tuned values only when both variants'
    files exist (equal budgets required); otherwise params.yaml's values for both."""
    from pipeline.training import read_tuned, with_values

    files = {v: tuned_dir / f"{backbone}-{v}.json" for v in VARIANTS} if tuned_dir else {}
    missing = [str(f) for f in files.values() if not f.is_file()]
    if not files or missing:
        note = "untuned (equal budget 0)" + (f": {', '.join(missing)} absent" if files else "")
        return {v: params for v in VARIANTS}, {"trials": {v: 0 for v in VARIANTS}, "note": note, "values": {}}
    tuned = {v: read_tuned(f, v) for v, f in files.items()}
    trials = {v: t["trials"] for v, t in tuned.items()}
    if len(set(trials.values())) > 1:
        raise Refusal(f"{backbone}: unequal tuning budgets {trials} in {tuned_dir}: the sweep would measure "
                      "the tuning, not the method", EXIT_DATA)
    sources = {t.get("source", "?") for t in tuned.values()}
    note = (f"tuned, {trials['base']} trials per variant ({', '.join(sorted(sources))}, on the main pipeline's "
            "dataset)" if trials["base"] else "untuned (equal budget 0)")
    return ({v: with_values(params, t["values"]) for v, t in tuned.items()},
            {"trials": trials, "note": note, "values": {v: t["values"] for v, t in tuned.items()}})


def capped(params: Params, epochs: int) -> Params:
    """The sweep's epoch cap (it replaces datasets.synthetic.train.epochs), no progress bar."""
    from pipeline.training import with_values

    return with_values(params, {"train.epochs": epochs, "train.progress": False})


# -- data and training ---------------------------------------------------------------------------
def dataset_dir(work: Path, point: Point, seed: int) -> Path:
    """The point's dataset for `seed`, generated (with that seed) unless already there."""
    folder = work / point.key() / f"seed{seed}" / DATASET
    if not (folder / "structure.json").is_file():
        write_dataset(folder, *generate(point.config, seed))
    return folder


def data_summary(folder: Path) -> dict:
    structure = json.loads((folder / "structure.json").read_text())
    rows = sum(1 for _ in (folder / f"{DATASET}.inter").open()) - 1
    return {"items_kept": structure["n_items_kept"], "interactions": rows,
            "interactions_per_item": rows / structure["n_items_kept"]}


def _init_worker() -> None:
    """One torch thread per model: on these tiny models two threads only wait on each other (and on a
    busy 2-core machine they are 10x slower than one)."""
    import torch

    torch.set_num_threads(1)
    setup_logging(logging.WARNING)
    os.environ.setdefault("MRDIB_TRACKING", "off")


def train_one(params: Params, data: Path, backbone: str, variant: str, out: Path, tuning: dict) -> dict:
    """One model through the pipeline's pipeline.training.run (no MLflow); what the sweep keeps of it."""
    from pipeline.training import run

    started = time.perf_counter()
    metrics = run(params, data, backbone, variant, out, track=False, tuning=tuning)
    return {"test": {m: metrics["test"][m] for m in METRICS}, "valid": {m: metrics["valid"][m] for m in METRICS},
            "best_epoch": metrics["best_epoch"], "epochs_run": metrics["epochs_run"],
            "seconds": time.perf_counter() - started}


def sweep(params: Params, tuned_dir: Path | None, work: Path, workers: int | None = None,
          backbones: list[str] | None = None) -> dict:
    """Train every (point, seed, backbone, variant) for `backbones` (default: sweep.backbones); the sweep's
    record (see summarise)."""
    cfg = params.sweep
    backbones = backbones or cfg.backbones
    unknown = [b for b in backbones if b not in cfg.backbones]
    if unknown:
        raise Refusal(f"--backbone {unknown}: not in sweep.backbones {cfg.backbones}", EXIT_USAGE)
    points = grid_points(params)
    settings = {b: variant_params(params, b, tuned_dir) for b in backbones}
    jobs = []
    for p, point in enumerate(points):
        for seed in cfg.seeds:
            data = dataset_dir(work, point, seed)
            for backbone, (by_variant, budget) in settings.items():
                for variant in VARIANTS:
                    run_params = capped(by_variant[variant], cfg.epochs).model_copy(update={"seed": seed})
                    tuning = {"trials": budget["trials"][variant], "source": budget["note"]}
                    jobs.append(((p, seed, backbone, variant),
                                 (run_params, data, backbone, variant, data.parent / f"{backbone}-{variant}", tuning)))
    log.info("sweep: %d points x %d seeds x %d backbones x 2 variants = %d models, %d at once",
             len(points), len(cfg.seeds), len(backbones), len(jobs), workers or cfg.workers)
    results, left = {}, {p: len(cfg.seeds) * len(backbones) * 2 for p in range(len(points))}
    started = time.perf_counter()

    def finished(key, value):
        results[key] = value
        left[key[0]] -= 1
        if not left[key[0]]:
            log.info("point %d/%d %s done (%.0fs): %s", key[0] + 1, len(points), points[key[0]].label,
                     time.perf_counter() - started, point_line(key[0], results, backbones, cfg.seeds))

    workers = workers or cfg.workers
    if workers == 1:
        _init_worker()
        for key, job in jobs:
            finished(key, train_one(*job))
    else:
        context = multiprocessing.get_context("spawn")  # torch's thread pools do not survive fork
        with futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker) as pool:
            pending = {pool.submit(train_one, *job): key for key, job in jobs}
            for done in futures.as_completed(pending):
                finished(pending[done], done.result())
    return summarise(params, points, results, settings, work, time.perf_counter() - started)


def point_line(p: int, results: dict, backbones: list[str], seeds: list[int]) -> str:
    parts = []
    for backbone in backbones:
        values = {v: [results[(p, s, backbone, v)]["test"]["recall@20"] for s in seeds] for v in VARIANTS}
        iv = paired_interval(values["base"], values["mrdib"])
        parts.append(f"{backbone} R@20 base {np.mean(values['base']):.4f} MRdIB-base {iv['mean']:+.4f} "
                     f"[{iv['low']:+.4f}, {iv['high']:+.4f}]")
    return "; ".join(parts)


def summarise(params: Params, points: list[Point], results: dict, settings: dict, work: Path,
              seconds: float) -> dict:
    cfg = params.sweep
    grid = cfg.grids[cfg.grid]
    record = {"grid": {"name": cfg.grid, "base": grid.base, "vary": grid.vary,
                       "design": "one knob at a time around the base point"},
              "backbones": list(settings), "seeds": cfg.seeds, "epochs": cfg.epochs,
              "patience": params.for_dataset(DATASET).train.patience, "metrics": list(METRICS), "level": LEVEL,
              "budget": {b: budget for b, (_, budget) in settings.items()}, "seconds": round(seconds, 1),
              "points": []}
    for p, point in enumerate(points):
        data = [data_summary(work / point.key() / f"seed{s}" / DATASET) for s in cfg.seeds]
        entry = {"label": point.label, "knob": point.knob, "value": point.value,
                 "synthetic": point.config.model_dump(),
                 "data": {"items_kept": [d["items_kept"] for d in data],
                          "interactions_per_item": float(np.mean([d["interactions_per_item"] for d in data]))},
                 "results": {}}
        for backbone in settings:
            runs = {v: [results[(p, s, backbone, v)] for s in cfg.seeds] for v in VARIANTS}
            by_metric = {}
            for metric in METRICS:
                values = {v: [r["test"][metric] for r in runs[v]] for v in VARIANTS}
                interval = paired_interval(values["base"], values["mrdib"])
                by_metric[metric] = {"base": values["base"], "mrdib": values["mrdib"],
                                     "base_mean": float(np.mean(values["base"])),
                                     "mrdib_mean": float(np.mean(values["mrdib"])),
                                     "diff": interval, "verdict": paired_verdict(interval)}
            by_metric["best_epoch"] = {v: [r["best_epoch"] for r in runs[v]] for v in VARIANTS}
            by_metric["epochs_run"] = {v: [r["epochs_run"] for r in runs[v]] for v in VARIANTS}
            entry["results"][backbone] = by_metric
        record["points"].append(entry)
    return record


