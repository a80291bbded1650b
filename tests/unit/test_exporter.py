"""The Prometheus exposition of a Snapshot: `le` bounds are kernel bucket edges,
cumulative counts are exact, gone interfaces leave, labels are bounded, and the
text passes both prometheus_client's parsers and `promtool check metrics`."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families

from ovslat.cli import main
from ovslat.errors import UserError
from ovslat.model.histogram import NBUCKETS, Histogram, bucket_bounds, bucket_of
from ovslat.model.snapshot import Counters, HopStats, Interface, InterfaceStats, ProbeCost, Snapshot
from ovslat.output.prometheus import Exposition, Published, le_buckets, parse_listen, serve

NETNS0 = 4026531840
# Latencies in ns: around and exactly on bucket edges, below the lowest bound
# (128 ns) and above the highest (2^34 ns).
VALUES = [0, 3, 100, 127, 128, 129, 1023, 1024, 1025, 1279, 1280, 1536, 9000, 65536]
VALUES += [10**6, 3 * 10**8, (1 << 34) - 1, 1 << 34, (1 << 34) + 1, 1 << 41]


def hist(values) -> Histogram:
    b = [0] * NBUCKETS
    for v in values:
        b[bucket_of(v)] += 1
    return Histogram(tuple(b), sum(values), max(values, default=0))


def stats(iface: Interface, values=(), gone=False, **counters) -> InterfaceStats:
    return InterfaceStats(
        iface,
        Counters(**counters),
        {"enqueue_to_receive": hist(values), "receive_to_ip": hist(values[:3])},
        gone=gone,
        drops=(("CPU_BACKLOG", 2),) if counters.get("dropped") else (),
    )


UPLINK = Interface("eth0", 2, NETNS0, "", 0, True, "uplink", "br-int")
BRIDGE = Interface("br-int", 5, NETNS0, "", 1, False, "internal", "br-int")
OTHER = Interface("veth7", 9, 4026532999, "tenant", 2)


def snapshot(gone_bridge=False) -> Snapshot:
    ifaces = (
        stats(UPLINK, VALUES, enqueued=40, received=37, ip_rcv=30, dropped=3, cross_cpu=5),
        stats(BRIDGE, [700, 800], gone=gone_bridge, enqueued=2, received=2),
        stats(OTHER, [50_000], enqueued=1, received=1, ip_rcv=1),
    )
    hops = (
        HopStats(UPLINK, BRIDGE, hist([4000, 5000]), hist([9000, 11000])),
        HopStats(UPLINK, OTHER, hist([2500]), hist([70_000])),
    )
    return Snapshot(0.0, 1.0, "tracepoint", ifaces, cost=ProbeCost(6000, 40, 40), hops=hops)


def render(snap: Snapshot, per_octave=1, bpf_stats=True, openmetrics=False) -> str:
    e = Exposition(per_octave, {"version": "test", "filters": "protocol=all"})
    e.publish(Published(snap, snap, {"br-int": "netdev"}, 3, 0.002, 1.0e9, bpf_stats))
    registry = CollectorRegistry()
    registry.register(e)
    return (generate_openmetrics if openmetrics else generate_latest)(registry).decode()


def samples(text: str) -> list:
    return [s for f in text_string_to_metric_families(text) for s in f.samples]


def find(text: str, name: str, **labels) -> list:
    return [s for s in samples(text) if s.name == name and labels.items() <= s.labels.items()]


def kernel_edges() -> list[int]:
    """Every upper bucket edge, found from bucket_of alone (where it changes)."""
    return [e for e in range(1, 1 << 12) if bucket_of(e) != bucket_of(e - 1)] + [
        e for k in range(12, 40) for e in (4 << (k - 2), 5 << (k - 2), 6 << (k - 2), 7 << (k - 2))
    ]


@pytest.mark.parametrize("per_octave, count", [(1, 28), (2, 55), (4, 109)])
def test_le_bounds_are_kernel_bucket_edges(per_octave, count):
    edges = [bucket_bounds(b)[1] for b in le_buckets(per_octave)]
    assert len(edges) == count and edges == sorted(edges)
    assert edges[0] == 128 and edges[-1] == 1 << 34
    assert set(edges) <= set(kernel_edges())
    if per_octave == 1:
        assert edges == [1 << k for k in range(7, 35)]
    if per_octave == 4:  # every kernel bucket in range
        assert edges == [e for e in kernel_edges() if 128 <= e <= 1 << 34]


@pytest.mark.parametrize("per_octave", [1, 2, 4])
def test_cumulative_bucket_counts_are_exact(per_octave):
    text = render(snapshot(), per_octave)
    labels = {"interface": "eth0", "stage": "enqueue_to_receive"}
    buckets = find(text, "ovslat_latency_seconds_bucket", **labels)
    assert len(buckets) == len(le_buckets(per_octave)) + 1
    for s in buckets[:-1]:
        le_ns = round(float(s.labels["le"]) * 1e9)
        # integer nanoseconds: the kernel bucket ending at le holds values < le
        assert s.value == sum(v < le_ns for v in VALUES), s.labels["le"]
    assert buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == len(VALUES)
    assert find(text, "ovslat_latency_seconds_count", **labels)[0].value == len(VALUES)
    (total,) = find(text, "ovslat_latency_seconds_sum", **labels)
    assert total.value == pytest.approx(sum(VALUES) / 1e9, rel=1e-12)


def test_counters_gauges_and_drops():
    text = render(snapshot())
    eth0 = {"interface": "eth0"}
    got = {
        n: sum(s.value for s in find(text, f"ovslat_{n}_total", **eth0))
        for n in ("enqueued", "received", "ip_rcv", "cross_cpu")
    }
    by_family = {s.labels["family"]: s.value for s in find(text, "ovslat_received_total", **eth0)}
    assert by_family == {"ipv4": 37, "ipv6": 0}
    assert got == {"enqueued": 40, "received": 37, "ip_rcv": 30, "cross_cpu": 5}
    drops = {s.labels["reason"]: s.value for s in find(text, "ovslat_dropped_total", **eth0)}
    assert drops == {"CPU_BACKLOG": 2, "UNKNOWN": 1}  # 3 dropped, 2 with a reason
    assert find(text, "ovslat_in_flight", **eth0)[0].value == 0
    (top,) = find(text, "ovslat_latency_max_seconds", stage="enqueue_to_receive", **eth0)
    assert top.value == (1 << 41) / 1e9
    assert find(text, "ovslat_probe_cost_seconds_per_packet")[0].value == 150e-9
    assert find(text, "ovslat_probe_runs_total")[0].value == 40
    (info,) = find(text, "ovslat_info")
    assert info.labels["backend"] == "tracepoint" and info.labels["bpf_stats"] == "on"
    off = render(snapshot(), bpf_stats=False)
    assert find(off, "ovslat_probe_runs_total")  # run_cnt > 0: stats were on at some point
    assert find(off, "ovslat_info")[0].labels["bpf_stats"] == "off"


def test_labels_are_bounded_discovery_info():
    text = render(snapshot())
    label_sets = {
        tuple(sorted((k, v) for k, v in s.labels.items() if k != "family"))
        for s in find(text, "ovslat_enqueued_total", family="ipv4")
    }
    assert label_sets == {
        (("bridge", "br-int"), ("datapath", "netdev"), ("interface", "eth0"), ("role", "uplink")),
        (
            ("bridge", "br-int"),
            ("datapath", "netdev"),
            ("interface", "br-int"),
            ("role", "internal"),
        ),
        (("interface", "veth7"), ("netns", "tenant")),  # -i: no role, netns only if not ours
    }
    names = {k for s in samples(text) for k in s.labels}
    assert names == {
        "interface", "netns", "role", "bridge", "datapath", "stage", "le", "reason",
        "from", "to", "tunnel", "vni", "backend", "bpf_stats", "filters", "version",
        "family",
    }  # fmt: skip
    hops = {
        (s.labels["from"], s.labels["to"]) for s in find(text, "ovslat_hop_latency_seconds_count")
    }
    assert hops == {("eth0", "br-int"), ("eth0", "veth7@tenant")}


def test_series_per_interface_as_documented():
    """docs/fleet.md: 82 series per interface and 62 per hop at 1 bucket per octave."""
    text = render(snapshot())
    per_iface = [s for s in samples(text) if s.labels.get("interface") == "veth7"]
    assert len(per_iface) == 82
    hop = [s for s in samples(text) if s.labels.get("to") == "veth7@tenant"]
    assert len(hop) == 62
    per_iface4 = [s for s in samples(render(snapshot(), 4)) if s.labels.get("interface") == "veth7"]
    assert len(per_iface4) == 82 + 2 * (109 - 28)


def test_gone_interfaces_and_their_hops_leave():
    before, after = render(snapshot()), render(snapshot(gone_bridge=True))
    assert find(before, "ovslat_enqueued_total", interface="br-int")
    assert not [s for s in samples(after) if s.labels.get("interface") == "br-int"]
    assert not [s for s in samples(after) if "br-int" in (s.labels.get("to"), s.labels.get("from"))]
    assert find(after, "ovslat_interfaces")[0].value == 2
    assert find(after, "ovslat_interface_slots_used")[0].value == 3  # slots are not reused
    assert find(after, "ovslat_enqueued_total", interface="eth0")[0].value == 40


def test_readded_interface_is_one_series():
    """Removed and added again: a new slot; only the live one is exposed."""
    back = Interface("br-int", 11, NETNS0, "", 3, False, "internal", "br-int")
    snap = snapshot(gone_bridge=True)
    snap = Snapshot(0.0, 1.0, "tracepoint", snap.interfaces + (stats(back, enqueued=7),))
    (got,) = find(render(snap), "ovslat_enqueued_total", interface="br-int", family="ipv4")
    assert got.value == 7


def test_nothing_before_the_first_read():
    registry = CollectorRegistry()
    registry.register(Exposition())
    assert generate_latest(registry) == b""


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool (Debian prometheus) missing")
def test_promtool_accepts_the_exposition():
    for per_octave in (1, 4):
        r = subprocess.run(
            ["promtool", "check", "metrics"],
            input=render(snapshot(), per_octave),
            capture_output=True,
            text=True,
        )
        assert r.returncode == 0, r.stdout + r.stderr


def test_openmetrics_exposition_parses():
    families = {f.name: f for f in parse_openmetrics(render(snapshot(), openmetrics=True))}
    assert families["ovslat_latency_seconds"].type == "histogram"
    assert families["ovslat_latency_seconds"].unit == "seconds"
    assert families["ovslat_enqueued"].type == "counter"
    assert families["ovslat"].type == "info"


@pytest.mark.parametrize(
    "text, want",
    [
        ("127.0.0.1:9433", ("127.0.0.1", 9433)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        ("[::1]:9433", ("::1", 9433)),
    ],
)
def test_listen_addresses(text, want):
    assert parse_listen(text) == want


@pytest.mark.parametrize(
    "text, message",
    [
        ("9433", "is not HOST:PORT"),
        (":9433", "is not HOST:PORT"),
        ("localhost:9433", "'localhost' is not an IP address"),
        ("127.0.0.1:0", "port must be 1-65535"),
        ("127.0.0.1:70000", "port must be 1-65535"),
        ("127.0.0.1:http", "port must be 1-65535"),
    ],
)
def test_bad_listen_is_one_line(text, message, capsys):
    assert main(["export", "-i", "lo", "--listen", text]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_buckets_per_octave_is_checked(capsys):
    assert main(["export", "-i", "lo", "--buckets-per-octave", "3"]) == 2
    assert "--buckets-per-octave must be 1, 2 or 4" in capsys.readouterr().err


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_port_in_use_and_foreign_address():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(UserError, match=f"port {port} is already in use"):
            serve("127.0.0.1", port, CollectorRegistry())
    with pytest.raises(UserError, match="192.0.2.1 is not an address of this host"):
        serve("192.0.2.1", free_port(), CollectorRegistry())


def test_http_endpoint_negotiates_openmetrics():
    e = Exposition()
    e.publish(Published(snapshot(), snapshot(), {"br-int": "netdev"}))
    registry = CollectorRegistry()
    registry.register(e)
    port = free_port()
    server = serve("127.0.0.1", port, registry)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert find(r.read().decode(), "ovslat_enqueued_total", interface="eth0")
        req = urllib.request.Request(url, headers={"Accept": "application/openmetrics-text"})
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.headers["Content-Type"].startswith("application/openmetrics-text")
            names = {f.name for f in parse_openmetrics(r.read().decode())}
            assert {"ovslat_enqueued", "ovslat_latency_seconds"} <= names
    finally:
        server.shutdown()
        server.server_close()


DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-ovslat.json"
GRAFANA_VARS = {"$__rate_interval": "1m", "$__range": "1h"}


def dashboard_queries() -> list[str]:
    """Every PromQL expression of docs/grafana-ovslat.json, Grafana's variables
    replaced as Grafana would (all instances, interfaces, roles)."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    out = []
    for t in (t for p in panels for t in p.get("targets", [])):
        expr = t["expr"]
        for var, value in GRAFANA_VARS.items():
            expr = expr.replace(var, value)
        out.append(re.sub(r"\$[a-z]+", ".*", expr))
    return out


