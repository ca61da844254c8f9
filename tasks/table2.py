"""Stage `table2`: the ablation runs collected into the paper's Table 2 (which part of the MRdIB objective matters).

    python -m tasks.table2 --runs runs --ablations ablations --out reports --metrics reports/metrics/table2

For every dataset and backbone under ABLATIONS/ (folders `<dataset>/<backbone>-<setting>/seed<N>/`,
setting one of config.sections.ABLATIONS, as written by the ablate stage), the
table has one row for the full MRdIB run and the base run (both from RUNS/, the main matrix)
and one per ablation setting: test Recall and NDCG @5, @10, @20 as mean +- std over seeds, the
change of each mean relative to full MRdIB, and the 95% interval of (setting - base) Recall@20
(two-way paired bootstrap over seeds and users, as Table 1); where the group has the `tuning_only`
control, also of (setting - tuning_only): MRdIB and its ablations against the base model at the
same tuned values, which takes the two studies' different draws out of the comparison. Every ablation trains with full
MRdIB's tuned values (learning rate, regularisation, alphas) and zeroes what its name says.

Two controls separate what MRdIB's row owes to each of its parts. `tuning_only` is the base
backbone trained with MRdIB's tuned values (nothing of MRdIB built): base -> tuning_only is what the
two studies' different draws do. `encoder_only` adds the Gaussian encoders (sampled in training, mu
at evaluation) with no MRdIB term: tuning_only -> encoder_only is what the extra layer does,
encoder_only -> MRdIB what the objective does. Writes OUT/table2.md, OUT/table2.json (every number of the table) and,
for `dvc metrics show` / `dvc metrics diff`, METRICS/<dataset>-<backbone>-<setting>.json per ablation
setting, at Recall@20 with the keys of Table 1's metric files (metric_files).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from config.metrics import HEADLINE, TABLE2, metric_key
from config.sections import ABLATIONS, VARIANTS
from pipeline.errors import EXIT_DATA, Refusal, run_command
from pipeline.io import write_json, write_json_files, write_text
from pipeline.runs import Run, RunError, load_runs, mean_std, seed_user_differences
from pipeline.stats import MARKS, bootstrap_verdict, two_way_bootstrap

INTERVAL_METRIC = HEADLINE[0]  # the (setting - base) interval of each row

# What each setting removes, in the paper's words; the alphas it zeroes come from ABLATIONS.
REMOVED = {"no_kl": "w/o KL", "no_redundancy": "w/o L_R", "no_unique": "w/o L_U",
           "no_redundancy_unique": "w/o L_R, L_U", "encoder_only": "encoder only, no MRdIB term",
           "tuning_only": "base with MRdIB's tuned values, no encoder"}


def setting_label(setting: str) -> str:
    """'no_kl' -> 'w/o KL (α1=0)'; 'mrdib' and 'base' name the two ends of the table."""
    if setting == "mrdib":
        return "MRdIB (full)"
    if setting == "base":
        return "base (no MRdIB)"
    zeroed = "=".join(f"α{name[-1]}" for name in ABLATIONS[setting])
    return f"{REMOVED.get(setting, setting)} ({zeroed}=0)"


def settings_in_order() -> list[str]:
    return ["mrdib", *ABLATIONS, "base"]


def table2_rows(main_runs: list[Run], ablation_runs: list[Run], n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """One row per (dataset, backbone, setting) of the ablation groups, full MRdIB first, base last."""
    rows = []
    for dataset, backbone in sorted({(r.dataset, r.backbone) for r in ablation_runs}):
        group = [r for r in main_runs + ablation_runs if (r.dataset, r.backbone) == (dataset, backbone)]
        full = [r for r in group if r.variant == "mrdib"]
        base = [r for r in group if r.variant == "base"]
        tuning = [r for r in group if r.variant == "tuning_only"]
        for setting in settings_in_order():
            picked = [r for r in group if r.variant == setting]
            if not picked:
                continue
            row = {"dataset": dataset, "backbone": backbone, "setting": setting, "label": setting_label(setting),
                   "seeds": sorted(r.seed for r in picked), "alphas": picked[0].metrics.get("alphas")}
            if base and setting != "base":
                row["vs_base"] = interval(base, picked, n_boot, seed)
            if tuning and setting not in ("base", "tuning_only"):
                row["vs_tuning_only"] = interval(tuning, picked, n_boot, seed)
            for metric in TABLE2:
                mean, std = mean_std(picked, metric)
                reference = mean_std(full, metric)[0] if full else None
                change = 100 * (mean / reference - 1) if reference else None
                row[metric] = {"mean": mean, "std": std, "change_pct": change}
            rows.append(row)
    return rows


def interval(reference: list[Run], picked: list[Run], n_boot: int, seed: int) -> dict:
    """95% two-way (seeds x users) bootstrap interval of picked - reference at INTERVAL_METRIC, paired by seed."""
    if sorted(r.seed for r in reference) != sorted(r.seed for r in picked):
        raise RunError(f"unpaired seeds: {reference[0].folder.parent} has {sorted(r.seed for r in reference)}, "
                       f"{picked[0].folder.parent} has {sorted(r.seed for r in picked)}")
    low, high = two_way_bootstrap(seed_user_differences(reference, picked, INTERVAL_METRIC), n_boot, seed)
    return {"metric": INTERVAL_METRIC, "ci_low": low, "ci_high": high, "verdict": bootstrap_verdict(low, high)}


def format_interval(value: dict | None) -> str:
    return "–" if value is None else f"[{value['ci_low']:+.4f}, {value['ci_high']:+.4f}]{MARKS[value['verdict']]}"


def format_table2(rows: list[dict]) -> str:
    """The Markdown table; the column against tuning_only only where some group has that control."""
    header = " | ".join(m.replace("recall", "Recall").replace("ndcg", "NDCG") for m in TABLE2)
    against_tuning = any("vs_tuning_only" in r for r in rows)
    extra = " 95% CI of R@20 − tuning_only |" if against_tuning else ""
    lines = [f"| dataset | backbone | setting | seeds | {header} | 95% CI of R@20 − base |{extra}",
             "|---" * (5 + len(TABLE2) + against_tuning) + "|"]
    for r in rows:
        cells = []
        for metric in TABLE2:
            value = r[metric]
            change = "" if r["setting"] == "mrdib" or value["change_pct"] is None else f" ({value['change_pct']:+.1f}%)"
            cells.append(f"{value['mean']:.4f} ± {value['std']:.4f}{change}")
        tuning_cell = f" {format_interval(r.get('vs_tuning_only'))} |" if against_tuning else ""
        lines.append(f"| {r['dataset']} | {r['backbone']} | {r['label']} | {len(r['seeds'])} | {' | '.join(cells)} "
                     f"| {format_interval(r.get('vs_base'))} |{tuning_cell}")
    return "\n".join(lines)


def nested(rows: list[dict]) -> dict:
    """{dataset: {backbone: {setting: {seeds, recall_at_10: {mean, std, change_pct}, ...}}}}: table2.json."""
    out: dict = {}
    for r in rows:
        values = {"seeds": len(r["seeds"]), **{metric_key(m): r[m] for m in TABLE2}}
        values |= {key: r[key] for key in ("vs_base", "vs_tuning_only") if key in r}
        out.setdefault(r["dataset"], {}).setdefault(r["backbone"], {})[r["setting"]] = values
    return out


def metric_files(rows: list[dict]) -> dict[str, dict]:
    """{file name: values} for `dvc metrics`, one file per (dataset, backbone, ablation setting), with the keys
    of Table 1's metric files (tasks/table1.py) plus `ablated`: seeds, and at INTERVAL_METRIC the test means
    base, mrdib (full MRdIB) and ablated (the setting), ci_lower and ci_upper (95% CI of setting - base),
    verdict. The full and base rows are Table 1's files; the same numbers as table2.json, not rounded."""
    means = {(r["dataset"], r["backbone"], r["setting"]): r[INTERVAL_METRIC]["mean"] for r in rows}
    files = {}
    for r in rows:
        if r["setting"] not in ABLATIONS:
            continue
        values = {"seeds": len(r["seeds"])}
        for variant in ("base", "mrdib"):
            if (r["dataset"], r["backbone"], variant) in means:
                values[variant] = means[(r["dataset"], r["backbone"], variant)]
        values["ablated"] = r[INTERVAL_METRIC]["mean"]
        if "vs_base" in r:
            values |= {"ci_lower": r["vs_base"]["ci_low"], "ci_upper": r["vs_base"]["ci_high"],
                       "verdict": r["vs_base"]["verdict"]}
        files[f"{r['dataset']}-{r['backbone']}-{r['setting']}.json"] = values
    return files


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="main matrix (full MRdIB and base)")
    parser.add_argument("--ablations", type=Path, default=Path("ablations"), help="ablation matrix")
    parser.add_argument("--out", type=Path, default=Path("reports"))
    parser.add_argument("--metrics", type=Path, default=None,
                        help="folder of the `dvc metrics` files (default: OUT/metrics/table2)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        ablation_runs = load_runs(args.ablations, ABLATIONS)
        main_runs = load_runs(args.runs, VARIANTS)
    except RunError as err:
        raise Refusal(str(err), EXIT_DATA) from None
    if not ablation_runs:
        raise Refusal(f"{args.ablations}: no ablation runs found "
                      f"(expected <dataset>/<backbone>-<setting>/seed<N>/, setting in {sorted(ABLATIONS)})", EXIT_DATA)
    try:
        rows = table2_rows(main_runs, ablation_runs, args.bootstrap, args.seed)
    except RunError as err:
        raise Refusal(f"Table 2 refused: {err}", EXIT_DATA) from None
    standin = sorted({f"{r.dataset}/{r.backbone}" for r in main_runs + ablation_runs
                      if r.metrics.get("standin_features")})
    note = f"\n\nSTAND-IN features (no signal) in: {', '.join(standin)}.\n" if standin else "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / "table2.md", format_table2(rows) + note)
    write_json(args.out / "table2.json", nested(rows))
    write_json_files(args.metrics or args.out / "metrics" / "table2", metric_files(rows))
    print(format_table2(rows) + note)


if __name__ == "__main__":
    run_command(main)
