"""One readable Markdown report of the whole pipeline: what ran, Tables 1-2, tuning, plots.

    python -m tasks.report --params params.yaml --runs runs --references references \
        --ablations ablations --reports reports [--data-root data/prepared] [--graphs-root data/graphs] \
        [--tuned tuned] [--tsne-backbones vbpr,...] [--tsne-items 1000]

Reads the run folders (metrics.json, history.json, best.pt) and the tables tasks.table1 and
tasks.table2 wrote into REPORTS/, and writes REPORTS/report.md with, under REPORTS/plots/ (always
these four files, the data of `dvc plots`): improvement.png/.csv (relative gain of MRdIB over base,
bootstrap CI whiskers) and learning_curves.png/.csv (validation Recall@20 per epoch, base vs MRdIB);
under REPORTS/figures/ (a varying set): tsne_<dataset>_<backbone>.png (t-SNE of the item latents
z_image, z_text, base vs MRdIB) for the backbones of `pipeline.ablation_backbones` (or
--tsne-backbones), copies of the tuning plots and of the sweep plot. Every file is written through a
temporary name. A plot that cannot be made is skipped with a note in the report (the four plots/ files
then hold a header and a note, so that DVC always finds them).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on the pipeline's machines
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from config.metrics import HEADLINE, metric_key, metric_name
from config.params import Params, load_params
from config.sections import ABLATIONS, VARIANTS
from pipeline.errors import EXIT_DATA, Refusal, run_command
from pipeline.io import copy_file, save_figure, write_text
from pipeline.latents import run_latents
from pipeline.runs import Run, RunError, load_runs

COLORS = {"base": "tab:gray", "mrdib": "tab:blue"}
SUMMARY_METRICS = tuple(map(metric_key, HEADLINE))  # the summary's and the improvement bars' metrics
# REPORTS/plots/ holds four fixed files, each its own DVC output (the top-level `plots:` of dvc.yaml);
# the varying set of images goes to REPORTS/figures/, a directory output. A plot file inside a directory
# output made `dvc exp run <some stages>` fail in a fresh clone: resolving the plots needs that
# directory's listing from the cache, which a partial run never produces.
PLOTS, FIGURES = "plots", "figures"


def save_csv(frame: pd.DataFrame, path: Path) -> None:
    write_text(path, frame.to_csv(index=False))


def include(path: Path, how: str) -> str:
    return path.read_text().strip() if path.is_file() else f"_{path} not found: {how}._"


# -- what was run, tuned alphas -------------------------------------------------------------------
def describe_runs(groups: dict[str, list[Run]]) -> str:
    """A summary line, one row per (folder, dataset, backbone, setting): seeds, epochs, device; then
    the stand-in warnings."""
    every = [r for runs in groups.values() for r in runs]
    summary = "; ".join(f"{what}: {', '.join(sorted({str(getattr(r, attr)) for r in every}))}"
                        for what, attr in (("datasets", "dataset"), ("backbones", "backbone"), ("seeds", "seed")))
    lines = [summary + ".", "",
             "| folder | dataset | backbone | setting | seeds | epochs run (mean) | best epoch (mean) | device |",
             "|---|---|---|---|---|---|---|---|"]
    for name, runs in groups.items():
        for key in sorted({(r.dataset, r.backbone, r.variant) for r in runs}):
            picked = [r for r in runs if (r.dataset, r.backbone, r.variant) == key]
            devices = ", ".join(sorted({str(r.metrics.get("device", "?")) for r in picked}))
            lines.append(f"| {name} | {' | '.join(key)} | {', '.join(str(r.seed) for r in picked)} "
                         f"| {np.mean([r.metrics.get('epochs_run', 0) for r in picked]):.0f} "
                         f"| {np.mean([r.metrics.get('best_epoch', 0) for r in picked]):.0f} | {devices} |")
    standin = sorted({f"{r.folder} ({', '.join(r.metrics['standin_features'])})"
                      for r in every if r.metrics.get("standin_features")})
    if standin:
        lines += ["", "**Warning: STAND-IN features** (seeded noise with no signal; not comparable to published "
                  "numbers) were used by:", *[f"- {s}" for s in standin]]
    return "\n".join(lines)


def tuned_section(root: Path, report_dir: Path | None = None) -> str:
    """One row per tuned/<dataset>/<backbone>-<variant>.json of the tune stage: the budget (trials),
    where the values come from, the best validation score and the chosen values. Optional: absent is a note."""
    files = sorted(Path(root).glob("*/*.json"))
    if not files:
        return f"_No tuned values ({root}/<dataset>/<backbone>-<variant>.json absent)._"
    lines = ["Both variants of a backbone get the same budget and the same search space for what they share "
             "(learning rate, regularisation); MRdIB's adds α1–α3. Chosen on validation only.", "",
             "| dataset | backbone | variant | trials | source | best valid | chosen values |",
             "|---|---|---|---|---|---|---|"]
    for path in files:
        try:
            tuned = json.loads(path.read_text())
        except json.JSONDecodeError as err:  # optional input: say so, do not lose the whole report
            lines.append(f"| {path.parent.name} | {path.stem} | unreadable: {err} | | | | |")
            continue
        backbone, _, variant = path.stem.rpartition("-")
        best = f"{tuned['best_value']:.4f}" if isinstance(tuned.get("best_value"), float) else "–"
        values = ", ".join(f"{key.rpartition('.')[2]} = {value:.3g}" for key, value in tuned.get("values", {}).items())
        lines.append(f"| {path.parent.name} | {backbone} | {variant} | {tuned.get('trials', '?')} "
                     f"| {tuned.get('source', '?')} | {best} | {values or 'params.yaml defaults'} |")
    return "\n".join(lines) + tuning_plots(files, report_dir)


def tuning_plots(files: list[Path], report_dir: Path | None) -> str:
    """The Optuna history / importance plots the tune stage drew beside each tuned file, copied into
    REPORTS/figures/ (so that reports/ is complete on its own) and shown from there."""
    links = []
    for path in files:
        if '"optuna"' not in path.read_text():  # a passthrough file (budget 0) has no study to plot
            continue
        for kind in ("history", "importances"):
            plot = path.with_name(f"{path.stem}_{kind}.png")
            if not plot.exists():
                continue
            target = plot
            if report_dir is not None:
                target = Path(report_dir) / FIGURES / f"tuning_{path.parent.name}_{plot.name}"
                target.parent.mkdir(parents=True, exist_ok=True)
                copy_file(plot, target)
                target = target.relative_to(report_dir)
            links.append(f"![{path.parent.name} {path.stem} {kind}]({target})")
    return "\n\n" + "\n".join(links) if links else ""


# -- learning curves ------------------------------------------------------------------------------
def learning_curves(runs: list[Run]) -> pd.DataFrame:
    """One row per (run, epoch): dataset, backbone, variant, seed, epoch, seconds, valid metrics (recall_at_20 ...)."""
    rows = []
    for run in runs:
        path = run.folder / "history.json"
        if not path.is_file():
            raise RunError(f"{run.folder}: no history.json")
        for record in json.loads(path.read_text()):
            rows.append({"dataset": run.dataset, "backbone": run.backbone, "variant": run.variant, "seed": run.seed,
                         "epoch": record["epoch"], "seconds": record["seconds"],
                         **{metric_key(k[len("valid/"):]): v for k, v in record.items()
                            if k.startswith("valid/")}})
    return pd.DataFrame(rows) if rows else pd.DataFrame(
        columns=["dataset", "backbone", "variant", "seed", "epoch", "seconds", metric_key(HEADLINE[0])])


def plot_learning_curves(frame: pd.DataFrame, path: Path, metric: str = metric_key(HEADLINE[0])) -> None:
    """One panel per (dataset, backbone); the seed mean per epoch of base and MRdIB, seeds faint."""
    panels = sorted(frame.groupby(["dataset", "backbone"]).groups)
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.4 * rows), squeeze=False,
                             layout="constrained")
    for ax, (dataset, backbone) in zip(axes.flat, panels):
        part = frame[(frame.dataset == dataset) & (frame.backbone == backbone)]
        for variant, curves in part.groupby("variant"):
            for _, seed_curve in curves.groupby("seed"):
                ax.plot(seed_curve.epoch, seed_curve[metric], color=COLORS.get(variant), alpha=0.25, lw=0.8)
            mean = curves.groupby("epoch")[metric].mean()
            ax.plot(mean.index, mean.values, color=COLORS.get(variant), lw=1.8,
                    label=f"{variant} ({curves.seed.nunique()} seed(s))")
        ax.set(title=f"{dataset} / {backbone}", xlabel="epoch", ylabel=f"valid {metric.replace('_at_', '@')}")
        ax.legend(fontsize=8)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    save_figure(fig, path)


# -- improvement ------------------------------------------------------------------------------------
def improvement(table1: dict, metrics: tuple[str, ...] = SUMMARY_METRICS) -> pd.DataFrame:
    """From table1.json: relative gain of the MRdIB mean over the base mean (%), and the paired bootstrap
    CI of the per-user difference expressed in % of the base mean (NaN where there is none)."""
    rows = []
    for dataset, backbones in table1.items():
        for backbone, values in backbones.items():
            for metric in metrics:
                v = values.get(metric, {})
                if "improvement_pct" not in v:
                    continue
                base = v["base_mean"]
                label = f"{dataset}/{backbone} {metric.replace('_at_', '@')}"  # one bar per row in `dvc plots`
                rows.append({"label": label, "dataset": dataset, "backbone": backbone,
                             "metric": metric_name(metric),
                             "improvement_pct": v["improvement_pct"],
                             "ci_low_pct": 100 * v.get("ci_low", np.nan) / base if base else np.nan,
                             "ci_high_pct": 100 * v.get("ci_high", np.nan) / base if base else np.nan})
    columns = ["label", "dataset", "backbone", "metric", "improvement_pct", "ci_low_pct", "ci_high_pct"]
    return pd.DataFrame(rows, columns=columns)


def plot_improvement(frame: pd.DataFrame, path: Path) -> None:
    """One panel per dataset: a bar per (backbone, metric), whiskers = bootstrap 95% CI."""
    datasets = sorted(frame.dataset.unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(max(5.0, 1.6 * frame.backbone.nunique()) * len(datasets), 3.8),
                             squeeze=False, layout="constrained")
    for ax, dataset in zip(axes.flat, datasets):
        part = frame[frame.dataset == dataset]
        backbones, metrics = sorted(part.backbone.unique()), sorted(part.metric.unique(), key=lambda m: m[0] != "r")
        width = 0.8 / len(metrics)
        for j, metric in enumerate(metrics):
            rows = part[part.metric == metric].set_index("backbone").reindex(backbones)
            x = np.arange(len(backbones)) + (j - (len(metrics) - 1) / 2) * width
            errors = np.abs(np.stack([rows.improvement_pct - rows.ci_low_pct, rows.ci_high_pct - rows.improvement_pct]))
            has_ci = bool(np.isfinite(errors).any())
            ax.bar(x, rows.improvement_pct, width, label=metric, yerr=np.nan_to_num(errors) if has_ci else None,
                   capsize=3)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_xticks(np.arange(len(backbones)), backbones)
        ax.set(title=dataset, xlabel="backbone", ylabel="MRdIB vs base (% of base mean)")
        ax.legend(fontsize=8)
    save_figure(fig, path)


# -- t-SNE of the item latents ----------------------------------------------------------------------
def plot_tsne(latents: dict[str, dict[str, np.ndarray]], popularity: np.ndarray, path: Path, seed: int,
              max_items: int) -> None:
    """Rows: base, MRdIB; columns: image, text. Each panel its own 2-d t-SNE of the same item sample,
    coloured by log train popularity."""
    from sklearn.manifold import TSNE  # only this stage needs it, and it is slow to import

    n_items = len(popularity)
    sample = np.sort(np.random.default_rng(seed).choice(n_items, size=min(max_items, n_items), replace=False))
    modalities = sorted(next(iter(latents.values())))
    fig, axes = plt.subplots(len(latents), len(modalities), figsize=(4.6 * len(modalities), 4.2 * len(latents)),
                             squeeze=False, layout="constrained")
    for i, (variant, by_modality) in enumerate(latents.items()):
        for j, modality in enumerate(modalities):
            tsne = TSNE(2, perplexity=min(30.0, (len(sample) - 1) / 3), init="pca", random_state=seed)
            points = tsne.fit_transform(by_modality[modality][sample])
            dots = axes[i, j].scatter(*points.T, c=np.log1p(popularity[sample]), s=5, cmap="viridis")
            axes[i, j].set(title=f"{variant}: z_{modality}", xlabel="t-SNE 1", ylabel="t-SNE 2")
    fig.colorbar(dots, ax=axes, label="log(1 + train interactions)", shrink=0.7)
    save_figure(fig, path)


def tsne_plots(params: Params, runs: list[Run], backbones: list[str], roots: tuple[Path, Path], figures: Path,
               max_items: int) -> list[str]:
    """t-SNE image per (dataset, backbone) with both variants; returns report lines (images or notes)."""
    lines = []
    for dataset, backbone in sorted({(r.dataset, r.backbone) for r in runs if r.backbone in backbones}):
        by_variant = {v: {r.seed: r for r in runs if (r.dataset, r.backbone, r.variant) == (dataset, backbone, v)}
                      for v in VARIANTS}
        seeds = sorted(set(by_variant["base"]) & set(by_variant["mrdib"]))
        if not seeds:
            lines.append(f"_t-SNE {dataset}/{backbone} skipped: no seed with both base and MRdIB runs._")
            continue
        seed = params.seed if params.seed in seeds else seeds[0]
        name = f"tsne_{dataset}_{backbone}.png"
        try:
            latents, popularity = {}, None
            for variant in VARIANTS:
                latents[variant], popularity = run_latents(params, *roots, by_variant[variant][seed])
            plot_tsne(latents, popularity, figures / name, params.seed, max_items)
        except (OSError, ValueError, RuntimeError, KeyError) as err:
            lines.append(f"_t-SNE {dataset}/{backbone} skipped: {err}_")
            continue
        lines.append(f"t-SNE of the item latents, {dataset} / {backbone}, seed {seed} (at most {max_items} "
                     f"items, colour = log popularity):\n\n![t-SNE {dataset} {backbone}]({FIGURES}/{name})")
    return lines


# -- the report -------------------------------------------------------------------------------------
def plot_section(args, params: Params, runs: list[Run]) -> str:
    plots, figures = args.reports / PLOTS, args.reports / FIGURES
    plots.mkdir(parents=True, exist_ok=True)
    figures.mkdir(parents=True, exist_ok=True)
    lines = []
    table1 = args.reports / "table1.json"
    frame = improvement(json.loads(table1.read_text())) if table1.is_file() else improvement({})
    save_csv(frame, plots / "improvement.csv")
    if not frame.empty:
        plot_improvement(frame, plots / "improvement.png")
        lines.append("Relative improvement of MRdIB over base (whiskers: paired bootstrap 95% CI):\n\n"
                     f"![improvement]({PLOTS}/improvement.png)")
    else:
        note = f"Improvement plot skipped: {table1} absent or without base/MRdIB pairs."
        plot_note(note, plots / "improvement.png")
        lines.append(f"_{note}_")
    curves = learning_curves(runs)
    save_csv(curves, plots / "learning_curves.csv")
    if not curves.empty:
        plot_learning_curves(curves, plots / "learning_curves.png")
        lines.append("Validation Recall@20 per epoch (bold: mean over seeds):\n\n"
                     f"![learning curves]({PLOTS}/learning_curves.png)")
    else:
        note = "Learning curves skipped: no base or MRdIB run under the runs folder."
        plot_note(note, plots / "learning_curves.png")
        lines.append(f"_{note}_")
    backbones = params.pipeline.ablation_backbones if args.tsne_backbones is None else args.tsne_backbones.split(",")
    roots = (args.data_root, args.graphs_root)
    lines += tsne_plots(params, runs, [b for b in backbones if b], roots, figures, args.tsne_items)
    return "\n\n".join(lines)


def plot_note(text: str, path: Path) -> None:
    """An image that says why its plot is missing (the file is a declared DVC output: it must exist)."""
    fig, ax = plt.subplots(figsize=(6, 1.2))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    save_figure(fig, path)


def build_report(args, params: Params) -> str:
    groups = {"runs": load_runs(args.runs, VARIANTS), "references": load_runs(args.references, ("base",)),
              "ablations": load_runs(args.ablations, ABLATIONS)}
    if not any(groups.values()):
        raise RunError(f"no runs under {args.runs}, {args.references} or {args.ablations}")
    evaluate, ablate = "run `python -m tasks.table1`", "run `python -m tasks.table2`"
    sections = [
        "# MRdIB report",
        "## What was run\n\n" + describe_runs(groups),
        "## Summary: MRdIB against base\n\n" + summary_section(args.reports / "table1.json"),
        "## Table 1: base vs MRdIB (test, mean ± std over seeds)\n\n" + include(args.reports / "table1.md", evaluate),
        "## Table 2: ablation of the MRdIB objective (test; change vs full MRdIB)\n\n"
        + include(args.reports / "table2.md", ablate),
        "## Time per epoch\n\n" + TIMING_NOTE,
        "## Tuning (equal budgets)\n\n" + tuned_section(args.tuned, args.reports),
        "## Probe of the latents\n\n" + probe_section(args.reports),
        "## Modality reliance\n\n" + reliance_section(args.reports),
        "## Sweep: when does the bottleneck help?\n\n" + sweep_section(args.reports),
        "## Plots\n\n" + plot_section(args, params, groups["runs"]),
    ]
    return "\n\n".join(sections) + "\n"


PROBE_GUIDE = ("How to read it: each R² is how much of a planted block a linear map of the latent recovers on "
               "held-out items (1: all, 0: no better than the mean); the `features` row is what the raw features "
               "offered. A bottleneck that works keeps the unique and redundant blocks and drops its own clutter "
               "(lower clutter R² and clutter share); a single modality cannot hold a_v·a_t linearly by "
               "construction, so look at its halves a_v, a_t; the canonical correlations measure what the image "
               "and text latents share.")


def probe_section(reports: Path) -> str:
    """tasks/probe.py's tables (REPORTS/probe.md) and figure (REPORTS/probe.png), after a reading guide."""
    figure = "\n\n![probe of the latents](probe.png)" if (reports / "probe.png").is_file() else ""
    return PROBE_GUIDE + "\n\n" + include(reports / "probe.md", "run `python -m tasks.probe`") + figure


