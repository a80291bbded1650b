"""Renderers on a hand-made snapshot: the seed's wording, the JSON schema."""

import dataclasses
import json

from ovslat.model.histogram import NBUCKETS, Histogram, bucket_of
from ovslat.model.snapshot import Counters, Interface, InterfaceStats, ProbeCost, Snapshot
from ovslat.output import jsonl
from ovslat.output import text as text_out


def hist(values):
    b = [0] * NBUCKETS
    for v in values:
        b[bucket_of(v)] += 1
    return Histogram(tuple(b), sum(values), max(values) if values else 0)


def snapshot(debug=()):
    st = InterfaceStats(
        Interface("veth0", 7, 4026531840, "", 0),
        Counters(
            enqueued=4,
            received=4,
            ip_rcv=3,
            cross_cpu=1,
            parse_failures=0,
            flow_lookup_failures=2,
            queue_depth_sum=6,
            queue_depth_samples=4,
            queue_depth_max=3,
        ),
        {
            "enqueue_to_receive": hist([500, 1500, 2500, 9000]),
            "receive_to_ip": hist([100, 200, 300]),
        },
        debug,
    )
    return Snapshot(1700000000.0, 2.0, "tracepoint", (st,), cost=ProbeCost(4000, 20, 4))


def test_text_report_has_the_seed_sections():
    text = text_out.render(snapshot(), "ip_rcv() entry")
    for line in (
        "  STAGE1_enqueue_to_backlog -> STAGE2___netif_receive_skb:",
        "    Total samples: 4",
        "      1-1us           :      1 ( 25.0%) |********************                    |",
        "      2-3us           :      2 ( 50.0%) |****************************************|",
        "      8-15us          :      1 ( 25.0%) |********************                    |",
        "    ^^^ CRITICAL ASYNC BOUNDARY (enqueue → receive) ^^^",
        "  STAGE2___netif_receive_skb -> STAGE3_ip_rcv:",
        "  Enqueued packets:        4",
        "  IP layer packets:        3",
        "  Cross-CPU migrations:    1",
        "  Flow lookup failures:    2",
        "  Synchronous receives:    0  (no backlog: no S1 -> S2, S2 -> S3 measured)",
        "  Average queue depth: 1.50 packets",
        "  Total enqueue operations: 4",
    ):
        assert line in text.splitlines(), line
    assert "] Enqueue → IP_RCV Latency Report (Interval: 2.0s)" in text


def test_text_report_without_s3_says_so():
    text = text_out.render(snapshot(), None)
    assert "STAGE2___netif_receive_skb -> STAGE3_ip_rcv: not measured on this kernel" in text


def test_debug_block():
    dbg = tuple(tuple(range(p * 11, p * 11 + 11)) for p in range(3))
    snap = snapshot(dbg)
    snap = Snapshot(
        snap.start_wall_s,
        snap.duration_s,
        snap.backend,
        snap.interfaces,
        probe_entries=(100, 200, 300),
    )
    lines = text_out.render(snap, "x").splitlines()
    assert "DEBUG STATISTICS (Stage Execution Flow) — veth0" in lines
    assert "  PROBE_ENTRY              : 200    (all interfaces)" in lines
    assert "  FLOW_FOUND               : 20" in lines  # STAGE2 FLOW_FOUND = 11 + 9


def test_json_schema():
    ctx = {"backend": "tracepoint", "s3": "x", "filters": {}, "queue_depth_source": "q"}
    obj = json.loads(jsonl.record(snapshot(), "interval", ctx))
    assert obj["type"] == "interval" and obj["interval_s"] == 2.0
    (i,) = obj["interfaces"]
    assert i["name"] == "veth0" and i["ifindex"] == 7
    assert i["counters"] == {
        "enqueued": 4,
        "received": 4,
        "received_sync": 0,
        "segments": 0,
        "ip_rcv": 3,
        "cross_cpu": 1,
        "parse_failures": 0,
        "flow_lookup_failures": 2,
        "slow": 0,
        "events_suppressed": 0,
        "dropped": 0,
        "hops_lost": 0,
        "encapsulated": 0,
    }
    assert i["in_flight"] == 0 and i["drops"] == {}
    assert i["queue_depth"]["avg"] == 1.5 and i["queue_depth"]["max"] == 3
    e2r = i["stages"]["enqueue_to_receive"]
    assert e2r["count"] == 4 and sum(b["count"] for b in e2r["buckets"]) == 4
    assert e2r["max_us"] == 9.0
    assert e2r["p50_us"] <= e2r["p99_us"] <= e2r["max_us"]
    assert set(i["stages"]) == {"enqueue_to_receive", "receive_to_ip"}
    assert obj["probe"]["ns_per_packet"] == 1000.0
    summary = json.loads(jsonl.record(snapshot(), "summary", ctx))
    assert summary["type"] == "summary" and summary["duration_s"] == 2.0


