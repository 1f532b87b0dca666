"""Training of pose models: ``train(TrainConfig(...)) -> run directory``.

Read top to bottom: the config, the data and model it builds, the loss, one step (eager or captured in a CUDA graph,
``ufpa.runtime``), checkpoints, and the loop as timm's reads (``setup``, ``train_one_epoch``, ``evaluate_run``, a
checkpoint per epoch, the record at the end). Metrics are ``ufpa.evaluate``'s; reading a finished run back (notebook
05) is ``ufpa.runs``'s. Everything a run depends on is a function of the config and the seed:
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

import torch

from . import learned, records
from .audit import audit, shift_fields
from .codecs import create_codec, list_codecs
from .data.coco import Augment, CocoKeypoints, split_paths
from .evaluate import evaluate_model
from .models import ALL_ALIGNMENTS, HRNET_HEADS, OFFSET_HEADS, create_model, list_models, model_cost, run_size
from .models._layers import PADDINGS
from .runtime import Runtime, TrainingError, capture, runtime


@dataclass
class TrainConfig:
    """One run. The defaults are the `cpu` profile's recipe (one run of the CPU study's baseline at 96x64); notebook
    05 takes the same, with a smoke-sized data folder and schedule (its parameters cell says which)."""

    # model
    model: str = "hrnet_w8_tiny"  # a ufpa.models preset (ufpa.models.list_models() names them)
    alignment: str = "baseline"  # baseline | bilinear | bilinear_corners | ufpa | ufpa_any | learned
    head: str = "udp"  # heatmap | udp | sr | duc | ufpa_official, wide_heatmap (HRNet); udp, ufpa_official: codec udp
    padding: str = ""  # 3x3 conv padding: '' the alignment's own (ufpa: replicate, else zeros) | zeros | replicate
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
    fused: bool = False  # fused Adam/AdamW kernel (one pass over all weights; CPU steps ~6 % faster; rounds otherwise)
    cache_mb: int = 1024  # decoded training images kept in memory per process, up to this many MiB (0: none)
    out: str = "runs"  # run directories go in <out>/<run_id>/
    reports: str = ""  # records go in <reports>/results/runs/ ('': $UFPA_REPORTS_DIR or scratch/)
    progress: bool = True  # tqdm bars


# Fields that change how a run is executed but not what it computes: left out of the run id (threads is added back
# by ``_semantic`` unless it is 1).
EXECUTION_FIELDS = ("device", "threads", "workers", "out", "reports", "progress", "cache_mb")
# Fields added after runs were recorded, at the value that reproduces those runs: left out of the id at that value, so
# the ids (and the pooling of records) made before the field existed stay valid.
IMPLIED = {"fused": False, "padding": ""}

# --- config ---------------------------------------------------------------------------------------------------------

def effective_input_size(cfg: TrainConfig) -> tuple[int, int]:
    """The size a run really uses (``models.run_size``): 'ufpa' runs a request of 32m (the size the other variants
    use, e.g. 128x96) at 32m+1 (129x97)."""
    return run_size(cfg.model, cfg.alignment, cfg.input_size)


def arm_name(alignment: str, padding: str, run_size, codec: str) -> str:
    """A condition's name in a study design: its alignment (with the padding a control sets), the size it runs at
    and its codec, e.g. 'ufpa 97x65 udp', 'ufpa-zerospad 97x65 udp'. Seeds of one condition share it."""
    h, w = run_size
    return f"{alignment}-{padding}pad {h}x{w} {codec}" if padding else f"{alignment} {h}x{w} {codec}"


def arm(cfg: TrainConfig) -> str:
    """``arm_name`` of a config (its size as it runs: ``effective_input_size``)."""
    return arm_name(cfg.alignment, cfg.padding, effective_input_size(cfg), cfg.codec)


def validate(cfg: TrainConfig) -> TrainConfig:
    """Check every field up front (before any data is read or folder written); errors name the field and the fix."""
    def need(ok, msg):
        if not ok:
            raise ValueError(msg)

    need(cfg.model in list_models(), f"model={cfg.model!r} is not a ufpa model; choose one of {list_models()}")
    need(cfg.alignment in ALL_ALIGNMENTS, f"alignment={cfg.alignment!r}: choose one of {ALL_ALIGNMENTS}")
    need(cfg.head in HRNET_HEADS,
         f"head={cfg.head!r}: choose one of {HRNET_HEADS} (ufpa_official, wide_heatmap: HRNet only)")
    need(cfg.codec in list_codecs(), f"codec={cfg.codec!r}: choose one of {list_codecs()}")
    need((cfg.codec == "udp") == (cfg.head in OFFSET_HEADS),
         f"codec={cfg.codec!r} and head={cfg.head!r} do not fit: the udp codec needs head='udp' (or HRNet's "
         "'ufpa_official') and those heads need codec='udp'; heatmap codecs take 'heatmap' (or HRNet's 'wide_heatmap')")
    need(len(cfg.input_size) == 2 and min(cfg.input_size) >= 32, f"input_size={cfg.input_size}: use (H, W) >= 32")
    for name in ("epochs", "batch_size"):
        need(getattr(cfg, name) >= 1, f"{name}={getattr(cfg, name)}: must be >= 1")
    for name in ("train_limit", "val_limit", "warmup_steps", "eval_every", "threads", "workers", "seed"):
        need(getattr(cfg, name) >= 0, f"{name}={getattr(cfg, name)}: must be >= 0")
    need(math.isfinite(cfg.lr) and cfg.lr > 0, f"lr={cfg.lr}: must be a finite number > 0")
    need(math.isfinite(cfg.weight_decay) and cfg.weight_decay >= 0, f"weight_decay={cfg.weight_decay}: must be >= 0")
    need(math.isfinite(cfg.sigma) and cfg.sigma >= 0, f"sigma={cfg.sigma}: must be >= 0 (0: codec default)")
    need(math.isfinite(cfg.fg_weight) and cfg.fg_weight >= 0, f"fg_weight={cfg.fg_weight}: must be >= 0")
    need(cfg.optimizer in OPTIMIZERS, f"optimizer={cfg.optimizer!r}: choose one of {OPTIMIZERS}")
    need(not cfg.fused or cfg.optimizer in ("adam", "adamw"), f"fused=True is a kernel of adam and adamw, not of "
         f"optimizer={cfg.optimizer!r}: use fused=False")
    need(cfg.cache_mb >= 0, f"cache_mb={cfg.cache_mb}: must be >= 0 (0: no cache)")
    need(cfg.schedule in SCHEDULES, f"schedule={cfg.schedule!r}: choose one of {SCHEDULES}")
    for name in ("flip", "half_body"):
        need(0 <= getattr(cfg, name) <= 1, f"{name}={getattr(cfg, name)}: a probability in [0, 1]")
    need(0 <= cfg.scale < 1, f"scale={cfg.scale}: must be in [0, 1)")
    need(0 <= cfg.rotation <= 180, f"rotation={cfg.rotation}: degrees in [0, 180]")
    need(cfg.device == "auto" or cfg.device == "cpu" or cfg.device.startswith("cuda"),
         f"device={cfg.device!r}: use auto, cpu, cuda or cuda:N")
    need(cfg.padding in ("", *PADDINGS), f"padding={cfg.padding!r}: choose '' (the alignment's own) or one of "
         f"{PADDINGS} (e.g. alignment=ufpa padding=zeros: ufpa without its replicate padding, a control)")
    create_model(cfg.model, alignment=cfg.alignment, head=cfg.head, input_size=effective_input_size(cfg),
                 padding=cfg.padding or None)
    return cfg


def run_id(cfg: TrainConfig) -> str:
    """A readable id: model-alignment-size-codec-seed and a hash of everything else that changes the result."""
    digest = hashlib.sha1(json.dumps(_semantic(cfg), sort_keys=True).encode()).hexdigest()[:8]
    h, w = cfg.input_size
    alignment = f"{cfg.alignment}-{cfg.padding}pad" if cfg.padding else cfg.alignment  # a control says so
    return f"{cfg.model}-{alignment}-{h}x{w}-{cfg.codec}-s{cfg.seed}-{digest}"


def condition(cfg: TrainConfig | dict) -> dict:
    """What the seeds of one condition share: everything that changes a run's result but the seed (a record's
    config dict is taken as it is)."""
    return {k: v for k, v in _semantic(cfg).items() if k != "seed"}


def condition_id(cfg: TrainConfig | dict) -> str:
    """The run id's hash without the seed: runs that share it are seeds of one identical config (what may pool)."""
    return hashlib.sha1(json.dumps(condition(cfg), sort_keys=True).encode()).hexdigest()[:8]


