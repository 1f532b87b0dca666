"""Training and evaluation of pose models: ``train(TrainConfig(...)) -> run directory``.

Read top to bottom: the config, the data and model it builds, the loss, one step (eager or captured in a CUDA graph),
the loop with its checkpoints, and evaluation. Everything a run depends on is a function of the config and the seed:
model init from ``seed``, data order from (seed, epoch), augmentation from (seed, epoch, index) (``CocoKeypoints``).
So a run killed at any point and resumed from its last epoch checkpoint ends bit for bit where an uninterrupted run
ends (on CPU; the tests kill one with SIGKILL).

A run writes ``<out>/<run_id>/`` (``checkpoint.pt`` each epoch, ``log.jsonl`` one line per epoch) and, at the end,
one results record ``<reports>/results/runs/<run_id>.json`` (config, metrics with and without flip test, learning
curve, parameters, FLOPs, wall time, img/s, provenance) with the COCO results file beside it
(``<run_id>.keypoints.json``). Under ``torchrun`` it trains with DistributedDataParallel; rank 0 writes everything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from . import records
from .codecs import COCO_FLIP_PAIRS, create_codec, list_codecs
from .data.coco import Augment, CocoKeypoints, apply_transform, invert_transform
from .models import ALIGNMENTS, HRNET_HEADS, OFFSET_HEADS, create_model, list_models, model_cost, run_size


@dataclass
class TrainConfig:
    """One run. The defaults are the `cpu` profile's recipe (one run of the CPU study's baseline at 96x64); notebook
    05 takes the same, with a smoke-sized data folder and schedule (its parameters cell says which)."""

    # model
    model: str = "hrnet_w8_tiny"  # a ufpa.models preset (ufpa.models.list_models() names them)
    alignment: str = "baseline"  # baseline | bilinear | bilinear_corners | ufpa | ufpa_any
    head: str = "udp"  # heatmap | udp | sr | duc | ufpa_official (HRNet); udp, ufpa_official pair with codec udp
    input_size: tuple[int, int] = (96, 64)  # (H, W) requested; 'ufpa' runs at the next 32m+1 size (e.g. 129x97)
    codec: str = "udp"  # msra | dark | udp | sr
    sigma: float = 2.0  # Gaussian sigma in heatmap samples; 0: the codec's default (heatmap width / 24)
    fg_weight: float = 20.0  # heatmap loss weight 1 + fg_weight * target per pixel (0: plain MSE, as published)
    # data: a COCO-format folder (SynthPose: images/<split>/, COCO 2017: <split>2017/) with annotations/
    data: str = "data/synthpose-easy"  # made by `python -m ufpa synth`, or COCO 2017
    train_split: str = "train"  # annotations/person_keypoints_<split>.json
    val_split: str = "val"  # the split evaluated (same layout as train_split)
    train_limit: int = 0  # use only the first N training instances (0: all); for smoke runs
    val_limit: int = 0  # evaluate only the first N val instances (0: all)
    # schedule
    epochs: int = 16  # passes over the training instances
    batch_size: int = 16  # global batch; under torchrun each of the N processes takes batch_size / N
    optimizer: str = "adamw"  # adamw | adam | sgd
    lr: float = 0.005  # peak learning rate (after warmup)
    weight_decay: float = 1e-4  # decoupled for adamw, L2 for adam/sgd
    warmup_steps: int = 50  # linear warmup, then the schedule
    schedule: str = "cosine"  # cosine | step (x0.1 at 2/3 and 8/9 of training) | constant
    # augmentation (training only)
    flip: float = 0.5  # probability of a horizontal flip (pairs swapped, exact mirror)
    scale: float = 0.15  # box scale jitter: factor in 1 +- scale
    rotation: float = 0.0  # rotation jitter in degrees (applied to 60 % of samples; 0: none)
    half_body: float = 0.0  # probability of a half-body crop
    # evaluation
    eval_every: int = 2  # also evaluate (no flip) every N epochs for the learning curve (0: only at the end)
    # machinery
    seed: int = 0  # seeds the model init, data order and augmentation (CPU runs repeat bit for bit)
    device: str = "auto"  # auto | cpu | cuda | cuda:1
    threads: int = 1  # CPU threads (0: torch's default, all cores); part of the run id unless 1
    workers: int = 0  # DataLoader worker processes
    bf16: bool | None = None  # bf16 autocast; default on for CUDA
    channels_last: bool | None = None  # default on for CUDA
    cuda_graph: bool | None = None  # capture the whole step in a CUDA graph; default on for CUDA (one process)
    compile: bool = False  # torch.compile the model (slow to compile for HRNet-W32)
    out: str = "runs"  # run directories go in <out>/<run_id>/
    reports: str = ""  # records go in <reports>/results/runs/ ('': $UFPA_REPORTS_DIR or scratch/)
    progress: bool = True  # tqdm bars


# Fields that change how a run is executed but not what it computes: left out of the run id (threads is added back
# by ``_semantic`` unless it is 1).
EXECUTION_FIELDS = ("device", "threads", "workers", "out", "reports", "progress")

# How far a CPU run's numbers may move on another CPU type or torch build. On the same CPU type and torch build a run
# repeats bit for bit; elsewhere torch and oneDNN dispatch other kernels (AVX-512, AVX2, scalar), which round
# differently, and training amplifies the difference. Per metric: ("rel", r) allows |a - b| <= r * max(|a|, |b|),
# ("abs", d) allows |a - b| <= d, ("epe", f) allows |a - b| <= f * the run's mean end-point error (biases). Set at
# about twice the largest spread measured on notebook 05's smoke run under AVX-512, AVX2 and scalar kernels (loss
# 0.1 %, mean end-point error 3.7 %, median 5.7 %, flip consistency 1.5 %, biases 1 px of a 42 px error);
# tests/test_reproducibility.py keeps it true.
CROSS_CPU_TOLERANCE = {"loss": ("rel", 0.01), "AP": ("abs", 0.02), "AR": ("abs", 0.02), "epe_mean": ("rel", 0.08),
                       "epe_median": ("rel", 0.12), "flip_consistency_px": ("rel", 0.06), "bias_x": ("epe", 0.06),
                       "bias_y": ("epe", 0.06)}


class TrainingError(RuntimeError):
    """A run stopped for a reason the message names (non-finite loss, out of memory)."""


# --- config ---------------------------------------------------------------------------------------------------------

def effective_input_size(cfg: TrainConfig) -> tuple[int, int]:
    """The size a run really uses (``models.run_size``): 'ufpa' runs a request of 32m (the size the other variants
    use, e.g. 128x96) at 32m+1 (129x97)."""
    return run_size(cfg.model, cfg.alignment, cfg.input_size)


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check every field up front (before any data is read or folder written); errors name the field and the fix."""
    def need(ok, msg):
        if not ok:
            raise ValueError(msg)

    need(cfg.model in list_models(), f"model={cfg.model!r} is not a ufpa model; choose one of {list_models()}")
    need(cfg.alignment in ALIGNMENTS, f"alignment={cfg.alignment!r}: choose one of {ALIGNMENTS}")
    need(cfg.head in HRNET_HEADS, f"head={cfg.head!r}: choose one of {HRNET_HEADS} ('ufpa_official': HRNet only)")
    need(cfg.codec in list_codecs(), f"codec={cfg.codec!r}: choose one of {list_codecs()}")
    need((cfg.codec == "udp") == (cfg.head in OFFSET_HEADS),
         f"codec={cfg.codec!r} and head={cfg.head!r} do not fit: the udp codec needs head='udp' (or HRNet's "
         "'ufpa_official') and those heads need codec='udp'")
    need(len(cfg.input_size) == 2 and min(cfg.input_size) >= 32, f"input_size={cfg.input_size}: use (H, W) >= 32")
    for name in ("epochs", "batch_size"):
        need(getattr(cfg, name) >= 1, f"{name}={getattr(cfg, name)}: must be >= 1")
    for name in ("train_limit", "val_limit", "warmup_steps", "eval_every", "threads", "workers", "seed"):
        need(getattr(cfg, name) >= 0, f"{name}={getattr(cfg, name)}: must be >= 0")
    need(math.isfinite(cfg.lr) and cfg.lr > 0, f"lr={cfg.lr}: must be a finite number > 0")
    need(math.isfinite(cfg.weight_decay) and cfg.weight_decay >= 0, f"weight_decay={cfg.weight_decay}: must be >= 0")
    need(math.isfinite(cfg.sigma) and cfg.sigma >= 0, f"sigma={cfg.sigma}: must be >= 0 (0: codec default)")
    need(math.isfinite(cfg.fg_weight) and cfg.fg_weight >= 0, f"fg_weight={cfg.fg_weight}: must be >= 0")
    need(cfg.optimizer in ("adamw", "adam", "sgd"), f"optimizer={cfg.optimizer!r}: choose adamw, adam or sgd")
    need(cfg.schedule in ("cosine", "step", "constant"), f"schedule={cfg.schedule!r}: choose cosine, step, constant")
    for name in ("flip", "half_body"):
        need(0 <= getattr(cfg, name) <= 1, f"{name}={getattr(cfg, name)}: a probability in [0, 1]")
    need(0 <= cfg.scale < 1, f"scale={cfg.scale}: must be in [0, 1)")
    need(0 <= cfg.rotation <= 180, f"rotation={cfg.rotation}: degrees in [0, 180]")
    need(cfg.device == "auto" or cfg.device == "cpu" or cfg.device.startswith("cuda"),
         f"device={cfg.device!r}: use auto, cpu, cuda or cuda:N")
    create_model(cfg.model, alignment=cfg.alignment, head=cfg.head, input_size=effective_input_size(cfg))
    return cfg


