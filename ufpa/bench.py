"""Benchmarks that write records (never timed tests): model cost and training-step throughput per variant.

``model_cost`` counts parameters and forward FLOPs (``torch.utils.flop_counter``: convolutions and matmuls;
interpolation and pooling are not counted, which is why the aligned variants show their true zero-parameter,
near-zero-FLOP cost only up to that resolution). ``bench_models`` times forward + backward steps of every alignment
variant in one process, interleaved (A B C, B C A, C A B, ...) so that drift of the machine hits all of them alike,
and measures each variant's peak memory in a fresh process of its own; it compares the step time with the baseline's
against the study's goals (``GOAL_OVER_FLOPS``: ufpa at most 1.05 x its FLOP ratio, ufpa_any 1.03 x) and, for a
variant that misses its goal, profiles it beside the baseline and names the operators the excess goes to. Every
benchmark runs in a fresh process of its own (``in_child``: one that dies or hangs is named, never waited on). On
CUDA it runs bf16 autocast and channels_last, optionally the whole step captured in one CUDA graph
(``cuda_graph=True``), and adds timm's HRNet features backbone with the same head when timm is installed.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field

import torch
from torch.utils.flop_counter import FlopCounterMode

from .models import create_model, model_cost, run_size  # noqa: F401  (model_cost: bench's API too)
from .runtime import Runtime, capture, runtime

# Step time vs the baseline's, over the variant's FLOP ratio (issue 20): alignment may cost its arithmetic (ufpa's
# 32m+1 sizes add FLOPs) and no more than this on top.
GOAL_OVER_FLOPS = {"ufpa": 1.05, "ufpa_any": 1.03}


@dataclass
class BenchConfig:
    model: str = "hrnet_w32"  # registered model name
    input_size: tuple[int, int] = (256, 192)  # requested (H, W); 'ufpa' runs at the next 32m+1 size
    variants: tuple[str, ...] = ("baseline", "ufpa", "ufpa_any", "learned")  # alignment[:padding], e.g. "ufpa:zeros"
    batch: int = 8
    steps: int = 10  # timed steps per variant
    warmup: int = 3  # untimed steps first
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu")
    bf16: bool | None = None  # autocast to bf16; default: on for CUDA
    channels_last: bool | None = None  # default: on for CUDA
    threads: int = 0  # CPU threads (0: torch's default)
    seed: int = 0
    compare_timm: bool = True  # CUDA only: timm's hrnet_w32 features + the same head
    cuda_graph: bool = False  # CUDA only: capture forward + backward in one graph and replay it
    time_limit_s: float = 600.0  # per benchmark process: one that runs longer is stopped and named (0: no limit)
    name_excess: bool = True  # profile a variant that misses its goal and name the ops it spends the excess on
    interleave: bool = True  # time all variants in one process, one step each per round (False: one process each)


def validate(cfg: BenchConfig) -> BenchConfig:
    """Every field checked before anything runs; errors name the field and what is valid."""
    from .models import ALL_ALIGNMENTS, list_models
    from .models._layers import PADDINGS

    def need(ok, msg):
        if not ok:
            raise ValueError(msg)

    need(cfg.model in list_models(), f"model={cfg.model!r}: choose one of {list_models()}")
    need(len(cfg.input_size) == 2 and min(cfg.input_size) >= 32, f"input_size={list(cfg.input_size)}: use [H, W] >= 32")
    need(len(cfg.variants) > 0, "variants is empty: name at least one, e.g. variants=['baseline','ufpa']")
    for spec in cfg.variants:
        alignment, _, padding = spec.partition(":")
        need(alignment in ALL_ALIGNMENTS and (not padding or padding in PADDINGS),
             f"variant {spec!r}: use alignment[:padding] with alignment one of {ALL_ALIGNMENTS} and padding one of "
             f"{PADDINGS}")
    for name, low in (("batch", 1), ("steps", 1), ("warmup", 0), ("threads", 0), ("seed", 0)):
        need(getattr(cfg, name) >= low, f"{name}={getattr(cfg, name)}: must be >= {low}")
    need(cfg.device == "cpu" or cfg.device.startswith("cuda"), f"device={cfg.device!r}: use cpu, cuda or cuda:N")
    need(not cfg.cuda_graph or cfg.device.startswith("cuda"),
         "cuda_graph=True needs a CUDA device; on CPU use cuda_graph=False")
    return cfg


def _step_fn(model, x, target, rt: Runtime):
    def step():
        with rt.autocast(capturing=rt.cuda_graph):
            out = model(x)
        loss = torch.nn.functional.mse_loss(out.float(), target)
        loss.backward()
    return step


def _time_steps(step, cfg: BenchConfig) -> list[float]:
    sync = torch.cuda.synchronize if cfg.device.startswith("cuda") else (lambda: None)
    for _ in range(cfg.warmup):
        step()
    sync()
    times = []
    for _ in range(cfg.steps):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return times


def _build(cfg: BenchConfig, variant: str):
    """A variant's model, input and target on the device, and its step function (graphed if asked)."""
    rt = runtime(cfg, cfg.device)
    alignment, _, padding = variant.partition(":")  # 'ufpa:zeros': the variant with another padding (ablation)
    size = run_size(cfg.model, alignment, cfg.input_size) if variant != "timm" else tuple(cfg.input_size)
    if variant == "timm":
        model = _timm_hrnet_with_head()
    else:
        model = create_model(cfg.model, alignment=alignment, input_size=size, padding=padding or None)
    model = model.to(cfg.device).train()
    x = torch.randn(cfg.batch, 3, *size, device=cfg.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:  # one image's forward FLOPs, counted on the shape probe
        out_shape = model(x[:1]).shape
    target = torch.randn(cfg.batch, *out_shape[1:], device=cfg.device)
    step = _step_fn(model, x, target, rt)
    if rt.cuda_graph:
        step = capture(step, model)[0].replay
    info = {"variant": variant, "input_size": list(size), "params": sum(p.numel() for p in model.parameters()),
            "gflops": counter.get_total_flops() / 1e9, "bf16": rt.bf16, "channels_last": rt.channels_last,
            "cuda_graph": rt.cuda_graph}
    return step, info


def _bench_one(cfg: BenchConfig, variant: str) -> dict:
    """One variant, run in its own process: step times and peak memory."""
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    cuda = cfg.device.startswith("cuda")
    step, info = _build(cfg, variant)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = _time_steps(step, cfg)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)  # Linux: KiB
    median = sorted(times)[len(times) // 2]
    return {**info, "step_s_median": median, "step_s_all": times, "images_per_s": cfg.batch / median,
            "peak_memory_mb": peak, "peak_memory_kind": "cuda_allocated" if cuda else "process_max_rss"}


def _bench_interleaved(cfg: BenchConfig, variants: list[str]) -> list[dict]:
    """All variants in this process, one timed step each per round, the order rotating every round."""
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    sync = torch.cuda.synchronize if cfg.device.startswith("cuda") else (lambda: None)
    built = [_build(cfg, v) for v in variants]
    for step, _ in built:
        for _ in range(cfg.warmup):
            step()
    sync()
    times: list[list[float]] = [[] for _ in variants]
    for r in range(cfg.steps):
        for k in range(len(variants)):
            i = (r + k) % len(variants)
            start = time.perf_counter()
            built[i][0]()
            sync()
            times[i].append(time.perf_counter() - start)
    rows = []
    for (_, info), t in zip(built, times):
        median = sorted(t)[len(t) // 2]
        rows.append({**info, "step_s_median": median, "step_s_all": t, "images_per_s": cfg.batch / median})
    return rows


def in_child(fn, *args, time_limit_s: float | None = None, what: str = "the benchmark"):
    """``fn(*args)`` in a fresh spawned process, its result returned. A process that dies (a crash, the OOM killer,
    a CUDA abort) or runs past ``time_limit_s`` raises an error naming ``what`` and how it ended, never waits forever
    (a ``multiprocessing.Pool`` waits on a dead worker without a word)."""
    pool = ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"))
    try:
        result = pool.submit(fn, *args).result(timeout=time_limit_s)
    except BrokenProcessPool as err:
        _stop(pool)
        raise RuntimeError(f"{what} died in its process before it returned (a crash, or killed for memory); run it "
                           "with fewer steps or a smaller batch, and look at the device's log") from err
    except FutureTimeout as err:
        _stop(pool)
        raise TimeoutError(f"{what} ran past its time limit of {time_limit_s:g} s and was stopped; raise "
                           "time_limit_s or lower steps / batch") from err
    pool.shutdown(wait=True)
    return result


def _stop(pool: ProcessPoolExecutor):
    for process in list((getattr(pool, "_processes", None) or {}).values()):  # no public way to stop a running task
        process.kill()
    pool.shutdown(wait=False, cancel_futures=True)


def _timm_hrnet_with_head(num_keypoints: int = 17):
    import timm

    class TimmPose(torch.nn.Module):
        def __init__(self):
            super().__init__()
            # feature_location='' returns the raw branch outputs; index 1 is branch 0 at stride 4 (32 channels)
            self.backbone = timm.create_model("hrnet_w32", pretrained=False, features_only=True, feature_location="",
                                              out_indices=(1,))
            self.head = torch.nn.Conv2d(self.backbone.feature_info.channels()[0], num_keypoints, 1)

        def forward(self, x):
            return self.head(self.backbone(x)[0])

    return TimmPose()


def bench_models(cfg: BenchConfig) -> dict:
    """Benchmark every variant of ``cfg`` (each in a fresh process); returns the results of a record."""
    variants = list(cfg.variants)
    if cfg.compare_timm and cfg.device.startswith("cuda") and cfg.model == "hrnet_w32":
        try:
            import timm  # noqa: F401

            variants.append("timm")
        except ImportError:
            pass
    limit = cfg.time_limit_s or None
    if cfg.interleave:  # a fresh process: nothing else has warmed or fragmented its allocator
        rows = in_child(_bench_interleaved, cfg, variants, time_limit_s=limit, what="the interleaved benchmark")
        memory = BenchConfig(**{**asdict(cfg), "steps": 1, "warmup": 1})
        for row in rows:  # peak memory needs a process per variant (the CPU's max RSS never goes down)
            one = in_child(_bench_one, memory, row["variant"], time_limit_s=limit,
                           what=f"the memory benchmark of {row['variant']}")
            row.update(peak_memory_mb=one["peak_memory_mb"], peak_memory_kind=one["peak_memory_kind"])
    else:
        rows = [in_child(_bench_one, cfg, variant, time_limit_s=limit, what=f"the benchmark of {variant}")
                for variant in variants]
    base = next((r for r in rows if r["variant"] == "baseline"), None)
    for r in rows:
        r["step_time_ratio_vs_baseline"] = r["step_s_median"] / base["step_s_median"] if base else None
        r["flops_ratio_vs_baseline"] = r["gflops"] / base["gflops"] if base else None
    goals = {r["variant"]: GOAL_OVER_FLOPS[r["variant"]] * r["flops_ratio_vs_baseline"] for r in rows
             if r["variant"] in GOAL_OVER_FLOPS and base}
    ratios = {r["variant"]: r["step_time_ratio_vs_baseline"] for r in rows if r["variant"] in GOAL_OVER_FLOPS}
    met = {v: None if ratio is None else ratio <= goals[v] for v, ratio in ratios.items()}
    missed = [v for v, ok in met.items() if ok is False]
    excess = excess_ops(cfg, missed) if missed and cfg.name_excess else {}
    return {"rows": rows, "goal_over_flops": GOAL_OVER_FLOPS, "goal_ratio": goals, "ratio_vs_baseline": ratios,
            "goal_met": met, "excess_ops": excess, "ufpa_vs_baseline": ratios.get("ufpa"),
            "interleaved": cfg.interleave}


def excess_ops(cfg: BenchConfig, variants: list[str], top: int = 6) -> dict:
    """What a variant spends beyond the baseline, per operator (ms per step, profiled in one fresh process): the ops
    that hold a missed goal back, named in the record."""
    rows = in_child(_profile_variants, cfg, ["baseline", *variants], 10_000, time_limit_s=cfg.time_limit_s or None,
                    what="the profile of the missed variants")
    base = {op["op"]: op["ms_per_step"] for op in rows[0]["ops"]}
    out = {}
    for row in rows[1:]:
        diff = {op["op"]: op["ms_per_step"] - base.get(op["op"], 0.0) for op in row["ops"]}
        diff.update({op: -ms for op, ms in base.items() if op not in diff})
        extra = row["ms_per_step"] - rows[0]["ms_per_step"]
        out[row["variant"]] = {"extra_ms_per_step": extra, "ops": [
            {"op": op, "extra_ms_per_step": ms} for op, ms in sorted(diff.items(), key=lambda kv: -kv[1])[:top]]}
    return out


def profile_models(cfg: BenchConfig, top: int = 12) -> dict:
    """Where a training step's time goes, per variant (torch.profiler over ``cfg.steps`` steps after the warm-up):
    the ``top`` operators by self time (CPU, and CUDA kernels on a GPU), in ms per step, and each op group's share."""
    variants = list(cfg.variants)
    rows = in_child(_profile_variants, cfg, variants, top, time_limit_s=cfg.time_limit_s or None,
                    what="the profile")
    return {"rows": rows, "steps": cfg.steps}


def _profile_variants(cfg: BenchConfig, variants: list[str], top: int) -> list[dict]:
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    cuda = cfg.device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    rows = []
    for variant in variants:
        step, info = _build(cfg, variant)
        for _ in range(cfg.warmup):
            step()
        if cuda:
            torch.cuda.synchronize()
        with profile(activities=activities) as prof:
            for _ in range(cfg.steps):
                step()
            if cuda:
                torch.cuda.synchronize()
        events = prof.key_averages()
        key = "self_device_time_total" if cuda else "self_cpu_time_total"
        total = sum(getattr(e, key) for e in events) / 1e3 / cfg.steps
        ops = sorted(events, key=lambda e: -getattr(e, key))[:top]
        rows.append({**info, "time_kind": "cuda" if cuda else "cpu", "ms_per_step": total,
                     "ops": [{"op": e.key, "ms_per_step": getattr(e, key) / 1e3 / cfg.steps, "calls": e.count //
                              cfg.steps} for e in ops],
                     "groups_ms_per_step": _groups(events, key, cfg.steps)})
    return rows


# Operator families the cost discussion needs (issue 10): padding, convolution, resampling, normalisation.
OP_GROUPS = {"padding": ("pad", "replication"), "convolution": ("conv",), "resampling": ("upsample", "interpolate"),
             "batch_norm": ("batch_norm",), "copies": ("copy_", "cat", "contiguous", "clone")}


def _groups(events, key: str, steps: int) -> dict:
    out = {name: 0.0 for name in OP_GROUPS}
    for e in events:
        for name, needles in OP_GROUPS.items():
            if any(n in e.key for n in needles):
                out[name] += getattr(e, key) / 1e3 / steps
                break
    return out


def config_dict(cfg: BenchConfig) -> dict:
    return asdict(cfg)


def bench_codecs(n: int = 1000, seed: int = 0, input_size=(256, 192), heatmap_size=(64, 48)) -> dict:
    """Round-trip error (heatmap samples) and encode+decode speed of every codec; goals UDP <= 0.01, DARK <= 0.05."""
    from . import codecs

    goals = {"udp": 0.01, "dark": 0.05}
    rows = []
    for name in codecs.list_codecs():
        size = tuple(input_size) if name == "sr" else heatmap_size  # sr: the stride-1 grid of an x4 SR head
        start = time.perf_counter()
        err = codecs.roundtrip_errors(name, n, seed, input_size, size)
        elapsed = time.perf_counter() - start
        rows.append({"codec": name, "heatmap_size": list(size), "mean_error": float(err.mean()),
                     "max_error": float(err.max()), "goal_max_error": goals.get(name),
                     "goal_met": None if name not in goals else bool(err.max() <= goals[name]),
                     "keypoints_per_s": n / elapsed})
    return {"rows": rows, "n": n}


def bench_synth(n: int = 600, seed: int = 0, repeats: int = 3) -> dict:
    """SynthPose generation speed on one core at the default 256x192 crops (the issue's goal: >= 500 img/s per core).

    Three stages, each the best of ``repeats`` passes over the same ``n`` images (on a shared machine the best pass
    is the least disturbed; every pass is recorded): ``render`` (scene to uint8 image and annotations),
    ``render_encode`` (plus the JPEG encoding: the CPU cost of one finished image, which is what the per-core goal
    measures) and ``generate`` (``synthetic.generate`` end to end into a temporary folder: adds file writes and the
    annotation JSON, so it also depends on the file system). OpenCV is held to one thread throughout.
    """
    import tempfile

    import cv2
    import numpy as np

    from .data import synthetic

    cfg = synthetic.SynthConfig()
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        def render(encode: bool):
            start = time.perf_counter()
            for i in range(n):
                image, _ = synthetic.render_image(np.random.default_rng(np.random.SeedSequence((seed, 0, i))), cfg)
                if encode:
                    synthetic.encode_jpeg(image, cfg)
            return time.perf_counter() - start

        def generate():
            with tempfile.TemporaryDirectory() as folder:
                start = time.perf_counter()
                synthetic.generate(folder, train=n, val=0, seed=seed, cfg=cfg, workers=1, progress=False)
                return time.perf_counter() - start

        stages = {"render": lambda: render(False), "render_encode": lambda: render(True), "generate": generate}
        passes = {name: sorted(n / fn() for _ in range(repeats)) for name, fn in stages.items()}
    finally:
        cv2.setNumThreads(threads)
    rates = {name: runs[-1] for name, runs in passes.items()}
    return {"images": n, "repeats": repeats, "size": [cfg.height, cfg.width],
            **{f"{name}_images_per_s": rate for name, rate in rates.items()},
            "passes_images_per_s": passes,
            "goal_images_per_s": 500, "goal_stage": "render_encode",
            "goal_met": rates["render_encode"] >= 500}


@dataclass
class TrainBenchConfig:
    models: tuple[str, ...] = ("hrnet_w8_tiny",)  # the profiles' model
    input_size: tuple[int, int] = (96, 64)
    batch: int = 16  # the cpu profile's batch
    batches: int = 10  # timed batches per mode and round
    rounds: int = 3  # the modes take turns, round after round, so drift of the machine hits all alike
    eval_instances: int = 64  # val instances timed for the evaluation's share
    data: str = "data/synthpose-easy"  # a COCO-format folder (made with `python -m ufpa synth`)
    workers: tuple[int, ...] = (0, 1, 2)  # DataLoader worker counts to time
    device: str = field(default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu")
    threads: int = 1  # one thread per run, as the sweep runs them
    seed: int = 0


# What the training loop can change, step by step from today's defaults (TrainConfig fields): each mode adds one
# thing to the one before it, so the record shows what each buys. On CUDA the runtime's defaults apply anyway.
LOOP_MODES = {"today": {"cache_mb": 0}, "+cache": {"cache_mb": 1024}, "+channels_last": {"channels_last": True},
              "+fused": {"fused": True}, "+bf16": {"bf16": True}}


def _loop_configs(cfg: TrainBenchConfig, model: str):
    from . import train

    base = train.TrainConfig(model=model, data=cfg.data, input_size=tuple(cfg.input_size), batch_size=cfg.batch,
                             seed=cfg.seed, device=cfg.device, progress=False)
    out, fields = {}, {}
    for name, change in LOOP_MODES.items():
        fields.update(change)
        out[name] = dataclasses.replace(base, **fields)
    return out


def _time_loop(run, batches: int, dataset, state) -> dict:
    """``batches`` training steps through the real loader (workers=0, as the sweep runs): seconds in the loader and in
    the step. ``state`` keeps each mode's model, optimizer and iterator between rounds."""
    from . import train

    if "step" not in state:
        rt = runtime(run, run.device)
        torch.manual_seed(run.seed)
        model, _, _, _ = train.build(run, rt.device, datasets=False)
        if rt.channels_last:
            model = model.to(memory_format=torch.channels_last)
        optimizer = train._optimizer(run, model, capturable=rt.cuda_graph)
        state["step"] = train.Step(model.train(), optimizer, model.num_keypoints, rt, run.fg_weight)
        state["loader"] = torch.utils.data.DataLoader(dataset, batch_size=run.batch_size, shuffle=True,
                                                      drop_last=True,
                                                      generator=torch.Generator().manual_seed(run.seed))
        state["it"] = iter(state["loader"])
        state["step"](next(state["it"]))  # warm-up: first-call allocations are not throughput
        for inst in dataset.instances if run.cache_mb else ():  # the cache as it is from the second epoch on
            dataset._image(inst.file)
    sync = torch.cuda.synchronize if run.device.startswith("cuda") else (lambda: None)
    data_s = step_s = 0.0
    for _ in range(batches):
        t0 = time.perf_counter()
        try:
            batch = next(state["it"])
        except StopIteration:
            state["it"] = iter(state["loader"])
            batch = next(state["it"])
        t1 = time.perf_counter()
        state["step"](batch)
        sync()
        step_s += time.perf_counter() - t1
        data_s += t1 - t0
    return {"data_s": data_s, "step_s": step_s}


def bench_train(cfg: TrainBenchConfig) -> dict:
    """Where a training loop's time goes, per image, on this machine: the data pipeline (decode, augment, crop,
    encode targets), the step and the evaluation, for today's defaults and for each speed-up added in turn
    (``LOOP_MODES``), timed through the real loader and step, the modes taking turns round by round; and the
    pipeline's img/s per DataLoader worker count (the data must keep up with the step)."""
    from . import train

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    loops = []
    for name in cfg.models:
        runs = _loop_configs(cfg, name)
        datasets = {mode: train.build(run)[2] for mode, run in runs.items()}
        state = {mode: {} for mode in runs}
        totals = {mode: {"data_s": 0.0, "step_s": 0.0} for mode in runs}
        for r in range(cfg.rounds):
            modes = list(runs)
            for mode in modes[r % len(modes):] + modes[:r % len(modes)]:
                got = _time_loop(runs[mode], cfg.batches, datasets[mode], state[mode])
                for key in got:
                    totals[mode][key] += got[key]
        images = cfg.batches * cfg.rounds * cfg.batch
        today = None
        for mode, run in runs.items():
            model, codec, _, val = train.build(run)
            val.instances = val.instances[:cfg.eval_instances]
            rt = runtime(run, run.device)
            start = time.perf_counter()
            train.evaluate_run(run, model.to(rt.device), codec, val, rt, flip_test=False, consistency=False)
            eval_ms = (time.perf_counter() - start) / len(val) * 1e3
            row = {"model": name, "mode": mode, "config": {k: getattr(run, k) for k in ("cache_mb", "channels_last",
                                                                                         "fused", "bf16")},
                   "data_ms_per_image": totals[mode]["data_s"] / images * 1e3,
                   "step_ms_per_image": totals[mode]["step_s"] / images * 1e3, "eval_ms_per_image": eval_ms}
            row["loop_ms_per_image"] = row["data_ms_per_image"] + row["step_ms_per_image"]
            today = today or row["loop_ms_per_image"]
            row["loop_vs_today"] = row["loop_ms_per_image"] / today
            loops.append(row)
    dataset = train.build(_loop_configs(cfg, cfg.models[0])["today"])[2]
    data_rows = []
    for workers in cfg.workers:
        loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch, shuffle=True, num_workers=workers,
                                             drop_last=True, generator=torch.Generator().manual_seed(cfg.seed))
        it = iter(loader)
        next(it)  # worker start-up is not throughput
        start = time.perf_counter()
        n = 0
        for _ in range(cfg.batches):
            n += len(next(it)["image"])
        data_rows.append({"workers": workers, "images_per_s": n / (time.perf_counter() - start)})
    best_data = max(r["images_per_s"] for r in data_rows)
    fastest = max(1e3 / r["step_ms_per_image"] for r in loops)
    return {"loops": loops, "data": data_rows, "data_images_per_s_best": best_data,
            "step_images_per_s_best": fastest, "data_keeps_up": best_data >= fastest, "goal_loop_vs_today": 0.6,
            "cpu_count": os.cpu_count()}
