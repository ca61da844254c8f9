"""Speed benchmark (a script, not a test): evaluation and training on real Baby interactions.

    .venv/bin/python -m benchmarks.speed [--data-dir ../shared/data/amazon/baby] [--rounds 3] [--backbones B ...]
        [--threads N] [--device auto|cpu|cuda]
        [--reference MMREC_CHECKOUT [--reference-pythonpath DIR] [--reference-work-dir DIR]]

Prints
- seconds for one full evaluation (valid + test, every item ranked for every user) of a
  random 64-d model, against the bare matrix-product floor measured in the same run
  (19,445 x 7,050 x 64 ~ 8.8 GFLOP), and the peak RSS growth against one user batch;
- seconds per training epoch of every trainable backbone, base and MRdIB trained side by side
  step for step, with stand-in features (the real ones are not on these machines), MRdIB's
  overhead in %, seconds per full evaluation and peak RSS; before that, the MRdIB objective's
  own cost per step (no backbone), the floor of that overhead;
- with --graphs-data-dir ../shared/data/amazon/clothing: peak RSS of each graph backbone's
  graph construction on Clothing (one process each);
- with a checkout of the field's reference toolbox (--reference PATH, or $MRDIB_REFERENCE; see
  benchmarks/reference.py): each backbone both toolboxes have, ours and the reference's, built with the
  same settings (printed side by side, checked equal), the same threads and the same data folder
  (one .inter, one pair of feature files), trained one epoch each in turn; median s/epoch and seconds
  per full evaluation of both, ratio = ours / reference. Without a checkout it prints our figures only.
On a GPU (--device cuda, or auto where one exists) every timed region waits for the GPU's queued work
before reading the clock; --profile-objective there also prints the kernels' share of a step's wall time,
and kernels and host synchronisations per step (benchmarks/device_check.sh runs it all in one call).
Every ratio it prints is against a reference measured in the same run (the matrix-product floor,
the base variant, the reference toolbox); it never divides by a figure remembered from another day or
machine.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.reference import (
    ENV_VAR,
    MODELS,
    PYTHONPATH_ENV_VAR,
    ReferenceWorker,
    check_checkout,
    fixed_mismatches,
    fixed_overrides,
    lay_out_data,
    mismatches,
    reference_config,
    resolve_reference,
    settings_rows,
    user_graph,
)
from config.params import load_params
from config.sections import MRdIBConfig
from models.data import load_dataset
from models.evaluation import Evaluator
from models.mrdib import MRdIB
from models.registry import backbone_classes
from models.trainer import Trainer, TrainSettings, pick_device, seed_everything
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


def clock(device: torch.device) -> float:
    """The host clock, after the device's queued work has finished: GPU kernels run asynchronously, so
    a bare host clock would time their launch, not their work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def best_of(repeats: int, fn, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        started = clock(device)
        fn()
        times.append(clock(device) - started)
    return min(times)


def bench_evaluation(data, batch_size: int, device: torch.device) -> None:
    gen = torch.Generator().manual_seed(0)
    users, items = (torch.randn(n, 64, generator=gen).to(device) for n in (data.n_users, data.n_items))
    evaluator = Evaluator(data.n_users, data.n_items, data.train, {"valid": data.valid, "test": data.test},
                          batch_size=batch_size, device=device)
    score = lambda batch: users[batch] @ items.T  # noqa: E731
    floor = best_of(3, lambda: users @ items.T, device)
    reset_peak_rss()
    before = peak_rss_mb()
    full = best_of(3, lambda: evaluator.evaluate(score, ("valid", "test")), device)
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
        started = clock(trainer.device)
        trainer.model.train()
        trainer.model.on_epoch_start(epoch)
        seconds[variant] += clock(trainer.device) - started
    for index, steps in enumerate(zip(*(t.epoch_batches() for t in trainers.values()))):
        pairs = list(zip(trainers.items(), steps))
        for (variant, trainer), (users, pos, neg) in (pairs if index % 2 == 0 else reversed(pairs)):
            started = clock(trainer.device)
            trainer.train_step(users, pos, neg, epoch, index)
            seconds[variant] += clock(trainer.device) - started
    return seconds


def timed_evaluation(trainer: Trainer) -> float:
    """Seconds of one full evaluation (valid + test, every item ranked for every user)."""
    started = clock(trainer.device)
    trainer.model.eval()
    trainer.model.prepare_eval()
    trainer.evaluator.evaluate(trainer.model.full_scores, ("valid", "test"))
    return clock(trainer.device) - started


def bench_training(data, rounds: int, names: list[str], device: torch.device) -> None:
    """Base and MRdIB of a backbone train side by side, step for step (see interleaved_epoch); the
    overhead is the median over epochs of the ratio of their epoch times."""
    params = load_params("params.yaml", ["train.progress=false"])
    evaluator = Evaluator(data.n_users, data.n_items, data.train, {"valid": data.valid, "test": data.test},
                          device=device)
    settings = TrainSettings(epochs=rounds + 1, batch_size=params.train.batch_size, lr=params.train.lr,
                             patience=10**6, valid_metric="recall@20", progress=False)
    print(f"\nseconds per training epoch on {device} (median of {rounds} epochs after a warm-up epoch; base and "
          "MRdIB steps alternate), full evaluation, peak RSS of the pair:")
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
            model = build_model(params, data, name, variant, device)
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


def our_epoch(trainer: Trainer, epoch: int) -> float:
    """Seconds of one training epoch as Trainer.run_epoch runs it, without its validation: the epoch's graph
    work (FREEDOM's pruning), the learning rate, sampling the epoch's negatives and every step."""
    started = time.perf_counter()
    trainer.model.train()
    trainer.model.on_epoch_start(epoch)
    trainer.optimizer.lr = trainer.settings.lr * trainer.model.lr_factor(epoch)
    trainer.train_epoch(epoch)
    return time.perf_counter() - started


def side_by_side(name: str, data, folder: Path, reference: Path, rounds: int, threads: int,
                 pythonpath: str | None) -> list[str]:
    """One backbone, ours and the reference's: the settings of both printed (ours | reference) and checked
    equal; one epoch of ours, one of the reference (the order swapped every round), a warm-up epoch each
    first; then each evaluated twice, ours, reference, reference, ours (the best of two). Returns the row."""
    params = load_params("params.yaml", ["train.progress=false", *fixed_overrides(name)])
    modalities = BACKBONES[name].modalities
    evaluator = Evaluator(data.n_users, data.n_items, data.train, {"valid": data.valid, "test": data.test},
                          batch_size=params.train.eval_batch_size)
    settings = TrainSettings(epochs=rounds + 1, batch_size=params.train.batch_size, lr=params.train.lr,
                             patience=10**6, valid_metric="recall@20", weight_decay=params.train.weight_decay,
                             progress=False)
    seed_everything(params.seed)
    ours = Trainer(build_model(params, data, name, "base", torch.device("cpu")), data.train, evaluator, settings,
                   Path("/tmp/bench-ckpt"), params.seed)
    if name == "dualgnn":
        user_graph(reference, folder.parent.parent, data.name, ReferenceWorker.environment(pythonpath))
    with ReferenceWorker(reference, pythonpath) as worker:
        expected = reference_config(name, params)
        info = worker.request("build", model=MODELS[name], dataset=data.name, data_path=f"{folder.parent}/",
                              config=expected, threads=threads)
        facts = {"n_users": data.n_users, "n_items": data.n_items, "n_train": len(data.train),
                 "features": {m: list(data.features[m].shape) for m in modalities}}
        problems = (mismatches(expected, info["config"]) + fixed_mismatches(name, params)
                    + mismatches({**facts, "threads": threads, "torch": torch.__version__},
                                 {**info, "features": {m: info["features"].get(m) for m in modalities}}))
        print(f"\n{name} (ours) vs {MODELS[name]} (reference), settings ours | reference:")
        for setting, mine, theirs in settings_rows(name, params, info["config"]):
            print(f"  {setting}: {mine} | {theirs}")
        print(f"  threads: {torch.get_num_threads()} | {info['threads']}; torch {torch.__version__} | "
              f"{info['torch']}; data: {facts} | n_users {info['n_users']}, n_items {info['n_items']}, "
              f"n_train {info['n_train']}, features {info['features']}")
        if problems:
            raise SystemExit(f"{name}: the two sides are not configured alike: {'; '.join(problems)}")
        seconds: dict[str, list[float]] = {"ours": [], "reference": []}
        for epoch in range(1, rounds + 2):
            took = {}
            for side in ("ours", "reference") if epoch % 2 else ("reference", "ours"):
                took[side] = our_epoch(ours, epoch) if side == "ours" else worker.request("epoch")["seconds"]
            if epoch > 1:  # epoch 1 warms up allocator and caches
                for side, value in took.items():
                    seconds[side].append(value)
            print(f"  epoch {epoch}{' (warm-up)' if epoch == 1 else ''}: ours {took['ours']:.2f} s, "
                  f"reference {took['reference']:.2f} s", flush=True)
        evaluations: dict[str, list[float]] = {"ours": [], "reference": []}
        for side in ("ours", "reference", "reference", "ours"):
            evaluations[side].append(timed_evaluation(ours) if side == "ours"
                                     else worker.request("evaluate")["seconds"])
    train = {side: statistics.median(values) for side, values in seconds.items()}
    evaluation = {side: min(values) for side, values in evaluations.items()}
    return [name, f"{train['ours']:.2f}", f"{train['reference']:.2f}", f"{train['ours'] / train['reference']:.2f}",
            f"{evaluation['ours']:.2f}", f"{evaluation['reference']:.2f}",
            f"{evaluation['ours'] / evaluation['reference']:.2f}"]


def bench_reference(data, folder: Path, reference: Path, names: list[str], rounds: int, threads: int,
                    pythonpath: str | None) -> None:
    """Each backbone of both toolboxes side by side (see side_by_side); ratio = ours / reference."""
    print(f"\nside by side with the reference toolbox (MMRec) at {reference}: the same {threads} torch thread(s) "
          f"each, the same data folder {folder} (both read its .inter and feature files), ours trained as the "
          f"pipeline trains, the reference as its Trainer.fit does; median of {rounds} epochs each after a warm-up "
          f"epoch, the two alternating; full evaluation = valid + test, every item ranked, best of two")
    skipped = [n for n in names if n not in MODELS]
    if skipped:
        print(f"  not in the reference toolbox, not timed against it: {', '.join(skipped)}")
    rows = []
    for name in [n for n in names if n in MODELS]:
        rows.append(side_by_side(name, data, folder, reference, rounds, threads, pythonpath))
        print("| " + " | ".join(rows[-1]) + " |", flush=True)
    train = load_params("params.yaml").train
    print(f"\nours vs the reference toolbox on {data.name} ({folder}), {threads} thread(s) each, batch "
          f"{train.batch_size}, lr {train.lr}, d {train.embedding_dim} both (per backbone settings above), median "
          f"s/epoch of {rounds} alternating epochs, full evaluation best of two; ratio = ours / reference:")
    print("| backbone | ours s/epoch | reference s/epoch | ratio | ours eval s | reference eval s | eval ratio |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def bench_objective(device: torch.device, steps: int = 12, profile: bool = False) -> None:
    """MRdIB's own cost per training step, without any backbone: both encoders, the KL, the MINE
    critic and the BPR heads, forward and backward, at Baby's sizes (batch 2048 of 7,050 items).
    This is the floor of the per-step overhead: the backbone around it only adds to it. `profile`:
    also where that time goes (torch.profiler, the operators' share of the objective's CPU time)."""
    print(f"\nMRdIB objective alone on {device}, forward + backward per step (median), batch 2048:")
    gen = torch.Generator().manual_seed(0)
    shapes = (("every item encoded (MGCN, DualGNN, SOIL), d=64", 7050, 64, False),
              ("the batch's items encoded (VBPR, FREEDOM), d=64", 7050, 64, True),
              ("every item encoded (MMGCN), d=256", 7050, 256, False))
    for label, n_items, dim, batch_items_only in shapes:
        plugin = MRdIB({m: dim for m in ("image", "text")}, user_dim=64, config=MRdIBConfig(), seed=0).to(device)
        plugin.train()
        table = {m: torch.randn(n_items, dim, generator=gen).to(device).requires_grad_() for m in ("image", "text")}
        user = torch.randn(2048, 64, generator=gen).to(device).requires_grad_()
        times = []
        for _ in range(steps):
            batch = objective_batch(gen, n_items, batch_items_only, device)
            started = clock(device)
            objective_step(plugin, table, user, *batch)
            times.append(clock(device) - started)
        print(f"  {label}: {1000 * statistics.median(times[2:]):.1f} ms")
        if profile:
            activities = [torch.profiler.ProfilerActivity.CPU]
            if device.type == "cuda":
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            with torch.profiler.profile(activities=activities) as prof:
                for _ in range(steps):
                    objective_step(plugin, table, user, *objective_batch(gen, n_items, batch_items_only, device))
            events = prof.key_averages()
            if device.type == "cuda":  # a GPU step is either kernel work or waiting for the host to launch it
                print_gpu_share(prof.events(), events, steps, statistics.median(times[2:]))
            print_operator_shares(events, steps)


def bench_compiled_objective(device: torch.device, steps: int = 30) -> None:
    """The objective's step eager and under torch.compile (inductor, dynamic shapes: the batch's
    distinct items vary), alternating step by step, the order swapped every step; median ms of each.
    The issue's suggested fusion, measured rather than assumed."""
    import torch._dynamo
    import torch._inductor.config as inductor_config

    print(f"\nMRdIB objective alone on {device}, eager vs torch.compile (inductor), forward + backward, batch 2048:")
    gen = torch.Generator().manual_seed(0)
    for label, batch_items_only in (("the batch's items encoded (VBPR, FREEDOM)", True),
                                    ("every item encoded (MGCN, DualGNN, SOIL)", False)):
        plugin = MRdIB({m: 64 for m in ("image", "text")}, user_dim=64, config=MRdIBConfig(), seed=0).to(device)
        plugin.train()
        table = {m: torch.randn(7050, 64, generator=gen).to(device).requires_grad_() for m in ("image", "text")}
        user = torch.randn(2048, 64, generator=gen).to(device).requires_grad_()
        torch._dynamo.reset()
        compiled = torch.compile(objective_step, dynamic=True)
        started = clock(device)
        try:
            compiled(plugin, table, user, *objective_batch(gen, 7050, batch_items_only, device))
        except torch._dynamo.exc.BackendCompilerFailed as error:  # torch 2.13: a pattern-matcher pass fails
            print(f"  {label}: compiling failed ({str(error).splitlines()[1][:120]}); again without "
                  f"inductor's pattern matcher")
            inductor_config.pattern_matcher = False
            torch._dynamo.reset()
            compiled = torch.compile(objective_step, dynamic=True)
        for _ in range(3):
            compiled(plugin, table, user, *objective_batch(gen, 7050, batch_items_only, device))
        warm_up = clock(device) - started
        times: dict[str, list[float]] = {"eager": [], "compiled": []}
        for step in range(steps):
            order = (("eager", objective_step), ("compiled", compiled))
            for name, function in order if step % 2 else order[::-1]:
                batch = objective_batch(gen, 7050, batch_items_only, device)
                started = clock(device)
                function(plugin, table, user, *batch)
                times[name].append(clock(device) - started)
        eager, fused = (statistics.median(times[name]) for name in ("eager", "compiled"))
        print(f"  {label}: eager {1000 * eager:.1f} ms, compiled {1000 * fused:.1f} ms "
              f"(x{fused / eager:.2f}; compiling and warm-up {warm_up:.0f} s)", flush=True)


def objective_batch(gen: torch.Generator, n_items: int, batch_items_only: bool, device: torch.device):
    """A batch of 2048 (pos, neg) items, and their distinct items where only those are encoded."""
    pos, neg = torch.randint(0, n_items, (2, 2048), generator=gen).to(device)
    return pos, neg, torch.unique(torch.cat([pos, neg])) if batch_items_only else None


def objective_step(plugin: MRdIB, table: dict, user: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor,
                   items: torch.Tensor | None) -> None:
    """Encode both modalities (every item, or `items`), then the objective's forward and backward."""
    for m, h in table.items():
        plugin.encode(m, h if items is None else h[items], items)
    sum(plugin.loss_terms(user, pos, neg).values()).backward()


def print_gpu_share(raw_events, events, steps: int, step_seconds: float) -> None:
    """How much of a step's wall time the GPU spends in kernels, and how many it launches per step."""
    kernel_us = sum(e.self_device_time_total for e in events)
    kernels = sum(1 for e in raw_events if e.device_type == torch.autograd.DeviceType.CUDA)
    syncs = sum(e.count for e in events if e.key in ("cudaStreamSynchronize", "cudaDeviceSynchronize",
                                                     "cudaMemcpyAsync"))
    print(f"      GPU kernels {kernel_us / steps / 1000:.2f} ms per step of {1000 * step_seconds:.1f} ms wall "
          f"({100 * kernel_us / steps / 1e6 / step_seconds:.0f}%), {kernels / steps:.0f} kernels per step, "
          f"{syncs / steps:.0f} host copies or synchronisations per step")


def print_operator_shares(events, steps: int, top: int = 8) -> None:
    """The operators with the largest self CPU time: share of the total, calls per step."""
    total = sum(e.self_cpu_time_total for e in events)
    for event in sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]:
        print(f"      {event.key:<28} {100 * event.self_cpu_time_total / total:5.1f}%  "
              f"{event.count / steps:5.1f} calls/step")


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
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="where ours trains and evaluates (auto: a GPU where one exists); the side-by-side "
                             "with the reference runs on the CPU only")
    parser.add_argument("--threads", type=int, help="torch threads, ours and the reference's (default: torch's)")
    parser.add_argument("--reference", metavar="PATH",
                        help=f"an MMRec checkout to time side by side (default: ${ENV_VAR}; none: ours only)")
    parser.add_argument("--reference-pythonpath", metavar="DIRS", default=os.environ.get(PYTHONPATH_ENV_VAR),
                        help=f"import path for the reference's own dependencies, its worker only "
                             f"(default: ${PYTHONPATH_ENV_VAR})")
    parser.add_argument("--reference-work-dir", type=Path, metavar="DIR",
                        help="where the shared data folder (and DualGNN's user graph) is laid out and kept "
                             "between runs (default: a temporary folder)")
    parser.add_argument("--skip-evaluation", action="store_true", help="skip the evaluation-vs-floor figures")
    parser.add_argument("--profile-objective", action="store_true",
                        help="only MRdIB's objective alone: its time per step and where it goes (torch.profiler)")
    parser.add_argument("--compile-objective", action="store_true",
                        help="only MRdIB's objective alone, eager against torch.compile, alternating")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    if args.profile_objective:
        bench_objective(device, profile=True)
        return
    if args.compile_objective:
        bench_compiled_objective(device)
        return
    reference = resolve_reference(args.reference)
    if reference is not None:
        if device.type != "cpu":
            raise SystemExit(f"the side-by-side with the reference toolbox runs on the CPU only; got --device "
                             f"{args.device} ({device}): add --device cpu")
        check_checkout(reference)
    if args.graphs_data_dir:
        bench_graphs(args.graphs_data_dir, args.backbones)
    if args.graphs_only:
        return
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir
        if reference is not None:  # both sides read one folder: the .inter and our stand-ins, written once
            probe = load_dataset(args.data_dir, standin=True, seed=0)
            features = {m: probe.features[m] for m in ("image", "text")}
            data_dir = lay_out_data(args.data_dir, args.reference_work_dir or Path(tmp), features)
        data = load_dataset(data_dir, standin=True, seed=0)
        print(data.summary(), f"| torch threads: {torch.get_num_threads()} | device: {device}")
        if not args.skip_evaluation:
            bench_evaluation(data, args.eval_batch_size, device)
        if not args.skip_training:
            bench_objective(device)
            bench_training(data, args.rounds, args.backbones, device)
        if reference is None:
            print(f"\nno reference toolbox given (--reference PATH or ${ENV_VAR}): our figures only, no ratio "
                  "against it")
        else:
            bench_reference(data, data_dir, reference, args.backbones, args.rounds, torch.get_num_threads(),
                            args.reference_pythonpath)


if __name__ == "__main__":
    run_command(main)
