"""Self-contained test hosts: network namespaces, veths, a private OVS
(ovsdb-server + ovs-vswitchd of our own) and traffic of exact, bounded size.

Used by the demo, the tests and the benchmark. Builds topology only; it never
reads OVS state back (discovery does that, through OVSDB). Addresses come from
198.18.0.0/15 and traffic never leaves the namespaces it creates.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from ovslat.errors import UserError

OVS_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"


def require_root() -> None:
    if os.geteuid() != 0:
        raise UserError("building test hosts needs root: run it with sudo")


def sh(*argv: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, capture_output=True, text=True, **kw)


def sysctl(key: str, value: str, netns: str | None = None) -> None:
    prefix = ("ip", "netns", "exec", netns) if netns else ()
    sh(*prefix, "sysctl", "-qw", f"{key}={value}")


def wait_until(pred, timeout_s: float = 10.0, what: str = "condition") -> None:
    """Poll pred() with a short backoff: a readiness check, not a fixed sleep."""
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout_s}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


class Netns:
    """A named network namespace with lo up; deleted (with everything in it) on exit."""

    def __init__(self, label: str):
        self.name = f"ovt-{label}-{secrets.token_hex(3)}"
        self.veths: list[str] = []  # root-side ends of veths into this namespace

    def __enter__(self) -> Netns:
        sh("ip", "netns", "add", self.name)
        self.run("ip", "link", "set", "lo", "up")
        return self

    def __exit__(self, *exc) -> None:
        # Deleting a namespace destroys its devices later, from a workqueue;
        # delete the veths now, so that their names are free when we return.
        for name in self.veths:
            sh("ip", "link", "del", name, check=False)
        sh("ip", "netns", "del", self.name, check=False)

    def argv(self, *argv: str, cpu: int | None = None) -> list[str]:
        pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
        return [*pin, "ip", "netns", "exec", self.name, *argv]

    def run(self, *argv: str, cpu: int | None = None, check: bool = True, **kw):
        return sh(*self.argv(*argv, cpu=cpu), check=check, **kw)


@dataclass(frozen=True)
class Veth:
    root: str
    peer: str
    netns: str


def _no_ipv6(ifname: str, netns: str | None = None) -> None:
    # Router solicitations, MLD and DAD would add packets nobody sent on purpose.
    sysctl(f"net.ipv6.conf.{ifname}.disable_ipv6", "1", netns)


def ipv6(ifname: str, addr: str | None = None, ns: Netns | None = None, prefix: int = 64) -> None:
    """IPv6 on an interface the testbed made (IPv6 off), for a test about it:
    no DAD and no router solicitations (packets nobody sent on purpose, and
    DAD would hold the address back); `addr` (2001:2::/48) added if given.
    MLD reports for its multicast groups remain: ICMPv6, which the tests'
    filters leave out or count."""
    netns = ns.name if ns else None
    for key, value in (("accept_dad", "0"), ("router_solicitations", "0"), ("accept_ra", "0")):
        sysctl(f"net.ipv6.conf.{ifname}.{key}", value, netns)
    sysctl(f"net.ipv6.conf.{ifname}.disable_ipv6", "0", netns)
    if addr:
        _run(ns, "ip", "-6", "addr", "add", f"{addr}/{prefix}", "dev", ifname, "nodad")


def neighbour(ifname: str, addr: str, mac: str, ns: Netns | None = None) -> None:
    """A permanent neighbour entry: no ARP or neighbour discovery for `addr`,
    so a test's packets are the only ones (an IPv6 test's exact counts)."""
    _run(ns, "ip", "neigh", "replace", addr, "lladdr", mac, "dev", ifname, "nud", "permanent")


def _run(ns: Netns | None, *argv: str) -> None:
    if ns:
        ns.run(*argv)
    else:
        sh(*argv)


def veth(
    root_name: str,
    ns: Netns,
    peer_name: str,
    root_addr: str | None,
    peer_addr: str | None,
    prefix: int = 24,
) -> Veth:
    """A veth pair, one end here and one in `ns`, both up, IPv6 off. It goes
    away with the namespace (deleting one end deletes the pair)."""
    sh("ip", "link", "add", root_name, "type", "veth", "peer", "name", peer_name, "netns", ns.name)
    ns.veths.append(root_name)
    _no_ipv6(root_name)
    _no_ipv6(peer_name, ns.name)
    if root_addr:
        sh("ip", "addr", "add", f"{root_addr}/{prefix}", "dev", root_name)
    else:
        # An end without an address is a bridge uplink. Linux would still answer
        # ARP on it for addresses of other interfaces (the bridge port's), and
        # the client's packets would then go to this veth's MAC, around OVS.
        sysctl(f"net.ipv4.conf.{root_name}.arp_ignore", "8")
    if peer_addr:
        ns.run("ip", "addr", "add", f"{peer_addr}/{prefix}", "dev", peer_name)
    sh("ip", "link", "set", root_name, "up")
    ns.run("ip", "link", "set", peer_name, "up")
    return Veth(root_name, peer_name, ns.name)


# add_port setting for a veth that plays a NIC: its other end is in a
# namespace, which would make it a pod (README, Roles).
AS_UPLINK = "external_ids:ovslat_role=uplink"


def pod(root_name: str, ns: Netns, addr: str, prefix: int = 24) -> Veth:
    """A pod as a CNI plugs one: a veth whose host end (no address, for a
    bridge) is here and whose other end is eth0 in the pod's namespace."""
    return veth(root_name, ns, "eth0", None, addr, prefix)


