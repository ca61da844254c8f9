"""The field's reference toolbox (MMRec, github.com/enoche/MMRec) run beside ours, for benchmarks.speed.

Nothing of MMRec is copied here. A checkout is given by path (`--reference PATH`, or the environment
variable MRDIB_REFERENCE); its dependencies that our environment lacks (torch_geometric, lmdb,
torchvision; torch_scatter for MGCN) come from `--reference-pythonpath` / MRDIB_REFERENCE_PYTHONPATH,
put on the worker's import path only. Its torch is ours (the same build, the same threads).

Why a worker process, kept alive for one backbone, rather than putting the checkout on our sys.path:
MMRec's top-level packages are called `models`, `utils` and `common`, and `models` is also ours, so
the two cannot be imported into one interpreter; MMRec also reads its configs relative to the working
directory. The worker builds the reference model once and then trains one epoch or runs one full
evaluation per request, so the two sides can be stepped alternately; between requests it blocks on a
pipe and takes no CPU.

The worker patches four things that MMRec's code meets on a CPU or in today's libraries, none of
which is in the timed part of a step (_as_on_cuda, _compat_shims): DualGNN's result_embed is made the
plain tensor it is on CUDA; `Tensor.cuda()` returns the tensor on a machine without CUDA (MGCN calls
it unconditionally); `dok_matrix._update` (gone from SciPy; LightGCN's and FREEDOM's graph
construction use it) is dict.update; the schemas of `torchvision::nms` and `qnms` are declared when
torchvision's compiled ops cannot load (PyPI's torchvision is built for CUDA torch; MMRec imports only
its pure-Python transforms, for raw images, which these models never use).

This file is both the parent's side (stdlib only at import) and the worker (`python reference.py
--worker CHECKOUT`, started by ReferenceWorker).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

if not __package__:  # run by path as the worker (cwd: the checkout): the repository root is not on sys.path
    sys.path.append(str(Path(__file__).resolve().parents[1]))
from pipeline.errors import EXIT_USAGE, Refusal, run_command  # stdlib only; worker_main drops the root again

ENV_VAR = "MRDIB_REFERENCE"
PYTHONPATH_ENV_VAR = "MRDIB_REFERENCE_PYTHONPATH"

# our backbone -> the reference's model class (SOIL has no MMRec implementation)
MODELS = {"bprmf": "BPR", "lightgcn": "LightGCN", "vbpr": "VBPR", "mmgcn": "MMGCN", "dualgnn": "DualGNN",
          "freedom": "FREEDOM", "mgcn": "MGCN"}

# Settings given to both sides: the reference's config key -> our params key. The value is read from our
# params and passed to the reference, which reports back what its config holds (checked equal).
COMMON = {"embedding_size": "train.embedding_dim", "train_batch_size": "train.batch_size",
          "learning_rate": "train.lr", "weight_decay": "train.weight_decay",
          "eval_batch_size": "train.eval_batch_size", "seed": "seed"}
PAIRED = {
    "bprmf": {"reg_weight": "backbones.bprmf.reg_weight"},
    "lightgcn": {"n_layers": "backbones.lightgcn.n_layers", "reg_weight": "backbones.lightgcn.reg_weight"},
    "vbpr": {"reg_weight": "backbones.vbpr.reg_weight"},
    "mmgcn": {"reg_weight": "backbones.mmgcn.reg_weight"},
    "dualgnn": {"reg_weight": "backbones.dualgnn.reg_weight"},
    "freedom": {"knn_k": "backbones.freedom.knn_k", "mm_image_weight": "backbones.freedom.image_weight",
                "dropout": "backbones.freedom.dropout", "n_ui_layers": "backbones.freedom.n_ui_layers",
                "n_mm_layers": "backbones.freedom.n_ii_layers", "reg_weight": "backbones.freedom.modality_weight",
                "feat_embed_dim": "train.embedding_dim"},
    "mgcn": {"knn_k": "backbones.mgcn.knn_k", "n_ui_layers": "backbones.mgcn.n_ui_layers",
             "n_layers": "backbones.mgcn.n_ii_layers", "reg_weight": "backbones.mgcn.reg_weight",
             "cl_loss": "backbones.mgcn.cl_weight"},
}
# Settings the reference's code fixes (no config key reads them): ours is set to the same value for the
# side-by-side run (our params key -> value, what the reference code does).
FIXED = {
    "mmgcn": {"backbones.mmgcn.n_layers": (3, "3 layers hard-coded (its n_layers key is unused)")},
    "dualgnn": {"backbones.dualgnn.user_k": (40, "k = 40 hard-coded"),
                "backbones.dualgnn.n_layers": (2, "2 propagations hard-coded"),
                "backbones.dualgnn.hidden_dim": (256, "feature MLP 4 * 64 = 256 hard-coded")},
}
# Reference-only config values the models need that have no counterpart of ours.
REFERENCE_ONLY = {"dualgnn": {"aggr_mode": "add"}}


def resolve_reference(given: str | None, environ=os.environ) -> Path | None:
    """The reference checkout: the given path, else $MRDIB_REFERENCE, else None (no reference)."""
    path = given or environ.get(ENV_VAR) or None
    return Path(path).expanduser().resolve() if path else None


def check_checkout(path: Path) -> Path:
    """`path` if it looks like an MMRec checkout (src/main.py, src/models, src/configs), else ValueError."""
    missing = [p for p in ("src/main.py", "src/models", "src/configs/overall.yaml") if not (path / p).exists()]
    if missing:
        raise ValueError(f"{path}: not an MMRec checkout (missing {', '.join(missing)}); expected e.g. the "
                         f"folder of `git clone https://github.com/enoche/MMRec`")
    return path


def lookup(params, dotted: str):
    """A params value by dotted path: train.lr, seed, backbones.freedom.knn_k (a backbone's config)."""
    head, _, rest = dotted.partition(".")
    if head == "backbones":
        name, _, key = rest.partition(".")
        return getattr(params.backbone_config(name), key)
    value = getattr(params, head)
    for part in rest.split(".") if rest else ():
        value = getattr(value, part)
    return value


def fixed_overrides(name: str) -> list[str]:
    """`--set`-style overrides that make our side match what the reference's code fixes."""
    return [f"{key}={value}" for key, (value, _) in FIXED.get(name, {}).items()]


def reference_config(name: str, params) -> dict:
    """The config the reference model is built with: every paired setting at our value, the learning-rate
    schedule ([factor, every epochs]; 1.0 = constant) and the reference-only values."""
    config = {key: lookup(params, path) for key, path in {**COMMON, **PAIRED[name]}.items()}
    config_of_ours = params.backbone_config(name)
    decay = getattr(config_of_ours, "lr_decay", 1.0), getattr(config_of_ours, "lr_decay_epochs", 50)
    config["learning_rate_scheduler"] = [float(decay[0]), int(decay[1])]
    return {**config, **REFERENCE_ONLY.get(name, {})}


def settings_rows(name: str, params, reported: dict) -> list[tuple[str, str, str]]:
    """(setting, ours, reference) for the header: the paired keys, then what the reference code fixes."""
    rows = [(f"{key} / {path}", repr(lookup(params, path)), repr(reported.get(key)))
            for key, path in {**COMMON, **PAIRED[name]}.items()]
    rows.append(("learning_rate_scheduler", repr(reference_config(name, params)["learning_rate_scheduler"]),
                 repr(reported.get("learning_rate_scheduler"))))
    rows += [(path, repr(lookup(params, path)), f"{value!r} ({why})")
             for path, (value, why) in FIXED.get(name, {}).items()]
    return rows


def mismatches(expected: dict, reported: dict) -> list[str]:
    """The keys whose reported value differs from the expected one (numbers compared as floats)."""
    def same(a, b):
        if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
            return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
            return float(a) == float(b)
        return a == b
    return [f"{key}: ours {value!r}, reference {reported.get(key, '<missing>')!r}"
            for key, value in expected.items() if not same(value, reported.get(key))]


def fixed_mismatches(name: str, params) -> list[str]:
    return [f"{path}: ours {lookup(params, path)!r}, reference code {value!r}"
            for path, (value, _) in FIXED.get(name, {}).items() if lookup(params, path) != value]


def lay_out_data(data_dir: Path, root: Path, features: dict) -> Path:
    """The dataset folder both sides read, laid out as MMRec expects under `root`:

    root/data/<name>/   <name>.inter (a link to the original), image_feat.npy and text_feat.npy (links
                        to the real files where data_dir has them, else `features[m]`, our stand-ins,
                        written once), features.json naming the stand-ins (our loader flags them);
    root/src/configs    a link to the checkout's configs (for its preprocessing script, see user_graph);
    root/src/data       a link to root/data (for a checkout whose data_path is 'data/').
    Returns root/data/<name>."""
    inter = sorted(data_dir.glob("*.inter"))
    if len(inter) != 1:
        raise ValueError(f"{data_dir}: expected exactly one *.inter file, found {[p.name for p in inter]}")
    folder = root / "data" / inter[0].stem
    folder.mkdir(parents=True, exist_ok=True)
    _link(folder / inter[0].name, inter[0].resolve())
    standin = []
    for modality, values in features.items():
        target, real = folder / f"{modality}_feat.npy", data_dir / f"{modality}_feat.npy"
        if real.exists():
            _link(target, real.resolve())
        else:
            standin.append(modality)
            if not target.exists():
                import numpy as np  # only here: the worker and the pure helpers need no numpy

                np.save(target, values)
    (folder / "features.json").write_text(json.dumps({"standin": standin}))
    return folder


def _link(link: Path, target: Path) -> None:
    if link.is_symlink() or link.exists():
        if link.resolve() == target.resolve():
            return
        link.unlink()
    link.symlink_to(target)


def user_graph(reference: Path, root: Path, name: str, env: dict) -> Path:
    """DualGNN's user-user graph file, made by the checkout's own preprocessing script
    (preprocessing/dualgnn-gen-u-u-matrix.py, run unchanged) unless root/data/<name> has it already.
    The script changes to ../src, reads configs/overall.yaml and configs/dataset/<name>.yaml there and
    writes to <data_path><name>/; run from root/preprocessing, that is root/data/<name>."""
    out = root / "data" / name / "user_graph_dict.npy"
    if out.exists():
        return out
    script = reference / "preprocessing" / "dualgnn-gen-u-u-matrix.py"
    (root / "src").mkdir(parents=True, exist_ok=True)
    (root / "preprocessing").mkdir(parents=True, exist_ok=True)
    _link(root / "src" / "configs", (reference / "src" / "configs").resolve())
    if not (root / "src" / "data").exists():
        (root / "src" / "data").symlink_to(Path("..") / "data")
    log = root / "user_graph.log"
    with open(log, "w") as handle:
        done = subprocess.run([sys.executable, str(script), "-d", name], cwd=root / "preprocessing", env=env,
                              stdout=handle, stderr=subprocess.STDOUT)
    if done.returncode != 0 or not out.exists():
        raise RuntimeError(f"{script} failed (exit {done.returncode}); its output: {log}")
    return out


class ReferenceWorker:
    """One worker process on a reference checkout; `request` sends a command and returns its reply."""

    def __init__(self, reference: Path, pythonpath: str | None = None):
        env = self.environment(pythonpath)
        self.proc = subprocess.Popen([sys.executable, "-u", str(Path(__file__).resolve()), "--worker",
                                      str(reference)], cwd=reference / "src", env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    @staticmethod
    def environment(pythonpath: str | None) -> dict:
        """Our environment with `pythonpath` (the reference's own dependencies) first on PYTHONPATH."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, env.get("PYTHONPATH")) if p)
        return env

    def request(self, command: str, **fields) -> dict:
        self.proc.stdin.write(json.dumps({"cmd": command, **fields}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the reference worker exited (code {self.proc.wait()}) during {command!r}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"reference worker, {command!r}: {reply['error']}")
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.request("quit")
            except (RuntimeError, BrokenPipeError):
                pass
            self.proc.wait(timeout=60)

    def __enter__(self) -> ReferenceWorker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------------
# The worker: runs inside the reference checkout's src/ with its packages first on sys.path.

def _compat_shims() -> None:
    """See the module docstring: outside the timed steps, and only where the library lacks the API."""
    import scipy.sparse as sp
    import torch

    if not torch.cuda.is_available():
        torch.Tensor.cuda = lambda self, *args, **kwargs: self
    if not hasattr(sp.dok_matrix, "_update"):
        sp.dok_matrix._update = lambda self, data: self._dict.update(data)
    try:
        import torchvision
    except RuntimeError:  # compiled ops missing: declare the schemas its import registers kernels for
        for name in [m for m in sys.modules if m.startswith("torchvision")]:
            del sys.modules[name]
        library = torch.library.Library("torchvision", "DEF")
        for op in ("nms", "qnms"):
            library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _compat_shims.keep = library  # the definition lives as long as the Library object
        import torchvision  # noqa: F401


def _as_on_cuda(model) -> None:
    """DualGNN's `result_embed = nn.Parameter(...).to(device)` is a plain tensor on CUDA, the device its
    code is written for (`.to` copies), which forward then replaces; on CPU `.to` returns the Parameter
    itself, and forward's assignment of a tensor to it fails. Make it the plain tensor it is on CUDA
    (before the optimizer is built, which on CUDA never sees it either)."""
    parameters = model._parameters
    if type(model).__name__ == "DualGNN" and "result_embed" in parameters:
        model.result_embed = parameters.pop("result_embed").detach()


class _Session:
    """One reference model with MMRec's own data loaders and trainer, as its quick_start builds them."""

    def __init__(self, model: str, dataset: str, data_path: str, config: dict, threads: int):
        import inspect

        import torch
        from utils.configurator import Config
        from utils.dataloader import EvalDataLoader, TrainDataLoader
        from utils.dataset import RecDataset
        from utils.utils import get_model, get_trainer, init_seed

        torch.set_num_threads(threads)
        started = time.perf_counter()
        given = {"use_gpu": False, "gpu_id": 0, "data_path": data_path, "USER_ID_FIELD": "userID",
                 "ITEM_ID_FIELD": "itemID", "inter_file_name": f"{dataset}.inter",
                 "vision_feature_file": "image_feat.npy", "text_feature_file": "text_feat.npy",
                 "user_graph_dict_file": "user_graph_dict.npy", "field_separator": "\t", **config}
        self.config = Config(model, dataset, dict(given))
        if self.config["metrics"] is None:  # a checkout that reads src/configs from its root
            os.chdir("..")
            self.config = Config(model, dataset, dict(given))
        self.given = given
        data = RecDataset(self.config)
        train, valid, test = data.split()
        for part in (data, train, valid, test):
            str(part)  # as quick_start logs them: RecDataset.__str__ sets inter_num, which the loaders read
        self.train_data = TrainDataLoader(self.config, train, batch_size=self.config["train_batch_size"],
                                          shuffle=True)
        self.valid_data = EvalDataLoader(self.config, valid, additional_dataset=train,
                                         batch_size=self.config["eval_batch_size"])
        self.test_data = EvalDataLoader(self.config, test, additional_dataset=train,
                                        batch_size=self.config["eval_batch_size"])
        init_seed(self.config["seed"])
        self.train_data.pretrain_setup()
        self.model = get_model(model)(self.config, self.train_data).to(self.config["device"])
        _as_on_cuda(self.model)
        trainer = get_trainer()
        takes_mg = "mg" in inspect.signature(trainer.__init__).parameters
        self.trainer = trainer(self.config, self.model, False) if takes_mg else trainer(self.config, self.model)
        self.epoch = 0
        features = {m: list(getattr(self.model, f, None).shape) for m, f in (("image", "v_feat"), ("text", "t_feat"))
                    if getattr(self.model, f, None) is not None}
        self.info = {"build_seconds": time.perf_counter() - started, "threads": torch.get_num_threads(),
                     "torch": torch.__version__, "n_users": data.user_num, "n_items": data.item_num,
                     "n_train": len(train), "features": features,
                     "config": {key: self.config[key] for key in given},
                     "parameters": sum(p.numel() for p in self.model.parameters())}

    def train_epoch(self) -> dict:
        """One epoch as the reference's Trainer.fit times it: pre_epoch_processing, the batches (negative
        sampling included), the learning-rate scheduler step and post_epoch_processing."""
        started = time.perf_counter()
        self.model.pre_epoch_processing()
        loss, _ = self.trainer._train_epoch(self.train_data, self.epoch)
        self.trainer.lr_scheduler.step()
        self.model.post_epoch_processing()
        seconds = time.perf_counter() - started
        self.epoch += 1
        return {"seconds": seconds, "loss": float(sum(loss) if isinstance(loss, tuple) else loss)}

    def evaluate(self) -> dict:
        """One full evaluation as fit runs it after an epoch: valid, then test, every item ranked."""
        started = time.perf_counter()
        valid = self.trainer.evaluate(self.valid_data)
        self.trainer.evaluate(self.test_data)
        return {"seconds": time.perf_counter() - started, "recall@20": float(valid.get("recall@20", "nan"))}


def worker_main(reference: Path) -> None:
    """Serve JSON-line requests on stdin (build, epoch, evaluate, quit); replies go to the original stdout,
    anything the reference prints goes to stderr."""
    import traceback

    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    src = str(reference / "src")
    sys.path[:] = [src] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parents[1]]
    os.chdir(src)
    session = None
    for line in sys.stdin:
        request = json.loads(line)
        try:
            if request["cmd"] == "quit":
                reply = {"ok": True}
            elif request["cmd"] == "build":
                _compat_shims()
                session = _Session(request["model"], request["dataset"], request["data_path"],
                                   request["config"], request["threads"])
                reply = session.info
            elif request["cmd"] == "epoch":
                reply = session.train_epoch()
            elif request["cmd"] == "evaluate":
                reply = session.evaluate()
            else:
                reply = {"error": f"unknown command {request['cmd']!r}"}
        except Exception:  # any failure is reported to the parent, which raises it
            reply = {"error": traceback.format_exc()}
        protocol.write(json.dumps(reply) + "\n")
        protocol.flush()
        if request["cmd"] == "quit":
            return


def main() -> None:
    """The worker process: `python benchmarks/reference.py --worker CHECKOUT`, started by ReferenceWorker."""
    if sys.argv[1:2] != ["--worker"] or len(sys.argv) != 3:
        raise Refusal("usage: python benchmarks/reference.py --worker CHECKOUT (benchmarks.speed starts it)",
                      EXIT_USAGE)
    worker_main(Path(sys.argv[2]))


if __name__ == "__main__":
    run_command(main)
