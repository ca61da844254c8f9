"""Collect every training run into the paper's Table 1 (accuracy, MRdIB against base).

    python -m tasks.evaluate --runs runs --out reports

Runs are folders `RUNS/<dataset>/<backbone>-<variant>/seed<seed>/` as the train stage writes
them (`python -m tasks.train --pipeline-seeds`: metrics.json and per_user_test.npz). For every
dataset and backbone trained both ways, Table 1 gives base and MRdIB test metrics as mean +- std
over seeds, the relative change of the means, and a 95% confidence interval of the difference
MRdIB - base from a two-way paired bootstrap (two_way_bootstrap): a replicate resamples the
training seeds and, independently, the test users. Both are sources of variation the claim must
survive: a new seed retrains both models; a new user sample re-asks the same models. The users
are the same under every seed (crossed, not nested), so they are resampled once per replicate.

Fairness is checked, not assumed: the two variants of a backbone must have been trained with the
same seeds and the same tuning budget (`tuning.trials` in metrics.json); otherwise the table is
refused with an error naming the runs. Per-epoch seconds of these runs are not reported: they
are not a measurement (see benchmarks/speed.py).
"""
from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from models.evaluation import mean_and_std
from models.mrdib import ABLATIONS, KEEPS_ENCODER
from tasks.train import VARIANTS, write_json

RUN_GROUP = re.compile(r"^(?P<backbone>[a-z0-9_]+)-(?P<setting>[a-z0-9_]+)$")  # <backbone>-<variant or ablation>
SEED_FOLDER = re.compile(r"^seed(?P<seed>\d+)$")
TABLE_METRICS = [f"{m}@{k}" for k in (5, 10, 20) for m in ("recall", "precision", "map", "ndcg")]


class RunError(ValueError):
    """A run folder is incomplete or contradicts its name."""


@dataclass
class Run:
    dataset: str
    backbone: str
    variant: str
    seed: int
    metrics: dict
    folder: Path

    def per_user(self, metric: str) -> tuple[np.ndarray, np.ndarray]:
        data = np.load(self.folder / "per_user_test.npz")
        return data["users"], data[metric.replace("@", "_at_")]


def run_folders(root: Path):
    """(folder, dataset, backbone, setting, seed) of every ROOT/<dataset>/<backbone>-<setting>/seed<N>/."""
    for folder in sorted(p for p in Path(root).glob("*/*/seed*") if p.is_dir()):
        group, seed = RUN_GROUP.match(folder.parent.name), SEED_FOLDER.match(folder.name)
        if group and seed:
            yield folder, folder.parent.parent.name, group["backbone"], group["setting"], int(seed["seed"])


def load_runs(root: Path, settings: Iterable[str]) -> list[Run]:
    """Every ROOT/<dataset>/<backbone>-<setting>/seed<N>/ whose setting is in `settings`.

    A matching folder without a readable metrics.json is an error naming the folder: a table
    silently missing a seed would report a different mean than the one it claims.
    """
    settings, runs = set(settings), []
    for folder, dataset, backbone, setting, seed in run_folders(root):
        if setting not in settings:
            continue
        path = folder / "metrics.json"
        if not path.is_file():
            raise RunError(f"{folder}: no metrics.json (the run did not finish; train it again)")
        try:
            metrics = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise RunError(f"{path}: not valid JSON ({err})") from None
        runs.append(Run(dataset, backbone, setting, seed, metrics, folder))
        check_alphas(runs[-1])
    return runs


def check_alphas(run: Run) -> None:
    """An ablation run must have trained with the weights its name says are zero."""
    alphas = run.metrics.get("alphas") or {}
    wrong = [name for name in ABLATIONS.get(run.variant, ()) if alphas.get(name, 0.0) != 0.0]
    if wrong:
        raise RunError(f"{run.folder}: named {run.variant!r} but metrics.json records {alphas} ({wrong} not 0)")
    if run.variant in KEEPS_ENCODER and not run.metrics.get("keep_encoder"):
        raise RunError(f"{run.folder}: named {run.variant!r} but metrics.json records no kept encoder")