def external_ids(ids: dict[str, str]) -> list[str]:
    """OVSDB settings for add_port: an orchestrator's external_ids."""
    return [f'external_ids:{k}="{v}"' for k, v in ids.items()]


def address_port(ifname: str, addr: str, prefix: int = 24) -> None:
    """Give an interface here (e.g. a bridge's internal port) an address, IPv6 off, up."""
    _no_ipv6(ifname)
    sh("ip", "addr", "add", f"{addr}/{prefix}", "dev", ifname)
    sh("ip", "link", "set", ifname, "up")


_BPF_PROG_LOAD, _BPF_PROG_TYPE_XDP, _SYS_BPF = 5, 6, 321  # x86_64
# r0 = XDP_PASS (2); exit
_XDP_PASS = bytes.fromhex("b700000002000000" "9500000000000000")


def nic_like(ifname: str, netns: str | None = None) -> None:
    """Make a veth receive like a physical NIC: with an XDP program (XDP_PASS)
    in driver mode its receive runs in a NAPI poll (veth_poll) and hands every
    packet to GRO (napi_gro_receive), instead of netif_rx() to a backlog; the
    sender's end stops offering GSO, so GRO really merges TCP."""
    import ctypes
    import struct

    from ovslat.discovery.netlink import set_xdp

    libc = ctypes.CDLL(None, use_errno=True)
    insns = ctypes.create_string_buffer(_XDP_PASS, len(_XDP_PASS))
    license_ = ctypes.create_string_buffer(b"GPL")
    # union bpf_attr for BPF_PROG_LOAD: prog_type, insn_cnt, insns, license
    attr = struct.pack(
        "<IIQQ", _BPF_PROG_TYPE_XDP, 2, ctypes.addressof(insns), ctypes.addressof(license_)
    ) + bytes(96)
    buf = ctypes.create_string_buffer(attr, len(attr))
    fd = libc.syscall(_SYS_BPF, _BPF_PROG_LOAD, buf, len(attr))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"loading an XDP_PASS program: {os.strerror(err)}")
    try:
        set_xdp(ifname, fd, netns)
    finally:
        os.close(fd)  # the device holds the program now
    # GRO itself is off on a new veth (dev_gro_receive passes every packet on)
    argv = (sys.executable, "-c", _GRO_ON, ifname)
    sh(*(("ip", "netns", "exec", netns, *argv) if netns else argv))


# ETHTOOL_SGRO through SIOCETHTOOL, in the device's namespace (no ethtool binary needed)
_GRO_ON = """
import ctypes, fcntl, socket, struct, sys
value = ctypes.create_string_buffer(struct.pack("<II", 0x2C, 1))  # ETHTOOL_SGRO, on
ifreq = struct.pack("16sQ", sys.argv[1].encode(), ctypes.addressof(value)) + bytes(16)
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
    fcntl.ioctl(s, 0x8946, ifreq)  # SIOCETHTOOL
"""