def run_id(cfg: TrainConfig) -> str:
    """A readable id: model-alignment-size-codec-seed and a hash of everything else that changes the result."""
    digest = hashlib.sha1(json.dumps(_semantic(cfg), sort_keys=True).encode()).hexdigest()[:8]
    h, w = cfg.input_size
    return f"{cfg.model}-{cfg.alignment}-{h}x{w}-{cfg.codec}-s{cfg.seed}-{digest}"


def _semantic(cfg: TrainConfig | dict) -> dict:
    """The fields that change a run's result, as plain JSON. The dataset counts by its folder's name, so the same
    run has the same id wherever the clone (or the data) lives, and whether the path was given relative or not."""
    values = asdict(cfg) if isinstance(cfg, TrainConfig) else dict(cfg)
    out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items() if k not in EXECUTION_FIELDS}
    out["data"] = Path(out["data"]).name
    # CPU threads change the numbers (reduction order): another count is another run. 0 is torch's default, this
    # machine's cores; 1, the study's setting, is implied, so the ids made before threads counted stay valid.
    threads = values.get("threads", 1) or torch.get_num_threads()
    if threads != 1:
        out["threads"] = threads
    return out


def run_dir(cfg: TrainConfig) -> Path:
    """Where a run keeps its checkpoint, log and ``DONE`` marker: ``<out>/<run_id>``."""
    return Path(cfg.out) / run_id(cfg)


DONE = "done.json"  # written last: the run finished and its record exists


def record_path(cfg: TrainConfig) -> Path:
    # an ad-hoc run ('' reports) writes to scratch/: the study's sweep names reports/ itself (sweep.reports_folder)
    base = Path(cfg.reports) if cfg.reports else records.reports_dir(records.SCRATCH)
    return base / "results" / "runs" / f"{run_id(cfg)}.json"


def resolve_device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={cfg.device!r} but torch sees no CUDA device; use device=cpu")
    return torch.device(cfg.device)


# --- data and model ---------------------------------------------------------------------------------------------------

