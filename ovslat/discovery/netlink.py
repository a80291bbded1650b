"""Interface names to kernel identities, through rtnetlink (pyroute2).
The only module that imports pyroute2."""

from __future__ import annotations

import dataclasses
import os

from pyroute2 import IPRoute, NetNS

from ovslat.discovery.topology import Link
from ovslat.errors import UserError
from ovslat.model.snapshot import Interface

NETNS_DIR = "/var/run/netns"


def netns_inode(path: str = "/proc/self/ns/net") -> int:
    """The inode that names a network namespace: half of the BPF interface key."""
    return os.stat(path).st_ino


def resolve(spec: str) -> Interface:
    """IFACE, or IFACE@NETNS for an interface in a named network namespace."""
    name, _, netns = spec.partition("@")
    if not name or len(name) > 15 or "/" in name:
        raise UserError(f"bad interface name {spec!r}")
    if netns:
        path = os.path.join(NETNS_DIR, netns)
        if not os.path.exists(path):
            raise UserError(f"unknown network namespace {netns!r} in {spec!r}: see `ip netns list`")
        inode = netns_inode(path)
        with NetNS(netns) as ipr:
            found = ipr.link_lookup(ifname=name)
    else:
        inode = netns_inode()
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=name)
    if not found:
        where = f" in network namespace {netns}" if netns else ""
        raise UserError(f"unknown interface {name!r}{where}: check the name with `ip link show`")
    return Interface(
        name=name,
        ifindex=found[0],
        netns_inode=inode,
        netns=netns,
        rps=None if netns else rps_enabled(name),
    )


def rps_enabled(name: str, sysfs: str = "/sys/class/net") -> bool | None:
    """True when any RX queue of `name` (in this netns) steers packets with
    RPS (a non-zero rps_cpus mask): its packets then reach enqueue_to_backlog
    on the CPU the mask picks. None when the kernel exposes no RX queues."""
    qdir = os.path.join(sysfs, name, "queues")
    try:
        queues = [q for q in os.listdir(qdir) if q.startswith("rx-")]
    except OSError:
        return None
    masks = []
    for q in queues:
        try:
            with open(os.path.join(qdir, q, "rps_cpus")) as f:
                masks.append(f.read().strip())
        except OSError:
            continue
    if not masks:
        return None
    return any(m.replace(",", "").strip("0") for m in masks)


def resolve_all(specs: list[str]) -> list[Interface]:
    seen: dict[tuple[int, int], Interface] = {}
    for spec in specs:
        iface = resolve(spec)
        seen.setdefault((iface.netns_inode, iface.ifindex), iface)
    return [dataclasses.replace(i, slot=slot) for slot, i in enumerate(seen.values())]


def links() -> dict[str, Link]:
    """Every network device of this namespace, by name."""
    out = {}
    with IPRoute() as ipr:
        for msg in ipr.get_links():
            name = msg.get_attr("IFLA_IFNAME")
            info = msg.get_attr("IFLA_LINKINFO")
            kind = (info.get_attr("IFLA_INFO_KIND") if info else None) or ""
            out[name] = Link(
                name, msg["index"], kind, msg.get_attr("IFLA_MTU") or 0, rps_enabled(name)
            )
    return out