def _semantic(cfg: TrainConfig | dict) -> dict:
    """The fields that change a run's result, as plain JSON. The dataset counts by its folder's name, so the same
    run has the same id wherever the clone (or the data) lives, and whether the path was given relative or not."""
    values = asdict(cfg) if isinstance(cfg, TrainConfig) else dict(cfg)
    out = {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items() if k not in EXECUTION_FIELDS}
    out["data"] = Path(out["data"]).name
    for name, value in IMPLIED.items():
        if out.get(name, value) == value:
            out.pop(name, None)
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


def finished(cfg: TrainConfig) -> bool:
    """The run finished on this machine: its run directory's ``DONE`` marker and its record exist (a relative ``out``
    taken from the repository root, as notebook 05 takes it)."""
    return record_path(cfg).is_file() and (run_dir(resolve_paths(cfg)) / DONE).is_file()


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
    """The code a run's numbers depend on in 16 hex digits (``records.code_fingerprint``: the modules training
    imports and notebook 05's code cells): changes with any edit there, committed or not (a git commit does not)."""
    return records.code_fingerprint()


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
    model = create_model(cfg.model, alignment=cfg.alignment, head=cfg.head, input_size=size,
                         padding=cfg.padding or None)
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
    train_ds = CocoKeypoints(train_ann, train_images, size, codec, train=True, augment=augment, seed=cfg.seed,
                             cache_mb=cfg.cache_mb)
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