def split_paths(root: Path, split: str) -> tuple[Path, Path]:
    """(annotation file, image folder) of ``split`` in a dataset folder, in SynthPose's layout
    (``annotations/person_keypoints_<split>.json``, ``images/<split>/``) or COCO 2017's as it is unpacked
    (``annotations/person_keypoints_<split>2017.json``, ``<split>2017/``; ``split='train'`` finds both)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no dataset at {root}: make SynthPose there with `python -m ufpa synth --out {root} "
                                "--difficulty easy` (or run a profile's sweep, which makes its own), or set data= to "
                                "a COCO 2017 folder (annotations/person_keypoints_train2017.json, train2017/, ...)")
    looked = []
    for name in dict.fromkeys((split, f"{split}2017")):  # 'train2017' asked as is: once
        ann = root / "annotations" / f"person_keypoints_{name}.json"
        folders = (root / "images" / name, root / name)
        looked += [ann, *folders]
        found = [f for f in folders if f.is_dir()]
        if ann.is_file() and found:
            return ann, found[0]
    paths = ", ".join(str(p.relative_to(root)) for p in looked)
    raise FileNotFoundError(f"{root} has no split {split!r}: a split needs its annotation file and its image folder, "
                            f"and neither layout is complete (looked for {paths})")



def data_fingerprint(cfg: TrainConfig) -> str:
    """What a run trained and was evaluated on, in 16 hex digits: the bytes of both splits' annotation files and the
    name and size of every file in their image folders (hashing every image would cost minutes on COCO)."""
    digest = hashlib.sha256()
    for split in (cfg.train_split, cfg.val_split):
        ann, images = split_paths(Path(cfg.data), split)
        digest.update(ann.read_bytes())
        for entry in sorted(os.scandir(images), key=lambda e: e.name):
            if entry.is_file():
                digest.update(f"{entry.name}\0{entry.stat().st_size}\n".encode())
    return digest.hexdigest()[:16]


def code_fingerprint() -> str:
    """The ufpa package's source in 16 hex digits: changes with any edit, committed or not (a git commit does not)."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent
    for path in sorted(package.rglob("*.py")):
        digest.update(f"{path.relative_to(package)}\0".encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def check_resume(state: dict, path: Path, data: str, code: str) -> None:
    """A run resumes only on the data and the code it started with; else its epochs would mix two of either."""
    directory = path.parent
    started = state.get("data_fingerprint")
    if started is not None and started != data:
        raise ValueError(f"the data changed under run {directory.name}: it started on data {started}, the folder now "
                         f"holds {data}. Restore the data it started on, or delete {directory} to train again")
    started = state.get("code_fingerprint")
    if started is not None and started != code:
        commit = state.get("git_commit") or "unknown"
        raise ValueError(f"the code changed since run {directory.name} started (ufpa source {started} at commit "
                         f"{commit[:10]}, now {code}): resume it with that code, or delete {directory} to train "
                         "again")


def build(cfg: TrainConfig, device=None, datasets: bool = True):
    """The model, its codec (on the model's own output grid) and, if asked, the train and val datasets."""
    size = effective_input_size(cfg)
    model = create_model(cfg.model, alignment=cfg.alignment, head=cfg.head, input_size=size)
    opts = {"sigma": cfg.sigma} if cfg.sigma > 0 else {}
    codec = create_codec(cfg.codec, size, model.output_size(), grid=model.output_position_map(), **opts)
    if device is not None:
        model = model.to(device)
    if not datasets:
        return model, codec, None, None
    root = Path(cfg.data)
    train_ann, train_images = split_paths(root, cfg.train_split)
    val_ann, val_images = split_paths(root, cfg.val_split)
    augment = Augment(flip=cfg.flip, scale=cfg.scale, rotation=cfg.rotation, rotation_prob=0.6 if cfg.rotation else 0,
                      half_body=cfg.half_body)
    train_ds = CocoKeypoints(train_ann, train_images, size, codec, train=True, augment=augment, seed=cfg.seed)
    val_ds = CocoKeypoints(val_ann, val_images, size, codec, train=False, seed=cfg.seed)
    for ds, limit in ((train_ds, cfg.train_limit), (val_ds, cfg.val_limit)):
        if limit:
            ds.instances = ds.instances[:limit]
    if len(train_ds) < cfg.batch_size:
        raise ValueError(f"{len(train_ds)} training instances are fewer than batch_size={cfg.batch_size}: lower "
                         "batch_size or use more data")
    return model, codec, train_ds, val_ds


# --- loss ------------------------------------------------------------------------------------------------------------

def pose_loss(output: torch.Tensor, batch: dict, k: int, fg_weight: float = 0.0) -> torch.Tensor:
    """Heatmap MSE weighted per keypoint (mmpose's KeypointMSELoss); with offsets (udp) plus their L1 weighted by the
    target heatmap, as the UFPA code trains them. ``fg_weight`` > 0 weights each pixel by 1 + fg_weight * target:
    with few steps, plain MSE is dominated by the background and a small model sits on the all-zero map."""
    target, weight = batch["target"], batch["target_weight"]
    heat = output[:, :k].float()
    sq = (heat - target[:, :k]) ** 2
    if fg_weight:
        sq = sq * (1 + fg_weight * target[:, :k])
    loss = sq.mean((2, 3)).mul(weight).mean()
    if output.shape[1] == 3 * k:
        offset_weight = batch["offset_weight"].repeat(1, 2, 1, 1)
        l1 = (output[:, k:].float() - target[:, k:]).abs() * offset_weight
        loss = loss + l1.sum() / offset_weight.sum().clamp_min(1.0)
    return loss


# --- distributed -------------------------------------------------------------------------------------------------

def _dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) for a plain process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