def reliance_section(reports: Path) -> str:
    """tasks/reliance.py's table (REPORTS/reliance.md): each modality replaced by its mean at evaluation."""
    return include(reports / "reliance.md", "run `python -m tasks.reliance`")


def sweep_section(reports: Path) -> str:
    """tasks/sweep.py's record (REPORTS/sweep.json) as text: grid, seeds, budget, table, wins and losses, a
    reading guide; its plot (REPORTS/sweep.png) copied to REPORTS/figures/sweep.png and shown from there."""
    from pipeline.sweep_report import markdown

    path = reports / "sweep.json"
    if not path.is_file():
        return f"_{path} not found: run `python -m tasks.sweep`._"
    link = None
    if (reports / "sweep.png").is_file():
        (reports / FIGURES).mkdir(parents=True, exist_ok=True)
        copy_file(reports / "sweep.png", reports / FIGURES / "sweep.png")
        link = f"{FIGURES}/sweep.png"
    return markdown(json.loads(path.read_text()), link)


TIMING_NOTE = ("Not reported here: the seconds per epoch of these runs are a few steps on a shared machine, "
               "not a measurement. `python -m benchmarks.speed` measures base and MRdIB stepped alternately "
               "on a fixed workload (see the README's benchmark section).")


def summary_section(table1: Path) -> str:
    """One line per (dataset, backbone): the change at Recall@20 and NDCG@20 with its interval and a
    plain verdict (losses named as plainly as gains)."""
    if not table1.is_file():
        return f"_{table1} not found: run `python -m tasks.table1`._"
    lines = ["| dataset | backbone | seeds | trials (base/MRdIB) | " +
             " | ".join(f"{metric_name(m)}: change, 95% CI" for m in SUMMARY_METRICS) + " |",
             "|---|---|---|---|" + "---|" * len(SUMMARY_METRICS)]
    verdicts = []
    for dataset, backbones in json.loads(table1.read_text()).items():
        for backbone, values in backbones.items():
            cells = []
            for metric in SUMMARY_METRICS:
                v = values[metric]
                change = f"{v['improvement_pct']:+.1f}%" if v.get("improvement_pct") is not None else "–"
                cells.append(f"{change} [{v['ci_low']:+.4f}, {v['ci_high']:+.4f}] **{v['verdict']}**")
                verdicts.append((f"{dataset}/{backbone} {metric.replace('_at_', '@')}", v["verdict"]))
            trials = values["tuning_trials"]
            lines.append(f"| {dataset} | {backbone} | {values['seeds']} | {trials['base']}/{trials['mrdib']} | "
                         + " | ".join(cells) + " |")
    named = {v: [name for name, verdict in verdicts if verdict == v] for v in ("better", "worse")}
    lines += ["", f"MRdIB is **worse** than base (interval below 0) in: {', '.join(named['worse']) or 'none'}.",
              f"MRdIB is **better** (interval above 0) in: {', '.join(named['better']) or 'none'}.",
              f"The other {len(verdicts) - len(named['worse']) - len(named['better'])} of {len(verdicts)} show no "
              "difference this run can resolve. Intervals: two-way paired bootstrap over training seeds and test "
              "users; with no effect at all, about 1 in 20 would still exclude 0."]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--runs", type=Path, default=Path("runs"))
    parser.add_argument("--references", type=Path, default=Path("references"))
    parser.add_argument("--ablations", type=Path, default=Path("ablations"))
    parser.add_argument("--reports", type=Path, default=Path("reports"),
                        help="tables in; report.md, plots/, figures/ out")
    parser.add_argument("--data-root", type=Path, default=Path("data/prepared"), help="<root>/<dataset>/ (t-SNE)")
    parser.add_argument("--graphs-root", type=Path, default=Path("data/graphs"),
                        help="<root>/<dataset>/<backbone>.npz from the graphs stage, used where present (t-SNE)")
    parser.add_argument("--tuned", type=Path, default=Path("tuned"), help="optional <tuned>/<dataset>/<backbone>.json")
    parser.add_argument("--tsne-backbones", help="comma list (default: pipeline.ablation_backbones; '' for none)")
    parser.add_argument("--tsne-items", type=int, default=1000, help="items sampled for the t-SNE")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    params = load_params(args.params)
    try:
        text = build_report(args, params)
    except RunError as err:
        raise Refusal(str(err), EXIT_DATA) from None
    write_text(args.reports / "report.md", text)
    print(f"wrote {args.reports / 'report.md'}")


if __name__ == "__main__":
    run_command(main)