def check_paired(base: list[Run], other: list[Run]) -> None:
    """Both sides trained with the same seeds and the same tuning budget, or RunError naming them."""
    seeds = lambda runs: sorted(r.seed for r in runs)  # noqa: E731
    if seeds(base) != seeds(other):
        raise RunError(f"unpaired seeds: {base[0].folder.parent} has {seeds(base)}, {other[0].folder.parent} has "
                       f"{seeds(other)} (train both with the same pipeline.seeds)")
    budgets = {r.folder: tuning_trials(r) for r in base + other}
    if len({budgets[r.folder] for r in base}) > 1 or len({budgets[r.folder] for r in other}) > 1 \
            or tuning_trials(base[0]) != tuning_trials(other[0]):
        raise RunError(f"unequal tuning budgets: {base[0].folder.parent} {sorted({tuning_trials(r) for r in base})} "
                       f"trials, {other[0].folder.parent} {sorted({tuning_trials(r) for r in other})}: "
                       "a comparison where one side was tuned more measures the tuning (give tune.backbones both)")


def tuning_trials(run: Run) -> int:
    """The tuning budget (finished Optuna trials) that chose the run's values; 0 = untuned."""
    tuning = run.metrics.get("tuning")
    if not isinstance(tuning, dict) or not isinstance(tuning.get("trials"), int):
        raise RunError(f"{run.folder}/metrics.json: no tuning record (`tuning.trials`); train it again")
    return tuning["trials"]


def seed_user_differences(base: list[Run], other: list[Run], metric: str) -> np.ndarray:
    """[n_seeds, n_users] per-user test differences other - base, seed by seed (paired)."""
    by_seed = {r.seed: r for r in base}
    rows = []
    for run in sorted(other, key=lambda r: r.seed):
        users_o, values_o = run.per_user(metric)
        users_b, values_b = by_seed[run.seed].per_user(metric)
        if not np.array_equal(users_o, users_b):
            raise RunError(f"{run.folder} and {by_seed[run.seed].folder} evaluated different users")
        rows.append(values_o - values_b)
    return np.array(rows)


