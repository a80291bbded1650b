"""Interface names to kernel identities, through rtnetlink (pyroute2).
The only module that imports pyroute2."""

from __future__ import annotations

import dataclasses
import glob
import os
import select

from pyroute2 import IPRoute, NetNS
from pyroute2.netlink import NLM_F_REQUEST
from pyroute2.netlink.rtnl import RTM_GETLINK, RTMGRP_LINK
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from ovslat.discovery.topology import Link, Peer
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


class LinkChanges:
    """Whether a link of ovslat's own network namespace was added, changed or
    deleted since the last call, from rtnetlink's link multicast group: the
    check of thousands of named interfaces for deletion then runs when the
    kernel said something changed, not every second. Its first answer is
    True (nothing was known before it), and so is every answer once the
    socket is gone or overflowed: a missed message must not hide a deletion."""

    def __init__(self) -> None:
        self._first = True
        try:
            self._ipr: IPRoute | None = IPRoute()
            self._ipr.bind(groups=RTMGRP_LINK)
        except OSError:
            self._ipr = None

    def changed(self) -> bool:
        if self._ipr is None:
            return True
        seen, self._first = self._first, False
        try:
            while select.select([self._ipr], [], [], 0)[0]:
                self._ipr.get()
                seen = True
        except OSError:  # ENOBUFS: messages were lost
            return True
        return seen

    def close(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None


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
            peer = msg.get_attr("IFLA_LINK") if kind == "veth" else None
            out[name] = Link(
                name,
                msg["index"],
                kind,
                msg.get_attr("IFLA_MTU") or 0,
                rps_enabled(name),
                peer,
                msg.get_attr("IFLA_LINK_NETNSID") if peer else None,
                _napi(name, kind, msg),
            )
    return out


def route_device(addr: str) -> str | None:
    """The device the kernel would send to `addr` through (ip route get):
    a tunnel's underlay. None when there is no route or `addr` is no address."""
    try:
        with IPRoute() as ipr:
            routes = ipr.route("get", dst=addr)
            oif = routes[0].get_attr("RTA_OIF") if routes else None
            if oif is None:
                return None
            found = ipr.link("get", index=oif)
    except Exception:  # pyroute2: NetlinkError (no route), ValueError (not an address)
        return None
    return found[0].get_attr("IFLA_IFNAME") if found else None


def address_device(addr: str) -> str | None:
    """The device holding local address `addr` (a tunnel's local_ip)."""
    try:
        with IPRoute() as ipr:
            for msg in ipr.get_addr():
                if msg.get_attr("IFA_ADDRESS") == addr or msg.get_attr("IFA_LOCAL") == addr:
                    return ipr.link("get", index=msg["index"])[0].get_attr("IFLA_IFNAME")
    except Exception:
        return None
    return None


def _napi(name: str, kind: str, msg) -> bool:
    """A NIC's driver (a device with a bus device behind it) polls with NAPI
    and hands packets to GRO; so does a veth with an XDP program in driver
    mode (veth_poll), where one without receives through netif_rx()."""
    if not kind:
        return os.path.exists(f"/sys/class/net/{name}/device")
    if kind == "veth":
        xdp = msg.get_attr("IFLA_XDP")
        return bool(xdp and xdp.get_attr("IFLA_XDP_DRV_PROG_ID"))
    return False


def set_xdp(name: str, prog_fd: int, netns: str | None = None) -> None:
    """Attach an XDP program (the testbed's NIC-like veth): in driver mode
    where the driver has one, as veth does; the device keeps it until it is
    deleted."""
    with NetNS(netns) if netns else IPRoute() as ipr:
        (index,) = ipr.link_lookup(ifname=name)
        ipr.link(
            "set",
            index=index,
            xdp={"attrs": [("IFLA_XDP_FD", prog_fd)]},
        )


# Where network namespaces are bound to files: ip-netns and the CNI plugins'
# (containerd, CRI-O) /var/run/netns, Docker's own directory.
NETNS_DIRS = ("/var/run/netns", "/var/run/docker/netns")


def _namespace_files(hints: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    """(display name, path) of every network namespace this host can name:
    the bound ones, then those only a process holds (a pod's sandbox whose
    runtime binds nothing), one path per namespace."""
    out = [(os.path.basename(p), p) for p in hints]
    for d in NETNS_DIRS:
        out += [(os.path.basename(p), p) for p in sorted(glob.glob(f"{d}/*"))]
    for p in sorted(glob.glob("/proc/[0-9]*/ns/net"), key=lambda p: int(p.split("/")[2])):
        out.append((f"pid:{p.split('/')[2]}", p))
    return out


def peers(links: dict[str, Link], hints: tuple[str, ...] = ()) -> dict[str, Peer]:
    """The other end of each veth in `links` whose peer lives in another
    namespace, by the host end's name: the namespace found by asking the
    kernel for each candidate namespace's id here (RTM_GETNSID), the peer's
    name asked in that namespace by id (RTM_GETLINK, IFLA_TARGET_NETNSID)."""
    wanted = {lk.peer_netnsid for lk in links.values() if lk.peer_netnsid is not None}
    if not wanted:
        return {}
    own = netns_inode()
    found: dict[int, tuple[str, str, int]] = {}  # nsid -> (name, path, inode)
    seen: set[int] = {own}
    with IPRoute() as ipr:
        for name, path in _namespace_files(hints):
            if wanted <= found.keys():
                break
            try:
                inode = os.stat(path).st_ino
                if inode in seen:
                    continue
                seen.add(inode)
                fd = os.open(path, os.O_RDONLY)
            except OSError:
                continue  # the process ended, or a stale bind
            try:
                nsid = (ipr.get_netnsid(fd=fd) or {}).get("nsid", -1)
            except Exception:  # noqa: BLE001 - pyroute2 raises NetlinkError and others
                nsid = -1
            finally:
                os.close(fd)
            if nsid is not None and nsid >= 0 and nsid in wanted:
                found[nsid] = (name, path, inode)
        out = {}
        for host, lk in links.items():
            if lk.peer_netnsid not in found or not lk.peer_ifindex:
                continue
            name, path, inode = found[lk.peer_netnsid]
            msg = ifinfmsg()
            msg["index"] = lk.peer_ifindex
            msg["attrs"] = [("IFLA_IF_NETNSID", lk.peer_netnsid)]  # = IFLA_TARGET_NETNSID
            try:
                (reply,) = ipr.nlm_request(msg, msg_type=RTM_GETLINK, msg_flags=NLM_F_REQUEST)
            except Exception:  # noqa: BLE001 - gone since, or a kernel < 4.20
                continue
            out[host] = Peer(reply.get_attr("IFLA_IFNAME"), lk.peer_ifindex, name, path, inode)
    return out
