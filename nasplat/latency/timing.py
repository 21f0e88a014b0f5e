"""Timing on the deployment backend: onnxruntime (an ONNX export of the module) or eager torch.

`Timer(settings)` runs a module as deployed and times it: `passes` passes over a group of ready
modules (`time_many`), each pass `warmup` untimed and `repeats` timed runs of every module, all
of a module's runs reduced by `statistic`: `min` (the default) or `median`. A run cannot be faster than
the hardware allows but any run can be slowed by another process, a page fault or a late thread
wake-up, so the fastest of the runs is the estimate least disturbed by what else the machine
does. On this project's 2-core VM one pass of 25 runs of a quickstart subnet agreed within
+-10 % with a pass in a fresh session for half of 30 subnets, the fastest of 3 passes with the
fastest of 3 fresh ones for 73 %. The
ONNX path exports with `export_for_timing` (torch's TorchScript-based exporter, opset 17: about
10 ms per block against seconds for the dynamo exporter; the graph is the same Conv / BN / Add /
Resize / GridSample ops) and runs the model in an `InferenceSession` with `threads` intra-op
threads and one inter-op thread, full graph optimisation (BN folded into the convs, Conv+ReLU
fused), with inputs and outputs bound once to preallocated buffers (IOBinding): a timed block
then pays no per-run output allocation, which inside a whole network it never pays. The torch path runs the module under `torch.inference_mode` with `torch.set_num_threads`.
On CUDA each run is followed by a synchronisation.

`machine()` describes where this runs (CPU model or GPU name, torch and onnxruntime versions):
the fingerprint a latency table records and is checked against.
"""

from __future__ import annotations

import contextlib
import io
import platform
import statistics
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from nasplat.errors import ConfigError
from nasplat.models import build_static
from nasplat.space import Arch

__all__ = ["TimingSettings", "Timer", "export_for_timing", "machine", "reduce_samples"]

Backend = Literal["onnx", "torch"]
OPSET = 17


@dataclass(frozen=True)
class TimingSettings:
    """How a table is measured; recorded in it."""

    backend: Backend = "onnx"  # onnx (onnxruntime) | torch (eager)
    device: Literal["cpu", "cuda"] = "cpu"
    threads: int = 2  # intra-op threads
    batch: int = 1  # persons per forward pass
    warmup: int = 5  # untimed runs before timing
    repeats: int = 25  # timed runs, reduced by `statistic`
    statistic: Literal["min", "median"] = "min"
    passes: int = 3  # passes over a group of modules, each `repeats` runs of every one


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: str, backend: str) -> dict[str, Any]:
    """Where timing runs: device kind, CPU model or GPU name, torch and (onnx) onnxruntime version.
    Raises ConfigError when CUDA is asked for and not available."""
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for but torch sees no CUDA device", key="device")
        name = torch.cuda.get_device_name(0)
    else:
        name = _cpu_name()
    info: dict[str, Any] = {"device": device, "name": name, "torch": torch.__version__}
    if backend == "onnx":
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    return info


class _Outputs(nn.Module):
    """A module whose output is a NamedTuple or list, as a plain tuple (what the exporter takes)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *xs: Tensor) -> tuple[Tensor, ...]:
        out = self.module(*xs)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)


def export_for_timing(module: nn.Module, inputs: tuple[Tensor, ...]) -> bytes:
    """The ONNX model (bytes) of `module` in eval mode on `inputs`' shapes (static shapes)."""
    buf = io.BytesIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(_Outputs(module).eval(), inputs, buf, dynamo=False, opset_version=OPSET,
                          do_constant_folding=True)
    return buf.getvalue()


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def reduce_samples(samples: list[float], statistic: str) -> float:
    """The fastest sample (`min`) or the median (`median`)."""
    if statistic == "min":
        return min(samples)
    if statistic == "median":
        return statistics.median(samples)
    raise ConfigError(f"unknown timing statistic {statistic!r} (min or median)", key="statistic")