def two_way_bootstrap(differences: np.ndarray, n_boot: int, seed: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the mean of differences [n_seeds, n_users], resampling seeds and users.

    Each replicate draws n_seeds seeds and n_users users with replacement, independently, and
    averages the differences over that grid: mean = w_s' D c_u / (n_seeds n_users) with w, c the
    draw counts. With one seed it is the users-only bootstrap."""
    n_seeds, n_users = differences.shape
    rng = np.random.default_rng(seed)
    seed_counts = rng.multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds), size=n_boot)   # [B, S]
    user_counts = rng.multinomial(n_users, np.full(n_users, 1 / n_users), size=n_boot)   # [B, U]
    means = np.einsum("bs,su,bu->b", seed_counts, differences, user_counts) / (n_seeds * n_users)
    tail = 100 * (1 - level) / 2
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))


def verdict(low: float, high: float) -> str:
    """'better' / 'worse' when the interval excludes 0, else 'inconclusive'."""
    return "better" if low > 0 else "worse" if high < 0 else "inconclusive"


def mean_std(runs: list[Run], metric: str) -> tuple[float, float]:
    return mean_and_std([r.metrics["test"][metric] for r in runs])


def table1_rows(runs: list[Run], n_boot: int, seed: int) -> list[dict]:
    """One row per (dataset, backbone, metric) of the backbones trained both ways."""
    rows = []
    for dataset, backbone in sorted({(r.dataset, r.backbone) for r in runs}):
        pick = lambda v: [r for r in runs if (r.dataset, r.backbone, r.variant) == (dataset, backbone, v)]  # noqa: E731
        base, mrdib = pick("base"), pick("mrdib")
        if not base or not mrdib:
            continue  # one side only: nothing to compare (the report lists every run)
        check_paired(base, mrdib)
        trials = {"base": tuning_trials(base[0]), "mrdib": tuning_trials(mrdib[0])}
        for metric in TABLE_METRICS:
            row = {"dataset": dataset, "backbone": backbone, "metric": metric, "seeds": len(base),
                   "tuning_trials": trials}
            row["base_mean"], row["base_std"] = mean_std(base, metric)
            row["mrdib_mean"], row["mrdib_std"] = mean_std(mrdib, metric)
            row["improvement_pct"] = 100 * (row["mrdib_mean"] / row["base_mean"] - 1) if row["base_mean"] else None
            differences = seed_user_differences(base, mrdib, metric)
            row["diff_mean"] = float(differences.mean())
            row["ci_low"], row["ci_high"] = two_way_bootstrap(differences, n_boot, seed)
            row["verdict"] = verdict(row["ci_low"], row["ci_high"])
            rows.append(row)
    return rows


def nested(rows: list[dict]) -> dict:
    """{dataset: {backbone: {seeds, tuning_trials: {base, mrdib}, <metric>: {base_mean, ...}}}} for `dvc metrics`."""
    out: dict = {}
    for r in rows:
        group = out.setdefault(r["dataset"], {}).setdefault(
            r["backbone"], {"seeds": r["seeds"], "tuning_trials": r["tuning_trials"]})
        group[r["metric"].replace("@", "_at_")] = {k: v for k, v in r.items() if k not in (
            "dataset", "backbone", "metric", "seeds", "tuning_trials")}
    return out


MARKS = {"better": " ▲", "worse": " ▼", "inconclusive": ""}


def format_table1(rows: list[dict]) -> str:
    lines = ["| dataset | backbone | metric | seeds | trials (base/MRdIB) | base | MRdIB | change | "
             "95% CI of MRdIB − base |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        change = f"{r['improvement_pct']:+.1f}%" if r["improvement_pct"] is not None else "–"
        trials = f"{r['tuning_trials']['base']}/{r['tuning_trials']['mrdib']}"
        lines.append(f"| {r['dataset']} | {r['backbone']} | {r['metric']} | {r['seeds']} | {trials} "
                     f"| {r['base_mean']:.4f} ± {r['base_std']:.4f} | {r['mrdib_mean']:.4f} ± {r['mrdib_std']:.4f} "
                     f"| {change} | [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]{MARKS[r['verdict']]} |")
    return "\n".join(lines)


def table1_legend(rows: list[dict]) -> str:
    """How to read the marks, and how many intervals were computed (some exclude 0 by chance)."""
    counts = {v: sum(r["verdict"] == v for r in rows) for v in MARKS}
    return (f"▲ / ▼: the 95% interval excludes 0 (MRdIB better / worse). {len(rows)} intervals were computed: "
            f"{counts['better']} ▲, {counts['worse']} ▼, {counts['inconclusive']} include 0. Even with no effect "
            f"at all, about {0.05 * len(rows):.1f} of {len(rows)} would exclude 0 by chance, and the 12 metrics "
            "of one backbone are strongly correlated: read a backbone's row set as one result, not twelve. "
            "Intervals: two-way paired bootstrap over training seeds and test users.")


def write_text(path: Path, text: str) -> None:
    """Write through a temporary name, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--out", type=Path, default=Path("reports"))
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        runs = load_runs(args.runs, VARIANTS)
    except RunError as err:
        raise SystemExit(str(err)) from None
    if not runs:
        raise SystemExit(f"{args.runs}: no runs found (expected <dataset>/<backbone>-<variant>/seed<N>/metrics.json)")
    try:
        rows = table1_rows(runs, args.bootstrap, args.seed)
    except RunError as err:
        raise SystemExit(f"Table 1 refused: {err}") from None
    if not rows:
        raise SystemExit(f"{args.runs}: no backbone was trained both ways (base and mrdib): no Table 1")
    args.out.mkdir(parents=True, exist_ok=True)
    standin = sorted({f"{r.dataset}/{r.backbone}" for r in runs if r.metrics.get("standin_features")})
    note = f"\n\nSTAND-IN features (no signal) in: {', '.join(standin)}.\n" if standin else "\n"
    text = format_table1(rows) + "\n\n" + table1_legend(rows) + note
    write_text(args.out / "table1.md", text)
    write_json(args.out / "table1.json", nested(rows))
    print(text)


if __name__ == "__main__":
    main()