OPTIMIZERS = ("adamw", "adam", "sgd")  # what _optimizer builds
SCHEDULES = ("cosine", "step", "constant")  # what learning_rate follows


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
    return cls(model.parameters(), lr=lr, weight_decay=cfg.weight_decay, capturable=capturable,
               fused=True if cfg.fused else None)


def _set_lr(optimizer, lr: float):
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)  # a captured graph reads the tensor, so it must change in place
        else:
            group["lr"] = lr


# --- one step --------------------------------------------------------------------------------------------------------

TENSOR_KEYS = ("image", "target", "target_weight", "offset_weight")


class Step:
    """Forward, loss, backward and optimizer step on one batch; under a runtime with ``cuda_graph`` all of it is
    captured in one CUDA graph (static input buffers, capturable optimizer), replayed with one launch per step."""

    def __init__(self, model, optimizer, k: int, rt: Runtime, fg_weight: float = 0.0):
        self.model, self.optimizer, self.k, self.rt, self.fg_weight = model, optimizer, k, rt, fg_weight
        self.static, self.cuda_graph, self.loss = None, None, None

    def _run(self, batch):
        self.optimizer.zero_grad(set_to_none=not self.rt.cuda_graph)
        with self.rt.autocast(capturing=self.rt.cuda_graph):
            output = self.model(batch["image"])
        loss = pose_loss(output, batch, self.k, self.fg_weight)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def _to_device(self, batch):
        out = {}
        for key in TENSOR_KEYS:
            if key in batch:
                t = batch[key].to(self.rt.device, non_blocking=True)
                if key == "image" and self.rt.channels_last:
                    t = t.contiguous(memory_format=torch.channels_last)
                out[key] = t
        return out

    def __call__(self, batch) -> torch.Tensor:
        batch = self._to_device(batch)
        if not self.rt.cuda_graph:
            return self._run(batch)
        if self.cuda_graph is None:
            self.static = {k: v.clone() for k, v in batch.items()}
            self.cuda_graph, self.loss = capture(lambda: self._run(self.static), self.model, self.optimizer)
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


# --- the loop: setup, train_one_epoch, evaluate_run, checkpoint --------------------------------------------------

@dataclass(frozen=True)
class Setup:
    """Where a run executes: its process in a torchrun group (rank 0 of 1 alone) and its runtime on its device."""
    rank: int
    world: int
    rt: Runtime

    @property
    def distributed(self) -> bool:
        return self.world > 1


def setup(cfg: TrainConfig) -> Setup:
    """The process group under torchrun (nccl on CUDA, gloo on CPU), the device, CPU threads and the runtime."""
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
    return Setup(rank, world, runtime(cfg, device, distributed))