class Timer:
    """Times modules and whole subnets with one `TimingSettings`."""

    def __init__(self, settings: TimingSettings) -> None:
        self.settings = settings
        if settings.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for but torch sees no CUDA device", key="device")
        if settings.backend == "onnx":
            import onnxruntime

            self._ort = onnxruntime
            provider = "CUDAExecutionProvider" if settings.device == "cuda" else "CPUExecutionProvider"
            if provider not in onnxruntime.get_available_providers():
                raise ConfigError(f"onnxruntime here has no {provider} (it has {onnxruntime.get_available_providers()})",
                                  key="backend")
            self._providers = [provider]

    def _runner(self, module: nn.Module, inputs: tuple[Tensor, ...]) -> Callable[[], Any]:
        s = self.settings
        if s.backend == "onnx":
            options = self._ort.SessionOptions()
            options.intra_op_num_threads = s.threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            # threads sleep instead of spinning between ops: on a shared or oversubscribed CPU a
            # spinning pool stalls whole networks (2 threads measured 36 ms vs 4 ms on 1 thread)
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            session = self._ort.InferenceSession(export_for_timing(module, inputs), options, providers=self._providers)
            return self._bound(session, inputs)
        dev = torch.device(s.device)
        module = module.to(dev)
        inputs = tuple(x.to(dev) for x in inputs)
        sync = torch.cuda.synchronize if s.device == "cuda" else (lambda: None)

        def run() -> None:
            with torch.inference_mode():
                module(*inputs)
            sync()

        return run

    def _bound(self, session: Any, inputs: tuple[Tensor, ...]) -> Callable[[], Any]:
        """A run of `session` with inputs and outputs bound once to preallocated buffers on the
        device: a timed unit then pays no per-run output allocation or copy, which a whole
        network pays once for its outputs and never between its blocks."""
        device = "cuda" if self.settings.device == "cuda" else "cpu"
        binding = session.io_binding()
        keep = []  # the bound OrtValues must outlive the binding
        for meta, x in zip(session.get_inputs(), inputs):
            value = self._ort.OrtValue.ortvalue_from_numpy(x.numpy(), device, 0)
            binding.bind_ortvalue_input(meta.name, value)
            keep.append(value)
        probe = session.run(None, {m.name: x.numpy() for m, x in zip(session.get_inputs(), inputs)})
        for meta, y in zip(session.get_outputs(), probe):
            value = self._ort.OrtValue.ortvalue_from_shape_and_type(list(y.shape), y.dtype, device, 0)
            binding.bind_ortvalue_output(meta.name, value)
            keep.append(value)

        def run() -> None:
            session.run_with_iobinding(binding)
            if device == "cuda":
                binding.synchronize_outputs()

        run.binding = binding  # type: ignore[attr-defined]  # copy_outputs_to_cpu() reads the last run's outputs
        run.keep = keep  # type: ignore[attr-defined]
        return run

    def _samples(self, run: Callable[[], Any]) -> list[float]:
        for _ in range(self.settings.warmup):
            run()
        samples = []
        for _ in range(self.settings.repeats):
            start = time.perf_counter()
            run()
            samples.append(time.perf_counter() - start)
        return samples

    def time_many(self, items: Iterable[tuple[nn.Module, tuple[Tensor, ...]]], chunk: int = 64) -> Iterator[float]:
        """Milliseconds of each (module, inputs), in order: `passes` passes over a chunk of ready
        sessions, each timing every module (`warmup` untimed, `repeats` timed runs), then the
        `statistic` of all its timed runs. Passes spread a module's runs over time, so a slow
        moment of the machine hits one pass of it and not all."""
        s = self.settings
        batch: list[tuple[nn.Module, tuple[Tensor, ...]]] = []

        def flush() -> Iterator[float]:
            runs = [self._runner(m, x) for m, x in batch]
            samples: list[list[float]] = [[] for _ in runs]
            for _ in range(s.passes):
                for i, run in enumerate(runs):
                    samples[i] += self._samples(run)
            batch.clear()
            yield from (1e3 * reduce_samples(x, s.statistic) for x in samples)

        with _torch_threads(s.threads):
            for item in items:
                batch.append(item)
                if len(batch) >= chunk:
                    yield from flush()
            if batch:
                yield from flush()

    def time(self, module: nn.Module, inputs: tuple[Tensor, ...]) -> float:
        """Milliseconds of one forward of `module` on `inputs` (built on the CPU): the `statistic`
        of `passes` x `repeats` timed runs (each pass after `warmup` untimed ones)."""
        return list(self.time_many([(module, inputs)]))[0]

    def call_overhead(self) -> float:
        """Milliseconds of running a module that does nothing (one element in and out):
        the per-call cost a timed unit carries and a whole network pays once."""
        return self.time(_Nothing(), (torch.zeros(1),))

    def arch_module(self, arch: Arch, blocks_per_module: tuple[int, int, int],
                    seed: int = 0) -> tuple[nn.Module, tuple[Tensor, ...]]:
        """The whole static subnet `arch` (BodyNet, box decoding, RoIAlign, both heads) and
        `batch` random person crops for it."""
        net = build_static(arch, blocks_per_module, seed=seed).eval()
        h, w = arch.body.input_size
        gen = torch.Generator().manual_seed(seed)
        return net, (torch.randn(self.settings.batch, 3, h, w, generator=gen),)

    def time_arch(self, arch: Arch, blocks_per_module: tuple[int, int, int], seed: int = 0) -> float:
        """Milliseconds of the whole static subnet `arch` on `batch` random person crops."""
        return self.time(*self.arch_module(arch, blocks_per_module, seed))

    def time_archs(self, archs: Iterable[Arch], blocks_per_module: tuple[int, int, int], seed: int = 0) -> list[float]:
        """`time_arch` of each arch, their passes interleaved (`time_many`, 16 sessions at a time)."""
        return list(self.time_many((self.arch_module(a, blocks_per_module, seed) for a in archs), chunk=16))


class _Nothing(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x + 1