class AllReduceBatchNorm(torch.nn.BatchNorm2d):
    """Batch norm with statistics over the global batch of all processes, for CPU (gloo) runs.

    torch's SyncBatchNorm runs on GPUs only; this one all-reduces the per-channel sums through the differentiable
    ``torch.distributed.nn.functional.all_reduce``, so forward and backward equal one process on the whole batch.
    """

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        shape = (1, c, 1, 1)
        # two passes, as batch_norm itself: E[x^2] - E[x]^2 loses digits when activations have a large mean
        stats = all_reduce(torch.cat([x.sum((0, 2, 3)), x.new_tensor([x.numel() / c])]))
        count = stats[-1]
        mean = stats[:c] / count
        centred = x - mean.view(shape)
        var = all_reduce((centred * centred).sum((0, 2, 3))) / count
        with torch.no_grad():
            self.num_batches_tracked += 1
            self.running_mean.lerp_(mean.detach(), self.momentum)
            self.running_var.lerp_(var.detach() * count / (count - 1), self.momentum)
        y = centred * torch.rsqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape)


def _convert_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    out = module
    if isinstance(module, torch.nn.BatchNorm2d) and not isinstance(module, AllReduceBatchNorm):
        out = AllReduceBatchNorm(module.num_features, module.eps, module.momentum, module.affine)
        out.load_state_dict(module.state_dict())
    for name, child in module.named_children():
        out.add_module(name, _convert_batchnorm(child))
    return out


# --- the schedule ----------------------------------------------------------------------------------------------------

def learning_rate(cfg: TrainConfig, step: int, total: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(total - cfg.warmup_steps, 1)
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
    if cfg.schedule == "step":
        return cfg.lr * (0.1 ** ((t >= 2 / 3) + (t >= 8 / 9)))
    return cfg.lr


def _optimizer(cfg: TrainConfig, model, capturable: bool):
    lr = torch.tensor(cfg.lr, device=next(model.parameters()).device) if capturable else cfg.lr
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=cfg.weight_decay)
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return cls(model.parameters(), lr=lr, weight_decay=cfg.weight_decay, capturable=capturable)


def _set_lr(optimizer, lr: float):
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)  # a captured graph reads the tensor, so it must change in place
        else:
            group["lr"] = lr


# --- one step --------------------------------------------------------------------------------------------------------

TENSOR_KEYS = ("image", "target", "target_weight", "offset_weight")


class Step:
    """Forward, loss, backward and optimizer step on one batch; ``graph=True`` captures all of it in a CUDA graph
    (static input buffers, capturable optimizer), replayed with one launch per step."""

    def __init__(self, model, optimizer, k: int, device, bf16: bool, channels_last: bool, graph: bool,
                 fg_weight: float = 0.0):
        self.model, self.optimizer, self.k, self.device, self.fg_weight = model, optimizer, k, device, fg_weight
        self.bf16, self.channels_last, self.graph = bf16, channels_last, graph
        self.static, self.cuda_graph, self.loss = None, None, None

    def _run(self, batch):
        self.optimizer.zero_grad(set_to_none=not self.graph)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16, cache_enabled=not self.graph):
            output = self.model(batch["image"])
        loss = pose_loss(output, batch, self.k, self.fg_weight)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def _to_device(self, batch):
        out = {}
        for key in TENSOR_KEYS:
            if key in batch:
                t = batch[key].to(self.device, non_blocking=True)
                if key == "image" and self.channels_last:
                    t = t.contiguous(memory_format=torch.channels_last)
                out[key] = t
        return out

    def _capture(self, batch):
        # Warm up on a side stream (the optimizer's state is created there), then put model and optimizer back as
        # they were, so graphed and eager runs make the same updates from the same start.
        model_state = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.static = {k: v.clone() for k, v in batch.items()}
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                self._run(self.static)
        torch.cuda.current_stream().wait_stream(stream)
        with torch.no_grad():
            for k, v in self.model.state_dict().items():
                v.copy_(model_state[k])
            for state in self.optimizer.state.values():
                for v in state.values():
                    if isinstance(v, torch.Tensor):
                        v.zero_()  # fresh moments and step counts, as before the first step
        self.cuda_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.cuda_graph):
            self.loss = self._run(self.static)

    def __call__(self, batch) -> torch.Tensor:
        batch = self._to_device(batch)
        if not self.graph:
            return self._run(batch)
        if self.cuda_graph is None:
            self._capture(batch)
        for key, value in batch.items():
            self.static[key].copy_(value)
        self.cuda_graph.replay()
        return self.loss


# --- checkpoints -----------------------------------------------------------------------------------------------------

def save_checkpoint(path: Path, state: dict):
    """Atomic: a temporary file in the same folder, then a rename, so a kill never leaves half a checkpoint (and the
    temporary file a kill leaves is removed when the run starts again, ``prepare_output``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # torch.save reports a full disk as "unexpected pos ..."
        raise OSError(f"could not write the checkpoint {path} ({records.write_failure(err)}); the previous "
                      "checkpoint is intact: free disk space (or fix the folder) and run again to resume") from err
    finally:
        tmp.unlink(missing_ok=True)


def prepare_output(cfg: TrainConfig, directory: Path) -> None:
    """Before any work: the run directory and the record folder exist and take a file (else the run would fail after
    training), and the temporary files a killed run left there are gone."""
    for folder, what in ((directory, f"out={cfg.out!r}"), (record_path(cfg).parent, f"reports={cfg.reports!r}")):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            probe = folder / f".write-probe.tmp{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise OSError(f"cannot write to {folder} ({what}): {err.strerror or err}; choose a folder this user can "
                          "write to") from err
    stale = list(directory.glob(".checkpoint.pt.tmp*"))
    stale += list(record_path(cfg).parent.glob(f".{run_id(cfg)}.*"))  # atomic_write_text's temporary files
    for path in stale:
        path.unlink(missing_ok=True)


CHECKPOINT_KEYS = ("config", "model", "optimizer", "rng", "epoch", "history", "elapsed_s")


def load_checkpoint(path: Path, cfg: TrainConfig | None = None) -> dict:
    """A run's checkpoint (tensors and plain data only: ``weights_only``), or an error naming the file and the fix
    when it is truncated, corrupt, not a ufpa checkpoint, or (with ``cfg``) the checkpoint of another config."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for damaged files
        raise ValueError(f"checkpoint {path} cannot be read ({type(err).__name__}: {str(err)[:200]}); it is "
                         f"truncated or corrupt: delete it (the run restarts from scratch) or its run folder "
                         f"{path.parent}") from err
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise ValueError(f"{path} is not a ufpa training checkpoint (it lacks {missing}); delete it or its run "
                         f"folder {path.parent}")
    if cfg is not None and _semantic(state["config"]) != _semantic(cfg):
        raise ValueError(f"{path} belongs to a different config than run {run_id(cfg)}; delete {path.parent} to "
                         "start over")
    return state


