"""A saved run, without root: JSON records read back into the snapshots they
were written from, assertions judged on a summary, and the SVG plots."""

from __future__ import annotations

import dataclasses
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ovslat.model.snapshot import HopStats
from ovslat.output import jsonl, plots
from ovslat.scenario import rundir, schema
from tests.unit.test_render import hist, snapshot

CONTEXT = {
    "backend": "tracepoint",
    "s3": "ip_rcv() entry",
    "filters": {"protocol": "all"},
    "queue_depth_source": "test",
    "hop_matching": "test",
}
SVG = "{http://www.w3.org/2000/svg}"


def with_hop(snap):
    st = snap.interfaces[0]
    other = type(st)(
        type(st.iface)("br-int", 9, st.iface.netns_inode, "", 1, None, "internal", "br-int"),
        st.counters,
        st.stages,
    )
    hop = HopStats(st.iface, other.iface, hist([30_000, 40_000]), hist([31_000, 42_000]))
    return type(snap)(
        snap.start_wall_s, snap.duration_s, snap.backend, (st, other), cost=snap.cost, hops=(hop,)
    )


@pytest.mark.parametrize("kind", ["interval", "summary"])
def test_json_record_reads_back_to_the_same_record(kind):
    """`ovslat report` renders from the JSON lines: reading a record back
    must lose nothing that any renderer shows."""
    snap = with_hop(snapshot(debug=tuple((0, *range(1, 11)) for _ in range(3))))
    first = jsonl.record(snap, kind, CONTEXT)
    again = jsonl.record(jsonl.parse_record(json.loads(first)), kind, CONTEXT)
    assert json.loads(again) == json.loads(first)


def summary():
    return with_hop(snapshot())


def checks(text: str) -> tuple:
    base = "version: 1\ntarget: {interfaces: [veth0]}\nworkload: [{run: ['true']}]\nassert:\n"
    return schema.parse(base + text, Path("t.yaml")).checks


def test_assertions_judged_on_the_summary():
    outcomes = rundir.evaluate(
        checks(
            '  - {interface: "*", enqueued: {eq: 4}}\n'  # both interfaces
            "  - {interface: veth0, ip_rcv: {ge: 4}}\n"  # 3: fails
            "  - {interface: veth0, stage: enqueue_to_receive, max_us: {lt: 10}}\n"
            "  - {interface: veth0, stage: enqueue_to_receive, count: {gt: 3}}\n"
            "  - {interface: eth9, received: {eq: 0}}\n"  # not measured: fails
            "  - {hop: {from: veth0, to: br-int}, p99_us: {lt: 50}}\n"
            "  - {hop: {from: veth0, to: br-int}, stage: e2e, count: {eq: 2}}\n"
            "  - {hop: {from: br-int, to: veth0}, count: {eq: 0}}\n"  # never seen: fails
        ),
        summary(),
    )
    assert [o.ok for o in outcomes] == [True, False, True, True, False, True, True, False]
    assert outcomes[0].actual == "veth0: 4, br-int: 4"
    assert outcomes[1].actual == "3"
    assert outcomes[4].actual == "interface not measured"
    assert outcomes[7].actual == "hop not seen"


def test_a_stage_without_samples_fails_its_latency_check():
    s = summary()
    st = s.interfaces[0]
    st = dataclasses.replace(st, stages={**st.stages, "receive_to_ip": hist([])})
    s = dataclasses.replace(s, interfaces=(st, *s.interfaces[1:]))
    (o,) = rundir.evaluate(
        checks("  - {interface: veth0, stage: receive_to_ip, p99_us: {lt: 10}}\n"), s
    )
    assert not o.ok and o.actual == "no samples"


def test_distribution_plot_has_a_bar_per_used_bucket():
    snap = with_hop(snapshot())
    root = ET.fromstring(plots.distribution(snap))
    bars = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "bar"]
    used = sum(
        1 for st in snap.interfaces for h in st.stages.values() for n in h.buckets if n
    ) + sum(1 for h in snap.hops for x in (h.transit, h.e2e) for n in x.buckets if n)
    assert len(bars) == used
    titles = [t.text for t in root.iter(f"{SVG}text")]
    assert any(t.startswith("veth0 · enqueue_to_receive — 4 packets") for t in titles)
    assert any(t.startswith("veth0 → br-int · e2e — 2 packets") for t in titles)


def test_heatmap_has_a_cell_per_used_bucket_and_interval():
    a, b = snapshot(), snapshot()
    root = ET.fromstring(plots.heatmap([a, b], "veth0"))
    cells = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "cell"]
    per_interval = sum(1 for h in a.interfaces[0].stages.values() for n in h.buckets if n)
    assert len(cells) == 2 * per_interval
    assert (
        ET.fromstring(plots.heatmap([a], "nowhere"))
        .find(f"{SVG}text")
        .text.endswith("no latency samples")
    )
