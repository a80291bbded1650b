"""What a bridge's interfaces are, and which of them ovslat can measure.
Pure: OVSDB rows and netlink facts in, classified interfaces out, so it is
tested on recorded data without root, OVS or a kernel."""

from __future__ import annotations

from dataclasses import dataclass, field

# OVS tunnel types -> the kernel device the kernel datapath receives them on
# (net/openvswitch/vport-*.c and lib/dpif-netlink-rtnl.c name them so).
_TUNNEL_DEVICES = {
    "vxlan": ("vxlan_sys_{port}", 4789),
    "geneve": ("genev_sys_{port}", 6081),
    "gre": ("gre_sys", None),
    "erspan": ("erspan_sys", None),
    "ip6gre": ("ip6gre_sys", None),
    "ip6erspan": ("ip6erspan_sys", None),
    "stt": ("stt_sys_{port}", 7471),
    "lisp": ("lisp_sys_{port}", 4341),
    "gtpu": ("gtp_sys_{port}", 2152),
    "bareudp": ("bareudp_sys_{port}", None),
}
_DPDK = ("dpdk", "dpdkvhostuser", "dpdkvhostuserclient", "dpdkr", "afxdp", "afxdp-nonpmd")
ROLES = ("uplink", "internal", "vm", "tunnel", "patch")


@dataclass(frozen=True)
class OvsInterface:
    """One Interface row, as OVSDB has it."""

    name: str
    type: str  # "" = system
    port: str
    ofport: int | None = None
    options: dict = field(default_factory=dict, hash=False)
    error: str | None = None


@dataclass(frozen=True)
class Link:
    """A kernel network device, as rtnetlink and sysfs describe it."""

    name: str
    ifindex: int
    kind: str  # IFLA_INFO_KIND: veth, tun, vxlan, openvswitch, ... ; "" = a NIC driver
    mtu: int
    rps: bool | None  # RPS on any RX queue


@dataclass(frozen=True)
class Member:
    """A bridge interface after classification."""

    name: str
    role: str
    ovs_type: str
    ofport: int | None
    device: str | None  # the kernel device that receives for it
    link: Link | None
    reason: str | None = None  # why it cannot be measured
    warning: str | None = None

    @property
    def measurable(self) -> bool:
        return self.reason is None


@dataclass(frozen=True)
class Bridge:
    name: str
    datapath_type: str  # "system" or "netdev"
    members: tuple[Member, ...]

    def measurable(
        self, only: set[str] | None = None, exclude: set[str] | None = None
    ) -> list[Member]:
        return [
            m
            for m in self.members
            if m.measurable and (not only or m.role in only) and m.name not in (exclude or set())
        ]


def _role(i: OvsInterface, link: Link | None) -> str:
    t = i.type
    if t == "internal":
        return "internal"
    if t in _TUNNEL_DEVICES:
        return "tunnel"
    if t == "patch":
        return "patch"
    if t in ("tap", "dpdkvhostuser", "dpdkvhostuserclient") or (link and link.kind == "tun"):
        return "vm"
    return "uplink"


def _device(i: OvsInterface, datapath: str) -> tuple[str | None, str | None]:
    """(kernel device name, reason it has none)."""
    if i.type == "patch":
        return None, "patch port: no kernel device, packets stay inside OVS"
    if i.type in _DPDK:
        return None, f"{i.type} port: DPDK/AF_XDP, packets never enter the kernel stack"
    if i.type in _TUNNEL_DEVICES:
        if datapath == "netdev":
            return None, (
                "userspace datapath decapsulates tunnels itself; the outer packets "
                "are measured on the uplink"
            )
        pattern, default_port = _TUNNEL_DEVICES[i.type]
        return pattern.format(port=i.options.get("dst_port", default_port)), None
    return i.name, None


def classify(
    bridge: str, datapath_type: str, interfaces: list[OvsInterface], links: dict[str, Link]
) -> Bridge:
    datapath = "netdev" if datapath_type == "netdev" else "system"
    members = []
    for i in interfaces:
        device, reason = _device(i, datapath)
        link = links.get(device) if device else None
        role = _role(i, link)
        if device and link is None:
            reason = f"no kernel device {device!r}" + (f" (OVS: {i.error})" if i.error else "")
        warning = None
        if link and role == "uplink" and link.kind not in ("veth", "tun") and link.rps is False:
            warning = (
                f"RPS is off on {i.name}: its packets are received synchronously and "
                "bypass enqueue_to_backlog; only enqueued packets are measured. Enable "
                f"RPS (/sys/class/net/{i.name}/queues/rx-*/rps_cpus) or watch the "
                "internal port"
            )
        if link and role == "internal" and datapath == "netdev" and link.rps is False:
            warning = (
                f"{i.name} is a tap (netdev datapath): it receives through "
                "netif_receive_skb() without a backlog unless RPS is on"
            )
        members.append(
            Member(i.name, role, i.type or "system", i.ofport, device, link, reason, warning)
        )
    return Bridge(bridge, datapath, tuple(members))