# --- the loop -------------------------------------------------------------------------------------------------------

def train(cfg: TrainConfig) -> Path:
    """Train (or resume) the run ``cfg`` describes, evaluate it, write its record; returns the run directory."""
    cfg = validate(cfg)
    rank, world, local_rank = _dist_env()
    distributed = world > 1
    if distributed and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if cfg.device.startswith("cuda") or (
            cfg.device == "auto" and torch.cuda.is_available()) else "gloo")
    device = resolve_device(cfg)
    if distributed and device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if cfg.batch_size % world:
        raise ValueError(f"batch_size={cfg.batch_size} does not split over {world} processes: use a multiple of "
                         f"{world}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    cuda = device.type == "cuda"
    bf16 = cuda if cfg.bf16 is None else cfg.bf16
    channels_last = cuda if cfg.channels_last is None else cfg.channels_last
    graph = (cuda and not distributed and not cfg.compile) if cfg.cuda_graph is None else cfg.cuda_graph
    if graph and not cuda:
        raise ValueError("cuda_graph=True needs a CUDA device; use cuda_graph=False (or None) on CPU")
    if graph and distributed:
        raise ValueError("cuda_graph=True is for one process; under torchrun use cuda_graph=False")

    rid = run_id(cfg)
    directory = run_dir(cfg)
    ckpt_path = directory / "checkpoint.pt"
    if rank == 0:
        prepare_output(cfg, directory)
    if (directory / DONE).is_file() and record_path(cfg).is_file():
        if ckpt_path.is_file():
            load_checkpoint(ckpt_path, cfg)  # a checkpoint of another config is refused, finished or not
        return directory  # finished here: its record stands (delete runs/<run_id> to train it again)
    torch.manual_seed(cfg.seed)
    model, codec, train_ds, val_ds = build(cfg, device)
    k = model.num_keypoints
    if distributed:
        model = _convert_batchnorm(model) if device.type == "cpu" else \
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = _optimizer(cfg, model, capturable=graph)
    net = model
    if cfg.compile:
        net = torch.compile(net)
    if distributed:
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if cuda else None)

    sampler = torch.utils.data.DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True,
                                                  seed=cfg.seed, drop_last=True)
    loader = torch.utils.data.DataLoader(train_ds, batch_size=cfg.batch_size // world, sampler=sampler,
                                         num_workers=cfg.workers, drop_last=True, pin_memory=cuda)
    steps_per_epoch = len(loader)
    if steps_per_epoch == 0:
        raise ValueError(f"no full batch of {cfg.batch_size} in {len(train_ds)} instances: lower batch_size")
    total_steps = steps_per_epoch * cfg.epochs

    start_epoch, history, elapsed = 0, [], 0.0
    fingerprints = {"data_fingerprint": data_fingerprint(cfg), "code_fingerprint": code_fingerprint(),
                    "git_commit": records.provenance()["git_commit"]}
    if ckpt_path.is_file():
        state = load_checkpoint(ckpt_path, cfg)
        check_resume(state, ckpt_path, fingerprints["data_fingerprint"], fingerprints["code_fingerprint"])
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as err:  # same config hash, other weights: a file copied in from elsewhere
            raise ValueError(f"{ckpt_path} holds weights of another model than {cfg.model} ({cfg.alignment}): "
                             f"{str(err)[:200]}; delete {directory} to start over") from err
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        start_epoch, history, elapsed = state["epoch"], state["history"], state["elapsed_s"]
    step_fn = Step(net, optimizer, k, device, bf16, channels_last, graph, cfg.fg_weight)

    if cfg.progress:
        from tqdm.auto import tqdm  # a notebook bar in Jupyter, a terminal bar elsewhere
    else:
        from tqdm import tqdm

    log_path = directory / "log.jsonl"
    for epoch in range(start_epoch, cfg.epochs):
        train_ds.set_epoch(epoch)
        sampler.set_epoch(epoch)
        net.train()
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not cfg.progress or rank != 0,
                   leave=False, mininterval=1.0)
        for i, batch in enumerate(bar):
            step = epoch * steps_per_epoch + i
            _set_lr(optimizer, learning_rate(cfg, step, total_steps))
            try:
                loss = step_fn(batch)
            except torch.cuda.OutOfMemoryError as err:
                raise TrainingError(f"CUDA ran out of memory at batch_size={cfg.batch_size}: try "
                                    f"batch_size={max(cfg.batch_size // 2, 1)}") from err
            loss_sum += loss
            if not cuda or i % 50 == 49 or i == steps_per_epoch - 1:  # on CUDA, sync only now and then
                if not torch.isfinite(loss_sum):
                    last = f"{ckpt_path} (end of epoch {start_epoch if not history else history[-1]['epoch']})" \
                        if ckpt_path.is_file() else "none (no epoch finished)"
                    raise TrainingError(f"loss became {loss_sum.item()} by step {step} (epoch {epoch + 1}); last "
                                        f"good checkpoint: {last}; lower lr={cfg.lr} or check the data")
                if cfg.progress and rank == 0:
                    bar.set_postfix(loss=f"{loss_sum.item() / (i + 1):.3g}",
                                    img_s=f"{(i + 1) * cfg.batch_size / (time.perf_counter() - t0):.0f}")
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        elapsed += seconds
        loss_mean = loss_sum.item() / steps_per_epoch
        if distributed:
            t = torch.tensor([loss_mean], device=device)
            torch.distributed.all_reduce(t)
            loss_mean = t.item() / world
        entry = {"epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch, "loss": loss_mean,
                 "lr": learning_rate(cfg, (epoch + 1) * steps_per_epoch - 1, total_steps),
                 "images_per_s": steps_per_epoch * cfg.batch_size / seconds, "seconds": seconds}
        if cfg.eval_every and (epoch + 1) % cfg.eval_every == 0 and epoch + 1 < cfg.epochs and rank == 0:
            quick = evaluate(model, codec, val_ds, cfg, device, flip_test=False, consistency=False)
            entry.update(val_AP=quick["AP"], val_epe_mean=quick["epe_mean"])
        history.append(entry)
        if rank == 0:
            save_checkpoint(ckpt_path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                        "rng": torch.get_rng_state(), "epoch": epoch + 1, "history": history,
                                        "elapsed_s": elapsed, "config": _semantic(cfg), **fingerprints})
            _append_jsonl(log_path, entry)
        if distributed:
            torch.distributed.barrier()

    if rank == 0:
        _finish(cfg, model, codec, train_ds, val_ds, device, history, elapsed, rid, directory, fingerprints)
    if distributed:
        torch.distributed.barrier()
    return directory


