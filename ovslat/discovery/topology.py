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
_DPDK = ("dpdk", "dpdkr", "afxdp", "afxdp-nonpmd")
_VHOST_USER = ("dpdkvhostuser", "dpdkvhostuserclient")
ROLES = ("uplink", "internal", "pod", "vm", "tunnel", "underlay", "patch")
# Tunnels whose packets ovslat measures by their inner packet (bpf/ovslat.bpf.c:
# tunnel_inner), by OVS type, and their IANA ports (the kernel datapath's too).
PARSED_TUNNELS = ("vxlan", "geneve")
IANA_TUNNEL_PORTS: dict[int, str] = {
    port: t for t in PARSED_TUNNELS if (port := _TUNNEL_DEVICES[t][1]) is not None
}
# An Interface row's external_ids:ovslat_role overrides the role ovslat infers:
# for a veth that plays a NIC (a router's namespace on the other end), say.
ROLE_OVERRIDE = "ovslat_role"


@dataclass(frozen=True)
class OvsInterface:
    """One Interface row, as OVSDB has it."""

    name: str
    type: str  # "" = system
    port: str
    ofport: int | None = None
    options: dict = field(default_factory=dict, hash=False)
    error: str | None = None
    external_ids: dict = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Link:
    """A kernel network device, as rtnetlink and sysfs describe it."""

    name: str
    ifindex: int
    kind: str  # IFLA_INFO_KIND: veth, tun, vxlan, openvswitch, ... ; "" = a NIC driver
    mtu: int
    rps: bool | None  # RPS on any RX queue
    # a veth's other end (IFLA_LINK) and, when it is in another network
    # namespace, that namespace's id as this one knows it (IFLA_LINK_NETNSID)
    peer_ifindex: int | None = None
    peer_netnsid: int | None = None
    # receives through a NAPI poll and GRO (a NIC's driver, a veth running
    # XDP): without RPS as GRO lists, never through a backlog
    napi: bool = False


def receive_path(link: Link) -> str:
    """How `link` receives, and so what ovslat measures on it."""
    if link.napi and link.rps:
        return (
            "NAPI + GRO, RPS on: GRO's lists go through enqueue_to_backlog (S1 -> S2 -> S3; "
            "S1 is GRO's entry with the tracepoint backend)"
        )
    if link.napi:
        return (
            "NAPI + GRO, RPS off: received in place from GRO's lists, no backlog "
            "(synchronous receives: S2 -> S3, hops start at S2)"
        )
    if link.kind == "tun":
        return "netif_receive_skb(): in place unless RPS is on"
    if link.kind == "veth":
        return "netif_rx() to a backlog (S1 -> S2 -> S3)"
    return ""


@dataclass(frozen=True)
class Peer:
    """A pod's end of a veth: the interface in the pod's network namespace."""

    name: str
    ifindex: int
    netns: str  # a name under /var/run/netns, else "pid:N" (found through a process)
    netns_path: str
    netns_inode: int


def workload(external_ids: dict) -> str:
    """Who an interface belongs to, from what the orchestrator wrote into its
    OVSDB row, "" when none of them did:
      Antrea        pod-namespace, pod-name         -> NAMESPACE/POD
      kube-ovn      pod_namespace, pod_name         -> NAMESPACE/POD
      OVN-Kubernetes iface-id NAMESPACE_POD (with sandbox) -> NAMESPACE/POD
      OpenStack     vm-uuid (nova, os-vif)          -> vm:UUID
    Kubernetes names never contain "_", so OVN-Kubernetes' iface-id splits at
    the first one; OpenStack's iface-id is a Neutron port UUID, not a name."""
    e = external_ids
    for ns_key, name_key in (("pod-namespace", "pod-name"), ("pod_namespace", "pod_name")):
        if e.get(ns_key) and e.get(name_key):
            return f"{e[ns_key]}/{e[name_key]}"
    iface_id = e.get("iface-id", "")
    if e.get("sandbox") and "_" in iface_id:
        ns, _, pod = iface_id.partition("_")
        return f"{ns}/{pod}"
    if e.get("vm-uuid"):
        return f"vm:{e['vm-uuid']}"
    return ""


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
    workload: str = ""  # workload() of its external_ids
    peer: Peer | None = None  # role pod: the pod's end, when its namespace was found
    tunnels: tuple[str, ...] = ()  # role underlay: the tunnel ports whose packets it carries

    @property
    def measurable(self) -> bool:
        return self.reason is None


@dataclass(frozen=True)
class Bridge:
    name: str
    datapath_type: str  # "system" or "netdev"
    members: tuple[Member, ...]
    # (UDP port, OVS type) of its VXLAN and Geneve tunnels: parsed to the inner packet
    tunnel_ports: tuple[tuple[int, str], ...] = ()

    def measurable(
        self,
        only: set[str] | None = None,
        exclude: set[str] | None = None,
        workloads: set[str] | None = None,
    ) -> list[Member]:
        """workloads: only these of the members that belong to a workload
        (the others, an uplink or an internal port, stay)."""
        return [
            m
            for m in self.members
            if m.measurable
            and (not only or m.role in only)
            and m.name not in (exclude or set())
            and (not workloads or not m.workload or m.workload in workloads)
        ]

    @property
    def workloads(self) -> list[str]:
        return sorted({m.workload for m in self.members if m.workload})