def test_dashboard_uses_only_exposed_series():
    exposed = {s.name for s in samples(render(snapshot()))} | {"process_cpu_seconds_total"}
    queries = dashboard_queries()
    assert len(queries) >= 12
    used = {m for q in queries for m in re.findall(r"\b(?:ovslat|process)_[a-z_]+", q)}
    assert used and used <= exposed, used - exposed


@pytest.mark.skipif(not shutil.which("promtool"), reason="promtool (Debian prometheus) missing")
def test_dashboard_queries_are_valid_promql(tmp_path):
    rules = {
        "groups": [
            {"name": "dashboard", "rules": [
                {"record": f"dashboard:query_{i}", "expr": q}
                for i, q in enumerate(dashboard_queries())
            ]}
        ]
    }  # fmt: skip
    path = tmp_path / "rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    r = subprocess.run(["promtool", "check", "rules", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_pods_are_labelled_with_their_workload_and_count_sync_receives():
    host_end = Interface("veth3a", 11, NETNS0, "", 3, None, "pod", "br-int", "shop/web-0")
    pod_end = Interface(
        "eth0", 2, 4026533000, "cni-1", 4, None, "pod", "br-int", "shop/web-0", "/run/netns/cni-1"
    )
    tap = Interface("tap0", 12, NETNS0, "", 5, None, "vm", "br-int", "vm:d5a2")
    snap = snapshot()
    snap = Snapshot(
        0.0,
        1.0,
        "tracepoint",
        (
            *snap.interfaces,
            stats(host_end),
            stats(pod_end, [900], enqueued=7, received=7, ip_rcv=7),
            stats(tap, received_sync=9, ip_rcv=9),
        ),
    )
    text = render(snap)
    (pod,) = find(text, "ovslat_enqueued_total", interface="eth0", netns="cni-1", family="ipv4")
    assert pod.value == 7
    assert pod.labels == {
        "interface": "eth0", "netns": "cni-1", "role": "pod", "bridge": "br-int",
        "datapath": "netdev", "workload": "shop/web-0", "family": "ipv4",
    }  # fmt: skip
    assert find(text, "ovslat_enqueued_total", interface="veth3a")[0].labels["workload"] == (
        "shop/web-0"
    )
    (sync,) = find(text, "ovslat_received_sync_total", interface="tap0", family="ipv4")
    assert (sync.value, sync.labels["workload"], sync.labels["role"]) == (9, "vm:d5a2", "vm")
    assert find(text, "ovslat_flow_lookup_failures_total", interface="tap0")[0].value == 0


def test_a_tunnels_hop_has_its_type_and_vni():
    from ovslat.abi import TUNNEL_TYPE_SHIFT, TunnelType

    snap = snapshot()
    word = TunnelType.VXLAN << TUNNEL_TYPE_SHIFT | 100
    tunnelled = HopStats(UPLINK, OTHER, hist([3000, 3500, 4000]), hist([80_000]), word)
    text = render(dataclasses.replace(snap, hops=(*snap.hops, tunnelled)))
    labels = {"from": UPLINK.label, "to": OTHER.label, "stage": "transit"}
    (plain,) = find(text, "ovslat_hop_latency_seconds_count", **labels, tunnel="", vni="")
    (vx,) = find(text, "ovslat_hop_latency_seconds_count", **labels, tunnel="vxlan", vni="100")
    assert (plain.value, vx.value) == (1, 3)
