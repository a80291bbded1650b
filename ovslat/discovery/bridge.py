"""A bridge's measurable interfaces, from OVSDB (what is on the bridge) and
netlink (which kernel device receives for it), kept current while watching."""

from __future__ import annotations

import time

from ovslat.discovery import netlink
from ovslat.discovery.ovsdb import Ovsdb
from ovslat.discovery.topology import ROLES, Bridge, OvsInterface, classify, underlay_address
from ovslat.errors import UserError
from ovslat.model.snapshot import Interface

# Orchestrators that record the pod's namespace file in external_ids
# (kube-ovn: pod_netns, Antrea: net-ns): tried first when looking for one.
_NETNS_HINTS = ("pod_netns", "net-ns")


PEER_RETRY_S = 5.0


def resolve(db: Ovsdb, name: str) -> Bridge:
    """Bridge `name` as OVSDB and the kernel have it now, its pods' own ends found."""
    datapath, interfaces = db.bridge(name)
    links = netlink.links()
    names = {i.name for i in interfaces}
    hints = tuple(
        i.external_ids[k] for i in interfaces for k in _NETNS_HINTS if i.external_ids.get(k)
    )
    bridge_links = {n: lk for n, lk in links.items() if n in names}
    peers = netlink.peers(bridge_links, hints)
    return classify(name, datapath, interfaces, links, peers, underlays(db, interfaces))


def underlays(db: Ovsdb, interfaces: list[OvsInterface]) -> dict[str, tuple[str, ...]]:
    """device -> the bridge's tunnel ports whose outer packets it receives:
    the device the route to a tunnel's remote end leaves through (or that
    holds its local_ip) and, when that device is an OVS bridge's internal
    port (the userspace datapath's tunnel endpoint, or br-ex on the kernel
    datapath), that bridge's own system ports, the NICs, too."""
    out: dict[str, list[str]] = {}
    internal = None
    for i in interfaces:
        how = underlay_address(i)
        if how is None:
            continue
        kind, addr = how
        device = netlink.route_device(addr) if kind == "route" else netlink.address_device(addr)
        if device is None or device == "lo":
            continue
        if internal is None:  # internal port -> its bridge's system ports, once
            internal = {}
            for br in db.bridges():
                members = db.bridge(br)[1]
                nics = [m.name for m in members if m.type in ("", "system")]
                for m in members:
                    if m.type == "internal":
                        internal[m.name] = nics
        for d in (device, *internal.get(device, ())):
            out.setdefault(d, []).append(i.name)
    return {d: tuple(sorted(set(t))) for d, t in out.items()}


class BridgeSource:
    def __init__(
        self,
        bridge: str,
        db: str,
        only: set[str] | None = None,
        exclude: set[str] | None = None,
        workloads: set[str] | None = None,
    ):
        bad = (only or set()) - set(ROLES)
        if bad:
            raise UserError(f"unknown role {sorted(bad)[0]!r} for --only: use {', '.join(ROLES)}")
        self.name = bridge
        self.only, self.exclude, self.workloads = only, exclude, workloads
        self._db = Ovsdb(db)
        self._netns = netlink.netns_inode()
        self._retry_at = 0.0
        self.current = self._resolve()
        missing = (workloads or set()) - set(self.current.workloads)
        if missing:
            self.close()
            known = ", ".join(self.current.workloads) or "none"
            raise UserError(
                f"pod {sorted(missing)[0]!r} not found on bridge {bridge} (workloads there: "
                f"{known}); name it NAMESPACE/POD as `ovslat discover {bridge}` shows it"
            )

    def _resolve(self) -> Bridge:
        return resolve(self._db, self.name)

    def interfaces(self) -> list[Interface]:
        """Measurable members as Interfaces (slot assigned by the caller); a
        pod's own end, in its namespace, after its host end."""
        out = []
        for m in self.current.measurable(self.only, self.exclude, self.workloads):
            # measurable: classify() found its kernel device and that device's link
            assert m.device is not None and m.link is not None
            out.append(
                Interface(
                    m.device,
                    m.link.ifindex,
                    self._netns,
                    "",
                    0,
                    m.link.rps,
                    m.role,
                    self.name,
                    m.workload,
                )
            )
            if m.peer:
                p = m.peer
                out.append(
                    Interface(
                        p.name,
                        p.ifindex,
                        p.netns_inode,
                        p.netns,
                        0,
                        None,
                        m.role,
                        self.name,
                        m.workload,
                        p.netns_path,
                    )
                )
        return out

    def refresh(self) -> bool:
        """Pick up OVSDB changes (and kernel devices or pod namespaces that
        appeared since); True when the measurable set may have changed."""
        changed = self._db.poll()
        pending = any(
            (not m.measurable and m.device)
            or (m.role == "pod" and m.link and m.link.peer_netnsid is not None and not m.peer)
            for m in self.current.members
        )
        # a pod namespace not found is looked for again (a scan of /proc) at
        # most every PEER_RETRY_S, not at every poll
        if pending and not changed and time.monotonic() < self._retry_at:
            return False
        self._retry_at = time.monotonic() + PEER_RETRY_S
        if not (changed or pending):
            return False
        try:
            self.current = self._resolve()
        except UserError:  # the bridge itself was deleted: keep measuring what is left
            return False
        return True

    def close(self) -> None:
        self._db.close()


def check_measurable(src: BridgeSource) -> None:
    if not src.interfaces():
        reasons = "; ".join(f"{m.name}: {m.reason or 'excluded'}" for m in src.current.members)
        raise UserError(
            f"bridge {src.name} has nothing measurable"
            + (f" ({reasons})" if reasons else " (no ports)")
        )