def prepare_model(cfg: TrainConfig, model, s: Setup):
    """(the model whose weights are saved, the module a step calls, its optimizer): batch norm over all processes,
    channels_last, a capturable optimizer for a CUDA graph, torch.compile and DDP as the config and setup ask."""
    if s.distributed:
        model = _convert_batchnorm(model) if s.rt.device.type == "cpu" else \
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if s.rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = _optimizer(cfg, model, capturable=s.rt.cuda_graph)
    net = torch.compile(model) if cfg.compile else model
    if s.distributed:
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[s.rt.device.index]
                                                        if s.rt.device.type == "cuda" else None)
    return model, net, optimizer


def train_loader(cfg: TrainConfig, dataset, s: Setup):
    """The training loader and its sampler (this process's share of each epoch, in the order (seed, epoch) gives)."""
    sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=s.world, rank=s.rank, shuffle=True,
                                                  seed=cfg.seed, drop_last=True)
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size // s.world, sampler=sampler,
                                         num_workers=cfg.workers, drop_last=True,
                                         pin_memory=s.rt.device.type == "cuda")
    if len(loader) == 0:
        raise ValueError(f"no full batch of {cfg.batch_size} in {len(dataset)} instances: lower batch_size")
    return loader, sampler


def resume(path: Path, cfg: TrainConfig, model, optimizer, fingerprints: dict) -> tuple[int, list, float]:
    """(first epoch to train, learning curve so far, seconds so far): from the checkpoint at ``path`` if there is one
    (weights, optimizer and RNG restored; refused if data or code changed), else from the start."""
    if not path.is_file():
        return 0, [], 0.0
    state = load_checkpoint(path, cfg)
    check_resume(state, path, fingerprints["data_fingerprint"], fingerprints["code_fingerprint"])
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:  # same config hash, other weights: a file copied in from elsewhere
        raise ValueError(f"{path} holds weights of another model than {cfg.model} ({cfg.alignment}): "
                         f"{str(err)[:200]}; delete {path.parent} to start over") from err
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    return state["epoch"], state["history"], state["elapsed_s"]


def train_one_epoch(cfg: TrainConfig, s: Setup, step_fn: Step, loader, sampler, epoch: int, checkpoint: Path) -> dict:
    """One pass over this process's share of the training set; returns the epoch's learning-curve entry (mean loss
    over all processes, learning rate, img/s, seconds). A non-finite loss stops the run, naming the last good
    ``checkpoint``."""
    if cfg.progress:
        from tqdm.auto import tqdm  # a notebook bar in Jupyter, a terminal bar elsewhere
    else:
        from tqdm import tqdm
    cuda = s.rt.device.type == "cuda"
    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * cfg.epochs
    loader.dataset.set_epoch(epoch)
    sampler.set_epoch(epoch)
    step_fn.model.train()
    t0 = time.perf_counter()
    loss_sum = torch.zeros((), device=s.rt.device)
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not cfg.progress or s.rank != 0,
               leave=False, mininterval=1.0)
    for i, batch in enumerate(bar):
        step = epoch * steps_per_epoch + i
        _set_lr(step_fn.optimizer, learning_rate(cfg, step, total_steps))
        try:
            loss = step_fn(batch)
        except torch.cuda.OutOfMemoryError as err:
            raise TrainingError(f"CUDA ran out of memory at batch_size={cfg.batch_size}: try "
                                f"batch_size={max(cfg.batch_size // 2, 1)}") from err
        loss_sum += loss
        if not cuda or i % 50 == 49 or i == steps_per_epoch - 1:  # on CUDA, sync only now and then
            if not torch.isfinite(loss_sum):
                last = f"{checkpoint} (end of epoch {epoch})" if checkpoint.is_file() else "none (no epoch finished)"
                raise TrainingError(f"loss became {loss_sum.item()} by step {step} (epoch {epoch + 1}); last "
                                    f"good checkpoint: {last}; lower lr={cfg.lr} or check the data")
            if cfg.progress and s.rank == 0:
                bar.set_postfix(loss=f"{loss_sum.item() / (i + 1):.3g}",
                                img_s=f"{(i + 1) * cfg.batch_size / (time.perf_counter() - t0):.0f}")
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    loss_mean = loss_sum.item() / steps_per_epoch
    if s.distributed:
        t = torch.tensor([loss_mean], device=s.rt.device)
        torch.distributed.all_reduce(t)
        loss_mean = t.item() / s.world
    return {"epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch, "loss": loss_mean,
            "lr": learning_rate(cfg, (epoch + 1) * steps_per_epoch - 1, total_steps),
            "images_per_s": steps_per_epoch * cfg.batch_size / seconds, "seconds": seconds}


