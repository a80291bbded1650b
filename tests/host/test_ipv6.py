"""IPv6 and dual-stack: one veth carrying both families, every count held
against the receiving kernel's own (Ip InReceives, Ip6InReceives), the
address, prefix, family and port filters, TCP, UDP and ICMPv6, neighbour
discovery left out by a filter that excludes it, and an IPv6 hop across an
OVS bridge. Addresses: 198.18.0.0/15 and 2001:2::/48."""

from __future__ import annotations

import pytest

from ovslat.scenario import testbed
from tests.ovslat_proc import Watch, interface

A4, B4 = "198.18.71.1", "198.18.71.2"
A6, B6 = "2001:2:0:71::1", "2001:2:0:71::2"
PORT = 31337


def dual_stack(ns: testbed.Netns, static: bool) -> None:
    """ovt-v6a (here) <-> eth0 (in ns), both families; `static`: permanent
    neighbour entries, so that no ARP or neighbour discovery adds packets."""
    testbed.veth("ovt-v6a", ns, "eth0", A4, B4)
    testbed.ipv6("ovt-v6a", A6)
    testbed.ipv6("eth0", B6, ns)
    if static:
        testbed.neighbour("ovt-v6a", B6, testbed.mac_of("eth0", ns))
        testbed.neighbour("ovt-v6a", B4, testbed.mac_of("eth0", ns))
        testbed.neighbour("eth0", A6, testbed.mac_of("ovt-v6a"), ns)
        testbed.neighbour("eth0", A4, testbed.mac_of("ovt-v6a"), ns)


@pytest.fixture
def dual():
    with testbed.Netns("v6") as ns:
        dual_stack(ns, static=True)
        yield ns


def measure(ns, args, send):
    """Run `send()` under `watch -i eth0@ns ARGS`; (the interface's summary,
    IPv4 and IPv6 packets the kernel in ns received meanwhile)."""
    name = f"eth0@{ns.name}"
    with Watch(["-i", name, *args]) as w:
        before = testbed.ip_received(ns)[0], testbed.ip6_received(ns)
        send()
        after = testbed.ip_received(ns)[0], testbed.ip6_received(ns)
        got = (after[0] - before[0], after[1] - before[1])
        w.settle(lambda w: w.totals(name).get("ip_rcv", 0) >= sum(got), timeout_s=3)
        summary = w.stop()
    return interface(summary, name), got


# (extra filters, IPv4 datagrams counted, IPv6 datagrams counted) of 300 + 400
CASES = [
    ([], 300, 400),
    (["--family", "6"], 0, 400),
    (["--family", "4"], 300, 0),
    (["--dst-ip", "2001:2:0:71::/64"], 0, 400),
    (["--dst-ip", f"{B4},{B6}"], 300, 400),
    (["--src-ip", A6, "--src-ip", "198.18.0.0/15"], 300, 400),
    (["--src-ip", "2001:2:0:72::/64"], 0, 0),
    (["--dst-ip", "198.18.71.0/25"], 300, 0),
]


@pytest.mark.parametrize("extra, v4, v6", CASES, ids=[" ".join(c[0]) or "udp" for c in CASES])
def test_dual_stack_udp_exact(dual, extra, v4, v6):
    """300 IPv4 and 400 IPv6 datagrams to one port (the issue's trial: IPv6
    counted none): each filter counts exactly its share, per family."""

    def send():
        testbed.send_udp(None, B4, PORT, 300)
        testbed.send_udp(None, B6, PORT, 400)

    i, kernel = measure(dual, ["--protocol", "udp", "--dst-port", str(PORT), *extra], send)
    assert kernel == (300, 400)
    c, fam = i["counters"], i["families"]
    assert c["enqueued"] == c["received"] == c["ip_rcv"] == v4 + v6, c
    assert c["flow_lookup_failures"] == c["parse_failures"] == c["dropped"] == 0
    assert fam["ipv4"] == {"enqueued": v4, "received": v4, "received_sync": 0, "ip_rcv": v4}
    assert fam["ipv6"] == {"enqueued": v6, "received": v6, "received_sync": 0, "ip_rcv": v6}
    assert i["stages"]["enqueue_to_receive"]["count"] == i["stages"]["receive_to_ip"]["count"]
    assert i["stages"]["receive_to_ip"]["count"] == v4 + v6