def _append_jsonl(path: Path, entry: dict):
    # a resumed run appends the epochs it redoes; the record's learning curve comes from the checkpoint's history
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(records._clean(entry)) + "\n")


def _finish(cfg, model, codec, train_ds, val_ds, device, history, elapsed, rid, directory, fingerprints):
    results = {"run_id": rid, "data_fingerprint": fingerprints["data_fingerprint"],
               "code_fingerprint": fingerprints["code_fingerprint"]}
    for flip in (False, True):
        metrics = evaluate(model, codec, val_ds, cfg, device, flip_test=flip)
        coco = metrics.pop("coco_results")
        results["flip" if flip else "no_flip"] = metrics
        if flip:  # the record names the results file's hash: a record and a results file of two runs never pair
            text = json.dumps(coco)
            results["keypoints_sha256"] = hashlib.sha256(text.encode()).hexdigest()
            records.atomic_write_text(record_path(cfg).with_suffix(".keypoints.json"), text)
    cost = model_cost(cfg.model, cfg.alignment, cfg.head, cfg.input_size)
    results["misalignment"] = misalignment_summary(cfg)
    images = sum(h["images_per_s"] * h["seconds"] for h in history)
    results.update(learning_curve=history, params=cost["params"], gflops=cost["gflops"],
                   input_size=list(effective_input_size(cfg)), heatmap_size=list(codec.heatmap_size),
                   wall_s=elapsed, images_per_s=images / max(elapsed, 1e-9), train_instances=len(train_ds),
                   val_instances=len(val_ds))
    records.write_record(record_path(cfg), "train_run", record_config(cfg), results, cfg.seed)
    records.atomic_write_text(directory / DONE, json.dumps({"record": records.repo_relative(record_path(cfg))}))


PATH_FIELDS = ("data", "out", "reports")


def record_config(cfg: TrainConfig) -> dict:
    """The config as a record holds it: paths relative to the repository root where they lie inside it, so records
    name no machine's folders (``load_run`` takes them from the root again)."""
    out = asdict(cfg)
    for name in PATH_FIELDS:
        if out[name]:
            out[name] = records.repo_relative(out[name])
    return out


def misalignment_summary(cfg: TrainConfig) -> dict:
    """The audit of this run's network at its input size, in one line: how far fused features sit from each other
    (input px), so every record says how misaligned the model it measured was. A fresh copy is traced: the trained
    one may carry DDP's batch norm or channels_last."""
    from .audit import audit

    size = effective_input_size(cfg)
    table = audit(create_model(cfg.model, alignment=cfg.alignment, head=cfg.head, input_size=size), size)
    return {"fusions": int(table["node"].nunique()), "max_abs_px": float(table["max_abs_px"].max()),
            "mean_abs_px": float(table["mean_abs_px"].mean()),
            "border_max_abs_px": float(table["border_max_abs_px"].max())}


# --- evaluation ------------------------------------------------------------------------------------------------------

@torch.no_grad()
def predict(model, codec, dataset, device, flip_test: bool, batch_size: int = 64, channels_last: bool = False,
            mirrored: bool = True):
    """For every instance of ``dataset``, in original-image pixels: ``keypoints`` (N, K, 2) and ``scores`` (N, K)
    (with flip test: from the average of the output and the flipped-back output of the mirrored crop), ``direct``
    (the crop alone) and ``mirrored`` (the mirrored crop alone, flipped back; if asked), for flip consistency."""
    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    fused_kps, direct, mirror, scores, matrices = [], [], [], [], []
    with_mirror = mirrored or flip_test
    for batch in loader:
        x = batch["image"].to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out = model(x).float().cpu().numpy()
        back = codec.flip_back(model(x.flip(-1)).float().cpu().numpy(), COCO_FLIP_PAIRS) if with_mirror else None
        fused = (out + back) / 2 if flip_test else out
        kps, sc = codec.decode(fused)
        if not np.isfinite(kps).all():
            raise TrainingError("the model's output decodes to non-finite keypoints (a diverged model); no results "
                                "are written")
        fused_kps.append(kps)
        scores.append(sc)
        direct.append(codec.decode(out)[0] if flip_test else kps)
        if mirrored:
            mirror.append(codec.decode(back)[0])
        matrices.append(batch["matrix"].double().numpy())
    to_image = [invert_transform(m) for m in np.concatenate(matrices)]

    def image_space(points):
        return np.stack([apply_transform(m, p) for m, p in zip(to_image, np.concatenate(points))])
    out = {"keypoints": image_space(fused_kps), "scores": np.concatenate(scores), "direct": image_space(direct)}
    if mirrored:
        out["mirrored"] = image_space(mirror)
    return out