def evaluate_run(cfg: TrainConfig, model, codec, dataset, rt: Runtime, flip_test: bool,
                 consistency: bool = True) -> dict:
    """``evaluate.evaluate_model`` on the run's val split (scored against that split's annotation file)."""
    annotations = split_paths(Path(cfg.data), cfg.val_split)[0]
    return evaluate_model(model, codec, dataset, annotations, rt.device, flip_test, rt.channels_last, consistency)


def train(cfg: TrainConfig) -> Path:
    """Train (or resume) the run ``cfg`` describes, evaluate it, write its record; returns the run directory."""
    cfg = validate(cfg)
    s = setup(cfg)
    directory = run_dir(cfg)
    ckpt_path = directory / "checkpoint.pt"
    if s.rank == 0:
        prepare_output(cfg, directory)
    if (directory / DONE).is_file() and record_path(cfg).is_file():
        if ckpt_path.is_file():
            load_checkpoint(ckpt_path, cfg)  # a checkpoint of another config is refused, finished or not
        return directory  # finished here: its record stands (delete runs/<run_id> to train it again)
    torch.manual_seed(cfg.seed)
    model, codec, train_ds, val_ds = build(cfg, s.rt.device)
    model, net, optimizer = prepare_model(cfg, model, s)
    loader, sampler = train_loader(cfg, train_ds, s)
    fingerprints = {"data_fingerprint": data_fingerprint(cfg), "code_fingerprint": code_fingerprint(),
                    "git_commit": records.provenance()["git_commit"]}
    start_epoch, history, elapsed = resume(ckpt_path, cfg, model, optimizer, fingerprints)
    step_fn = Step(net, optimizer, model.num_keypoints, s.rt, cfg.fg_weight)

    for epoch in range(start_epoch, cfg.epochs):
        entry = train_one_epoch(cfg, s, step_fn, loader, sampler, epoch, ckpt_path)
        elapsed += entry["seconds"]
        if cfg.eval_every and (epoch + 1) % cfg.eval_every == 0 and epoch + 1 < cfg.epochs and s.rank == 0:
            quick = evaluate_run(cfg, model, codec, val_ds, s.rt, flip_test=False, consistency=False)
            entry.update(val_AP=quick["AP"], val_epe_mean=quick["epe_mean"])
        history.append(entry)
        if s.rank == 0 and not cfg.progress:  # no bar: a line per epoch, so a log shows how far a run got
            print(epoch_line(entry, cfg.epochs, history), flush=True)
        if s.rank == 0:
            save_checkpoint(ckpt_path, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                        "rng": torch.get_rng_state(), "epoch": epoch + 1, "history": history,
                                        "elapsed_s": elapsed, "config": _semantic(cfg), **fingerprints})
            _append_jsonl(directory / "log.jsonl", entry)
        if s.distributed:
            torch.distributed.barrier()

    if s.rank == 0:
        finish(cfg, model, codec, train_ds, val_ds, s.rt, history, elapsed, directory, fingerprints)
    if s.distributed:
        torch.distributed.barrier()
    return directory


def epoch_line(entry: dict, epochs: int, history: list[dict]) -> str:
    """One epoch as a log line: loss, img/s, time, the quick evaluation if there was one, and the ETA of the training
    left (mean epoch time so far, times the epochs left)."""
    line = (f"epoch {entry['epoch']}/{epochs}: loss {entry['loss']:.4g}, {entry['images_per_s']:.0f} img/s, "
            f"{entry['seconds']:.1f} s")
    if "val_AP" in entry:
        line += f", val AP {entry['val_AP']:.3f}, EPE {entry['val_epe_mean']:.2f} px"
    left = (epochs - entry["epoch"]) * sum(h["seconds"] for h in history) / len(history)
    eta = f"{left:.0f} s" if left < 90 else f"{left / 60:.1f} min"
    return line + (f", ETA {eta}" if entry["epoch"] < epochs else ", training done; evaluating")