@contextlib.contextmanager
def rps(ifname: str, cpumask: str, ns: Netns | None = None):
    """Receive Packet Steering on every RX queue of ifname (in `ns`, whose own
    sysfs `ip netns exec` mounts); restored on exit."""
    script = (
        'cd "/sys/class/net/$1/queues" || exit 1; for q in rx-*; do '
        'echo "$q $(cat $q/rps_cpus)"; [ -n "$2" ] && echo "$2" > "$q/rps_cpus"; done'
    )

    def run(*args: str) -> str:
        argv = ("sh", "-c", script, "rps", *args)
        return (ns.run(*argv) if ns else sh(*argv)).stdout

    saved = [line.split() for line in run(ifname, cpumask).splitlines()]
    try:
        yield
    finally:
        for q, mask in saved:
            restore = f'echo {mask} > "/sys/class/net/$1/queues/{q}/rps_cpus"'
            argv = ("sh", "-c", restore, "rps", ifname)
            (ns.run(*argv, check=False) if ns else sh(*argv, check=False))


# ---- traffic ----------------------------------------------------------------

_TCP_SERVER = """
import socket, sys
fam = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
print("ready", flush=True)
c, _ = s.accept()
n = 0
while True:
    b = c.recv(1 << 16)
    if not b:
        break
    n += len(b)
c.close()
print(n, flush=True)
"""

_TCP_CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
left = int(sys.argv[3])
chunk = b"x" * 65536
while left > 0:
    c.sendall(chunk[: min(left, len(chunk))])
    left -= min(left, len(chunk))
c.shutdown(socket.SHUT_WR)
c.recv(1)  # the server's close: every segment arrived
c.close()
"""


def tcp_transfer(server: Netns, addr: str, port: int, nbytes: int, client: Netns | None = None):
    """One TCP connection from `client` (None: this namespace) to a server
    at addr:port in `server`, carrying exactly nbytes, closed by both ends."""
    srv = subprocess.Popen(
        server.argv(sys.executable, "-c", _TCP_SERVER, addr, str(port)),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert srv.stdout is not None
        if srv.stdout.readline().strip() != "ready":
            raise RuntimeError("the TCP server did not start")
        argv = [sys.executable, "-c", _TCP_CLIENT, addr, str(port), str(nbytes)]
        sh(*(client.argv(*argv) if client else argv), timeout=60)
        got = srv.stdout.readline().strip()
        if got != str(nbytes):
            raise RuntimeError(f"the TCP server received {got} bytes, not {nbytes}")
    finally:
        if srv.poll() is None:
            srv.kill()
        srv.wait()


def ip6_received(ns: Netns) -> int:
    """IPv6 packets (sk_buffs) the kernel's IPv6 layer in `ns` received:
    Ip6InReceives."""
    for line in ns.run("cat", "/proc/net/snmp6").stdout.splitlines():
        key, _, value = line.partition(" ")
        if key == "Ip6InReceives":
            return int(value)
    raise RuntimeError("no Ip6InReceives in /proc/net/snmp6")


def ip_received(ns: Netns) -> tuple[int, int]:
    """(IPv4 packets, wire segments) the kernel's IP layer in `ns` received:
    Ip InReceives counts sk_buffs; the ECN counters (IpExt In*Pkts) count
    max(1, gso_segs) of each, the segments a GRO-merged skb carries."""
    snmp = _mib(ns.run("cat", "/proc/net/snmp").stdout)
    ext = _mib(ns.run("cat", "/proc/net/netstat").stdout)
    ecn = ("InNoECTPkts", "InECT1Pkts", "InECT0Pkts", "InCEPkts")
    return snmp["Ip"]["InReceives"], sum(ext["IpExt"][k] for k in ecn)


def _mib(text: str) -> dict[str, dict[str, int]]:
    lines = text.splitlines()
    out: dict[str, dict[str, int]] = {}
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        group, _, keys = names.partition(":")
        out[group] = dict(zip(keys.split(), map(int, values.split(":")[1].split()), strict=True))
    return out


_UDP_SENDER = """
import socket, sys, time
dst, port, count, sport = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
v6 = ":" in dst
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
if sport:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::" if v6 else "0.0.0.0", sport))
paced = sys.argv[5] == "1"
for i in range(count):
    # a sequence number leads the payload, as in most real datagrams (DNS id,
    # RTP sequence): IPv6 has no IP id, and this tells its datagrams apart
    s.sendto(i.to_bytes(8, "big") + b"x" * 24, (dst, port))
    if paced and i % 200 == 199:
        time.sleep(0.001)  # let a steered-to CPU drain its backlog: no drops