def _role(i: OvsInterface, link: Link | None) -> str:
    t = i.type
    if i.external_ids.get(ROLE_OVERRIDE) in ROLES:
        return i.external_ids[ROLE_OVERRIDE]
    if t == "internal":
        return "internal"
    if t in _TUNNEL_DEVICES:
        return "tunnel"
    if t == "patch":
        return "patch"
    if t in ("tap", *_VHOST_USER) or (link and link.kind == "tun"):
        return "vm"
    if link and link.kind == "veth" and link.peer_netnsid is not None:
        return "pod"  # the host end of a veth whose other end is in another namespace
    if i.external_ids.get("vm-uuid"):
        return "vm"
    return "uplink"


def _device(i: OvsInterface, datapath: str) -> tuple[str | None, str | None]:
    """(kernel device name, reason it has none)."""
    if i.type == "patch":
        return None, "patch port: no kernel device, packets stay inside OVS"
    if i.type in _DPDK:
        return None, f"{i.type} port: DPDK/AF_XDP, packets never enter the kernel stack"
    if i.type in _VHOST_USER:
        return None, (
            f"{i.type} port: OVS-DPDK copies the VM's packets to and from its virtio rings "
            "in user space, never through the kernel's receive path"
        )
    if i.type in _TUNNEL_DEVICES:
        if datapath == "netdev":
            return None, (
                "userspace datapath decapsulates tunnels itself; the outer packets "
                "are measured on the tunnel's underlay"
            )
        pattern, default_port = _TUNNEL_DEVICES[i.type]
        return pattern.format(port=i.options.get("dst_port", default_port)), None
    return i.name, None


def tunnel_port(i: OvsInterface) -> int | None:
    """The UDP port a tunnel Interface receives on (options:dst_port, else its
    type's IANA port); None for a tunnel without one, or no tunnel."""
    if i.type not in _TUNNEL_DEVICES:
        return None
    port = i.options.get("dst_port", _TUNNEL_DEVICES[i.type][1])
    try:
        return None if port is None else int(port)
    except ValueError:
        return None


def underlay_address(i: OvsInterface) -> tuple[str, str] | None:
    """How to find a tunnel's underlay device: ("route", remote_ip) for the
    device the route to its remote end leaves through, ("local", local_ip) for
    the device holding its local end (remote_ip=flow: Antrea, kube-ovn, OVN's
    flow-based tunnels), None when neither is known."""
    if i.type not in _TUNNEL_DEVICES:
        return None
    remote, local = i.options.get("remote_ip", ""), i.options.get("local_ip", "")
    if remote and remote != "flow":
        return "route", remote
    if local and local != "flow":
        return "local", local
    return None


def classify(
    bridge: str,
    datapath_type: str,
    interfaces: list[OvsInterface],
    links: dict[str, Link],
    peers: dict[str, Peer] | None = None,
    underlays: dict[str, tuple[str, ...]] | None = None,
) -> Bridge:
    """peers: the pod end of each host veth whose namespace was found, by the
    host end's name. underlays: device -> the tunnel ports whose outer
    packets it receives (found by resolve(): routes and other bridges)."""
    datapath = "netdev" if datapath_type == "netdev" else "system"
    members = []
    for i in interfaces:
        device, reason = _device(i, datapath)
        link = links.get(device) if device else None
        role = _role(i, link)
        if device and link is None:
            reason = f"no kernel device {device!r}" + (f" (OVS: {i.error})" if i.error else "")
        warning = None
        if link and role == "uplink" and link.napi and link.rps is False:
            warning = (
                f"RPS is off on {i.name}: it receives GRO's lists in place, without a "
                "backlog, so its packets are synchronous receives (received_sync: S2 -> S3 "
                "measured and hops onward, no S1 -> S2); to measure a backlog's wait enable "
                f"RPS (/sys/class/net/{i.name}/queues/rx-*/rps_cpus)"
            )
        if link and role == "internal" and datapath == "netdev" and link.rps is False:
            warning = (
                f"{i.name} is a tap (netdev datapath): it receives through "
                "netif_receive_skb() without a backlog unless RPS is on: its packets are "
                "synchronous receives (received_sync: S2 -> S3 measured, no S1 -> S2)"
            )
        peer = (peers or {}).get(device or "") if role == "pod" else None
        if role == "pod" and link and link.peer_netnsid is not None and peer is None:
            warning = (
                f"the pod end of {i.name} is in a network namespace ovslat cannot open "
                f"(netns id {link.peer_netnsid}: no /var/run/netns entry or process found); "
                "only the host end is measured"
            )
        members.append(
            Member(
                i.name,
                role,
                i.type or "system",
                i.ofport,
                device,
                link,
                reason,
                warning,
                workload(i.external_ids),
                peer,
            )
        )
    on_bridge = {m.device for m in members}
    for device, tunnels in sorted((underlays or {}).items()):
        if device in on_bridge:  # a port of this bridge: measured as what it is
            continue
        link = links.get(device)
        members.append(
            Member(
                device,
                "underlay",
                "underlay",
                None,
                device,
                link,
                None if link else f"no kernel device {device!r}",
                tunnels=tunnels,
            )
        )
    ports: dict[int, str] = {}
    for i in interfaces:
        port = tunnel_port(i)
        if port is not None and i.type in PARSED_TUNNELS:
            ports.setdefault(port, i.type)
    return Bridge(bridge, datapath, tuple(members), tuple(sorted(ports.items())))
