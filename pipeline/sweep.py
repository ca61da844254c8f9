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
from pipeline.io import pyplot, save_figure, setup_logging
from pipeline.stats import LEVEL, paired_interval, paired_verdict
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
        return "base" if self.knob is None else f"{self.knob}={self.value}"

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
        raise SystemExit(f"{backbone}: unequal tuning budgets {trials} in {tuned_dir}: the sweep would measure "
                         "the tuning, not the method")
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
        raise SystemExit(f"--backbone {unknown}: not in sweep.backbones {cfg.backbones}")
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


# -- outputs -------------------------------------------------------------------------------------
def knob_values(record: dict) -> dict[str, list]:
    """knob -> its values in the plot, the base point's included, sorted."""
    base = next(p for p in record["points"] if p["knob"] is None)
    return {knob: sorted({base["synthetic"][knob], *[p["value"] for p in record["points"] if p["knob"] == knob]})
            for knob in record["grid"]["vary"]}


def at(record: dict, knob: str, value) -> dict:
    """The point of `knob` = value (the base point where value is the base's)."""
    for point in record["points"]:
        if point["knob"] == knob and point["value"] == value:
            return point
    return next(p for p in record["points"] if p["knob"] is None)


def plot(record: dict, path: Path) -> None:
    """Rows: metrics; columns: knobs. MRdIB - base (mean over seeds, 95% t-interval) per backbone."""
    knobs = knob_values(record)
    base = next(p for p in record["points"] if p["knob"] is None)["synthetic"]
    fig, axes = pyplot().subplots(len(METRICS), max(1, len(knobs)), figsize=(4.4 * max(1, len(knobs)), 3.3 * len(METRICS)),
                             squeeze=False, layout="constrained")
    for j, (knob, values) in enumerate(knobs.items()):
        for i, metric in enumerate(METRICS):
            ax = axes[i, j]
            log_x = min(values) > 0 and max(values) / min(values) >= 4
            for k, backbone in enumerate(record["backbones"]):
                diffs = [at(record, knob, v)["results"][backbone][metric]["diff"] for v in values]
                mean = np.array([d["mean"] for d in diffs])
                errors = np.array([[d["mean"] - d["low"] for d in diffs], [d["high"] - d["mean"] for d in diffs]])
                shift = (k - (len(record["backbones"]) - 1) / 2) * 0.03
                x = np.array(values, dtype=float) * (2 ** shift if log_x else 1) + (0 if log_x else shift * (
                    max(values) - min(values) or 1))
                ax.errorbar(x, mean, yerr=errors, marker="o", capsize=3, label=backbone)
            ax.axhline(0, color="black", lw=0.8)
            ax.axvline(base[knob], color="gray", lw=0.8, ls=":")
            if log_x:
                ax.set_xscale("log", base=2)
            ax.set_xticks(values, [f"{v:g}" for v in values])
            ax.minorticks_off()
            ax.set(xlabel=f"{knob} (dotted: base point)", ylabel=f"MRdIB - base, test {metric}")
            if i == 0:
                ax.set_title(knob)
            ax.legend(fontsize=8)
    fig.suptitle(f"MRdIB - base per knob ({len(record['seeds'])} seeds, 95% t-intervals)")
    save_figure(fig, path)


def capped_runs(record: dict, res: dict, variant: str) -> str:
    """`k/n`: runs of the variant that the epoch cap stopped (not early stopping: maybe still improving)."""
    runs = res["epochs_run"][variant]
    return f"{sum(e >= record['epochs'] for e in runs)}/{len(runs)}"


def fmt(interval: dict) -> str:
    return f"{interval['mean']:+.4f} [{interval['low']:+.4f}, {interval['high']:+.4f}]"


GUIDE = ("Reading guide: each row is one point of the grid and one backbone; `MRdIB − base` is the mean over seeds "
         "of the paired per-seed difference of the test metric, with a {level:.0%} t-interval over the {n} seeds "
         "({dof} degrees of freedom: few seeds make it wide; with no true difference about 1 cell in 20 still "
         "excludes 0 by chance). Read a knob along its line in the plot: the base point is on every line. "
         "`nonlinearity` entangles the clutter with the signal (0: linearly separable); `interactions_per_item` "
         "is the items' side of the data (lower: sparser items, features matter more); `nuisance_scale` is the "
         "clutter's strength (0: none, so a bottleneck has nothing to drop). A difference the interval cannot "
         "separate from 0 is neither a win nor a loss; differences are absolute (base R@20 gives the scale). "
         "`at the cap`: runs that the epoch cap stopped rather than early stopping (they may still have been "
         "improving; a variant capped more often than the other may be compared before it converged). Per-seed "
         "values and best epochs are in sweep.json. The sweep's data ({users} users, seeds other than the tuning "
         "seed) and its epoch cap differ from Table 1's, so its numbers are not Table 1's.")