"""

_SYN_SENDER = """
import errno, socket, sys
dst, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for _ in range(count):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(2)
    r = s.connect_ex((dst, port))
    s.close()
    if r != errno.ECONNREFUSED:
        sys.exit(f"connect to {dst}:{port} gave {errno.errorcode.get(r, r)}, want ECONNREFUSED")
"""


_PACED_SENDER = """
import socket, sys, time
dst, port, pps, duration = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
limit = int(sys.argv[5]) if len(sys.argv) > 5 else 0
s = socket.socket(socket.AF_INET6 if ":" in dst else socket.AF_INET, socket.SOCK_DGRAM)
start = time.monotonic()
n = 0
while time.monotonic() - start < duration and not (limit and n >= limit):
    s.sendto(n.to_bytes(8, "big") + b"x" * 56, (dst, port))
    n += 1
    ahead = n / pps - (time.monotonic() - start)
    if ahead > 0:
        time.sleep(ahead)
"""


def udp_argv(
    dst: str,
    port: int,
    count: int | None = None,
    pps: float | None = None,
    duration_s: float | None = None,
    src_port: int | None = None,
) -> list[str]:
    """The command that sends exactly `count` datagrams (paced so a backlog is
    not overrun), or a stream at `pps` for duration_s, or `count` at `pps`:
    for scenario steps."""
    if count is not None and pps is not None:
        return [sys.executable, "-c", _PACED_SENDER, dst, str(port), str(pps), "1e9", str(count)]
    if count is not None:
        return [
            sys.executable,
            "-c",
            _UDP_SENDER,
            dst,
            str(port),
            str(count),
            str(src_port or 0),
            "1",
        ]
    return [sys.executable, "-c", _PACED_SENDER, dst, str(port), str(pps), str(duration_s)]


def paced_udp(ns: Netns, dst: str, port: int, pps: float, duration_s: float) -> subprocess.Popen:
    """A background UDP stream at `pps` that stops by itself after duration_s.
    The caller ends it earlier, by this Popen, if it is done sooner."""
    return subprocess.Popen(
        ns.argv(sys.executable, "-c", _PACED_SENDER, dst, str(port), str(pps), str(duration_s)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def send_udp(
    ns: Netns | None,
    dst: str,
    port: int,
    count: int,
    src_port: int | None = None,
    cpu: int | None = None,
    paced: bool = True,
) -> None:
    """Exactly `count` UDP datagrams (32-byte payload) from `ns` (None:
    this namespace) to dst:port, IPv4 or IPv6 as dst is.
    With no listener the target answers ICMP port unreachable, which travels the
    other way. cpu pins the sender, so RPS tests know where packets start.
    paced=False sends back to back, to overflow a backlog on purpose."""
    args = (dst, str(port), str(count), str(src_port or 0), "1" if paced else "0")
    if ns is None:  # from ovslat's own namespace (a host sending to its pods)
        pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
        sh(*pin, sys.executable, "-c", _UDP_SENDER, *args)
        return
    ns.run(sys.executable, "-c", _UDP_SENDER, *args, cpu=cpu)


# A VM's side of a tap: attach to the (persistent) tap, write Ethernet frames
# of one IPv4 UDP datagram each, as a guest's virtio-net would through vhost:
# the kernel receives each in tun_get_user() -> netif_receive_skb().
_TAP_WRITER = """
import fcntl, os, socket, struct, sys, time
name, count, src, dst = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
port, pps, dst_mac = int(sys.argv[5]), float(sys.argv[6]), sys.argv[7]
if not dst_mac:
    with open(f"/sys/class/net/{name}/address") as f:
        dst_mac = f.read().strip()
dst_mac = bytes.fromhex(dst_mac.replace(":", ""))
fd = os.open("/dev/net/tun", os.O_RDWR)
IFF_TAP, IFF_NO_PI, TUNSETIFF = 0x0002, 0x1000, 0x400454CA
fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
time.sleep(0.05)  # carrier up once attached
def csum(b):
    t = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while t >> 16:
        t = (t & 0xFFFF) + (t >> 16)
    return ~t & 0xFFFF
