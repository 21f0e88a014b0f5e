"""The timer: what it reduces its runs to, and that the onnxruntime run it times (inputs and
outputs bound once, IOBinding) computes what the module computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nasplat.errors import ConfigError
from nasplat.latency.timing import Timer, TimingSettings, reduce_samples


def test_samples_reduce_to_the_fastest_or_the_median() -> None:
    samples = [3.0, 1.0, 9.0, 2.0, 4.0]
    assert reduce_samples(samples, "min") == 1.0
    assert reduce_samples(samples, "median") == 3.0
    with pytest.raises(ConfigError):
        reduce_samples(samples, "mean")


def test_the_bound_onnx_run_computes_the_modules_outputs() -> None:
    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()).eval()
    x = torch.randn(2, 3, 16, 12)
    timer = Timer(TimingSettings(backend="onnx", repeats=3, warmup=1))
    run = timer._runner(module, (x,))
    run()
    (out,) = run.binding.copy_outputs_to_cpu()
    with torch.no_grad():
        expected = module(x).numpy()
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, atol=1e-5)
    # a second run into the same buffers gives the same result (nothing accumulates)
    run()
    np.testing.assert_allclose(run.binding.copy_outputs_to_cpu()[0], expected, atol=1e-5)



def test_time_many_keeps_the_order_across_chunks_and_passes() -> None:
    tiny = (nn.Conv2d(3, 4, 1).eval(), (torch.randn(1, 3, 8, 8),))
    big = (nn.Conv2d(64, 64, 3, padding=1).eval(), (torch.randn(1, 64, 96, 72),))  # ~2,000x the MACs
    timer = Timer(TimingSettings(backend="torch", threads=1, repeats=3, warmup=1, passes=2))
    ms = list(timer.time_many([tiny, big, tiny, big, tiny], chunk=2))
    assert len(ms) == 5
    assert min(ms[1], ms[3]) > max(ms[0], ms[2], ms[4])