def test_merge_is_a_whole_run():
    a = snapshot()
    total = a.merge(a)
    st = total.interfaces[0]
    assert total.duration_s == 4.0
    assert st.counters.enqueued == 8 and st.counters.queue_depth_max == 3
    assert st.stages["enqueue_to_receive"].count == 8
    assert st.stages["enqueue_to_receive"].max_ns == 9000
    assert total.cost.packets == 8


def test_hops_in_json_text_and_merge():
    from ovslat.model.snapshot import HopStats

    snap = snapshot()
    a = snap.interfaces[0].iface
    b = Interface("br-int", 9, 4026531840, "", 1)
    hopstats = HopStats(a, b, hist([20_000, 30_000]), hist([40_000, 90_000]))
    snap = Snapshot(snap.start_wall_s, 2.0, "kprobe", snap.interfaces, hops=(hopstats,))
    ctx = {"backend": "kprobe", "s3": "x", "filters": {}, "queue_depth_source": "q"}
    (h,) = json.loads(jsonl.record(snap, "interval", ctx))["hops"]
    assert (h["from"], h["to"], h["count"], h["sum_ns"], h["max_us"]) == (
        "veth0",
        "br-int",
        2,
        50_000,
        30.0,
    )
    assert h["e2e"]["count"] == 2 and h["e2e"]["sum_ns"] == 130_000
    text = text_out.render(snap, "x")
    assert "  veth0 -> br-int" in text
    assert "    transit    (S2 on veth0 -> S1 on br-int): 2 packets" in text
    (merged,) = snap.merge(snap).hops
    assert merged.transit.count == 4 and merged.e2e.sum_ns == 260_000


def test_a_tunnels_hops_in_json_text_live_and_back():
    """Each (from, to, tunnel) is its own hop: named in text, {"type", "vni"}
    in JSON, read back by parse_record (the live table: tests/unit/test_live.py)."""
    from ovslat.abi import TUNNEL_TYPE_SHIFT, TunnelType
    from ovslat.model.snapshot import HopStats

    snap = snapshot()
    a = snap.interfaces[0].iface
    b = Interface("eth0", 9, 4026532001, "pod", 1)
    vx = TunnelType.VXLAN << TUNNEL_TYPE_SHIFT | 100
    gn = TunnelType.GENEVE << TUNNEL_TYPE_SHIFT | 0xABCDEF
    hops = (
        HopStats(a, b, hist([20_000]), hist([40_000]), vx),
        HopStats(a, b, hist([30_000, 31_000]), hist([50_000, 51_000]), gn),
    )
    pod = dataclasses.replace(snap.interfaces[0], iface=b)
    snap = Snapshot(snap.start_wall_s, 2.0, "kprobe", (*snap.interfaces, pod), hops=hops)
    ctx = {"backend": "kprobe", "s3": "x", "filters": {}, "queue_depth_source": "q"}
    rec = json.loads(jsonl.record(snap, "interval", ctx))
    assert [(h["tunnel"], h["count"]) for h in rec["hops"]] == [
        ({"type": "vxlan", "vni": 100}, 1),
        ({"type": "geneve", "vni": 0xABCDEF}, 2),
    ]
    back = jsonl.parse_record(rec)
    assert [(h.tunnel, h.transit.count) for h in back.hops] == [(vx, 1), (gn, 2)]
    text = text_out.render(snap, "x")
    assert "  veth0 -> eth0@pod  (vxlan vni 100)" in text
    assert f"  veth0 -> eth0@pod  (geneve vni {0xABCDEF})" in text
    merged = snap.merge(snap).hops
    assert [(h.tunnel, h.transit.count) for h in merged] == [(vx, 2), (gn, 4)]