payload = b"v" * 32
for i in range(count):
    udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1 + i, 0, 64, 17, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    os.write(fd, dst_mac + bytes.fromhex("020000000099") + b"\\x08\\x00" + ip + udp)
    time.sleep(1 / pps)
os.close(fd)
"""


# A remote tunnel endpoint without a device of its own (this VM's kernel has
# no geneve module; and a vxlan device cannot be told what to put inside):
# Geneve or VXLAN packets written over a UDP socket (IPv4 or IPv6, as the
# outer address is), each an Ethernet frame of one IPv4 UDP datagram (inner
# IP ids first_id, first_id + 1, ...), VNI and Geneve options as given, an
# 802.1Q tag inside when asked. An IPv4 outer UDP checksum is 0
# (SO_NO_CHECK): OVS userspace refuses a checksum left to offload on a veth.
_TUNNEL_SENDER = """
import socket, struct, sys, time
kind, outer, vni, src, dst = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
port, count = int(sys.argv[6]), int(sys.argv[7])
dst_mac = bytes.fromhex(sys.argv[8].replace(":", ""))
vlan, opt_words, first_id = int(sys.argv[9]), int(sys.argv[10]), int(sys.argv[11])
v6 = ":" in outer
s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM)
if not v6:
    s.setsockopt(socket.SOL_SOCKET, 11, 1)  # SO_NO_CHECK
def csum(b):
    t = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while t >> 16:
        t = (t & 0xFFFF) + (t >> 16)
    return ~t & 0xFFFF
if kind == "vxlan":
    head, to = b"\\x08\\0\\0\\0" + vni.to_bytes(3, "big") + b"\\0", 4789
