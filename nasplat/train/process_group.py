"""torch.distributed for Ray Train's workers, listening on the node's address only.

Ray Train's own setup hands torch an `init_method` URL, and torch then starts rank 0's TCPStore
(the rendezvous key-value store, unauthenticated) listening on every interface (`*:<port>`): the
one socket of a nasplat run that broke "everything binds to 127.0.0.1 unless told otherwise".
`BoundTorchConfig` replaces that step: rank 0 binds the listening socket itself to the address
Ray advertises for its node (127.0.0.1 on the embedded default, the node's cluster address on a
cluster) and hands it to the TCPStore (`master_listen_fd`); the other ranks connect to it; then
`init_process_group(store=...)`. Gloo's own connections are made on the interface that carries
the worker's node address (`GLOO_SOCKET_IFNAME`, unless the user set it), so on the embedded
default they stay on the loopback too. Everything else is Ray's `_TorchBackend` as it is.
"""

from __future__ import annotations

import datetime
import fcntl
import os
import socket
import struct
from dataclasses import dataclass
from typing import Any

import ray
import ray.util
from ray.train._internal.utils import get_address_and_port
from ray.train._internal.worker_group import WorkerGroup as V1WorkerGroup
from ray.train.torch import TorchConfig
from ray.train.torch.config import _set_torch_distributed_env_vars, _TorchBackend


_SIOCGIFADDR = 0x8915  # Linux: the IPv4 address of a network interface
_listener: socket.socket | None = None  # rank 0's listening socket, kept open with its store


def interface_of(address: str) -> str | None:
    """The name of the network interface that carries the IPv4 `address` on this machine, or
    None where it cannot be told (another OS, an IPv6 address, no such interface)."""
    try:
        interfaces = socket.if_nameindex()
    except (AttributeError, OSError):
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in interfaces:
            try:
                raw = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
            except OSError:
                continue  # down, or no IPv4 address
            if socket.inet_ntoa(raw[20:24]) == address:
                return name
    return None


def listen_on(address: str, port: int) -> socket.socket:
    """A TCP socket listening on `address:port` only (not on every interface)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, port))
    sock.listen(512)
    return sock


def setup_process_group(backend: str, world_rank: int, world_size: int, address: str, port: int, timeout_s: int) -> None:
    """Join the torch.distributed process group whose rendezvous store rank 0 serves on
    `address:port` (bound to that address only). Runs in each Ray Train worker."""
    global _listener
    import torch.distributed as dist

    if "GLOO_SOCKET_IFNAME" not in os.environ:
        name = interface_of(_own_address())
        if name is not None:
            os.environ["GLOO_SOCKET_IFNAME"] = name
    if backend == "nccl":  # fail a hung collective instead of waiting for ever, as Ray does
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    timeout = datetime.timedelta(seconds=timeout_s)
    if world_rank == 0:
        _listener = listen_on(address, port)
        store = dist.TCPStore(address, port, world_size, True, timeout, master_listen_fd=_listener.fileno())
    else:
        store = dist.TCPStore(address, port, world_size, False, timeout)
    dist.init_process_group(backend=backend, store=store, rank=world_rank, world_size=world_size, timeout=timeout)


def _own_address() -> str:
    return ray.util.get_node_ip_address()


class _BoundTorchBackend(_TorchBackend):
    """Ray's torch backend, with rank 0's store bound to its node's address."""

    def on_start(self, worker_group: Any, backend_config: Any) -> None:
        backend = backend_config.backend or "gloo"
        address, port = worker_group.execute_single(0, get_address_and_port)
        if not isinstance(worker_group, V1WorkerGroup):  # Ray Train v2 sets them here (v1 later)
            worker_group.execute(_set_torch_distributed_env_vars)
        size = len(worker_group)
        ray.get([worker_group.execute_single_async(i, setup_process_group, backend=backend, world_rank=i, world_size=size,
                                                   address=address, port=port, timeout_s=backend_config.timeout_s)
                 for i in range(size)])


@dataclass
class BoundTorchConfig(TorchConfig):
    """`TorchConfig` (backend "gloo" or "nccl") whose process group `setup_process_group` sets up."""

    @property
    def backend_cls(self) -> type:
        return _BoundTorchBackend