def markdown(record: dict, plot_link: str | None = None) -> str:
    """The setup, the table, the wins and losses, a reading guide and (plot_link) the plot."""
    grid = record["grid"]
    base = ", ".join(f"{k} = {v}" for k, v in grid["base"].items())
    vary = "; ".join(f"{k} ∈ {v}" for k, v in grid["vary"].items())
    budgets = "; ".join(f"{b}: {x['note']}" for b, x in record["budget"].items())
    n_models = len(record["points"]) * len(record["seeds"]) * len(record["backbones"]) * 2
    lines = [f"Grid `{grid['name']}`, {grid['design']}: base point {base} (the rest of `synthetic:` as in "
             f"params.yaml); varied: {vary}. Backbones {', '.join(record['backbones'])}; seeds "
             f"{', '.join(map(str, record['seeds']))} (seed s generates the point's data and trains both "
             f"variants: the difference is paired per seed); at most {record['epochs']} epochs, patience "
             f"{record['patience']}, test at the best-validation epoch; {n_models} models in "
             f"{record['seconds']:.0f} s. Hyper-parameters, the same treatment for both variants: {budgets}.",
             "",
             "| point | backbone | items (inter./item) | base R@20 | MRdIB − base R@20 [95% CI] | base N@20 "
             "| MRdIB − base N@20 [95% CI] | R@20 | N@20 | at the cap (base, MRdIB) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    wins, losses = [], []
    for point in record["points"]:
        data = point["data"]
        for backbone, res in point["results"].items():
            r, n = res["recall@20"], res["ndcg@20"]
            lines.append(f"| {point['label']} | {backbone} | {np.mean(data['items_kept']):.0f} "
                         f"({data['interactions_per_item']:.1f}) | {r['base_mean']:.4f} | {fmt(r['diff'])} "
                         f"| {n['base_mean']:.4f} | {fmt(n['diff'])} | {r['verdict']} | {n['verdict']} "
                         f"| {capped_runs(record, res, 'base')}, {capped_runs(record, res, 'mrdib')} |")
            for metric, v in (("R@20", r), ("N@20", n)):
                what = f"{backbone} at {point['label']} ({metric} {v['diff']['mean']:+.4f})"
                (wins if v["verdict"] == "helps" else losses if v["verdict"] == "hurts" else []).append(what)
    cells = len(record["points"]) * len(record["backbones"]) * 2
    lines += ["",
              f"**MRdIB helps** (interval above 0) in {len(wins)} of {cells} (point, backbone, metric) cells"
              + (": " + "; ".join(wins) if wins else "") + ".",
              f"**MRdIB hurts** (interval below 0) in {len(losses)} of {cells}"
              + (": " + "; ".join(losses) if losses else "") + ".",
              f"The other {cells - len(wins) - len(losses)} cells: no difference this sweep can resolve.",
              *([f"With {len(record['seeds'])} seeds (fewer than the 5 this project asks of a claim), read "
                 "helps / hurts as where to look next, not as a finding; `-S 'sweep.seeds=[...]'` adds seeds."]
                if len(record["seeds"]) < 5 else []),
              "",
              GUIDE.format(level=record["level"], n=len(record["seeds"]), dof=len(record["seeds"]) - 1,
                           users=record["points"][0]["synthetic"]["n_users"])]
    if plot_link:
        lines += ["", f"![MRdIB − base per knob]({plot_link})"]
    return "\n".join(lines)


def combine(params: Params, folder: Path) -> dict:
    """One record from the per-backbone records FOLDER/<backbone>.json of sweep.backbones (the DVC stages
    sweep@<backbone>), checked to be of the current grid, seeds and epoch cap."""
    cfg, records = params.sweep, []
    expected = [p.label for p in grid_points(params)]
    for backbone in cfg.backbones:
        path = folder / f"{backbone}.json"
        if not path.is_file():
            raise SystemExit(f"{path} absent: run `python -m tasks.sweep --backbone {backbone} --json {path}`")
        record = json.loads(path.read_text())
        same = (record["grid"]["name"], record["seeds"], record["epochs"], [p["label"] for p in record["points"]])
        if same != (cfg.grid, cfg.seeds, cfg.epochs, expected) or record["backbones"] != [backbone]:
            raise SystemExit(f"{path}: another grid, seeds, epoch cap or backbone than params.yaml's sweep: stale")
        records.append(record)
    merged = records[0] | {"backbones": list(cfg.backbones), "budget": {}, "points": [],
                           "seconds": round(sum(r["seconds"] for r in records), 1)}
    for r in records:
        merged["budget"] |= r["budget"]
    for i, point in enumerate(records[0]["points"]):
        merged["points"].append(point | {"results": {b: r["points"][i]["results"][b]
                                                     for r in records for b in r["backbones"]}})
    return merged