else:
    # options: one non-critical TLV (class 0xff01, type 1) of opt_words - 1 words
    opts = b""
    if opt_words:
        opts = struct.pack("!HBB", 0xFF01, 1, opt_words - 1) + b"\\0" * 4 * (opt_words - 1)
    geneve = struct.pack("!BBH", len(opts) // 4, 0, 0x6558) + vni.to_bytes(3, "big") + b"\\0"
    head, to = geneve + opts, 6081
tag = struct.pack("!HH", 0x8100, vlan) if vlan else b""
for i in range(count):
    payload = i.to_bytes(8, "big") + b"g" * 24
    udp = struct.pack("!HHHH", 40001, port, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), (first_id + i) & 0xFFFF, 0, 64,
                     17, 0, socket.inet_aton(src), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    frame = dst_mac + bytes.fromhex("020000000077") + tag + b"\\x08\\x00" + ip + udp
    s.sendto(head + frame, (outer, to))
    time.sleep(0.001)
"""


def send_tunnelled(
    ns: Netns,
    kind: str,
    outer_dst: str,
    vni: int,
    src: str,
    dst: str,
    port: int,
    count: int,
    dst_mac: str,
    vlan: int = 0,
    option_words: int = 0,
    first_id: int = 1,
) -> None:
    """Exactly `count` `kind` ("geneve" or "vxlan") packets from `ns` to
    outer_dst (port 6081 or 4789), VNI `vni`, each an Ethernet frame to
    dst_mac holding one UDP datagram src -> dst:port; an 802.1Q tag `vlan`
    inside when non-zero, and a Geneve option of option_words 4-byte words (0:
    none). Inner IP ids from first_id: two batches between the same hosts
    must not repeat each other's headers within a second, or their hops are
    ambiguous (as a real IP stack's ids never are)."""
    args = (kind, outer_dst, str(vni), src, dst, str(port), str(count), dst_mac, str(vlan))
    ns.run(sys.executable, "-c", _TUNNEL_SENDER, *args, str(option_words), str(first_id))


# Ethernet frames written raw (AF_PACKET) on a device: 802.1Q / 802.1ad tags
# stay in the frame, as a device that does not strip them hands them over.
_TAGGED_SENDER = """
import socket, struct, sys, time
ifname, dst_mac, src, dst, port, count = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], \\
    int(sys.argv[5]), int(sys.argv[6])
tags = [int(t) for t in sys.argv[7].split(",")]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
src_mac = s.getsockname()[4]
def csum(b):
    t = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while t >> 16:
        t = (t & 0xFFFF) + (t >> 16)
    return ~t & 0xFFFF
# the outer tag of two is a service tag (802.1ad), as QinQ sends them
tpids = [0x88A8] * (len(tags) - 1) + [0x8100]
head = bytes.fromhex(dst_mac.replace(":", "")) + src_mac + b"".join(
    struct.pack("!HH", tpid, tag) for tpid, tag in zip(tpids, tags)) + b"\\x08\\x00"
for i in range(count):
    payload = i.to_bytes(8, "big") + b"t" * 24
    udp = struct.pack("!HHHH", 40002, port, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1 + i, 0, 64, 17, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    s.send(head + ip + udp)
    time.sleep(0.001)
"""


def send_tagged(
    ns: Netns, ifname: str, dst_mac: str, src: str, dst: str, port: int, count: int, tags
) -> None:
    """Exactly `count` frames out of `ifname` in `ns`, each one IPv4 UDP
    datagram src -> dst:port behind the VLAN tags `tags` (outermost first)."""
    args = (ifname, dst_mac, src, dst, str(port), str(count), ",".join(str(t) for t in tags))
    ns.run(sys.executable, "-c", _TAGGED_SENDER, *args)


def tap(name: str) -> None:
    """A persistent tap, up, IPv6 off: a VM's port before its VM writes to it.
    Deleted by the caller (ip link del)."""
    sh("modprobe", "-q", "tun", check=False)  # a module on distro kernels
    sh("ip", "tuntap", "add", "dev", name, "mode", "tap")
    _no_ipv6(name)
    sh("ip", "link", "set", name, "up")


def tap_argv(
    name: str,
    count: int,
    src: str,
    dst: str,
    port: int,
    pps: float = 1000.0,
    dst_mac: str | None = None,
) -> list[str]:
    """The command that writes exactly `count` frames into tap `name` at
    about `pps`, as a VM sends them: IPv4 UDP src -> dst:port, to dst_mac
    (default the tap's own: the host receives them itself)."""
    argv = [name, str(count), src, dst, str(port), str(pps), dst_mac or ""]
    return [sys.executable, "-c", _TAP_WRITER, *argv]


def feed_tap(name: str, count: int, src: str, dst: str, port: int, **kw) -> None:
    """tap_argv(), run to its end."""
    sh(*tap_argv(name, count, src, dst, port, **kw))


def mac_of(ifname: str, ns: Netns | None = None) -> str:
    """An interface's MAC address (in `ns`, whose sysfs `ip netns exec` mounts)."""
    if ns is None:
        with open(f"/sys/class/net/{ifname}/address") as f:
            return f.read().strip()
    return ns.run("cat", f"/sys/class/net/{ifname}/address").stdout.strip()


def send_tcp_syn(ns: Netns, dst: str, port: int, count: int) -> None:
    """Exactly `count` TCP SYNs: connects to a port with no listener, each
    refused by an RST at once, so none is retransmitted."""
    ns.run(sys.executable, "-c", _SYN_SENDER, dst, str(port), str(count))


def ping(ns: Netns | None, dst: str, count: int, interval: float = 0.01) -> int:
    """Exactly `count` ICMP (ICMPv6 to an IPv6 dst) echo requests from ns
    (None: this namespace) to dst; returns the replies received (waiting up
    to 5 s for late ones). The first one may be preceded by ARP or neighbour
    discovery."""
    argv = ("ping", "-n", "-q", "-c", str(count), "-i", str(interval), "-W", "5", dst)
    r = ns.run(*argv, check=False) if ns else sh(*argv, check=False)
    for line in r.stdout.splitlines():
        if "packets transmitted" in line:
            sent, received = (int(part.split()[0]) for part in line.split(",")[:2])
            assert sent == count, line
            return received
    raise RuntimeError(f"ping gave no summary: {r.stdout} {r.stderr}")


# ---- a private Open vSwitch ---------------------------------------------------


def kernel_datapath() -> bool:
    """Whether the openvswitch kernel module loads here (else: the netdev datapath)."""
    return sh("modprobe", "-q", "openvswitch", check=False).returncode == 0


class OvsDaemons:
    """ovsdb-server and ovs-vswitchd of our own, with a fresh database and
    private sockets, so tests and the demo never touch a system OVS.

    datapath 'netdev' (userspace; works on any kernel — the bridge's internal
    port is a tap) or 'system' (the openvswitch kernel module)."""

    def __init__(self, datapath: str = "netdev"):
        self.datapath = datapath
        self.dir = tempfile.mkdtemp(prefix="ovslat-ovs-")
        self.db_sock = f"unix:{self.dir}/db.sock"
        self._procs: list[subprocess.Popen] = []
        self._bridges: list[str] = []
        self.env = {
            **os.environ,
            "OVS_RUNDIR": self.dir,
            "OVS_LOGDIR": self.dir,
            "OVS_DBDIR": self.dir,
        }

    def _start(self, *argv: str) -> None:
        log = open(os.path.join(self.dir, os.path.basename(argv[0]) + ".out"), "w")
        self._procs.append(
            subprocess.Popen(argv, env=self.env, stdout=log, stderr=log, start_new_session=True)
        )
        log.close()

    def __enter__(self) -> OvsDaemons:
        try:
            if self.datapath == "system":
                sh("modprobe", "openvswitch")
            sh("ovsdb-tool", "create", f"{self.dir}/conf.db", OVS_SCHEMA)
            self._db_argv = (
                "ovsdb-server",
                f"{self.dir}/conf.db",
                f"--remote=p{self.db_sock}",
                f"--unixctl={self.dir}/ovsdb-server.ctl",
                f"--log-file={self.dir}/ovsdb-server.log",
            )
            self._start(*self._db_argv)
            wait_until(
                lambda: self.vsctl("--no-wait", "init", check=False).returncode == 0,
                what="ovsdb-server",
            )
            self._start(
                "ovs-vswitchd",
                self.db_sock,
                f"--unixctl={self.dir}/ovs-vswitchd.ctl",
                f"--log-file={self.dir}/ovs-vswitchd.log",
            )
            ctl = f"{self.dir}/ovs-vswitchd.ctl"
            wait_until(
                lambda: sh("ovs-appctl", "-t", ctl, "version", check=False).returncode == 0,
                what="ovs-vswitchd",
            )
        except BaseException:
            self.__exit__()
            raise
        return self

    def restart_db(self) -> None:
        """Stop our ovsdb-server (by pid) and start it again on the same
        database and socket, as an upgrade or a crash would: clients must
        reconnect. ovs-vswitchd keeps running and reconnects too."""
        server = self._procs[0]
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=10)
        self._start(*self._db_argv)
        self._procs[0] = self._procs.pop()  # the new server, where the old one was
        wait_until(
            lambda: self.vsctl("--no-wait", "show", check=False).returncode == 0,
            what="ovsdb-server after restart",
        )

    def vsctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return sh(
            "ovs-vsctl", f"--db={self.db_sock}", "--timeout=20", *args, check=check, env=self.env
        )

    def ofctl(self, *args: str) -> subprocess.CompletedProcess:
        """ovs-ofctl on our bridges (their management sockets are in our rundir)."""
        return sh("ovs-ofctl", *args, env=self.env)

    def add_bridge(self, name: str) -> str:
        extra = ["--", "set", "bridge", name, f"datapath_type={self.datapath}"]
        self.vsctl("add-br", name, *extra)
        self._bridges.append(name)
        wait_until(lambda: os.path.exists(f"/sys/class/net/{name}"), what=f"bridge {name}")
        return name

    def add_port(self, bridge: str, iface: str, *settings: str) -> None:
        extra = ["--", "set", "interface", iface, *settings] if settings else []
        self.vsctl("add-port", bridge, iface, *extra)

    def del_port(self, bridge: str, iface: str) -> None:
        self.vsctl("del-port", bridge, iface)

    def __exit__(self, *exc) -> None:
        for br in reversed(self._bridges):
            self.vsctl("--if-exists", "del-br", br, check=False)
        self._bridges.clear()
        ctl = f"{self.dir}/ovs-vswitchd.ctl"
        if os.path.exists(ctl):
            # --cleanup: the netdev datapath's taps (ovs-netdev) outlive a plain exit
            sh("ovs-appctl", "-t", ctl, "exit", "--cleanup", check=False, timeout=10)
        for p in reversed(self._procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self._procs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)
