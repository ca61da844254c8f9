"""Speed benchmark (a script, not a test): evaluation and training on real Baby interactions.

    .venv/bin/python -m benchmarks.speed [--data-dir ../shared/data/amazon/baby] [--rounds 3] [--backbones B ...]

Prints
- seconds for one full evaluation (valid + test, every item ranked for every user) of a
  random 64-d model, against the bare matrix-product floor measured in the same run
  (19,445 x 7,050 x 64 ~ 8.8 GFLOP), and the peak RSS growth against one user batch;
- seconds per training epoch of every trainable backbone, base and MRdIB trained side by side
  step for step, with stand-in features (the real ones are not on these machines), MRdIB's
  overhead in %, seconds per full evaluation and peak RSS; before that, the MRdIB objective's
  own cost per step (no backbone), the floor of that overhead;
- with --graphs-data-dir ../shared/data/amazon/clothing: peak RSS of each graph backbone's
  graph construction on Clothing (one process each).
Every ratio it prints is against a reference measured in the same run (the matrix-product floor,
the base variant); it never divides by a figure remembered from another day or machine.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from config.params import load_params
from config.sections import MRdIBConfig
from models.data import load_dataset
from models.evaluation import Evaluator
from models.mrdib import MRdIB
from models.registry import backbone_classes
from models.trainer import Trainer, TrainSettings, seed_everything
from pipeline.errors import run_command
from pipeline.training import build_model

BACKBONES = backbone_classes()


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak_rss() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM to the current RSS
    except OSError:
        pass


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def bench_evaluation(data, batch_size: int) -> None:
    gen = torch.Generator().manual_seed(0)
    users, items = torch.randn(data.n_users, 64, generator=gen), torch.randn(data.n_items, 64, generator=gen)
    evaluator = Evaluator(data.n_users, data.n_items, data.train, {"valid": data.valid, "test": data.test},
                          batch_size=batch_size)
    score = lambda batch: users[batch] @ items.T  # noqa: E731
    floor = best_of(3, lambda: users @ items.T)
    reset_peak_rss()
    before = peak_rss_mb()
    full = best_of(3, lambda: evaluator.evaluate(score, ("valid", "test")))
    growth = peak_rss_mb() - before
    batch_mb = batch_size * data.n_items * (4 + 1) / 2**20  # float scores + bool targets per batch
    dense_mb = data.n_users * data.n_items * 4 / 2**20
    print(f"full evaluation (valid+test), {data.n_users} users x {data.n_items} items, batch {batch_size}:")
    print(f"  {full:.3f} s  = {full / floor:.1f}x the matrix-product floor ({floor:.3f} s, "
          f"{data.n_users * data.n_items * 64 / 1e9:.1f} G multiply-adds)")
    print(f"  peak RSS growth {growth:.0f} MB (one user batch ~{batch_mb:.0f} MB; a dense users x items "
          f"score matrix would be {dense_mb:.0f} MB)")


def interleaved_epoch(trainers: dict[str, Trainer], epoch: int) -> dict[str, float]:
    """One epoch of every trainer, alternating single steps (base batch 1, mrdib batch 1, mrdib
    batch 2, base batch 2, ...), so that both see the same machine load at the scale of a step and
    neither is always the one that runs after the other; returns seconds per trainer, the per-epoch
    graph work (FREEDOM's pruning) included."""
    seconds = dict.fromkeys(trainers, 0.0)
    for variant, trainer in trainers.items():
        started = time.perf_counter()
        trainer.model.train()
        trainer.model.on_epoch_start(epoch)
        seconds[variant] += time.perf_counter() - started
    for index, steps in enumerate(zip(*(t.epoch_batches() for t in trainers.values()))):
        pairs = list(zip(trainers.items(), steps))
        for (variant, trainer), (users, pos, neg) in (pairs if index % 2 == 0 else reversed(pairs)):
            started = time.perf_counter()
            trainer.train_step(users, pos, neg, epoch, index)
            seconds[variant] += time.perf_counter() - started
    return seconds


def timed_evaluation(trainer: Trainer) -> float:
    """Seconds of one full evaluation (valid + test, every item ranked for every user)."""
    started = time.perf_counter()
    trainer.model.eval()
    trainer.model.prepare_eval()
    trainer.evaluator.evaluate(trainer.model.full_scores, ("valid", "test"))
    return time.perf_counter() - started


def bench_training(data, rounds: int, names: list[str]) -> None:
    """Base and MRdIB of a backbone train side by side, step for step (see interleaved_epoch); the
    overhead is the median over epochs of the ratio of their epoch times."""
    params = load_params("params.yaml", ["train.progress=false"])
    evaluator = Evaluator(data.n_users, data.n_items, data.train, {"valid": data.valid, "test": data.test})
    settings = TrainSettings(epochs=rounds + 1, batch_size=params.train.batch_size, lr=params.train.lr,
                             patience=10**6, valid_metric="recall@20", progress=False)
    print(f"\nseconds per training epoch (median of {rounds} epochs after a warm-up epoch; base and MRdIB "
          "steps alternate), full evaluation, peak RSS of the pair:")
    print("| backbone | base s/epoch | mrdib s/epoch | mrdib overhead (median, range) | base eval s | "
          "mrdib eval s | peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        cls = BACKBONES[name]
        if not cls.trainable:
            continue
        reset_peak_rss()
        variants = ("base", "mrdib") if cls.modalities else ("base",)
        trainers = {}
        for variant in variants:
            seed_everything(params.seed)
            model = build_model(params, data, name, variant, torch.device("cpu"))
            trainers[variant] = Trainer(model, data.train, evaluator, settings, Path("/tmp/bench-ckpt"), params.seed)
        seconds: dict[str, list[float]] = {v: [] for v in variants}
        for epoch in range(1, rounds + 2):
            took = interleaved_epoch(trainers, epoch)
            if epoch > 1:  # epoch 1 warms up allocator and caches
                for variant in variants:
                    seconds[variant].append(took[variant])
            print(f"  {name} epoch {epoch}{' (warm-up)' if epoch == 1 else ''}: "
                  + ", ".join(f"{v} {took[v]:.2f} s" for v in variants), flush=True)
        # each evaluated twice, in both orders (base, mrdib, mrdib, base): the first evaluation runs cold
        evaluations: dict[str, list[float]] = {v: [] for v in trainers}
        for variant in list(trainers) + list(reversed(trainers)):
            evaluations[variant].append(timed_evaluation(trainers[variant]))
        evaluation = {v: min(times) for v, times in evaluations.items()}
        base = statistics.median(seconds["base"])
        row = [name, f"{base:.2f}"]
        if "mrdib" in trainers:
            ratios = [m / b - 1 for b, m in zip(seconds["base"], seconds["mrdib"])]
            row += [f"{statistics.median(seconds['mrdib']):.2f}",
                    f"{100 * statistics.median(ratios):+.1f}% ({100 * min(ratios):+.1f}..{100 * max(ratios):+.1f})",
                    f"{evaluation['base']:.2f}", f"{evaluation['mrdib']:.2f}"]
        else:
            row += ["n/a", "n/a", f"{evaluation['base']:.2f}", "n/a"]
        row.append(f"{peak_rss_mb():.0f}")
        print("| " + " | ".join(row) + " |", flush=True)


def bench_objective(steps: int = 12) -> None:
    """MRdIB's own cost per training step, without any backbone: both encoders, the KL, the MINE
    critic and the BPR heads, forward and backward, at Baby's sizes (batch 2048 of 7,050 items).
    This is the floor of the per-step overhead: the backbone around it only adds to it."""
    print("\nMRdIB objective alone, forward + backward per step (median), batch 2048:")
    gen = torch.Generator().manual_seed(0)
    shapes = (("every item encoded (MGCN, DualGNN, SOIL), d=64", 7050, 64, False),
              ("the batch's items encoded (VBPR, FREEDOM), d=64", 7050, 64, True),
              ("every item encoded (MMGCN), d=256", 7050, 256, False))
    for label, n_items, dim, batch_items_only in shapes:
        plugin = MRdIB({m: dim for m in ("image", "text")}, user_dim=64, config=MRdIBConfig(), seed=0)
        plugin.train()
        table = {m: torch.randn(n_items, dim, generator=gen, requires_grad=True) for m in ("image", "text")}
        user = torch.randn(2048, 64, generator=gen, requires_grad=True)
        times = []
        for _ in range(steps):
            pos, neg = torch.randint(0, n_items, (2, 2048), generator=gen)
            items = torch.unique(torch.cat([pos, neg])) if batch_items_only else None
            started = time.perf_counter()
            for m, h in table.items():
                plugin.encode(m, h if items is None else h[items], items)
            sum(plugin.loss_terms(user, pos, neg).values()).backward()
            times.append(time.perf_counter() - started)
        print(f"  {label}: {1000 * statistics.median(times[2:]):.1f} ms")


def bench_graphs(data_dir: Path, names: list[str]) -> None:
    """Peak RSS of building each graph backbone's fixed graphs, one fresh process per backbone
    (`python -m tasks.graphs`, stand-in features), so each peak is that backbone's alone."""
    print(f"\ngraph construction on {data_dir} (stand-in features), one process per backbone:")
    print("| backbone | graphs (nnz) | seconds | peak RSS MB |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            if not BACKBONES[name].graph_names:
                continue
            done = subprocess.run([sys.executable, "-m", "tasks.graphs", "--dataset", data_dir.name, "--backbone",
                                   name, "--data-dir", str(data_dir), "--out", f"{tmp}/{name}.npz",
                                   "--set", "data.standin_features=true"], capture_output=True, text=True, check=True)
            summary = json.loads(done.stdout.strip().splitlines()[-1])
            graphs = ", ".join(f"{g} {v['nnz']:,}" for g, v in summary["graphs"].items())
            print(f"| {name} | {graphs} | {summary['seconds']:.0f} | {summary['peak_rss_mb']:.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data/amazon/baby"))
    parser.add_argument("--rounds", type=int, default=3, help="timed epochs per variant (after one warm-up)")
    parser.add_argument("--eval-batch-size", type=int, default=4096)
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), help="default: all")
    parser.add_argument("--graphs-data-dir", type=Path, metavar="DIR",
                        help="also build the graph backbones' graphs on this dataset (e.g. "
                             "../shared/data/amazon/clothing) and print their peak RSS; --graphs-only skips the rest")
    parser.add_argument("--graphs-only", action="store_true")
    args = parser.parse_args()
    if args.graphs_data_dir:
        bench_graphs(args.graphs_data_dir, args.backbones)
    if args.graphs_only:
        return
    data = load_dataset(args.data_dir, standin=True, seed=0)
    print(data.summary(), f"| torch threads: {torch.get_num_threads()}")
    bench_evaluation(data, args.eval_batch_size)
    if not args.skip_training:
        bench_objective()
        bench_training(data, args.rounds, args.backbones)


if __name__ == "__main__":
    run_command(main)
