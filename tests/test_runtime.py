"""ufpa.runtime: the one place the bf16 / channels_last / CUDA-graph defaults are decided (trainer and benchmarks)."""

from dataclasses import replace

import pytest
import torch

from ufpa import bench, runtime, train


@pytest.mark.parametrize("cfg", [train.TrainConfig(), bench.BenchConfig(device="cpu")])
def test_cpu_defaults_are_plain(cfg):
    rt = runtime.runtime(cfg, "cpu")
    assert (rt.bf16, rt.channels_last, rt.cuda_graph) == (False, False, False)
    assert rt.device == torch.device("cpu")


def test_cuda_defaults_and_when_a_graph_is_left_out():
    cuda = torch.device("cuda")  # a device object needs no GPU: the rule is checked on CPU
    rt = runtime.runtime(train.TrainConfig(), cuda)
    assert (rt.bf16, rt.channels_last, rt.cuda_graph) == (True, True, True)
    assert not runtime.runtime(train.TrainConfig(), cuda, distributed=True).cuda_graph  # one process only
    assert not runtime.runtime(train.TrainConfig(compile=True), cuda).cuda_graph  # compile does its own
    # the bench graphs only when asked (its default is False), and says so in its record
    assert not runtime.runtime(bench.BenchConfig(device="cuda"), cuda).cuda_graph
    explicit = runtime.runtime(train.TrainConfig(bf16=False, channels_last=False, cuda_graph=False), cuda)
    assert (explicit.bf16, explicit.channels_last, explicit.cuda_graph) == (False, False, False)


def test_a_graph_where_it_cannot_run_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="needs a CUDA device; use cuda_graph=False"):
        runtime.runtime(train.TrainConfig(cuda_graph=True), "cpu")
    with pytest.raises(ValueError, match="under torchrun use cuda_graph=False"):
        runtime.runtime(replace(train.TrainConfig(), cuda_graph=True), torch.device("cuda"), distributed=True)


def test_autocast_keeps_no_cast_cache_while_capturing():
    rt = runtime.runtime(train.TrainConfig(bf16=True), "cpu")
    with rt.autocast(capturing=True):
        assert not torch.is_autocast_cache_enabled()
        y = torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3))
    assert y.dtype == torch.bfloat16
    with rt.autocast():
        assert torch.is_autocast_cache_enabled()