def test_ipv6_tcp_and_icmpv6_exact(dual):
    """A TCP transfer and 50 pings over IPv6: every IPv6 packet the kernel
    received, and under --protocol icmpv6 exactly the 50 echo requests."""

    def send():
        testbed.tcp_transfer(dual, B6, 5002, 1_000_000)
        assert testbed.ping(None, B6, 50) == 50

    i, (v4, v6) = measure(dual, ["--family", "6"], send)
    c = i["counters"]
    assert v4 == 0 and v6 > 50 + 20  # the transfer's segments, then the pings
    assert c["enqueued"] == c["received"] == c["ip_rcv"] == v6, c
    assert i["families"]["ipv6"]["ip_rcv"] == v6 and i["families"]["ipv4"]["ip_rcv"] == 0
    assert i["stages"]["receive_to_ip"]["count"] == v6

    i, _ = measure(dual, ["--protocol", "icmpv6", "--dst-ip", B6], send)
    assert i["counters"]["received"] == i["counters"]["ip_rcv"] == 50

    i, (_, v6) = measure(dual, ["--protocol", "tcp", "--dst-port", "5002"], send)
    tcp = i["counters"]["ip_rcv"]  # each transfer's own segment count
    assert tcp == v6 - 50 and i["families"]["ipv6"]["ip_rcv"] == tcp


def test_neighbour_discovery_never_counts_under_a_filter_excluding_it():
    """No static neighbours: neighbour solicitations and advertisements come
    first. Without a filter they are IPv6 packets like any (exact against the
    kernel); under --protocol udp, or the pod's address, they never count."""
    for args, only_udp in (
        (["--family", "6"], False),
        (["--protocol", "udp"], True),
        (["--dst-ip", B6, "--protocol", "udp"], True),
    ):
        with testbed.Netns("nd") as ns:
            dual_stack(ns, static=False)
            i, (_, v6) = measure(ns, args, lambda: testbed.send_udp(None, B6, PORT, 200))
        assert v6 > 200, "no neighbour discovery happened"
        want = 200 if only_udp else v6
        assert i["counters"]["received"] == i["counters"]["ip_rcv"] == want, (args, i["counters"])


BR, UP = "ovt-6br", "ovt-6u0"
BR6, CLIENT6 = "2001:2:0:64::1", "2001:2:0:64::2"


def test_ipv6_hop_across_an_ovs_bridge():
    """A netdev bridge: IPv6 datagrams from a client namespace on the uplink
    to the bridge's internal port. The hop uplink -> bridge port counts every
    datagram but those whose mark the table lost (counted)."""
    n = 200
    with testbed.OvsDaemons("netdev") as ovs, testbed.Netns("h6") as nh:
        ovs.add_bridge(BR)
        testbed.veth(UP, nh, "ovt-6u1", None, None)
        ovs.add_port(BR, UP, testbed.AS_UPLINK)
        testbed.sh("ip", "link", "set", BR, "up")
        testbed.ipv6(BR, BR6)
        testbed.ipv6("ovt-6u1", CLIENT6, nh)
        testbed.neighbour(BR, CLIENT6, testbed.mac_of("ovt-6u1", nh))
        testbed.neighbour("ovt-6u1", BR6, testbed.mac_of(BR), nh)
        # MAC learning and the datapath's flows, on a port the filter leaves out
        assert testbed.ping(nh, BR6, 3) == 3
        testbed.send_udp(nh, BR6, 7001, 3)
        args = ["-i", UP, "-i", BR, "--protocol", "udp", "--dst-port", "7000"]
        with Watch(args) as w:
            nh.run(*testbed.udp_argv(BR6, 7000, count=n, pps=2000))  # paced: 2000/s
            w.settle(lambda w: w.totals(BR).get("ip_rcv", 0) >= n, timeout_s=5)
            summary = w.stop()
    up, br = interface(summary, UP)["counters"], interface(summary, BR)["counters"]
    assert up["enqueued"] == up["received"] == n  # veth: netif_rx -> backlog
    assert br["received_sync"] == br["ip_rcv"] == n  # the tap receives in place
    assert interface(summary, BR)["families"]["ipv6"]["ip_rcv"] == n
    (h,) = (h for h in summary["hops"] if h["from"] == UP and h["to"] == BR)
    assert h["count"] == n - up["hops_lost"] and h["count"] >= n * 0.9
    assert h["e2e"]["count"] == h["count"]
    assert 0 < h["p50_us"] <= h["max_us"] < 1_000_000


