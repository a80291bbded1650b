"""Threshold mode and drop attribution on this host's kernel: real packets,
real stacks, exact counts."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import pytest

from ovslat import testbed
from tests.ovslat_proc import Watch, interface

pytestmark = pytest.mark.root
PORT = 6001


@pytest.fixture(autouse=True)
def root():
    testbed.require_root()


@pytest.fixture
def host_t():
    with testbed.Netns("t") as ns:
        testbed.veth("ovt-t0", ns, "ovt-t1", "198.18.66.1", "198.18.66.2")
        testbed.ping(ns, "198.18.66.1", 1)
        yield ns


@contextlib.contextmanager
def sysctl(key: str, value: str):
    path = "/proc/sys/" + key.replace(".", "/")
    with open(path) as f:
        saved = f.read().strip()
    testbed.sysctl(key, value)
    try:
        yield
    finally:
        testbed.sysctl(key, saved)


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
    """4 events/s over 2 CPUs is 2 per CPU per second: a burst from CPU 0
    gives exactly 2 events; the other 98 slow packets are counted."""
    with Watch(
        ["-i", "ovt-t0", "--protocol", "udp", "--threshold-us", "0", "--max-events-per-sec", "4"]
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
