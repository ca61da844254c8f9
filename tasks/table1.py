"""Stage `table1`: every training run collected into the paper's Table 1 (accuracy, MRdIB against base).

    python -m tasks.table1 --runs runs --out reports --metrics reports/metrics/table1

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

Writes OUT/table1.md, OUT/table1.json (every number of the table) and, for `dvc metrics show` and
`dvc metrics diff`, METRICS/<dataset>-<backbone>-<metric>.json at the headline metrics only, each
with the same few keys (metric_files): DVC prints a row per file and a column per key, so files
with identical keys give a table that fits a terminal.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from config.metrics import HEADLINE, TABLE1, metric_key
from config.sections import VARIANTS
from pipeline.errors import EXIT_DATA, Refusal, run_command
from pipeline.io import write_json, write_json_files, write_text
from pipeline.runs import Run, RunError, check_paired, load_runs, mean_std, seed_user_differences, tuning_trials
from pipeline.stats import MARKS, bootstrap_verdict, two_way_bootstrap


def table1_rows(runs: list[Run], n_boot: int, seed: int) -> list[dict]:
    """One row per (dataset, backbone, metric) of the backbones trained both ways."""
    rows = []
    for dataset, backbone in sorted({(r.dataset, r.backbone) for r in runs}):
        base, mrdib = ([r for r in runs if (r.dataset, r.backbone, r.variant) == (dataset, backbone, v)]
                       for v in ("base", "mrdib"))
        if not base or not mrdib:
            continue  # one side only: nothing to compare (the report lists every run)
        check_paired(base, mrdib)
        trials = {"base": tuning_trials(base[0]), "mrdib": tuning_trials(mrdib[0])}
        for metric in TABLE1:
            row = {"dataset": dataset, "backbone": backbone, "metric": metric, "seeds": len(base),
                   "tuning_trials": trials}
            row["base_mean"], row["base_std"] = mean_std(base, metric)
            row["mrdib_mean"], row["mrdib_std"] = mean_std(mrdib, metric)
            row["improvement_pct"] = 100 * (row["mrdib_mean"] / row["base_mean"] - 1) if row["base_mean"] else None
            differences = seed_user_differences(base, mrdib, metric)
            row["diff_mean"] = float(differences.mean())
            row["ci_low"], row["ci_high"] = two_way_bootstrap(differences, n_boot, seed)
            row["verdict"] = bootstrap_verdict(row["ci_low"], row["ci_high"])
            rows.append(row)
    return rows


def nested(rows: list[dict]) -> dict:
    """{dataset: {backbone: {seeds, tuning_trials: {base, mrdib}, <metric>: {base_mean, ...}}}}: table1.json."""
    out: dict = {}
    for r in rows:
        group = out.setdefault(r["dataset"], {}).setdefault(
            r["backbone"], {"seeds": r["seeds"], "tuning_trials": r["tuning_trials"]})
        group[metric_key(r["metric"])] = {k: v for k, v in r.items() if k not in (
            "dataset", "backbone", "metric", "seeds", "tuning_trials")}
    return out


def metric_files(rows: list[dict]) -> dict[str, dict]:
    """{file name: values} for `dvc metrics`: one file per (dataset, backbone, headline metric) with the keys
    every metric file of the pipeline shares (tasks/table2.py, tasks/reliance.py): seeds, base and mrdib
    (test means), change_pct (MRdIB vs base, % of the base mean), ci_lower and ci_upper (95% CI of
    MRdIB - base), verdict. The same numbers as table1.json, not rounded."""
    return {f"{r['dataset']}-{r['backbone']}-{r['metric']}.json": {
        "seeds": r["seeds"], "base": r["base_mean"], "mrdib": r["mrdib_mean"], "change_pct": r["improvement_pct"],
        "ci_lower": r["ci_low"], "ci_upper": r["ci_high"], "verdict": r["verdict"]}
        for r in rows if r["metric"] in HEADLINE}


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--out", type=Path, default=Path("reports"))
    parser.add_argument("--metrics", type=Path, default=None,
                        help="folder of the `dvc metrics` files (default: OUT/metrics/table1)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        runs = load_runs(args.runs, VARIANTS)
    except RunError as err:
        raise Refusal(str(err), EXIT_DATA) from None
    if not runs:
        raise Refusal(f"{args.runs}: no runs found (expected <dataset>/<backbone>-<variant>/seed<N>/metrics.json)",
                      EXIT_DATA)
    try:
        rows = table1_rows(runs, args.bootstrap, args.seed)
    except RunError as err:
        raise Refusal(f"Table 1 refused: {err}", EXIT_DATA) from None
    if not rows:
        raise Refusal(f"{args.runs}: no backbone was trained both ways (base and mrdib): no Table 1", EXIT_DATA)
    args.out.mkdir(parents=True, exist_ok=True)
    standin = sorted({f"{r.dataset}/{r.backbone}" for r in runs if r.metrics.get("standin_features")})
    note = f"\n\nSTAND-IN features (no signal) in: {', '.join(standin)}.\n" if standin else "\n"
    text = format_table1(rows) + "\n\n" + table1_legend(rows) + note
    write_text(args.out / "table1.md", text)
    write_json(args.out / "table1.json", nested(rows))
    write_json_files(args.metrics or args.out / "metrics" / "table1", metric_files(rows))
    print(text)


if __name__ == "__main__":
    run_command(main)