def _ipv6_id(frame: bytes) -> tuple[str, tuple] | None:
    """What the BPF program tells an IPv6 packet by (struct pkt_id, bpf/): (L4
    protocol, the fields). Extension headers are walked as there."""
    if frame[12:14] != b"\x86\xdd":
        return None
    ip = frame[14:]
    flow = int.from_bytes(ip[0:4], "big") & 0xFFFFF
    nexthdr, off = ip[6], 40
    while nexthdr in (0, 43, 60) and off + 2 <= len(ip):
        nexthdr, off = ip[off], off + (ip[off + 1] + 1) * 8
    l4 = ip[off:]
    fields = {6: l4[0:12], 17: l4[0:4] + l4[8:16], 58: l4[4:8]}.get(nexthdr, b"")
    kind = {6: "tcp", 17: "udp"}.get(nexthdr, str(nexthdr))
    if nexthdr == 58:  # echo request/reply; the rest: neighbour discovery, MLD
        kind = "echo" if l4[0] in (128, 129) else "icmpv6-other"
    return kind, (ip[8:40], flow, ip[4:6], nexthdr, fields)


def test_ipv6_packets_are_told_apart(dual):
    """The collision rate of what identifies an IPv6 packet, on real traffic
    captured on the veth (both directions, as the kernel's stages see the
    skbs): a TCP transfer, 400 datagrams, 50 pings. A packet whose fields
    equal those of one seen less than 1 s before (the hop window) cannot be
    told from it. UDP (sequence-numbered payloads), ICMPv6 echo and every
    TCP segment carrying data: none. Only a TCP flow's duplicate ACKs and
    repeated neighbour discovery / MLD messages can."""
    import socket
    import threading
    import time

    # ETH_P_ALL: a protocol's own packet socket never sees what the device sends
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind(("ovt-v6a", 0))
    s.settimeout(0.2)
    frames: list[tuple[float, bytes]] = []
    done = threading.Event()

    def capture():
        while not done.is_set():
            try:
                frames.append((time.monotonic(), s.recv(65535)[:160]))
            except TimeoutError:
                pass

    t = threading.Thread(target=capture)
    t.start()
    try:
        testbed.tcp_transfer(dual, B6, 5003, 2_000_000)
        testbed.send_udp(None, B6, PORT, 400)
        assert testbed.ping(None, B6, 50) == 50

        def echoes() -> int:
            return sum(1 for _, f in list(frames) if (_ipv6_id(f) or ("",))[0] == "echo")

        # the last reply passed the device before ping returned: wait until
        # the capture has read it too
        testbed.wait_until(lambda: echoes() >= 100, 5, "100 echo messages captured")
    finally:
        done.set()
        t.join()
        s.close()
    seen: dict[tuple, float] = {}
    total: dict[str, int] = {}
    same: dict[str, int] = {}
    tcp_data_same = 0
    for ts, frame in frames:
        got = _ipv6_id(frame)
        if got is None:
            continue
        proto, key = got
        total[proto] = total.get(proto, 0) + 1
        if ts - seen.get(key, -10.0) < 1.0:
            same[proto] = same.get(proto, 0) + 1
            ip_payload = int.from_bytes(frame[18:20], "big")
            tcp_header = (frame[54 + 12] >> 4) * 4 if proto == "tcp" else 0
            tcp_data_same += proto == "tcp" and ip_payload > tcp_header
        seen[key] = ts
    print(f"\nIPv6 packets told apart: {total} captured, indistinguishable {same}")
    assert total["udp"] == 400 and total["echo"] == 100 and total["tcp"] > 50
    assert same.get("udp", 0) == same.get("echo", 0) == tcp_data_same == 0
