"""How a training step executes on a device, decided once for the trainer and the benchmarks: bf16 autocast,
channels_last and CUDA-graph capture (``runtime``), and the one capture of a whole step (``capture``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


class TrainingError(RuntimeError):
    """A run stopped for a reason the message names (non-finite loss or output, out of memory)."""


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    bf16: bool  # autocast to bf16
    channels_last: bool  # model and images in channels_last memory format
    cuda_graph: bool  # the whole step captured in one CUDA graph and replayed

    def autocast(self, capturing: bool = False):
        # a graph must not keep autocast's cast cache: the cached casts of the weights would be freed after capture
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16, cache_enabled=not capturing)


def runtime(cfg, device, distributed: bool = False) -> Runtime:
    """The runtime of a config with ``bf16``, ``channels_last`` and ``cuda_graph`` fields (None: the default) on
    ``device``: bf16 and channels_last on for CUDA, a CUDA graph on for CUDA in one process without ``compile``.
    A graph asked for where it cannot run is refused with the fix."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    compiled = getattr(cfg, "compile", False)
    graph = (cuda and not distributed and not compiled) if cfg.cuda_graph is None else bool(cfg.cuda_graph)
    if graph and not cuda:
        raise ValueError("cuda_graph=True needs a CUDA device; use cuda_graph=False (or None) on CPU")
    if graph and distributed:
        raise ValueError("cuda_graph=True is for one process; under torchrun use cuda_graph=False")
    return Runtime(device=device, bf16=cuda if cfg.bf16 is None else bool(cfg.bf16),
                   channels_last=cuda if cfg.channels_last is None else bool(cfg.channels_last), cuda_graph=graph)


def capture(step, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None, warmup: int = 3):
    """Capture ``step()`` (forward, backward and, with ``optimizer``, its update; run under ``Runtime.autocast(
    capturing=True)``) in one CUDA graph; returns (graph, what the captured call returned), replayed by
    ``graph.replay()``. The warm-up runs on a side stream, as capture requires; then the weights, buffers and optimizer
    state are put back as they were, so a graphed run makes the same updates from the same start as an eager one."""
    model_state = {k: v.clone() for k, v in model.state_dict().items()}
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            step()
    torch.cuda.current_stream().wait_stream(stream)
    with torch.no_grad():
        for k, v in model.state_dict().items():
            v.copy_(model_state[k])
        for state in (optimizer.state.values() if optimizer is not None else ()):
            for v in state.values():
                if isinstance(v, torch.Tensor):
                    v.zero_()  # fresh moments and step counts, as before the first step
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = step()
    return graph, out
