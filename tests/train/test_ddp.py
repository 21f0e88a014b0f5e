"""A 2-process sandwich step's averaged gradients equal one process's on the concatenated batch."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from nasplat.train.ddp import allreduce_gradients, broadcast_module


class _TwoPath(nn.Module):
    """Two 'subnets' sharing a trunk: member 0 uses head_a, member 1 uses head_b only, so a
    parameter is used by one sandwich member only (what breaks DDP's reducer)."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Linear(6, 8)
        self.head_a = nn.Linear(8, 2)
        self.head_b = nn.Linear(8, 2)
        self.unused = nn.Linear(2, 2)

    def forward(self, x: torch.Tensor, member: int) -> torch.Tensor:
        h = torch.relu(self.trunk(x))
        return (self.head_a if member == 0 else self.head_b)(h)


def _sandwich_grads(model: _TwoPath, x: torch.Tensor, y: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    for member in (0, 1):
        loss = ((model(x, member) - y) ** 2).mean()
        loss.backward()


def _worker(rank: int, world: int, port: int, x: torch.Tensor, y: torch.Tensor, out: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(100 + rank)  # different init per rank: broadcast must fix it
        model = _TwoPath()
        broadcast_module(model)
        shard = x.shape[0] // world
        _sandwich_grads(model, x[rank * shard : (rank + 1) * shard], y[rank * shard : (rank + 1) * shard])
        calls = allreduce_gradients(model.parameters(), bucket_bytes=64)  # tiny buckets: several calls
        if rank == 0:
            torch.save(
                {
                    "state": model.state_dict(),
                    "grads": {n: p.grad for n, p in model.named_parameters() if p.grad is not None},
                    "none": [n for n, p in model.named_parameters() if p.grad is None],
                    "calls": calls,
                },
                out,
            )
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(120)
def test_two_process_step_equals_one_process_on_the_concatenated_batch(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(8, 6)
    y = torch.randn(8, 2)
    out = str(tmp_path / "rank0.pt")
    mp.start_processes(_worker, args=(2, _free_port(), x, y, out), nprocs=2, join=True, start_method="spawn")
    result = torch.load(out, weights_only=True)

    single = _TwoPath()
    single.load_state_dict(result["state"])  # rank 0's (broadcast) weights
    _sandwich_grads(single, x, y)
    for name, p in single.named_parameters():
        if p.grad is None:
            assert name in result["none"]
        else:
            torch.testing.assert_close(result["grads"][name], p.grad, rtol=1e-5, atol=1e-6)
    assert sorted(result["none"]) == ["unused.bias", "unused.weight"]
    assert result["calls"] > 1


def _loop_worker(rank: int, world: int, port: int, experiment_path: str, out: str) -> None:
    """One rank of the real supernet loop (what a Ray Train worker runs, without Ray)."""
    from nasplat.config import load_experiment
    from nasplat.train.loop import SupernetTrainer, WorkerContext

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        trainer = SupernetTrainer(load_experiment(experiment_path), WorkerContext(rank=rank, world_size=world))
        trainer.run()
        torch.save({"step": trainer.step, "params": {n: p.detach().clone() for n, p in trainer.net.named_parameters()},
                    "buffers": {n: b.detach().clone() for n, b in trainer.net.named_buffers()}}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(600)
def test_two_ranks_of_the_supernet_loop_keep_identical_parameters(tmp_path, tiny_experiment):
    """After several sandwich steps on different shards, both ranks hold the same parameters
    (gradients are all-reduced); their BN running statistics differ (each rank's own batches),
    which shows the shards really differed."""
    path = tiny_experiment(tmp_path / "ddp", num_workers=2)
    out = str(tmp_path / "params")
    mp.start_processes(_loop_worker, args=(2, _free_port(), str(path), out), nprocs=2, join=True, start_method="spawn")
    r0, r1 = (torch.load(f"{out}.{r}", weights_only=True) for r in (0, 1))
    assert r0["step"] == r1["step"] >= 3
    assert r0["params"].keys() == r1["params"].keys()
    for name in r0["params"]:
        torch.testing.assert_close(r0["params"][name], r1["params"][name], rtol=0, atol=0, msg=name)
    means = [n for n in r0["buffers"] if n.endswith("running_mean")]
    assert any(not torch.equal(r0["buffers"][n], r1["buffers"][n]) for n in means)
