"""Collect every training run into the paper's Table 1 (accuracy) and Table 3 (time per epoch).

    python -m tasks.evaluate --runs runs --out reports

Runs are folders `RUNS/<dataset>/<backbone>-<variant>/seed<seed>/` as the train stage writes
them (`python -m tasks.train --pipeline-seeds`: metrics.json and per_user_test.npz). For every
dataset and backbone trained both ways, Table 1 gives base and MRdIB test metrics as mean +- std
over seeds, the relative improvement of the means, and a paired per-user bootstrap 95% confidence interval
of the difference MRdIB - base (per-user differences averaged over seeds, users resampled).
"""
from __future__ import annotations

import argparse
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from models.mrdib import ABLATIONS
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


def paired_bootstrap(base: list[Run], mrdib: list[Run], metric: str, n_boot: int, seed: int) -> tuple[float, float]:
    """95% CI of mean_u (mrdib_u - base_u), per-user differences averaged over the paired seeds."""
    by_seed = {r.seed: r for r in base}
    differences = []
    for run in mrdib:
        if run.seed in by_seed:
            users_m, values_m = run.per_user(metric)
            users_b, values_b = by_seed[run.seed].per_user(metric)
            if not np.array_equal(users_m, users_b):
                raise ValueError(f"{run.folder} and {by_seed[run.seed].folder} evaluated different users")
            differences.append(values_m - values_b)
    if not differences:
        return float("nan"), float("nan")
    per_user = np.mean(differences, axis=0)
    rng = np.random.default_rng(seed)
    means = np.array([per_user[rng.integers(len(per_user), size=len(per_user))].mean() for _ in range(n_boot)])
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def mean_std(runs: list[Run], metric: str) -> tuple[float, float]:
    values = np.array([r.metrics["test"][metric] for r in runs])
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def table1_rows(runs: list[Run], n_boot: int, seed: int) -> list[dict]:
    rows = []
    groups = sorted({(r.dataset, r.backbone) for r in runs})
    for dataset, backbone in groups:
        pick = lambda v: [r for r in runs if (r.dataset, r.backbone, r.variant) == (dataset, backbone, v)]  # noqa: E731
        base, mrdib = pick("base"), pick("mrdib")
        for metric in TABLE_METRICS:
            row = {"dataset": dataset, "backbone": backbone, "metric": metric, "seeds": len(base)}
            row["base_mean"], row["base_std"] = mean_std(base, metric) if base else (float("nan"),) * 2
            if mrdib:
                row["mrdib_mean"], row["mrdib_std"] = mean_std(mrdib, metric)
                row["improvement_pct"] = 100 * (row["mrdib_mean"] / row["base_mean"] - 1) if row["base_mean"] else float("nan")
                row["ci_low"], row["ci_high"] = paired_bootstrap(base, mrdib, metric, n_boot, seed)
            rows.append(row)
    return rows


def nested(rows: list[dict]) -> dict:
    """{dataset: {backbone: {metric: {base_mean, mrdib_mean, ...}}}}: the shape `dvc metrics` reads."""
    out: dict = {}
    for r in rows:
        values = {k: v for k, v in r.items() if k not in ("dataset", "backbone", "metric")}
        out.setdefault(r["dataset"], {}).setdefault(r["backbone"], {})[r["metric"].replace("@", "_at_")] = values
    return out


def format_table1(rows: list[dict]) -> str:
    lines = ["| dataset | backbone | metric | base | MRdIB | improv. | 95% CI of diff |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        mrdib = f"{r['mrdib_mean']:.4f} ± {r['mrdib_std']:.4f}" if "mrdib_mean" in r else "–"
        improvement = f"{r['improvement_pct']:+.1f}%" if "improvement_pct" in r else "–"
        ci = f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]" if "ci_low" in r else "–"
        lines.append(f"| {r['dataset']} | {r['backbone']} | {r['metric']} | {r['base_mean']:.4f} ± {r['base_std']:.4f} "
                     f"| {mrdib} | {improvement} | {ci} |")
    return "\n".join(lines)


def format_table3(runs: list[Run]) -> str:
    lines = ["| dataset | backbone | base s/epoch | MRdIB s/epoch | overhead |", "|---|---|---|---|---|"]
    for dataset, backbone in sorted({(r.dataset, r.backbone) for r in runs}):
        seconds = {v: np.mean([r.metrics["seconds_per_epoch"] for r in runs
                                if (r.dataset, r.backbone, r.variant) == (dataset, backbone, v)] or [np.nan])
                   for v in ("base", "mrdib")}
        overhead = 100 * (seconds["mrdib"] / seconds["base"] - 1)
        lines.append(f"| {dataset} | {backbone} | {seconds['base']:.3f} | {seconds['mrdib']:.3f} | {overhead:+.1f}% |")
    return "\n".join(lines)


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
    rows = table1_rows(runs, args.bootstrap, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    standin = sorted({f"{r.dataset}/{r.backbone}" for r in runs if r.metrics.get("standin_features")})
    note = f"\n\nSTAND-IN features (no signal) in: {', '.join(standin)}.\n" if standin else "\n"
    (args.out / "table1.md").write_text(format_table1(rows) + note)
    (args.out / "table3.md").write_text(format_table3(runs) + "\n")
    write_json(args.out / "table1.json", nested(rows))
    print(format_table1(rows) + note + "\n" + format_table3(runs))


if __name__ == "__main__":
    main()
