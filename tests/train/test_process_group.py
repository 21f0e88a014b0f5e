"""Ray Train's process group listens on the node's address only: rank 0's rendezvous store and
gloo's connections on 127.0.0.1 on the embedded default, never on every interface."""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path

import pytest

from nasplat.train.process_group import interface_of, listen_on


def _listening(pid: int) -> set[str]:
    """The local addresses that process `pid` listens on with TCP (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table, width in (("tcp", 8), ("tcp6", 32)):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A" or fields[9] not in inodes:  # 0A: LISTEN
                continue
            hex_addr = fields[1].split(":")[0]
            # each 32-bit word is in the host's (little-endian) byte order
            raw = b"".join(bytes.fromhex(hex_addr[i:i + 8])[::-1] for i in range(0, width, 8))
            address = ipaddress.ip_address(raw)
            mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1 is 127.0.0.1
            found.add(str(mapped or address))
    return found


def _report_listeners(config: dict) -> None:
    import torch
    import torch.distributed as dist

    total = torch.ones(1)
    dist.all_reduce(total)  # gloo's pairs are connected by now
    found = {"listening": sorted(_listening(os.getpid())), "sum": float(total.item())}
    Path(config["out"], f"rank{dist.get_rank()}.json").write_text(json.dumps(found))


def test_the_interface_of_the_loopback_address_is_found():
    if not hasattr(os, "sched_getaffinity") or not Path("/proc/net").exists():
        pytest.skip("Linux only")
    assert interface_of("127.0.0.1") is not None
    assert interface_of("192.0.2.254") is None  # TEST-NET-1: on no interface here


def test_listen_on_binds_the_given_address_only():
    sock = listen_on("127.0.0.1", 0)
    try:
        assert _listening(os.getpid()) >= {"127.0.0.1"}
        assert "0.0.0.0" not in _listening(os.getpid())
    finally:
        sock.close()


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_workers_listen_on_the_loopback_only(tmp_path):
    from tests.conftest import fit_torch_trainer

    fit_torch_trainer(_report_listeners, {"out": str(tmp_path)}, tmp_path / "ray", num_workers=2)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["sum"] for r in ranks] == [2.0, 2.0]  # both ranks took part
    # rank 0 serves the store; each rank's gloo pairs listen too: all of it on the loopback
    assert ranks[0]["listening"], ranks
    for r in ranks:
        assert set(r["listening"]) <= {"127.0.0.1"}, ranks