def evaluate(model, codec, dataset, cfg: TrainConfig, device, flip_test: bool, consistency: bool = True) -> dict:
    """COCO AP (pycocotools, ground-truth boxes) and exact-ground-truth metrics in original-image pixels; flip
    consistency too unless ``consistency=False`` (the quick evaluations of the learning curve)."""
    from .evaluate import coco_keypoint_ap, exact_metrics, flip_consistency, to_coco_results

    channels_last = device.type == "cuda" if cfg.channels_last is None else cfg.channels_last
    pred = predict(model, codec, dataset, device, flip_test, channels_last=channels_last, mirrored=consistency)
    keypoints = pred["keypoints"]
    insts = dataset.instances
    gt = np.stack([i.keypoints for i in insts])
    visible = np.stack([i.visible for i in insts])
    boxes = np.array([max(i.box[2], i.box[3]) for i in insts])
    coco = to_coco_results([i.image_id for i in insts], keypoints, pred["scores"])
    ann = split_paths(Path(cfg.data), cfg.val_split)[0]
    doc = json.loads(ann.read_text())
    ids = {i.image_id for i in insts}
    doc["images"] = [im for im in doc["images"] if im["id"] in ids]  # a val_limit subset is scored on its images
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] in ids]
    metrics = coco_keypoint_ap(doc, coco)
    metrics.update(exact_metrics(keypoints, gt, visible, boxes))
    if consistency:
        metrics["flip_consistency_px"] = flip_consistency(pred["direct"], pred["mirrored"], visible)
    metrics["flip_test"] = flip_test
    metrics["coco_results"] = coco
    return metrics


def load_run(record: str | os.PathLike):
    """(config, record) of a finished run from its record path."""
    rec = records.read_record(record, "train_run")
    cfg = TrainConfig(**{f.name: rec["config"][f.name] for f in dataclasses.fields(TrainConfig)
                         if f.name in rec["config"]})
    cfg.input_size = tuple(cfg.input_size)
    for name in PATH_FIELDS:
        if getattr(cfg, name):
            setattr(cfg, name, str(records.from_repo(getattr(cfg, name))))
    return cfg, rec


# --- notebooks -------------------------------------------------------------------------------------------------------

NOTEBOOK_EXTRA_PARAMETERS = ("synth", "compare_with", "show")  # notebook 05's parameters beyond TrainConfig
# Notebook 05's own defaults where they differ from the CLI's (TrainConfig's): a smoke run, seconds on a CPU.
NOTEBOOK_SMOKE = {"data": "data/synthpose-notebook", "epochs": 2, "warmup_steps": 10, "eval_every": 1,
                  "progress": False}
_NOTEBOOK_EXTRAS = """\
# SynthPose to generate at `data` if it is missing (a SynthPose folder of other settings is refused; other
# datasets are left alone)
synth = {"difficulty": "easy", "train": 160, "val": 32, "seed": 0}
# other runs of the same config to compare predictions with (alignment names; shown when they have been trained)
compare_with = ["baseline", "ufpa", "ufpa_any"]
show = 3  # val crops to draw"""


def _literal(value) -> str:
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    return repr(value)


def parameters_cell() -> str:
    """Notebook 05's parameters cell, generated from ``TrainConfig`` (its defaults and field comments) and
    ``NOTEBOOK_SMOKE``: the notebook and the CLI cannot disagree on a default (a test compares the two)."""
    from . import config

    comments = config.field_comments(TrainConfig)
    lines = ["# papermill parameters (literals only): every ufpa.train.TrainConfig field (train.parameters_cell writes",
             "# this cell from it), then what this notebook shows. Relative paths are taken from the repository root.",
             "# Every default is the CLI's (`python -m ufpa train --help`) but those marked smoke: a run of seconds."]
    for f in dataclasses.fields(TrainConfig):
        value = NOTEBOOK_SMOKE.get(f.name, f.default)
        note = comments.get(f.name, "")
        if f.name in NOTEBOOK_SMOKE:
            note = f"smoke (CLI default {_literal(f.default)}); {note}"
        lines.append(f"{f.name} = {_literal(value)}  # {note}")
    return "\n".join(lines) + "\n" + _NOTEBOOK_EXTRAS


def write_parameters_cell(path) -> bool:
    """Rewrite notebook 05's parameters cell from ``parameters_cell()``; returns whether it changed."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", []))
    new = parameters_cell()
    if cell.source == new:
        return False
    cell.source = new
    records.atomic_write_text(path, nbformat.writes(nb))
    return True


def resolve_paths(cfg: TrainConfig) -> TrainConfig:
    """Relative ``data``, ``out`` and ``reports`` taken from the repository root, as notebook 05 and the sweep take
    them; under ``UFPA_REPORTS_DIR`` (the tests' clean tree) a relative ``out`` goes there too."""
    scratch = os.environ.get("UFPA_REPORTS_DIR")
    changes = {}
    for name in PATH_FIELDS:
        value = getattr(cfg, name)
        if value and not Path(value).is_absolute():
            base = Path(scratch) if scratch and name == "out" else records.REPO_ROOT
            changes[name] = str(base / value)
    return dataclasses.replace(cfg, **changes)


def notebook_config(namespace: dict, synth: dict | None = None) -> TrainConfig:
    """The TrainConfig of notebook 05's parameters (every field is a parameter there), checked and with relative
    paths taken from the repository root; generates the SynthPose dataset ``synth`` describes if ``data`` is missing.
    """
    from . import config

    config.check_known_parameters(namespace, [f.name for f in dataclasses.fields(TrainConfig)]
                                  + list(NOTEBOOK_EXTRA_PARAMETERS))
    cfg = config.replace(TrainConfig(), {f.name: namespace[f.name] for f in dataclasses.fields(TrainConfig)
                                         if f.name in namespace})
    cfg = resolve_paths(cfg)
    validate(cfg)
    if synth:
        from .data import synthetic

        synthetic.ensure(cfg.data, **synth)
    return cfg


def load_model(cfg: TrainConfig, device="cpu"):
    """The trained model of a run (from its last checkpoint) and its codec."""
    path = run_dir(cfg) / "checkpoint.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint for run {run_id(cfg)} at {path}; train it first")
    model, codec, _, _ = build(cfg, datasets=False)
    model.load_state_dict(load_checkpoint(path, cfg)["model"])
    return model.to(device).eval(), codec