def _append_jsonl(path: Path, entry: dict):
    # a resumed run appends the epochs it redoes; the record's learning curve comes from the checkpoint's history
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(records._clean(entry)) + "\n")


def finish(cfg, model, codec, train_ds, val_ds, rt: Runtime, history, elapsed, directory, fingerprints):
    """The final evaluation (without and with flip test), the results record and its COCO results file, then the
    ``DONE`` marker (written last: a run killed before it is not finished)."""
    results = {"run_id": run_id(cfg), "data_fingerprint": fingerprints["data_fingerprint"],
               "code_fingerprint": fingerprints["code_fingerprint"]}
    instances = {}
    for flip in (False, True):
        metrics = evaluate_run(cfg, model, codec, val_ds, rt, flip_test=flip)
        if not cfg.progress:
            print(f"evaluation {'with' if flip else 'without'} flip test: AP {metrics['AP']:.3f}, EPE "
                  f"{metrics['epe_mean']:.2f} px", flush=True)
        coco = metrics.pop("coco_results")
        instances["flip" if flip else "no_flip"] = {k: [round(v, 4) for v in vs] if k.startswith("epe") else vs
                                                    for k, vs in metrics.pop("instances").items()}  # px to 1e-4
        results["flip" if flip else "no_flip"] = metrics
        if flip:  # the record names the results file's hash: a record and a results file of two runs never pair
            text = json.dumps(coco)
            results["keypoints_sha256"] = hashlib.sha256(text.encode()).hexdigest()
            records.atomic_write_text(record_path(cfg).with_suffix(".keypoints.json"), text)
    # per image, for the report's bootstrap over val images; compact (one line), its hash in the record
    text = json.dumps(instances, separators=(",", ":"))
    results["instances_sha256"] = hashlib.sha256(text.encode()).hexdigest()
    records.atomic_write_text(record_path(cfg).with_suffix(".instances.json"), text)
    cost = model_cost(cfg.model, cfg.alignment, cfg.head, cfg.input_size)
    results["misalignment"] = misalignment_summary(cfg)
    if learned.learned_modules(model):  # what the learned aligner learned, against the geometry (issue 22)
        offsets = learned_offsets(cfg, model, val_ds)
        text = json.dumps(offsets, separators=(",", ":"))
        results["offsets_sha256"] = hashlib.sha256(text.encode()).hexdigest()
        records.atomic_write_text(record_path(cfg).with_suffix(".offsets.json"), text)
        # the audit reads the zero-offset grid (the baseline's); the record's misalignment is what was realised
        results.update(learned_alignment=learned.overall(offsets), misalignment_at_zero_offset=results["misalignment"],
                       misalignment=learned.realised_misalignment(offsets))
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


OFFSET_IMAGES = 64  # val crops the learned offsets are averaged over (the first ones: the same in every run)


def learned_offsets(cfg: TrainConfig, model, val_ds) -> dict:
    """``learned.learned_alignment`` of a trained learned-alignment model on the first val crops, against the shifts
    of a fresh copy (the trained one may be wrapped or channels_last)."""
    size = effective_input_size(cfg)
    fresh = create_model(cfg.model, alignment=cfg.alignment, head=cfg.head, input_size=size,
                         padding=cfg.padding or None)
    images = torch.stack([torch.as_tensor(val_ds[i]["image"]) for i in range(min(OFFSET_IMAGES, len(val_ds)))])
    return learned.learned_alignment(model, images, size, shifts=shift_fields(fresh, size))


def misalignment_summary(cfg: TrainConfig) -> dict:
    """The audit of this run's network at its input size, in one line: how far fused features sit from each other
    (input px), so every record says how misaligned the model it measured was. A fresh copy is traced: the trained
    one may carry DDP's batch norm or channels_last."""
    size = effective_input_size(cfg)
    model = create_model(cfg.model, alignment=cfg.alignment, head=cfg.head, input_size=size,
                         padding=cfg.padding or None)
    table = audit(model, size)
    return {"fusions": int(table["node"].nunique()), "max_abs_px": float(table["max_abs_px"].max()),
            "mean_abs_px": float(table["mean_abs_px"].mean()),
            "border_max_abs_px": float(table["border_max_abs_px"].max())}


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
