"""Per-hop correlation: the same packet on the veth uplink, through OVS
(netdev datapath, userspace: a different sk_buff on the way out) and on the
bridge's port, matched by its headers."""

from __future__ import annotations

import contextlib

import pytest

from ovslat.scenario import testbed
from tests.ovslat_proc import Watch, interface

BR, UP = "ovt-hbr", "ovt-hu0"


@pytest.fixture
def client():
    """A client namespace on a veth uplink UP of a netdev bridge BR whose
    internal port holds 198.18.64.1; ARP and flows warmed up."""
    with testbed.OvsDaemons("netdev") as ovs, testbed.Netns("h") as nh:
        ovs.add_bridge(BR)
        testbed.veth(UP, nh, "ovt-hu1", None, "198.18.64.2")
        ovs.add_port(BR, UP)
        testbed.address_port(BR, "198.18.64.1")
        assert testbed.ping(nh, "198.18.64.1", 3) == 3
        yield nh


def hop(summary, src, dst):
    (h,) = (h for h in summary["hops"] if h["from"] == src and h["to"] == dst)
    return h


@pytest.mark.parametrize("rps", [True, False], ids=["rps", "no-rps"])
def test_uplink_to_bridge_hop(client, rps):
    nh = client
    steer = testbed.rps(BR, "3") if rps else contextlib.nullcontext()
    with steer, Watch(["-i", UP, "-i", BR, "--protocol", "icmp"]) as w:
        assert testbed.ping(nh, "198.18.64.1", 40) == 40
        done = "ip_rcv" if rps else "flow_lookup_failures"
        w.wait_for(lambda w: w.totals(BR).get(done, 0) >= 40)
        summary = w.stop()
    h = hop(summary, UP, BR)
    assert h["count"] == 40  # transit: S2 on the uplink -> S1 on the bridge port
    assert 0 < h["p50_us"] <= h["p99_us"] <= h["max_us"] < 1_000_000
    assert [(x["from"], x["to"]) for x in summary["hops"]] == [(UP, BR)]
    if not rps:
        # the bridge port receives synchronously: no S1->S2 there, so no e2e
        assert h["e2e"]["count"] == 0
        return
    e2e = h["e2e"]
    assert e2e["count"] == 40
    up, br = interface(summary, UP)["stages"], interface(summary, BR)["stages"]
    # Each packet's end-to-end time is exactly the sum of its parts: adjacent
    # stages share one timestamp, so this holds to the nanosecond.
    parts = (
        up["enqueue_to_receive"]["sum_ns"]
        + h["sum_ns"]
        + br["enqueue_to_receive"]["sum_ns"]
        + br["receive_to_ip"]["sum_ns"]
    )
    assert e2e["sum_ns"] == parts
    assert e2e["p50_us"] >= h["p50_us"] * 0.875  # bucket resolution
    assert e2e["max_us"] >= h["max_us"]


def test_one_interface_has_no_hops():
    with testbed.Netns("o") as no:
        testbed.veth("ovt-ho0", no, "ovt-ho1", "198.18.65.1", "198.18.65.2")
        testbed.ping(no, "198.18.65.1", 1)
        with Watch(["-i", "ovt-ho0"]) as w:
            testbed.ping(no, "198.18.65.1", 10)
            w.wait_for(lambda w: w.totals("ovt-ho0").get("ip_rcv", 0) >= 10)
            summary = w.stop()
    assert summary["hops"] == []


def test_slow_transit_events(client):
    """--threshold-stage transit: an event per packet whose uplink -> bridge
    transit exceeds the threshold (0: all), its stack at S1 on the bridge
    port showing how the userspace datapath delivered it."""
    nh = client
    with Watch(
        [
            "-i",
            UP,
            "-i",
            BR,
            "--protocol",
            "icmp",
            "--threshold-us",
            "0",
            "--threshold-stage",
            "transit",
            "--max-events-per-sec",
            "1000",
        ]
    ) as w:
        testbed.ping(nh, "198.18.64.1", 20)
        w.wait_for(lambda w: len(w.events) >= 20)
        summary = w.stop()
    assert len(w.events) == 20
    assert interface(summary, BR)["counters"]["slow"] == 20
    assert interface(summary, UP)["counters"]["slow"] == 0
    for ev in w.events:
        assert (ev["stage"], ev["from_interface"], ev["interface"]) == ("transit", UP, BR)
        fns = [f.split("+")[0] for f in ev["stack"]]
        # ovs-vswitchd wrote the packet into the bridge's tap
        assert fns[:2] == ["netif_receive_skb", "tun_get_user"], ev["stack"]
        assert ev["context"] == "process context (ovs-vswitchd)"
        assert (
            ev["diagnosis"].startswith("slow transit: ") and f"from S2 on {UP}" in ev["diagnosis"]
        )