def sample_predictions(cfg: TrainConfig, count: int = 4) -> dict:
    """The first ``count`` val crops (RGB uint8), their ground truth and this run's predictions (crop pixels), and
    its output heatmaps (N, K, h, w)."""
    from .data.coco import MEAN, STD

    model, codec = load_model(cfg)
    _, _, _, val_ds = build(cfg)
    items = [val_ds[i] for i in range(min(count, len(val_ds)))]
    x = torch.from_numpy(np.stack([it["image"] for it in items]))
    with torch.no_grad():
        out = model(x).float().numpy()
    kps, scores = codec.decode(out)
    crops = np.clip(np.stack([it["image"].transpose(1, 2, 0) for it in items]) * STD + MEAN, 0, 255).astype(np.uint8)
    return {"crops": crops, "ground_truth": np.stack([it["keypoints"] for it in items]),
            "visible": np.stack([it["visible"] for it in items]), "predicted": kps, "scores": scores,
            "heatmaps": out[:, :model.num_keypoints]}


def sibling(cfg: TrainConfig, **changes) -> TrainConfig:
    """The same run with some fields changed (e.g. ``alignment='baseline'``), to compare against."""
    return dataclasses.replace(cfg, **changes)


def trained_siblings(cfg: TrainConfig, alignments, count: int) -> dict:
    """Predictions of the same config under other alignment variants that have a checkpoint (label -> samples)."""
    out = {}
    for alignment in alignments:
        other = sibling(cfg, alignment=alignment)
        if alignment == cfg.alignment or effective_input_size(other) != effective_input_size(cfg):
            continue  # another input size means other crops: not comparable picture by picture
        if (run_dir(other) / "checkpoint.pt").is_file():
            out[alignment] = sample_predictions(other, count)
    return out


METRIC_COLUMNS = {"AP": "AP", "AP50": "AP50", "AP75": "AP75", "AR": "AR", "epe_mean": "EPE px",
                  "epe_median": "EPE median px", "pck@0.1": "PCK@0.1", "flip_consistency_px": "flip consistency px"}


def metrics_table(record: dict):
    """One row per evaluation (flip test off / on) of a run record: AP, end-point error, |bias|, PCK."""
    import pandas as pd

    rows = []
    for name in ("no_flip", "flip"):
        m = record["results"][name]
        row = {"flip test": name == "flip"}
        row.update({label: m[key] for key, label in METRIC_COLUMNS.items()})
        row["|bias| px"] = math.hypot(m["bias_x"], m["bias_y"])
        rows.append(row)
    return pd.DataFrame(rows).set_index("flip test").round(3)


def run_summary(record: dict) -> str:
    r = record["results"]
    curve = r["learning_curve"]
    flip, plain = r["flip"], r["no_flip"]
    size = "x".join(map(str, r["input_size"]))
    return (f"{record['config']['model']} ({record['config']['alignment']}) at {size}: training loss "
            f"{curve[0]['loss']:.4g} -> {curve[-1]['loss']:.4g} over {len(curve)} epochs; val AP "
            f"{plain['AP']:.3f} without and {flip['AP']:.3f} with flip test; end-point error {flip['epe_mean']:.2f} px "
            f"(median {flip['epe_median']:.2f}), bias ({flip['bias_x']:+.2f}, {flip['bias_y']:+.2f}) px, flip "
            f"consistency {flip['flip_consistency_px']:.2f} px.")


def run_checks(record: dict, cfg: TrainConfig) -> str:
    """What a run's notebook can assert on any machine: the record is this config's, every metric is finite and the
    training loss fell. The numbers themselves move with the CPU's kernels (see ``CROSS_CPU_TOLERANCE``), so the
    notebook shows them but nbval does not compare them digit for digit."""
    if record["results"]["run_id"] != run_id(cfg):
        raise ValueError(f"record {record['results']['run_id']} is not of this config ({run_id(cfg)})")
    for name in ("flip", "no_flip"):
        bad = [k for k, v in record["results"][name].items() if isinstance(v, float) and not math.isfinite(v)]
        if bad:
            raise ValueError(f"{name} metrics {bad} are not finite")
    curve = record["results"]["learning_curve"]
    checked = f"checked: the record is this run's ({run_id(cfg)}) and its metrics are finite"
    if len(curve) < 2:  # one epoch has no curve to read
        return checked + "; one epoch: no learning curve to check"
    if not curve[-1]["loss"] < curve[0]["loss"]:
        raise ValueError(f"the training loss did not fall ({curve[0]['loss']:.4g} -> {curve[-1]['loss']:.4g}): check "
                         "the learning rate and the data before reading the metrics")
    return checked + f", and the training loss fell over {len(curve)} epochs"


def cross_cpu_differences(a: dict, b: dict) -> list[str]:
    """The numbers of two records of one config that differ by more than ``CROSS_CPU_TOLERANCE`` (empty: within)."""
    ra, rb = a["results"], b["results"]
    if ra["run_id"] != rb["run_id"]:
        raise ValueError(f"records of two configs ({ra['run_id']}, {rb['run_id']}) are not runs to compare")
    pairs = [(f"loss epoch {x['epoch']}", "loss", x["loss"], y["loss"], None)
             for x, y in zip(ra["learning_curve"], rb["learning_curve"])]
    for name in ("no_flip", "flip"):
        epe = max(ra[name]["epe_mean"], rb[name]["epe_mean"])
        pairs += [(f"{name} {key}", key, ra[name][key], rb[name][key], epe)
                  for key in CROSS_CPU_TOLERANCE if key != "loss"]
    out = []
    for label, key, x, y, epe in pairs:
        kind, amount = CROSS_CPU_TOLERANCE[key]
        allowed = {"rel": amount * max(abs(x), abs(y)), "abs": amount, "epe": amount * (epe or 0.0)}[kind]
        if not abs(x - y) <= allowed:
            out.append(f"{label}: {x:.6g} vs {y:.6g} (allowed +-{allowed:.3g})")
    return out
