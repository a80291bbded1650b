"""Threshold mode and drop attribution on this host's kernel: real packets,
real stacks, exact counts."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import struct
import sys
from pathlib import Path

import pytest

from ovslat.engine.kernel import possible_cpus
from ovslat.scenario import testbed
from tests.host.conftest import sysctl
from tests.ovslat_proc import Watch, interface

PORT = 6001


@pytest.fixture
def host_t():
    with testbed.Netns("t") as ns:
        testbed.veth("ovt-t0", ns, "ovt-t1", "198.18.66.1", "198.18.66.2")
        testbed.ping(ns, "198.18.66.1", 1)
        yield ns


def test_every_packet_over_a_zero_threshold(host_t):
    """Threshold 0: each measured packet is an event, with the seed's fields
    and a real kernel stack through the backlog."""
    with Watch(
        ["-i", "ovt-t0", "--protocol", "udp", "--threshold-us", "0", "--max-events-per-sec", "1000"]
    ) as w:
        testbed.send_udp(host_t, "198.18.66.1", PORT, 30, src_port=40100, cpu=0)
        w.wait_for(lambda w: len(w.events) >= 30)
        summary = w.stop()
    c = interface(summary, "ovt-t0")["counters"]
    assert c["slow"] == c["enqueued"] == 30 and c["events_suppressed"] == 0
    assert len(w.events) == 30
    for ev in w.events:
        assert (
            ev["interface"],
            ev["protocol"],
            ev["src"],
            ev["sport"],
            ev["dst"],
            ev["dport"],
        ) == ("ovt-t0", "UDP", "198.18.66.2", 40100, "198.18.66.1", PORT)
        assert ev["latency_us"] > 0 and ev["ts_receive_ns"] > ev["ts_enqueue_ns"]
        # the sender ran on CPU 0; without RPS its softirq drained the backlog there
        assert ev["enqueue_cpu"] == ev["receive_cpu"] == 0 and not ev["cross_cpu"]
        fns = [f.split("+")[0] for f in ev["stack"]]
        assert "process_backlog" in fns and "net_rx_action" in fns, ev["stack"]
        sender = Path(sys.executable).name[:15]  # the task's comm
        assert ev["context"] == f"softirq at local_bh_enable in process context ({sender})"
        assert ev["diagnosis"].startswith("CPU contention")
    assert [ev["number"] for ev in w.events] == list(range(1, 31))


def test_rate_limit_holds(host_t):
    """2 events/s per CPU (the limit is split over the possible CPUs): a burst
    from CPU 0 gives exactly 2 events; the other 98 slow packets are counted."""
    per_s = str(2 * possible_cpus())
    with Watch(
        ["-i", "ovt-t0", "--protocol", "udp", "--threshold-us", "0", "--max-events-per-sec", per_s]
    ) as w:
        testbed.send_udp(host_t, "198.18.66.1", PORT, 100, cpu=0)
        w.wait_for(lambda w: w.totals("ovt-t0").get("slow", 0) >= 100)
        summary = w.stop()
    c = interface(summary, "ovt-t0")["counters"]
    assert c["slow"] == 100
    assert len(w.events) == 2 and c["events_suppressed"] == 98


def test_cross_cpu_event(host_t):
    with (
        testbed.rps("ovt-t0", "2"),
        Watch(["-i", "ovt-t0", "--protocol", "udp", "--threshold-us", "0"]) as w,
    ):
        testbed.send_udp(host_t, "198.18.66.1", PORT, 10, cpu=0)
        w.wait_for(lambda w: len(w.events) >= 10)
        w.stop()
    for ev in w.events:
        assert (ev["enqueue_cpu"], ev["receive_cpu"], ev["cross_cpu"]) == (0, 1, True)
        if "ksoftirqd" in ev["context"]:
            assert ev["diagnosis"].startswith("ksoftirqd scheduling delay")
        else:
            # RPS raised the softirq on CPU 1 with an IPI
            assert ev["context"].startswith("softirq on irq exit"), ev["context"]
            assert ev["diagnosis"].startswith("cross-CPU migration")


def test_drops_are_attributed_and_reconciled(host_t):
    """A backlog of one packet, steered to the other CPU, back-to-back
    packets: most are dropped by enqueue_to_backlog, with the kernel's reason,
    and every enqueued packet is accounted for."""
    with (
        sysctl("net.core.netdev_max_backlog", "1"),
        testbed.rps("ovt-t0", "2"),
        Watch(["-i", "ovt-t0", "--protocol", "udp"]) as w,
    ):
        testbed.send_udp(host_t, "198.18.66.1", PORT, 2000, cpu=0, paced=False)
        w.wait_for(lambda w: w.totals("ovt-t0").get("enqueued", 0) >= 2000)
        summary = w.stop()
    i = interface(summary, "ovt-t0")
    c = i["counters"]
    assert c["enqueued"] == 2000
    assert c["dropped"] > 0 and i["drops"] == {"CPU_BACKLOG": c["dropped"]}
    assert c["enqueued"] == c["received"] + c["dropped"] and i["in_flight"] == 0
    assert c["received"] == c["ip_rcv"] and c["flow_lookup_failures"] == 0


def _udp_frame(dst_mac: bytes, src: str, dst: str, port: int, ip_id: int) -> bytes:
    """Ethernet + IPv4 + UDP, 32-byte payload, as a VM writes into its tap."""
    payload = b"x" * 32
    udp = struct.pack("!HHHH", 40200, port, 8 + len(payload), 0) + payload
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(udp),
        ip_id,
        0,
        64,
        socket.IPPROTO_UDP,
        0,
        socket.inet_aton(src),
        socket.inet_aton(dst),
    )
    words = struct.unpack("!10H", header)
    csum = sum(words)
    csum = (csum & 0xFFFF) + (csum >> 16)
    csum = ~((csum & 0xFFFF) + (csum >> 16)) & 0xFFFF
    header = header[:10] + struct.pack("!H", csum) + header[12:]
    return dst_mac + b"\x02\x00\x00\x00\x67\x02" + b"\x08\x00" + header + udp


@contextlib.contextmanager
def tap(name: str, address: str):
    """A tap device whose fd this process holds: frames written to it are
    received through tun_get_user -> netif_receive_skb, as from a VM."""
    TUNSETIFF, IFF_TAP, IFF_NO_PI = 0x400454CA, 0x0002, 0x1000
    fd = os.open("/dev/net/tun", os.O_RDWR)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
        testbed.sh("ip", "addr", "add", f"{address}/24", "dev", name)
        testbed.sh("ip", "link", "set", name, "up")
        yield fd
    finally:
        os.close(fd)  # the tap goes with its last fd


def test_drops_on_a_tap_steered_by_rps():
    """netif_receive_skb() with RPS (a tap here, a NIC elsewhere) enqueues to
    the other CPU's backlog of one packet: every packet written is received
    or dropped with the kernel's reason, none left in flight."""
    n = 2000
    with (
        tap("ovt-tap0", "198.18.67.1") as fd,
        sysctl("net.core.netdev_max_backlog", "1"),
        testbed.rps("ovt-tap0", "2"),
        Watch(["-i", "ovt-tap0", "--protocol", "udp"]) as w,
    ):
        with open("/sys/class/net/ovt-tap0/address") as f:
            mac = bytes.fromhex(f.read().strip().replace(":", ""))
        frames = [_udp_frame(mac, "198.18.67.2", "198.18.67.1", PORT, i) for i in range(n)]
        saved = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {0})  # RPS steers every packet from CPU 0 to CPU 1
        try:
            for frame in frames:
                os.write(fd, frame)
        finally:
            os.sched_setaffinity(0, saved)
        w.wait_for(
            lambda w: sum(w.totals("ovt-tap0").get(k, 0) for k in ("received", "dropped")) >= n
        )
        summary = w.stop()
    i = interface(summary, "ovt-tap0")
    c = i["counters"]
    assert c["enqueued"] == n and c["dropped"] > 0, c
    assert c["enqueued"] == c["received"] + c["dropped"] and i["in_flight"] == 0, c
    assert i["drops"] == {"CPU_BACKLOG": c["dropped"]}
    assert c["received"] == c["ip_rcv"] and c["flow_lookup_failures"] == 0
