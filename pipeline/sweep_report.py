"""The sweep's record as a table and a plot (the sweep_table stage; the report shows the same), and
the merge of the per-backbone parts. No training here: pipeline/sweep.py trains."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from config.metrics import HEADLINE
from config.params import Params
from pipeline.errors import EXIT_DATA, Refusal
from pipeline.io import pyplot, save_figure

METRICS = HEADLINE


def point_label(knob: str | None, value) -> str:
    return "base" if knob is None else f"{knob}={value}"


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
    width = max(1, len(knobs))
    fig, axes = pyplot().subplots(len(METRICS), width, figsize=(4.4 * width, 3.3 * len(METRICS)),
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
    expected = [point_label(knob, value) for knob, value, _ in params.sweep.points(params.synthetic)]
    for backbone in cfg.backbones:
        path = folder / f"{backbone}.json"
        if not path.is_file():
            raise Refusal(f"{path} absent: run `python -m tasks.sweep --backbone {backbone} --json {path}`", EXIT_DATA)
        record = json.loads(path.read_text())
        same = (record["grid"]["name"], record["seeds"], record["epochs"], [p["label"] for p in record["points"]])
        if same != (cfg.grid, cfg.seeds, cfg.epochs, expected) or record["backbones"] != [backbone]:
            raise Refusal(f"{path}: another grid, seeds, epoch cap or backbone than params.yaml's sweep: stale",
                          EXIT_DATA)
        records.append(record)
    merged = records[0] | {"backbones": list(cfg.backbones), "budget": {}, "points": [],
                           "seconds": round(sum(r["seconds"] for r in records), 1)}
    for r in records:
        merged["budget"] |= r["budget"]
    for i, point in enumerate(records[0]["points"]):
        merged["points"].append(point | {"results": {b: r["points"][i]["results"][b]
                                                     for r in records for b in r["backbones"]}})
    return merged

